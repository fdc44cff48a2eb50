"""GIS layers in and out: GeoPackage, GeoJSON and Shapefile pipe networks.

Utilities keep their networks as GIS layers, not EPANET files: pipes as
LineStrings, sometimes with a node layer and start/end node columns, often
without. :func:`read_gis_network` turns such layers into a
:class:`twin.model.Network` (with a WNTR model built from them, so
hydraulics can run); :func:`write_gis_network` writes a network back.

Layers
------
- GeoPackage: layers ``pipes`` (LineStrings; required), ``nodes`` (Points)
  and ``valves`` (isolation valves, Points), found by name; a file with a
  single line layer uses it as the pipes whatever its name.
- GeoJSON / Shapefile: one layer per file. ``net.geojson`` holds the pipes;
  ``net_nodes.geojson`` and ``net_valves.geojson`` beside it are read as the
  nodes and valves when present (likewise ``net_nodes.shp``...).

Columns
-------
Recognised case-insensitively under common names (see :data:`PIPE_COLUMNS`,
:data:`NODE_COLUMNS`); pass ``columns={"diameter": "DN", "zone": "DMA"}`` to
name them explicitly. Diameters are read in millimetres or metres
(``diameter_unit="auto"`` decides from the column name, ``*_mm`` / ``*_m``,
or else from the values: a median above 5 means millimetres).

Topology
--------
With ``start_node`` / ``end_node`` columns the topology is taken as given
(line ends are moved onto their nodes when within ``snap_tolerance_m``).
Without them, line ends closer than ``snap_tolerance_m`` are merged into one
node (a KD-tree over all ends), matched to the node layer's points when there
is one. Pipes drawn shorter than twice the tolerance whose ends snap
together are merged into their node (a warning lists them). Points of the
valves layer that lie in a gap between two parts join them, as the pump,
control valve or open isolation valve they are. A network still in parts is
imported with a warning giving the parts (pipes, km) and the narrowest gap;
the validation flags parts without a source.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely
import shapely.ops
import wntr
from scipy.spatial import cKDTree

from twin import settings
from twin.crs import check_declared_crs, internal_crs, is_pseudo_crs, parse_crs, transform_xy
from twin.errors import CRSError, NetworkError, require_file
from twin.graph import edge_components
from twin.model import Network, empty_valves

log = logging.getLogger(__name__)

__all__ = ["DEVICE_COLUMNS", "NODE_COLUMNS", "PIPE_COLUMNS", "VALVE_COLUMNS", "operational_data", "read_gis_network",
           "write_gis_network"]

#: Canonical pipe attribute -> column names tried (case-insensitive), first match wins.
PIPE_COLUMNS: dict[str, tuple[str, ...]] = {
    "link_id": ("link_id", "pipe_id", "pipeid", "id", "name", "gid"),
    "link_type": ("link_type",),
    "start_node": ("start_node", "from_node", "node1", "fnode", "from_id", "us_node"),
    "end_node": ("end_node", "to_node", "node2", "tnode", "to_id", "ds_node"),
    "length": ("length_m", "length", "len", "pipe_length"),
    "diameter": ("diameter_m", "diameter_mm", "diameter", "diam", "dn", "dia"),
    "roughness": ("roughness", "hw_c", "c_factor", "chw", "rough"),
    "material": ("material", "mat", "pipe_material"),
    "install_year": ("install_year", "inst_year", "year", "install_yr", "installed", "install_date", "laid_year"),
    "zone": ("zone", "dma", "district", "pressure_zone"),
    "elevation_start": ("elevation_start", "start_elev", "z_start", "us_elev", "from_elev", "elev_start"),
    "elevation_end": ("elevation_end", "end_elev", "z_end", "ds_elev", "to_elev", "elev_end"),
    "status": ("status",),
    "minor_loss": ("minor_loss",),
    "valve_type": ("valve_type",),
    "setting": ("setting",),
    "pump_curve": ("pump_curve",),
    "pump_power_w": ("pump_power_w", "pump_pw_w"),
}

#: Canonical node attribute -> column names tried.
NODE_COLUMNS: dict[str, tuple[str, ...]] = {
    "node_id": ("node_id", "nodeid", "id", "name", "gid"),
    "node_type": ("node_type", "type", "kind"),
    "elevation": ("elevation_m", "elev_m", "elevation", "elev", "z", "ground_level"),
    "base_demand": ("base_demand_m3s", "demand_m3s"),
    "demand_lps": ("demand_lps", "base_demand_lps"),
    "zone": ("zone", "dma", "district", "pressure_zone"),
    "init_level": ("init_level_m", "init_lvl_m", "init_level"),
    "min_level": ("min_level_m", "min_lvl_m", "min_level"),
    "max_level": ("max_level_m", "max_lvl_m", "max_level"),
    "tank_diameter": ("tank_diameter_m", "tank_dia_m", "tank_diameter"),
}

#: Canonical isolation-valve attribute -> column names tried.
VALVE_COLUMNS: dict[str, tuple[str, ...]] = {
    "valve_id": ("valve_id", "valveid", "id", "name", "gid"),
    "link_id": ("link_id", "pipe_id", "pipeid"),
    "node_id": ("node_id", "nodeid"),
}

#: Valve / pump point attribute -> column names tried (read with :data:`VALVE_COLUMNS`). A point's
#: ``link_type`` "pump", or a ``valve_type`` (PRV, PSV, PBV, FCV, TCV, GPV), makes it a device; the
#: others are isolation valves. ``bearing_deg``: flow direction, degrees clockwise from grid north.
DEVICE_COLUMNS: dict[str, tuple[str, ...]] = {
    "link_type": ("link_type", "device", "kind"),
    "valve_type": ("valve_type",),
    "setting": ("setting",),
    "diameter": ("diameter_m", "diameter_mm", "diameter", "dn"),
    "pump_curve": ("pump_curve",),
    "pump_power_w": ("pump_power_w", "pump_pw_w"),
    "bearing": ("bearing_deg", "bearing", "flow_bearing"),
}

#: Largest distance from a valve or pump point to each of the two line ends it joins, metres.
DEVICE_JOIN_M = 30.0

_CONTROL_VALVES = ("PRV", "PSV", "PBV", "FCV", "TCV", "GPV")
#: Devices whose direction matters (a pump, or a valve that regulates one way).
_DIRECTED = ("pump", "PRV", "PSV", "PBV", "FCV")

_NODE_TYPES = {
    "junction": "junction", "j": "junction", "node": "junction", "": "junction",
    "reservoir": "reservoir", "source": "reservoir", "r": "reservoir",
    "tank": "tank", "t": "tank", "storage": "tank",
}

#: Short names of long columns, for Shapefiles (10-character dBase fields).
_SHP_NAMES = {
    "install_year": "inst_year", "pump_power_w": "pump_pw_w", "elevation_m": "elev_m",
    "base_demand_m3s": "demand_m3s", "init_level_m": "init_lvl_m", "min_level_m": "min_lvl_m",
    "max_level_m": "max_lvl_m", "tank_diameter_m": "tank_dia_m",
}

#: Tank geometry used when the node layer does not give it, metres.
TANK_DEFAULTS = {"init_level": 2.0, "min_level": 0.0, "max_level": 5.0, "tank_diameter": 10.0}


# --------------------------------------------------------------------------- helpers


def _sibling(path: Path, layer: str) -> Path:
    return path.with_name(f"{path.stem}_{layer}{path.suffix}")


def _valves_file(valves_layer: str | None) -> tuple[Path, str | None] | None:
    """``valves_layer`` as a (file, layer) source when it names a GIS file, else None (a layer name)."""
    if valves_layer is None or Path(valves_layer).suffix.lower() not in (".gpkg", ".geojson", ".json", ".shp"):
        return None
    p = require_file(valves_layer, what="valves layer")
    if p.suffix.lower() == ".gpkg":
        layers = {str(n).lower(): str(n) for n, _ in pyogrio.list_layers(p)}
        return p, layers.get("valves")
    return p, None


def _find_layers(path: Path, pipes_layer: str | None, nodes_layer: str | None, valves_layer: str | None):
    """(pipes source, nodes source or None, valves source or None); each a (path, layer name or None).

    ``valves_layer`` is a layer of the GeoPackage, or a GIS file of its own.
    """
    valves_file = _valves_file(valves_layer)
    if valves_file is not None:
        pipes, nodes, _ = _find_layers(path, pipes_layer, nodes_layer, None)
        return pipes, nodes, valves_file
    suffix = path.suffix.lower()
    if suffix != ".gpkg":
        if valves_layer is not None:
            raise NetworkError(f"--valves-layer {valves_layer!r} is not a GIS file", path=path,
                               fix="name a .gpkg, .geojson or .shp file of valve points (a layer name works "
                               "for a GeoPackage network only)")
        nodes = _sibling(path, "nodes")
        valves = _sibling(path, "valves")
        return (
            (path, None),
            (nodes, None) if nodes.exists() else None,
            (valves, None) if valves.exists() else None,
        )
    try:
        info = pyogrio.list_layers(path)
    except Exception as exc:
        raise NetworkError(f"cannot open as a GeoPackage ({exc})", path=path,
                           fix="check that the file is a valid .gpkg (open it in QGIS)") from exc
    names = {str(n): str(g or "") for n, g in info}
    lower = {n.lower(): n for n in names}

    def pick(given: str | None, default: str) -> str | None:
        if given is not None:
            if given not in names:
                raise NetworkError(f"no layer {given!r}; layers are {sorted(names)}", path=path,
                                   fix="name one of the existing layers")
            return given
        return lower.get(default)

    pipes = pick(pipes_layer, "pipes")
    if pipes is None:
        lines = [n for n, g in names.items() if "LINE" in g.upper()]
        if len(lines) == 1:
            pipes = lines[0]
        else:
            raise NetworkError(
                f"no 'pipes' layer and {len(lines)} line layers ({sorted(lines)})",
                path=path,
                fix="pass pipes_layer= (CLI: --pipes-layer) naming the pipe layer",
            )
    nodes = pick(nodes_layer, "nodes")
    valves = pick(valves_layer, "valves")
    return (path, pipes), (path, nodes) if nodes else None, (path, valves) if valves else None


def _read_layer(src: tuple[Path, str | None], what: str) -> gpd.GeoDataFrame:
    path, layer = src
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gdf = gpd.read_file(path, layer=layer, engine="pyogrio", use_arrow=True)
    except Exception as exc:
        where = f"layer {layer!r}" if layer else what
        raise NetworkError(f"cannot read {where} ({' '.join(str(exc).split())[:200]})", path=path,
                           fix="check that the file is a valid GIS file (open it in QGIS)") from exc
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry is None:
        raise NetworkError(f"the {what} layer has no geometry", path=path, fix="give a layer with geometries")
    return gdf


def _resolve_columns(
    gdf: gpd.GeoDataFrame,
    candidates: Mapping[str, tuple[str, ...]],
    explicit: Mapping[str, str] | None,
    *,
    path: Path,
    what: str,
    strict: set[str] | None = None,
) -> dict[str, str]:
    """Canonical name -> column of ``gdf`` (explicit mapping first, then the known aliases).

    An explicit column missing from the layer raises when its key is in
    ``strict`` (default: every key of ``candidates``); keys shared with other
    layers (``zone``, ``link_id``) may be absent from some of them.
    """
    strict = set(candidates) if strict is None else strict
    lower = {str(c).lower(): c for c in gdf.columns if c != gdf.geometry.name}
    found: dict[str, str] = {}
    explicit = dict(explicit or {})
    for key, col in explicit.items():
        if key not in candidates:
            continue
        if col not in gdf.columns and str(col).lower() not in lower:
            if key not in strict:
                continue
            raise NetworkError(
                f"the {what} layer has no column {col!r} (given for {key}); columns are "
                f"{sorted(map(str, lower.values()))}",
                path=path,
                fix="correct the column name in the columns mapping (CLI: --column KEY=NAME)",
            )
        found[key] = col if col in gdf.columns else lower[str(col).lower()]
    taken = set(found.values())
    for key, names in candidates.items():
        if key in found:
            continue
        for name in names:
            col = lower.get(name)
            if col is not None and col not in taken:
                found[key] = col
                taken.add(col)
                break
    return found


def _ids(values: pd.Series | None, n: int, prefix: str) -> pd.Index:
    if values is None:
        return pd.Index([f"{prefix}{i + 1}" for i in range(n)], dtype=object)
    s = values.astype("string").str.strip()
    return pd.Index(s.to_numpy(dtype=object, na_value=None), dtype=object)


def _require_ids(ids: pd.Index, *, path: Path, what: str, col: str) -> None:
    missing = np.flatnonzero(pd.isna(ids) | (ids.astype(str) == ""))
    if missing.size:
        raise NetworkError(
            f"{missing.size} {what} features have no ID in column {col!r} (e.g. feature {int(missing[0]) + 1})",
            path=path, row=int(missing[0]) + 1,
            fix=f"fill the {col!r} column, or drop it to have IDs generated",
        )
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise NetworkError(
            f"{len(dup)} duplicate {what} IDs in column {col!r}, e.g. {list(map(str, dup[:5]))}",
            path=path, element=str(dup[0]),
            fix="make the IDs unique",
        )


def _numeric(gdf: gpd.GeoDataFrame, col: str | None, *, path: Path, what: str, ids: pd.Index) -> np.ndarray:
    if col is None:
        return np.full(len(gdf), np.nan)
    raw = gdf[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() & raw.notna() & (raw.astype("string").str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise NetworkError(
            f"column {col!r} of the {what} layer holds {int(bad.sum())} non-numeric values, e.g. {raw.iloc[i]!r}",
            path=path, row=i + 1, element=str(ids[i]),
            fix="write plain numbers with '.' as the decimal mark",
        )
    return num.to_numpy(dtype=float, na_value=np.nan)


def _years(gdf: gpd.GeoDataFrame, col: str | None) -> pd.Series:
    if col is None:
        return pd.Series(pd.NA, index=range(len(gdf)), dtype="Int64")
    raw = gdf[col]
    if pd.api.types.is_datetime64_any_dtype(raw):
        return pd.Series(raw.dt.year.to_numpy(), dtype="Int64")
    num = pd.to_numeric(raw, errors="coerce")
    if num.notna().sum() < raw.notna().sum():  # dates as text
        dates = pd.to_datetime(raw.astype("string"), errors="coerce", format="mixed")
        num = num.fillna(pd.Series(dates.dt.year.to_numpy(), index=num.index))
    return pd.Series(np.round(num.to_numpy(dtype=float, na_value=np.nan)), dtype="Float64").astype("Int64")


def _strings(gdf: gpd.GeoDataFrame, col: str | None) -> pd.Series:
    if col is None:
        return pd.Series(pd.NA, index=range(len(gdf)), dtype="string")
    s = gdf[col].astype("string").str.strip()
    s = s.mask(s == "")
    return pd.Series(s.to_numpy(), dtype="string")


def _layer_crs(gdf: gpd.GeoDataFrame, crs: Any, *, path: Path, what: str):
    """The CRS of the layer's coordinates: ``crs`` if given (overriding the file's), else the file's."""
    if crs is not None:
        if is_pseudo_crs(crs):
            return str(crs).upper().replace("-", "")
        given = parse_crs(crs, what="--crs")
        if gdf.crs is not None and not pyproj.CRS(gdf.crs).equals(given):
            log.warning("%s: the %s layer says %s; using the given %s", path.name, what,
                        pyproj.CRS(gdf.crs).to_string(), given.to_string())
        return given
    if gdf.crs is None:
        raise CRSError(f"the {what} layer has no coordinate reference system", path=path,
                       fix="pass --crs naming the CRS of its coordinates (e.g. EPSG:4548)")
    return pyproj.CRS(gdf.crs)


def _transform_geoms(geoms: np.ndarray, src: Any, dst: pyproj.CRS) -> np.ndarray:
    if not is_pseudo_crs(src) and pyproj.CRS(src).equals(dst):
        return geoms

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = transform_xy(xy[:, 0], xy[:, 1], from_crs=src, to_crs=dst)
        return np.column_stack([x, y])

    out = shapely.transform(geoms, fn)
    coords = shapely.get_coordinates(out)
    if coords.size and not np.isfinite(coords).all():
        raise CRSError(f"coordinates cannot be transformed from {src} to {dst.to_string()}",
                       fix="check --crs: the coordinates do not fit it")
    return out


# --------------------------------------------------------------------------- reading


def read_gis_network(
    path: str | Path,
    *,
    crs: Any = None,
    to_crs: Any = None,
    columns: Mapping[str, str] | None = None,
    pipes_layer: str | None = None,
    nodes_layer: str | None = None,
    valves_layer: str | None = None,
    snap_tolerance_m: float = settings.SNAP_TOLERANCE_M,
    diameter_unit: str = "auto",
    default_roughness: float = 100.0,
    allow_disconnected: bool = False,
    valve_snap_m: float = 5.0,
    default_diameter_m: float | None = None,
    split_at_tees: bool = True,
    device_join_m: float = DEVICE_JOIN_M,
) -> Network:
    """Read a pipe network from GIS layers.

    Parameters
    ----------
    path : str or Path
        ``.gpkg``, ``.geojson`` or ``.shp`` (see the module docstring for the
        layers and sibling files).
    crs : any pyproj input or "GCJ02" / "BD09", optional
        CRS of the coordinates; overrides the file's own (needed when the
        file has none, e.g. a Shapefile without ``.prj``).
    to_crs : any pyproj input, optional
        Projected metric CRS to hold the network in (default: the layer's CRS
        if projected, else ``settings.DEFAULT_CRS``).
    columns : mapping, optional
        Canonical attribute -> column name, for pipes, nodes and valves alike
        (``{"diameter": "DN_MM", "zone": "DMA", "elevation": "Z"}``).
    pipes_layer, nodes_layer, valves_layer : str, optional
        GeoPackage layer names (default ``pipes``, ``nodes``, ``valves``).
        ``valves_layer`` may also be a GIS file of valve and pump points
        (see ``device_join_m``).
    snap_tolerance_m : float
        Line ends closer than this (metres, in the internal CRS) are one node;
        also the largest gap allowed between a line end and its declared node.
    diameter_unit : {"auto", "mm", "m"}
        Unit of the diameter column.
    default_roughness : float
        Hazen-Williams C for pipes without a roughness value.
    allow_disconnected : bool
        A snapped network in several parts is imported with a warning that
        reports the parts; with True the report is logged at INFO level.
    valve_snap_m : float
        Largest distance from an isolation valve to the pipe it is put on, metres.
    default_diameter_m : float, optional
        Diameter for pipes and valves without one. By default such links are
        refused (a hydraulic model needs every diameter).
    split_at_tees : bool
        Without start/end node columns: where a line ends on another line's
        interior (within ``snap_tolerance_m``), split that line there, as GIS
        topology cleaning does. The pieces keep the attributes (a stated
        length is shared in proportion to the drawn lengths); the first keeps
        the ID, the others get ``<id>-2``, ``<id>-3``...
    device_join_m : float
        A point of the valves layer that lies between line ends of two
        separate parts, each within this distance (metres), joins them: a
        pump (``link_type`` "pump", with ``pump_curve`` or ``pump_power_w``),
        a control valve (``valve_type`` PRV, PSV...; ``setting``) or, for an
        isolation valve drawn off the pipes in a gap, an open TCV. Flow runs
        along ``bearing_deg`` (degrees clockwise from grid north) when the
        layer has it. The other points are isolation valves.

    Returns
    -------
    twin.model.Network
        With a WNTR model (SI, LPS for ``.inp`` output, Hazen-Williams)
        built from the layers.

    Raises
    ------
    NetworkError
        Unreadable layers, null or non-line geometries, missing or duplicate
        IDs, non-numeric attributes, unknown node references, line ends away
        from their nodes, a pipe drawn as a loop onto one node, a pump point
        without curve or power.
    CRSError
        No CRS, unknown CRS, degrees declared as metres.
    """
    path = Path(path)
    if diameter_unit not in ("auto", "mm", "m"):
        raise NetworkError(f"diameter_unit {diameter_unit!r} is not one of 'auto', 'mm', 'm'", path=path)
    if not snap_tolerance_m > 0:
        raise NetworkError(f"snap_tolerance_m must be positive, got {snap_tolerance_m}", path=path)
    pipes_src, nodes_src, valves_src = _find_layers(path, pipes_layer, nodes_layer, valves_layer)
    pipes = _read_layer(pipes_src, "pipes")
    if pipes.empty:
        raise NetworkError("the pipes layer has no features", path=path, fix="give a layer with pipe LineStrings")
    src = _layer_crs(pipes, crs, path=path, what="pipes")
    dst = internal_crs(None if is_pseudo_crs(src) else pyproj.CRS(src), to_crs)
    lines = _pipe_lines(pipes, columns, src, dst, path=path, tol=snap_tolerance_m, split_at_tees=split_at_tees)
    node_layer, ncols = _read_node_layer(nodes_src, columns, crs, dst)
    points = _read_point_layer(valves_src, columns, crs, dst)
    lines, start, end, node_xy = _topology(lines, node_layer, ncols, path=path,
                                           nodes_path=nodes_src[0] if nodes_src else path, tol=snap_tolerance_m)
    attrs = _link_attributes(lines, path=path, diameter_unit=diameter_unit, default_roughness=default_roughness,
                             default_diameter_m=default_diameter_m)
    end_z = pd.Series(np.concatenate([lines.z_start, lines.z_end]), index=np.concatenate([start, end]))
    end_z = end_z[np.isfinite(end_z.to_numpy())].groupby(level=0).mean()
    nodes = _node_table(node_xy, node_layer, ncols, path=path, crs=dst, end_elevation=end_z)
    links = _link_table(lines, attrs, start, end, path=path, crs=dst)
    extras = {
        "pump_curve": _strings(lines.table, lines.cols.get("pump_curve")).to_numpy(),
        "pump_power_w": _numeric(lines.table, lines.cols.get("pump_power_w"), path=path, what="pipes", ids=lines.ids),
    }
    links, extras, points = _join_through_devices(nodes, links, extras, points, path=path, tol=snap_tolerance_m,
                                                  join_m=device_join_m, diameter_unit=diameter_unit)
    _report_parts(nodes, links, path=path, tol=snap_tolerance_m, allow_disconnected=allow_disconnected)
    wn = _build_wn(nodes, links, extras, node_layer, ncols, path=path)
    valves = _place_isolation_valves(points, links, dst=dst, max_m=valve_snap_m)
    return Network(wn=wn, crs=dst, nodes=nodes, links=links, valves=valves, source=str(path))


@dataclass
class _Lines:
    """The pipe layer's features as lines in the internal CRS, after splitting at tees."""

    table: gpd.GeoDataFrame  # the layer's rows, one per line (repeated for split pieces)
    cols: dict[str, str]  # canonical attribute -> column of ``table``
    ids: pd.Index  # link IDs
    geoms: np.ndarray  # 2D LineStrings, internal CRS
    z_start: np.ndarray  # Z or elevation column at the first / last vertex, m (NaN if none)
    z_end: np.ndarray
    length_attr: np.ndarray  # stated length, m (NaN if none; shared in proportion for split pieces)

    @property
    def has_topology(self) -> bool:
        return "start_node" in self.cols and "end_node" in self.cols


def _pipe_lines(pipes: gpd.GeoDataFrame, columns: Mapping[str, str] | None, src: Any, dst: pyproj.CRS, *,
                path: Path, tol: float, split_at_tees: bool) -> _Lines:
    """Columns, IDs, clean 2D lines, end elevations and stated lengths; degrees checked, lines transformed."""
    pcols = _resolve_columns(pipes, PIPE_COLUMNS, columns, path=path, what="pipes")
    id_col = pcols.get("link_id")
    link_ids = _ids(pipes[id_col] if id_col else None, len(pipes), "P")
    _require_ids(link_ids, path=path, what="pipe", col=id_col or "link_id")
    geoms, z_start, z_end = _clean_lines(pipes.geometry.to_numpy(), link_ids, path=path)
    for key, z in (("elevation_start", z_start), ("elevation_end", z_end)):
        given = _numeric(pipes, pcols.get(key), path=path, what="pipes", ids=link_ids)
        z[np.isfinite(given)] = given[np.isfinite(given)]
    length_attr = _numeric(pipes, pcols.get("length"), path=path, what="pipes", ids=link_ids)
    src_len = shapely.length(geoms)
    ok = (src_len > 0) & np.isfinite(length_attr) & (length_attr > 0)
    ratio = float(np.median(length_attr[ok] / src_len[ok])) if ok.sum() >= 3 else None
    check_declared_crs(shapely.get_coordinates(geoms), src, path=path, length_ratio=ratio)
    lines = _Lines(table=pipes, cols=pcols, ids=link_ids, geoms=_transform_geoms(geoms, src, dst),
                   z_start=z_start, z_end=z_end, length_attr=length_attr)
    if split_at_tees and not lines.has_topology:
        lines = _split_lines_at_tees(lines, path=path, tol=tol)
    return lines


def _split_lines_at_tees(lines: _Lines, *, path: Path, tol: float) -> _Lines:
    """:func:`_split_at_tees` applied to the lines and carried to their attributes."""
    before = shapely.length(lines.geoms)
    geoms, src_row = _split_at_tees(lines.geoms, tol=tol)
    if len(src_row) == len(lines.table):
        return lines
    frac = shapely.length(geoms) / np.where(before[src_row] > 0, before[src_row], 1.0)
    piece = pd.Series(src_row)
    first_piece = (piece.groupby(src_row).cumcount() == 0).to_numpy()
    last_piece = (piece[::-1].groupby(src_row[::-1]).cumcount() == 0)[::-1].to_numpy()
    log.info("%s: split %d pipes at %d tees (line ends on another line's interior)", path.name,
             len(np.unique(src_row[pd.Index(src_row).duplicated()])), len(src_row) - len(before))
    return _Lines(table=lines.table.iloc[src_row].reset_index(drop=True), cols=lines.cols,
                  ids=_piece_ids(lines.ids, src_row), geoms=geoms,
                  z_start=np.where(first_piece, lines.z_start[src_row], np.nan),
                  z_end=np.where(last_piece, lines.z_end[src_row], np.nan),
                  length_attr=lines.length_attr[src_row] * frac)


def _link_attributes(lines: _Lines, *, path: Path, diameter_unit: str, default_roughness: float,
                     default_diameter_m: float | None) -> dict[str, Any]:
    """Link type, length (m; NaN for pumps and valves), diameter (m) and roughness, checked."""
    pipes, pcols, link_ids = lines.table, lines.cols, lines.ids
    diameter = _numeric(pipes, pcols.get("diameter"), path=path, what="pipes", ids=link_ids)
    diameter = _diameter_m(diameter, pcols.get("diameter"), diameter_unit)
    roughness = _numeric(pipes, pcols.get("roughness"), path=path, what="pipes", ids=link_ids)
    roughness = np.where(np.isfinite(roughness), roughness, default_roughness)
    length = np.where(np.isfinite(lines.length_attr), lines.length_attr, shapely.length(lines.geoms))
    link_type = _strings(pipes, pcols.get("link_type")).str.lower().fillna("pipe")
    bad_type = ~link_type.isin(["pipe", "pump", "valve"])
    if bad_type.any():
        i = int(np.flatnonzero(bad_type.to_numpy())[0])
        raise NetworkError(f"link_type {link_type.iloc[i]!r} is not pipe, pump or valve", path=path,
                           row=i + 1, element=str(link_ids[i]), fix="correct the link_type column")
    is_pipe = (link_type == "pipe").to_numpy()
    length = np.where(is_pipe, length, np.nan)
    needs_d = is_pipe | (link_type == "valve").to_numpy()
    diameter = _fill_diameters(diameter, needs_d, lines, path=path, default_diameter_m=default_diameter_m)
    short = is_pipe & ~(length > 0)
    if short.any():
        i = int(np.flatnonzero(short)[0])
        raise NetworkError(f"{int(short.sum())} pipes have zero or negative length", path=path, row=i + 1,
                           element=str(link_ids[i]), fix="correct the length column or the geometry")
    return {"link_type": link_type, "is_pipe": is_pipe, "length": length, "diameter": diameter,
            "roughness": roughness}


def _fill_diameters(diameter: np.ndarray, needs_d: np.ndarray, lines: _Lines, *, path: Path,
                    default_diameter_m: float | None) -> np.ndarray:
    """Pipes and valves without a positive diameter get ``default_diameter_m``, or are refused."""
    no_d = needs_d & ~(diameter > 0)
    if not no_d.any():
        return diameter
    if default_diameter_m is not None and default_diameter_m > 0:
        log.warning("%s: %d links without a diameter get %g m", path.name, int(no_d.sum()), default_diameter_m)
        return np.where(no_d, default_diameter_m, diameter)
    i = int(np.flatnonzero(no_d)[0])
    col = lines.cols.get("diameter")
    what = (f"no diameter column (looked for {', '.join(PIPE_COLUMNS['diameter'])})" if col is None
            else f"{int(no_d.sum())} links have a missing, zero or negative diameter in {col!r}")
    raise NetworkError(
        what, path=path, row=i + 1, element=str(lines.ids[i]),
        fix="fill the diameters, name the column with columns={'diameter': NAME} (CLI: --column "
        "diameter=NAME), or give default_diameter_m (CLI: --default-diameter-mm)",
    )


def _read_node_layer(nodes_src, columns: Mapping[str, str] | None, crs: Any,
                     dst: pyproj.CRS) -> tuple[gpd.GeoDataFrame | None, dict[str, str]]:
    """The node layer in the internal CRS, indexed by node ID, and its columns; (None, {}) without one."""
    if nodes_src is None:
        return None, {}
    node_layer = _read_layer(nodes_src, "nodes")
    node_layer = node_layer[~(node_layer.geometry.isna() | node_layer.geometry.is_empty)].copy()
    ncols = _resolve_columns(node_layer, NODE_COLUMNS, columns, path=nodes_src[0], what="nodes",
                             strict=set(NODE_COLUMNS) - set(PIPE_COLUMNS))
    node_src_crs = _layer_crs(node_layer, crs, path=nodes_src[0], what="nodes")
    pts = shapely.force_2d(node_layer.geometry.to_numpy())
    if not np.all(shapely.get_type_id(pts) == 0):
        raise NetworkError("the nodes layer holds non-Point geometries", path=nodes_src[0],
                           fix="give Points in the nodes layer")
    node_layer = gpd.GeoDataFrame(
        node_layer.drop(columns=node_layer.geometry.name),
        geometry=_transform_geoms(pts, node_src_crs, dst), crs=dst,
    ).reset_index(drop=True)
    nid_col = ncols.get("node_id")
    node_ids_layer = _ids(node_layer[nid_col] if nid_col else None, len(node_layer), "N")
    _require_ids(node_ids_layer, path=nodes_src[0], what="node", col=nid_col or "node_id")
    node_layer.index = node_ids_layer
    return node_layer, ncols


def _topology(lines: _Lines, node_layer, ncols, *, path: Path, nodes_path: Path,
              tol: float) -> tuple[_Lines, np.ndarray, np.ndarray, pd.DataFrame]:
    """The lines kept, start and end node of each and the node positions; line ends moved onto their nodes.

    Updates ``lines`` in place (geometry: ends on the nodes, reversed lines
    drawn end to start; end elevations swapped with them) and returns them
    without the tiny pipes merged into a node.
    """
    if lines.has_topology:
        start, end, node_xy, flip = _explicit_topology(
            lines.table, lines.cols, lines.geoms, node_layer, lines.ids, path=path, tol=tol
        )
        lines.z_start, lines.z_end = np.where(flip, lines.z_end, lines.z_start), np.where(flip, lines.z_start,
                                                                                        lines.z_end)
        lines.geoms = _move_ends(lines.geoms, node_xy.loc[start].to_numpy(), node_xy.loc[end].to_numpy())
        return lines, start, end, node_xy
    start, end, node_xy, tiny = _snap_topology(lines.geoms, node_layer, lines.ids, path=path, tol=tol)
    if tiny.any():
        lines, start, end = _subset(lines, ~tiny), start[~tiny], end[~tiny]
        node_xy = node_xy.loc[pd.unique(np.concatenate([start, end]))]
    lines.geoms = _move_ends(lines.geoms, node_xy.loc[start].to_numpy(), node_xy.loc[end].to_numpy())
    if node_layer is not None:
        _check_unmatched_nodes(node_layer, ncols, node_xy, lines.geoms, path=nodes_path, tol=tol)
    return lines, start, end, node_xy


def _subset(lines: _Lines, keep: np.ndarray) -> _Lines:
    """The lines where ``keep`` is True."""
    return _Lines(table=lines.table[keep].reset_index(drop=True), cols=lines.cols, ids=lines.ids[keep],
                  geoms=lines.geoms[keep], z_start=lines.z_start[keep], z_end=lines.z_end[keep],
                  length_attr=lines.length_attr[keep])


def _link_table(lines: _Lines, attrs: dict[str, Any], start: np.ndarray, end: np.ndarray, *, path: Path,
                crs: pyproj.CRS) -> gpd.GeoDataFrame:
    """The link table (see :class:`twin.model.Network`) from the lines, their attributes and topology."""
    pipes, pcols, link_ids = lines.table, lines.cols, lines.ids
    links = gpd.GeoDataFrame(
        {
            "link_type": attrs["link_type"].to_numpy(dtype=object),
            "start_node": np.asarray(start, dtype=object),
            "end_node": np.asarray(end, dtype=object),
            "length_m": attrs["length"],
            "diameter_m": attrs["diameter"],
            "roughness": np.where(attrs["is_pipe"], attrs["roughness"], np.nan),
            "material": _strings(pipes, pcols.get("material")).to_numpy(),
            "install_year": _years(pipes, pcols.get("install_year")).to_numpy(),
            "zone": _strings(pipes, pcols.get("zone")).to_numpy(),
            "status": _strings(pipes, pcols.get("status")).str.lower().fillna("open").to_numpy(dtype=object),
            "valve_type": _strings(pipes, pcols.get("valve_type")).str.upper().to_numpy(),
            "setting": _numeric(pipes, pcols.get("setting"), path=path, what="pipes", ids=link_ids),
            "minor_loss": np.nan_to_num(
                _numeric(pipes, pcols.get("minor_loss"), path=path, what="pipes", ids=link_ids), nan=0.0),
        },
        index=pd.Index(link_ids, name="link_id"),
        geometry=lines.geoms,
        crs=crs,
    )
    links["material"] = links["material"].astype("string")
    links["install_year"] = links["install_year"].astype("Int64")
    links["zone"] = links["zone"].astype("string")
    links["valve_type"] = links["valve_type"].astype("string")
    return links


def _split_at_tees(geoms: np.ndarray, *, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Split lines where another line's dangling end touches their interior.

    Returns the new lines and, for each, the row of the line it came from
    (pieces of one line are consecutive, in order from its start).
    """
    n = len(geoms)
    a, b = _ends(geoms)
    ends = np.vstack([a, b])
    owner = np.concatenate([np.arange(n), np.arange(n)])
    near = cKDTree(ends).query_ball_point(ends, tol, return_length=True)
    dangling = np.flatnonzero(near == 1)
    rows = np.arange(n)
    if not dangling.size:
        return geoms, rows
    pts = shapely.points(ends[dangling])
    pi, li = shapely.STRtree(geoms).query(pts, predicate="dwithin", distance=tol)
    keep = li != owner[dangling[pi]]
    pi, li = pi[keep], li[keep]
    if not pi.size:
        return geoms, rows
    pos = shapely.line_locate_point(geoms[li], pts[pi])
    total = shapely.length(geoms[li])
    inner = (pos > tol) & (pos < total - tol)
    pi, li, pos = pi[inner], li[inner], pos[inner]
    if not pi.size:
        return geoms, rows
    # one line per dangling end: the nearest
    dist = shapely.distance(geoms[li], pts[pi])
    order = np.lexsort((dist, pi))
    first = order[np.concatenate([[True], pi[order][1:] != pi[order][:-1]])]
    li, pos = li[first], pos[first]
    cut: dict[int, list[float]] = {}
    for line, at in zip(li.tolist(), pos.tolist()):
        cut.setdefault(line, []).append(at)
    out_geoms: list = []
    out_rows: list[int] = []
    start = 0
    for line in sorted(cut):
        out_geoms.extend(geoms[start:line])
        out_rows.extend(range(start, line))
        marks = sorted(set(cut[line]))
        bounds = [0.0, *marks, float(shapely.length(geoms[line]))]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi - lo > 0:
                out_geoms.append(shapely.ops.substring(geoms[line], lo, hi))
                out_rows.append(line)
        start = line + 1
    out_geoms.extend(geoms[start:])
    out_rows.extend(range(start, n))
    return np.asarray(out_geoms, dtype=object), np.asarray(out_rows)


def _piece_ids(ids: pd.Index, src_row: np.ndarray) -> pd.Index:
    """IDs of split pieces: the first piece keeps the ID, the next get ``-2``, ``-3``..."""
    base = np.asarray(ids, dtype=object)[src_row]
    k = pd.Series(src_row).groupby(src_row).cumcount().to_numpy() + 1
    taken = set(map(str, ids))
    out = []
    for b, j in zip(base.tolist(), k.tolist()):
        if j == 1:
            out.append(b)
            continue
        name = f"{b}-{j}"
        while name in taken:
            name += "x"
        taken.add(name)
        out.append(name)
    return pd.Index(out, dtype=object)


def _clean_lines(geoms: np.ndarray, ids: pd.Index, *, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D LineStrings, MultiLineStrings merged; null / empty / other types refused with their IDs.

    Also returns the Z of each line's first and last vertex (NaN for 2D data).
    """
    null = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if null.any():
        bad = np.flatnonzero(null)
        raise NetworkError(
            f"{bad.size} pipes have no geometry (null or empty), e.g. {', '.join(map(str, ids[bad[:5]]))}",
            path=path, row=int(bad[0]) + 1,
            fix="draw or delete those features",
        )
    tid = shapely.get_type_id(geoms)
    multi = tid == 5
    if multi.any():
        merged = shapely.line_merge(geoms[multi])
        geoms = geoms.copy()
        geoms[multi] = merged
        tid = shapely.get_type_id(geoms)
    bad = np.flatnonzero(tid != 1)
    if bad.size:
        kinds = shapely.get_type_id(geoms[bad[:1]])
        kind = {0: "Point", 5: "MultiLineString with separate parts", 3: "Polygon"}.get(int(kinds[0]), "non-line")
        raise NetworkError(
            f"{bad.size} pipes are not single lines, e.g. {ids[bad[0]]} is a {kind}",
            path=path, row=int(bad[0]) + 1, element=str(ids[bad[0]]),
            fix="split multi-part pipes into one feature per part, with their own IDs",
        )
    z_start = shapely.get_coordinates(shapely.get_point(geoms, 0), include_z=True)[:, 2]
    z_end = shapely.get_coordinates(shapely.get_point(geoms, -1), include_z=True)[:, 2]
    return shapely.force_2d(geoms), z_start, z_end


def _diameter_m(values: np.ndarray, col: str | None, unit: str) -> np.ndarray:
    if col is None:
        return values
    if unit == "auto":
        name = str(col).lower()
        if name.endswith("_mm") or name in ("dn",):
            unit = "mm"
        elif name.endswith("_m"):
            unit = "m"
        else:
            finite = values[np.isfinite(values) & (values > 0)]
            unit = "mm" if finite.size and float(np.median(finite)) > 5.0 else "m"
    return values / 1000.0 if unit == "mm" else values


def _ends(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = shapely.get_coordinates(shapely.get_point(geoms, 0))
    b = shapely.get_coordinates(shapely.get_point(geoms, -1))
    return a, b


def _move_ends(geoms: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Put each line's first/last vertex exactly on its node's coordinates (vectorised)."""
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    counts = np.bincount(index, minlength=len(geoms))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    last = first + counts - 1
    coords = coords.copy()
    coords[first] = a
    coords[last] = b
    return shapely.linestrings(coords, indices=index)


def _explicit_topology(pipes, pcols, geoms, node_layer, link_ids, *, path: Path, tol: float):
    s = _strings(pipes, pcols["start_node"])
    e = _strings(pipes, pcols["end_node"])
    miss = s.isna() | e.isna()
    if miss.any():
        i = int(np.flatnonzero(miss.to_numpy())[0])
        raise NetworkError(f"{int(miss.sum())} pipes lack a start or end node ID", path=path, row=i + 1,
                           element=str(link_ids[i]), fix="fill the start/end node columns, or drop both columns to "
                           "build the topology by snapping line ends")
    start = s.to_numpy(dtype=object)
    end = e.to_numpy(dtype=object)
    a, b = _ends(geoms)
    if node_layer is not None:
        node_xy = pd.DataFrame(shapely.get_coordinates(node_layer.geometry.to_numpy()), index=node_layer.index,
                               columns=["x", "y"])
        known = node_xy.index
        unknown = ~(pd.Index(start).isin(known) & pd.Index(end).isin(known))
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise NetworkError(
                f"{int(unknown.sum())} pipes refer to nodes missing from the nodes layer, e.g. pipe "
                f"{link_ids[i]} ({start[i]} -> {end[i]})",
                path=path, row=i + 1, element=str(link_ids[i]),
                fix="add those nodes to the nodes layer or correct the start/end columns",
            )
        sa = node_xy.loc[start].to_numpy()
        eb = node_xy.loc[end].to_numpy()
        d_direct = np.maximum(np.hypot(*(a - sa).T), np.hypot(*(b - eb).T))
        d_flip = np.maximum(np.hypot(*(b - sa).T), np.hypot(*(a - eb).T))
        gap = np.minimum(d_direct, d_flip)
        flip = d_flip < d_direct
        if flip.any():
            log.warning("%s: %d pipes were drawn from their end node to their start node; reversed",
                        path.name, int(flip.sum()))
            geoms[flip] = shapely.reverse(geoms[flip])
        far = gap > tol
        if far.any():
            i = int(np.argmax(gap))
            raise NetworkError(
                f"{int(far.sum())} pipes do not end at their nodes (worst: {link_ids[i]}, {gap[i]:.2f} m away; "
                f"tolerance {tol:g} m)",
                path=path, row=i + 1, element=str(link_ids[i]),
                fix="correct the geometry or the start/end node columns, or raise the snap tolerance "
                "(--snap-tolerance)",
            )
        return start, end, node_xy, flip
    # No node layer: node positions from the line ends; all ends of one node must agree.
    ids = np.concatenate([start, end])
    xy = np.vstack([a, b])
    df = pd.DataFrame(xy, columns=["x", "y"])
    df["node"] = ids
    first = df.groupby("node", sort=False)[["x", "y"]].first()
    spread = np.hypot(*(xy - first.loc[ids].to_numpy()).T)
    far = spread > tol
    if far.any():
        i = int(np.argmax(spread))
        lid = link_ids[i % len(link_ids)]
        raise NetworkError(
            f"line ends of node {ids[i]} are up to {spread[i]:.2f} m apart (e.g. pipe {lid}; tolerance {tol:g} m)",
            path=path, element=str(lid),
            fix="correct the geometry or the start/end node columns, or raise the snap tolerance (--snap-tolerance)",
        )
    return start, end, first, np.zeros(len(start), dtype=bool)


def _check_unmatched_nodes(node_layer, ncols, node_xy, geoms, *, path: Path, tol: float) -> None:
    """Node-layer points no pipe end reached: sources are an error, junctions a warning (they are dropped)."""
    unmatched = node_layer.index[~node_layer.index.isin(node_xy.index)]
    if not len(unmatched):
        return
    kinds = pd.Series("junction", index=unmatched, dtype=object)
    if "node_type" in ncols:
        kinds = node_layer.loc[unmatched, ncols["node_type"]].astype("string").str.strip().str.lower().map(
            _NODE_TYPES).fillna("junction")
    sources = kinds.index[kinds.isin(["reservoir", "tank"])]
    if len(sources):
        ends = np.vstack(_ends(geoms))
        pts = shapely.get_coordinates(node_layer.geometry.loc[sources].to_numpy())
        dist, _ = cKDTree(ends).query(pts)
        raise NetworkError(
            f"{kinds[sources[0]]} {sources[0]} of the node layer is {dist[0]:.2f} m from the nearest pipe end "
            f"(snap tolerance {tol:g} m){f' and {len(sources) - 1} more sources too' if len(sources) > 1 else ''}",
            path=path, element=str(sources[0]),
            fix="move the source onto its pipe's end, or raise the snap tolerance (--snap-tolerance)",
        )
    log.warning("%s: %d node-layer points are at no pipe end (e.g. %s); not part of the network",
                path.name, len(unmatched), ", ".join(map(str, unmatched[:3])))


def _snap_topology(geoms, node_layer, link_ids, *, path: Path, tol: float):
    """Node IDs of each line's ends by merging ends within ``tol`` (KD-tree + connected components).

    Returns start and end node IDs, the node positions and which lines are
    tiny pipes merged into one node (see :func:`_tiny_pipes`).
    """
    n = len(geoms)
    a, b = _ends(geoms)
    xy = np.vstack([a, b])
    tree = cKDTree(xy)
    pairs = tree.query_pairs(tol, output_type="ndarray")
    m = len(xy)
    n_clusters, label = edge_components(m, pairs[:, 0], pairs[:, 1])
    sums = np.zeros((n_clusters, 2))
    np.add.at(sums, label, xy)
    centre = sums / np.bincount(label, minlength=n_clusters)[:, None]
    cluster_ids = np.empty(n_clusters, dtype=object)
    if node_layer is not None and len(node_layer):
        node_pts = shapely.get_coordinates(node_layer.geometry.to_numpy())
        dist, idx = cKDTree(node_pts).query(centre, distance_upper_bound=tol)
        hit = np.isfinite(dist)
        cluster_ids[hit] = node_layer.index.to_numpy()[idx[hit]]
        centre[hit] = node_pts[idx[hit]]
        taken = set(map(str, node_layer.index))
        dup = pd.Series(cluster_ids[hit]).duplicated()
        if dup.any():
            nid = pd.Series(cluster_ids[hit])[dup].iloc[0]
            raise NetworkError(f"several separate line ends snap to node {nid}", path=path, element=str(nid),
                               fix="lower the snap tolerance or correct the geometry")
    else:
        hit = np.zeros(n_clusters, dtype=bool)
        taken = set()
    new = np.flatnonzero(~hit)
    names = [f"J{i + 1}" for i in range(len(new) + len(taken))]
    names = [nm for nm in names if nm not in taken][: len(new)]
    cluster_ids[new] = np.asarray(names, dtype=object)
    start = cluster_ids[label[:n]]
    end = cluster_ids[label[n:]]
    tiny = _tiny_pipes(geoms, start == end, link_ids, path=path, tol=tol)
    node_xy = pd.DataFrame(centre, index=pd.Index(cluster_ids, dtype=object), columns=["x", "y"])
    log.info("snapped %d line ends into %d nodes within %g m", m, n_clusters, tol)
    return start, end, node_xy, tiny


def _tiny_pipes(geoms: np.ndarray, same: np.ndarray, link_ids: pd.Index, *, path: Path, tol: float) -> np.ndarray:
    """Pipes whose two ends snap onto one node: the short ones are merged into it (a warning lists them).

    A pipe drawn shorter than twice the snap tolerance whose ends fall into
    one node is a stub of the drawing (a fitting, a split left over); it is
    dropped and its ends become that node. A longer one is a loop drawn
    back onto its start and is refused.
    """
    drawn = shapely.length(geoms)
    loop = same & (drawn >= 2 * tol)
    if loop.any():
        i = int(np.flatnonzero(loop)[0])
        raise NetworkError(
            f"{int(loop.sum())} pipes start and end at one node although drawn {drawn[i]:.2f} m long (a loop), "
            f"e.g. {link_ids[i]}",
            path=path, row=i + 1, element=str(link_ids[i]),
            fix="split the loop into two pipes at a vertex, or delete it",
        )
    if same.any():
        idx = np.flatnonzero(same)
        log.warning("%s: %d pipes shorter than %g m merged into their node (both ends within the snap tolerance "
                    "%g m): %s", path.name, idx.size, 2 * tol, tol,
                    ", ".join(f"{link_ids[i]} ({drawn[i]:.2f} m)" for i in idx[:10]) +
                    (f" ... ({idx.size} in all)" if idx.size > 10 else ""))
    return same


def _report_parts(nodes: gpd.GeoDataFrame, links: gpd.GeoDataFrame, *, path: Path, tol: float,
                  allow_disconnected: bool) -> None:
    """Warn when the network falls into parts: how many, their pipes and length, the narrowest gap.

    Snapping guesses, so the parts are reported, not refused: the
    validation (:func:`twin.validate.validate_network`) flags the parts
    without a source. With ``allow_disconnected`` the report is logged at
    INFO level.
    """
    node_ids = pd.Index(nodes.index)
    start = node_ids.get_indexer(links["start_node"])
    end = node_ids.get_indexer(links["end_node"])
    _, part = edge_components(len(node_ids), start, end)
    link_part = part[start]
    n_parts = len(np.unique(link_part))  # parts with links; nodes without any are validation's orphan_node
    if n_parts <= 1:
        return
    is_pipe = (links["link_type"] == "pipe").to_numpy()
    km = np.bincount(link_part, weights=np.where(is_pipe, links["length_m"].to_numpy(dtype=float), 0.0),
                     minlength=len(part)) / 1000.0
    n_pipes = np.bincount(link_part, weights=is_pipe.astype(float), minlength=len(part)).astype(int)
    used = np.unique(link_part)
    order = used[np.argsort(-km[used], kind="stable")]
    parts = "; ".join(
        f"{n_pipes[c]} pipes / {km[c]:.2f} km (e.g. {links.index[link_part == c][0]})" for c in order[:6]
    ) + (f"; ... ({n_parts} in all)" if n_parts > 6 else "")
    log.log(logging.INFO if allow_disconnected else logging.WARNING,
            "%s: the snapped network falls into %d parts, by length: %s%s. Join them with a valve or pump point "
            "layer (--valves-layer), in the GIS, or with a larger --snap-tolerance (now %g m)", path.name, n_parts,
            parts, _narrowest_gap(nodes, links, part, start, end), tol)


def _narrowest_gap(nodes: gpd.GeoDataFrame, links: gpd.GeoDataFrame, part: np.ndarray, start: np.ndarray,
                   end: np.ndarray) -> str:
    """``; the narrowest gap is 3.10 m, at an end of pipe P3`` (dangling ends to another part), or ''."""
    xy = shapely.get_coordinates(nodes.geometry.to_numpy())
    degree = np.bincount(np.concatenate([start, end]), minlength=len(xy))
    dangling = np.flatnonzero(degree == 1)
    if not dangling.size:
        return ""
    d, j = cKDTree(xy).query(xy[dangling], k=min(8, len(xy)))
    d, j = np.atleast_2d(d), np.atleast_2d(j)
    other = part[np.clip(j, 0, len(xy) - 1)] != part[dangling][:, None]
    best = np.where(other & np.isfinite(d), d, np.inf).min(axis=1)
    k = int(np.argmin(best))
    if not np.isfinite(best[k]):
        return ""
    at = dangling[k]
    lid = links.index[(start == at) | (end == at)][0]
    return f"; the narrowest gap is {best[k]:.2f} m, at an end of pipe {lid}"


def _node_table(node_xy: pd.DataFrame, node_layer, ncols, *, path: Path, crs,
                end_elevation: pd.Series | None = None) -> gpd.GeoDataFrame:
    """Node table; elevations from the node layer, else the mean Z / elevation column of the pipe ends there."""
    ids = node_xy.index
    n = len(ids)
    node_type = pd.Series("junction", index=ids, dtype=object)
    elevation = pd.Series(np.nan, index=ids)
    demand = pd.Series(0.0, index=ids)
    zone = pd.Series(pd.NA, index=ids, dtype="string")
    if node_layer is not None:
        layer = node_layer.reindex(ids)
        if "node_type" in ncols:
            raw = layer[ncols["node_type"]].astype("string").str.strip().str.lower().fillna("")
            mapped = raw.map(_NODE_TYPES)
            bad = mapped.isna()
            if bad.any():
                nid = bad[bad].index[0]
                raise NetworkError(
                    f"node type {raw[nid]!r} is not junction, reservoir or tank", path=path, element=str(nid),
                    fix="correct the node_type column",
                )
            node_type = mapped.astype(object)
        lids = pd.Index(layer.index)
        if "elevation" in ncols:
            elevation = pd.Series(_numeric(layer, ncols["elevation"], path=path, what="nodes", ids=lids), index=ids)
        if "base_demand" in ncols:
            demand = pd.Series(_numeric(layer, ncols["base_demand"], path=path, what="nodes", ids=lids),
                               index=ids).fillna(0.0)
        elif "demand_lps" in ncols:
            demand = pd.Series(_numeric(layer, ncols["demand_lps"], path=path, what="nodes", ids=lids) / 1000.0,
                               index=ids).fillna(0.0)
        if "zone" in ncols:
            zone = pd.Series(_strings(layer, ncols["zone"]).to_numpy(), index=ids, dtype="string")
    if end_elevation is not None and len(end_elevation):
        fill = elevation.isna() & elevation.index.isin(end_elevation.index)
        if fill.any():
            elevation[fill] = end_elevation.reindex(elevation.index[fill]).to_numpy()
            log.info("%s: elevations of %d nodes from the pipe ends (Z or start/end elevation columns)",
                     path.name, int(fill.sum()))
    if elevation.isna().all() and n:
        log.warning("%s: no node elevations (node layer column 'elevation', pipe Z or start/end elevation "
                    "columns); 0 m used, pressures will be heads", path.name)
    df = pd.DataFrame(
        {"node_type": node_type.to_numpy(), "elevation_m": elevation.to_numpy(),
         "base_demand_m3s": demand.to_numpy(), "zone": zone.to_numpy()},
        index=pd.Index(ids, name="node_id", dtype=object),
    )
    df["zone"] = df["zone"].astype("string")
    return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(node_xy["x"], node_xy["y"]), crs=crs)


def _build_wn(nodes, links, extras, node_layer, ncols, *, path: Path) -> wntr.network.WaterNetworkModel:
    """A WNTR model (SI, Hazen-Williams, LPS when written) from the node and link tables."""
    wn = wntr.network.WaterNetworkModel()
    wn.options.hydraulic.inpfile_units = "LPS"
    wn.options.hydraulic.headloss = "H-W"
    xs = nodes.geometry.x.to_numpy()
    ys = nodes.geometry.y.to_numpy()
    elev = np.nan_to_num(nodes["elevation_m"].to_numpy(dtype=float), nan=0.0)
    demand = nodes["base_demand_m3s"].to_numpy(dtype=float)
    zones = nodes["zone"].to_numpy(dtype=object, na_value=None)
    layer = node_layer.reindex(nodes.index) if node_layer is not None else None

    def tank_value(nid: str, key: str) -> float:
        if layer is not None and key in ncols:
            v = pd.to_numeric(pd.Series([layer.at[nid, ncols[key]]]), errors="coerce").iloc[0]
            if pd.notna(v):
                return float(v)
        return TANK_DEFAULTS[key]

    for nid, kind, x, y, z, q, zn in zip(nodes.index.tolist(), nodes["node_type"].tolist(), xs.tolist(),
                                         ys.tolist(), elev.tolist(), demand.tolist(), zones.tolist()):
        if kind == "junction":
            wn.add_junction(nid, base_demand=float(q), elevation=float(z), coordinates=(float(x), float(y)))
        elif kind == "reservoir":
            wn.add_reservoir(nid, base_head=float(z), coordinates=(float(x), float(y)))
        else:
            wn.add_tank(nid, elevation=float(z), init_level=tank_value(nid, "init_level"),
                        min_level=tank_value(nid, "min_level"), max_level=tank_value(nid, "max_level"),
                        diameter=tank_value(nid, "tank_diameter"), coordinates=(float(x), float(y)))
        if zn is not None:
            wn.get_node(nid).tag = str(zn)

    coords, index = shapely.get_coordinates(links.geometry.to_numpy(), return_index=True)
    counts = np.bincount(index, minlength=len(links))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    ltype = links["link_type"].to_numpy()
    zones_l = links["zone"].to_numpy(dtype=object, na_value=None)
    arrays = {
        "status": links["status"].to_numpy(),
        "valve_type": links["valve_type"].to_numpy(dtype=object, na_value=None),
        "length": links["length_m"].to_numpy(dtype=float),
        "diameter": links["diameter_m"].to_numpy(dtype=float),
        "roughness": links["roughness"].to_numpy(dtype=float),
        "minor_loss": links["minor_loss"].to_numpy(dtype=float),
        "setting": links["setting"].to_numpy(dtype=float),
        "pump_curve": extras["pump_curve"],
        "pump_power_w": extras["pump_power_w"],
    }
    for i, (lid, s, e) in enumerate(zip(links.index.tolist(), links["start_node"].tolist(),
                                        links["end_node"].tolist())):
        try:
            _add_link(wn, i, lid, s, e, ltype[i], arrays, path)
        except ValueError as exc:
            if isinstance(exc, NetworkError):
                raise
            raise NetworkError(f"WNTR refuses this {ltype[i]}: {exc}", path=path, row=i + 1, element=str(lid),
                               fix="correct its attributes") from exc
        link = wn.get_link(lid)
        if counts[i] > 2:
            link.vertices = [tuple(p) for p in coords[offsets[i] + 1 : offsets[i + 1] - 1].tolist()]
        if zones_l[i] is not None:
            link.tag = str(zones_l[i])
    return wn


def _add_link(wn, i: int, lid: str, s: str, e: str, kind: str, a: dict, path: Path) -> None:
    """Add link ``i`` of the arrays ``a`` to ``wn``."""
    st = str(a["status"][i])
    if kind == "pipe":
        wn.add_pipe(lid, s, e, length=float(a["length"][i]), diameter=float(a["diameter"][i]),
                    roughness=float(a["roughness"][i]), minor_loss=float(a["minor_loss"][i]),
                    initial_status="CLOSED" if st == "closed" else "OPEN", check_valve=st == "cv")
    elif kind == "valve":
        setting = a["setting"][i]
        wn.add_valve(lid, s, e, diameter=float(a["diameter"][i]), valve_type=a["valve_type"][i] or "TCV",
                     minor_loss=float(a["minor_loss"][i]),
                     initial_setting=float(setting) if np.isfinite(setting) else 0.0,
                     initial_status={"closed": "CLOSED", "open": "OPEN"}.get(st, "ACTIVE"))
    else:
        curve = a["pump_curve"][i]
        if curve is not None and not pd.isna(curve):
            try:
                pts = [tuple(map(float, pt)) for pt in json.loads(str(curve))]
            except (ValueError, TypeError) as exc:
                raise NetworkError(f"pump_curve is not a JSON list of [flow m3/s, head m] pairs: {curve!r}",
                                   path=path, element=str(lid), fix="correct the pump_curve column") from exc
            cname = f"curve_{lid}"
            wn.add_curve(cname, "HEAD", pts)
            wn.add_pump(lid, s, e, pump_type="HEAD", pump_parameter=cname,
                        initial_status="CLOSED" if st == "closed" else "OPEN")
        elif np.isfinite(a["pump_power_w"][i]):
            wn.add_pump(lid, s, e, pump_type="POWER", pump_parameter=float(a["pump_power_w"][i]),
                        initial_status="CLOSED" if st == "closed" else "OPEN")
        else:
            raise NetworkError("pump without pump_curve or pump_power_w", path=path, element=str(lid),
                               fix="give a pump_curve (JSON [[flow_m3s, head_m], ...]) or pump_power_w")


def _read_point_layer(valves_src, columns: Mapping[str, str] | None, crs: Any,
                      dst: pyproj.CRS) -> gpd.GeoDataFrame | None:
    """The valve / pump points in the internal CRS, indexed by ID, with canonical column names; or None."""
    if valves_src is None:
        return None
    layer = _read_layer(valves_src, "valves")
    path = valves_src[0]
    layer = layer[~(layer.geometry.isna() | layer.geometry.is_empty)].reset_index(drop=True)
    if layer.empty:
        return None
    vcols = _resolve_columns(layer, {**VALVE_COLUMNS, **DEVICE_COLUMNS}, columns, path=path, what="valves",
                             strict={"valve_id"})
    ids = _ids(layer[vcols["valve_id"]] if "valve_id" in vcols else None, len(layer), "V")
    _require_ids(ids, path=path, what="valve", col=vcols.get("valve_id", "valve_id"))
    src = _layer_crs(layer, crs, path=path, what="valves")
    pts = shapely.force_2d(layer.geometry.to_numpy())
    if not np.all(shapely.get_type_id(pts) == 0):
        raise NetworkError("the valves layer holds non-Point geometries", path=path,
                           fix="give the valves and pumps as Points")
    table = {key: (_strings(layer, vcols.get(key)) if key in ("link_id", "node_id", "link_type", "valve_type",
                                                              "pump_curve")
                   else _numeric(layer, vcols.get(key), path=path, what="valves", ids=ids))
             for key in ("link_id", "node_id", "link_type", "valve_type", "setting", "diameter", "pump_curve",
                         "pump_power_w", "bearing")}
    out = gpd.GeoDataFrame({k: np.asarray(v) for k, v in table.items()}, index=pd.Index(ids, name="valve_id"),
                           geometry=_transform_geoms(pts, src, dst), crs=dst)
    out["diameter"] = _diameter_m(out["diameter"].to_numpy(dtype=float), vcols.get("diameter"), "auto")
    out.attrs["path"] = path
    return out


def _device_kind(points: gpd.GeoDataFrame) -> np.ndarray:
    """"pump", a control valve type ("PRV"...) or "isolation" for each point."""
    link_type = points["link_type"].astype("string").str.strip().str.lower().fillna("")
    valve_type = points["valve_type"].astype("string").str.strip().str.upper().fillna("")
    kind = np.where(valve_type.isin(_CONTROL_VALVES), valve_type, "isolation").astype(object)
    as_type = link_type.str.upper()
    kind = np.where((kind == "isolation") & as_type.isin(_CONTROL_VALVES), as_type, kind)
    return np.where(link_type == "pump", "pump", kind)


def _device_pairs(nodes: gpd.GeoDataFrame, links: gpd.GeoDataFrame, points: gpd.GeoDataFrame, *,
                  tol: float, join_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point, the two nodes of separate parts it joins (positions in ``nodes``; -1: none).

    Of the nodes within ``join_m``, the pair from two separate parts with
    the point closest to the straight line between them (the smallest detour
    ``d(p, a) + d(p, b) - d(a, b)``, at most ``d(a, b)``). Isolation valves
    join only when drawn off the pipes (farther than ``tol`` from every
    line): one on a pipe is a valve of that pipe.
    """
    node_ids = pd.Index(nodes.index)
    start, end = node_ids.get_indexer(links["start_node"]), node_ids.get_indexer(links["end_node"])
    n_parts, part = edge_components(len(node_ids), start, end)
    xy = shapely.get_coordinates(nodes.geometry.to_numpy())
    pts = shapely.get_coordinates(points.geometry.to_numpy())
    a = np.full(len(pts), -1)
    b = np.full(len(pts), -1)
    if n_parts > 1:
        tree = cKDTree(xy)
        for lo in range(0, len(pts), 4096):  # (chunk, 16, 16) pair arrays: a few MB at a time
            a[lo:lo + 4096], b[lo:lo + 4096] = _nearest_straddling_pair(tree, xy, part, pts[lo:lo + 4096], join_m)
    between = a >= 0
    kind = _device_kind(points)
    check = np.flatnonzero(between & (kind == "isolation"))
    if check.size:  # an isolation valve on a pipe belongs to that pipe
        on_pipe, _ = shapely.STRtree(links.geometry.to_numpy()).query_nearest(
            shapely.points(pts[check]), max_distance=tol)
        between[check[np.unique(on_pipe)]] = False
    return np.where(between, a, -1), np.where(between, b, -1), kind


def _nearest_straddling_pair(tree: cKDTree, xy: np.ndarray, part: np.ndarray, pts: np.ndarray,
                             join_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the node pair of two parts each point lies between (see :func:`_device_pairs`); -1: none."""
    k = min(16, len(xy))
    d, j = tree.query(pts, k=k, distance_upper_bound=join_m)
    d, j = d.reshape(len(pts), k), j.reshape(len(pts), k)
    found = np.isfinite(d)
    jj, d = np.where(found, j, 0), np.where(found, d, 0.0)
    span = np.linalg.norm(xy[jj][:, :, None, :] - xy[jj][:, None, :, :], axis=-1)  # (points, k, k)
    detour = d[:, :, None] + d[:, None, :] - span
    ok = found[:, :, None] & found[:, None, :] & (part[jj][:, :, None] != part[jj][:, None, :]) & (detour <= span)
    score = np.where(ok, detour + 1e-3 * (d[:, :, None] + d[:, None, :]), np.inf).reshape(len(pts), k * k)
    best = np.argmin(score, axis=1)
    rows = np.arange(len(pts))
    hit = np.isfinite(score[rows, best])
    return np.where(hit, jj[rows, best // k], -1), np.where(hit, jj[rows, best % k], -1)


def _join_through_devices(nodes: gpd.GeoDataFrame, links: gpd.GeoDataFrame, extras: dict[str, np.ndarray],
                          points: gpd.GeoDataFrame | None, *, path: Path, tol: float, join_m: float,
                          diameter_unit: str) -> tuple[gpd.GeoDataFrame, dict[str, np.ndarray],
                                                       gpd.GeoDataFrame | None]:
    """Links for the valve and pump points that join separate parts; the isolation valves left over.

    Returns the links with the new ones appended (and their ``extras``),
    and the points that remain isolation valves.
    """
    if points is None or len(links) == 0:
        return links, extras, points
    a, b, kind = _device_pairs(nodes, links, points, tol=tol, join_m=join_m)
    joins = a >= 0
    lost = ~joins & (kind != "isolation")
    if lost.any():
        log.warning("%s: %d pump / control valve points are not between line ends of two separate parts within "
                    "%g m; left out: %s", points.attrs["path"].name, int(lost.sum()), join_m,
                    ", ".join(map(str, points.index[lost][:10])))
    if not joins.any():
        return links, extras, points
    new = _device_links(nodes, links, points[joins], a[joins], b[joins], kind[joins], path=path)
    log.info("%s: %d valve / pump points join separate parts of the pipes (%s)", points.attrs["path"].name,
             int(joins.sum()), ", ".join(f"{t}: {n}" for t, n in pd.Series(kind[joins]).value_counts().items()))
    extras = {"pump_curve": np.concatenate([extras["pump_curve"], points["pump_curve"].to_numpy(dtype=object,
                                                                                                 na_value=None)[joins]]),
              "pump_power_w": np.concatenate([extras["pump_power_w"], points["pump_power_w"].to_numpy()[joins]])}
    rest = points[~joins & (kind == "isolation")]
    return pd.concat([links, new]), extras, rest


def _device_links(nodes: gpd.GeoDataFrame, links: gpd.GeoDataFrame, points: gpd.GeoDataFrame, a: np.ndarray,
                  b: np.ndarray, kind: np.ndarray, *, path: Path) -> gpd.GeoDataFrame:
    """Link rows (as :func:`_link_table` makes them) for devices joining nodes ``a`` and ``b`` (positions)."""
    clash = points.index[points.index.isin(links.index)]
    if len(clash):
        raise NetworkError(f"valve / pump point {clash[0]} has the ID of a pipe", path=points.attrs["path"],
                           element=str(clash[0]), fix="give the points IDs of their own")
    xy = shapely.get_coordinates(nodes.geometry.to_numpy())
    bearing = np.radians(points["bearing"].to_numpy(dtype=float))
    along = (xy[b, 0] - xy[a, 0]) * np.sin(bearing) + (xy[b, 1] - xy[a, 1]) * np.cos(bearing)
    flip = np.isfinite(bearing) & (along < 0)
    a, b = np.where(flip, b, a), np.where(flip, a, b)
    unsure = ~np.isfinite(bearing) & np.isin(kind, _DIRECTED)
    if unsure.any():
        log.warning("%s: the flow direction of %s is a guess (no bearing_deg column): check it", path.name,
                    ", ".join(map(str, points.index[unsure][:10])))
    ids = pd.Index(nodes.index)
    pipe_d = links.loc[links["link_type"] == "pipe"].melt(
        value_vars=["start_node", "end_node"], ignore_index=False)["value"]
    node_d = pd.Series(links.loc[pipe_d.index, "diameter_m"].to_numpy(), index=pipe_d.to_numpy()).groupby(level=0).max()
    diameter = np.where(np.isfinite(points["diameter"]), points["diameter"],
                        np.fmax(node_d.reindex(ids[a]).to_numpy(), node_d.reindex(ids[b]).to_numpy()))
    is_valve = kind != "pump"
    setting = points["setting"].to_numpy(dtype=float)
    return gpd.GeoDataFrame(
        {"link_type": np.where(is_valve, "valve", "pump").astype(object),
         "start_node": ids[a].to_numpy(dtype=object), "end_node": ids[b].to_numpy(dtype=object),
         "length_m": np.nan, "diameter_m": np.where(is_valve, diameter, np.nan), "roughness": np.nan,
         "material": pd.array([pd.NA] * len(a), dtype="string"),
         "install_year": pd.array([pd.NA] * len(a), dtype="Int64"),
         "zone": pd.array([pd.NA] * len(a), dtype="string"),
         "status": np.where(kind == "isolation", "open", np.where(is_valve, "active", "open")).astype(object),
         "valve_type": pd.array(np.where(kind == "isolation", "TCV", np.where(is_valve, kind, None)),
                                dtype="string"),
         "setting": np.where(kind == "isolation", 0.0, setting), "minor_loss": 0.0},
        index=pd.Index(points.index, name="link_id"),
        geometry=shapely.linestrings(np.stack([xy[a], xy[b]], axis=1)),
        crs=links.crs,
    )


def _place_isolation_valves(points: gpd.GeoDataFrame | None, links, *, dst, max_m: float) -> gpd.GeoDataFrame:
    """Isolation valves on the nearest pipe within ``max_m`` (unless the layer names it) and its nearer end."""
    if points is None or points.empty:
        return empty_valves(dst)
    path = points.attrs["path"]
    ids = points.index
    pts = points.geometry.to_numpy()
    link_id = pd.Series(points["link_id"].to_numpy(), dtype="string")
    node_id = pd.Series(points["node_id"].to_numpy(), dtype="string")
    pipes = links[links["link_type"] == "pipe"]
    need = link_id.isna().to_numpy()
    if need.any() and len(pipes):
        tree = shapely.STRtree(pipes.geometry.to_numpy())
        (vi, pi), dist = tree.query_nearest(pts[need], max_distance=max_m, return_distance=True, all_matches=False)
        found = np.full(int(need.sum()), None, dtype=object)
        found[vi] = pipes.index.to_numpy()[pi]
        vals = link_id.to_numpy(dtype=object, na_value=None)
        vals[need] = found
        link_id = pd.Series(vals, dtype="string")
        unmatched = int(pd.isna(found).sum())
        if unmatched:
            log.warning("%s: %d isolation valves are more than %g m from any pipe; left unassigned",
                        path.name, unmatched, max_m)
    known = link_id.notna() & link_id.isin(links.index)
    if (link_id.notna() & ~known).any():
        bad = link_id[link_id.notna() & ~known].iloc[0]
        raise NetworkError(f"valve on unknown pipe {bad!r}", path=path, element=str(bad),
                           fix="correct the valves layer's link_id column")
    need_node = node_id.isna() & known
    if need_node.any():
        sel = np.flatnonzero(need_node.to_numpy())
        lines = links.geometry.loc[link_id.iloc[sel].to_numpy()].to_numpy()
        frac = shapely.line_locate_point(lines, pts[sel], normalized=True)
        ends = np.where(frac < 0.5, links.loc[link_id.iloc[sel], "start_node"], links.loc[link_id.iloc[sel], "end_node"])
        vals = node_id.to_numpy(dtype=object, na_value=None)
        vals[sel] = ends
        node_id = pd.Series(vals, dtype="string")
    df = pd.DataFrame({"link_id": link_id.to_numpy(), "node_id": node_id.to_numpy()},
                      index=pd.Index(ids, name="valve_id"))
    df = df.astype({"link_id": "string", "node_id": "string"})
    return gpd.GeoDataFrame(df, geometry=pts, crs=dst)


# --------------------------------------------------------------------------- writing


def _pump_columns(network: Network) -> tuple[list, list]:
    wn = network.wn
    curve, power = [], []
    for lid in network.links.index:
        c = None
        pw = np.nan
        if network.links.at[lid, "link_type"] == "pump" and lid in wn.pump_name_list:
            pump = wn.get_link(lid)
            if pump.pump_type == "HEAD" and pump.pump_curve_name:
                c = json.dumps([list(map(float, p)) for p in wn.get_curve(pump.pump_curve_name).points])
            elif pump.pump_type == "POWER":
                pw = float(pump.power)  # WNTR holds W
        curve.append(c)
        power.append(pw)
    return curve, power


#: Option blocks of a WNTR model that steer a simulation (report and graphics only steer EPANET's report).
_SIMULATION_OPTIONS = ("time", "hydraulic", "quality", "reaction", "energy")


def operational_data(wn: wntr.network.WaterNetworkModel) -> dict[str, int]:
    """What GIS layers cannot hold: counts of controls, rules, patterns, curves and set options.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel

    Returns
    -------
    dict
        ``controls``, ``rules``, ``patterns``, ``curves`` (other than the pump
        head curves, which the ``pump_curve`` column keeps) and ``options``
        (simulation option values that differ from EPANET's defaults:
        durations, time steps, demand multiplier, accuracy, quality...).
    """
    kinds = [type(c).__name__ for _, c in wn.controls()]
    pump_curves = {p.pump_curve_name for _, p in wn.head_pumps()}
    default = wntr.network.WaterNetworkModel().options
    n_options = 0
    for block in _SIMULATION_OPTIONS:
        mine, base = vars(getattr(wn.options, block)), vars(getattr(default, block))
        n_options += sum(1 for k, v in mine.items() if k != "inpfile_units" and v != base.get(k))
    return {
        "controls": sum(k != "Rule" for k in kinds),
        "rules": sum(k == "Rule" for k in kinds),
        "patterns": int(wn.num_patterns),
        "curves": sum(1 for name in wn.curve_name_list if name not in pump_curves),
        "options": n_options,
    }


def _warn_dropped(network: Network, path: Path) -> None:
    """Warn, with counts, about the operational data a GIS file does not keep."""
    dropped = {k: v for k, v in operational_data(network.wn).items() if v}
    if dropped:
        log.warning("%s keeps the network's assets only; not written: %s (keep the .inp for simulations)",
                    path.name, ", ".join(f"{v} {k if v > 1 else k.rstrip('s')}" for k, v in dropped.items()))


def write_gis_network(network: Network, path: Path, *, to_crs: pyproj.CRS) -> list[Path]:
    """Write links, nodes and valves as GIS layers; see :func:`twin.network.write_network`.

    Controls, rules, patterns, curves other than pump curves and simulation
    options have no place in GIS layers: a warning counts what is not
    written (:func:`operational_data`).
    """
    path = Path(path)
    _warn_dropped(network, path)
    suffix = path.suffix.lower()
    links = network.links.copy()
    curve, power = _pump_columns(network)
    links["pump_curve"] = pd.Series(curve, index=links.index, dtype="string")
    links["pump_power_w"] = power
    nodes = network.nodes.copy()
    wn = network.wn
    for key, attr in (("init_level_m", "init_level"), ("min_level_m", "min_level"), ("max_level_m", "max_level"),
                      ("tank_diameter_m", "diameter")):
        vals = [float(getattr(wn.get_node(n), attr)) if t == "tank" and n in wn.tank_name_list else np.nan
                for n, t in zip(nodes.index, nodes["node_type"])]
        nodes[key] = vals
    layers = {"pipes": links, "nodes": nodes, "valves": network.valves.copy()}
    out: list[Path] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gpkg" and path.exists():
        path.unlink()
    driver = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile"}[suffix]
    for name, gdf in layers.items():
        if name == "valves" and gdf.empty:
            continue
        gdf = gdf.reset_index()
        if suffix == ".shp":  # dBase field names hold 10 characters
            gdf = gdf.rename(columns=_SHP_NAMES)
        if not pyproj.CRS(gdf.crs).equals(to_crs):
            gdf = gdf.to_crs(to_crs)
        for col in gdf.columns:
            if col != gdf.geometry.name and (str(gdf[col].dtype) in ("string", "str") or gdf[col].dtype == object):
                gdf[col] = gdf[col].astype(object).where(gdf[col].notna(), None)
        if suffix == ".gpkg":
            target, layer = path, name
        else:
            target, layer = (path if name == "pipes" else _sibling(path, name)), None
            if target.exists():
                target.unlink()
        try:
            gdf.to_file(target, layer=layer, driver=driver, engine="pyogrio")
        except Exception as exc:
            raise NetworkError(f"cannot write the {name} layer ({exc})", path=target) from exc
        if target not in out:
            out.append(target)
    log.info("wrote %s: %d links, %d nodes, %d valves (%s)", path.name, len(links), len(nodes),
             len(network.valves), to_crs.to_string())
    return out
