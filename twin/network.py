"""Network import and export: EPANET ``.inp`` and GIS layers, held in a metric CRS.

A :class:`Network` bundles the hydraulic model (a WNTR ``WaterNetworkModel``
in SI units) with GeoPandas tables of its nodes, links and isolation valves,
all in one projected CRS in metres. Every later stage (meters, demand,
hydraulics, localisation, repair, maps) starts from it.

Sources
-------
- EPANET ``.inp`` in any flow units, read by WNTR. The file carries no CRS,
  so the caller names the CRS of its coordinates (``crs=``). Zones / DMAs
  come from the ``[TAGS]`` section.
- GIS layers (``.gpkg``, ``.geojson``, ``.shp``): see :mod:`twin.gis`.

Examples
--------
>>> net = read_network("L-TOWN.inp", crs="EPSG:32650")       # doctest: +SKIP
>>> net.links.loc["p1", "length_m"]                           # doctest: +SKIP
26.9292
>>> write_network(net, "l-town.gpkg")                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pyproj
import shapely
import wntr

from twin import settings
from twin.crs import degrees_declared_as_metres, is_pseudo_crs, parse_crs, require_projected, transform_xy
from twin.errors import CRSError, InputError, NetworkError, require_file
from twin.validate import validate_network

log = logging.getLogger(__name__)

__all__ = [
    "GIS_SUFFIXES",
    "Network",
    "graph_from_network",
    "read_network",
    "validate_network",
    "write_network",
]

#: File suffixes read and written as GIS layers.
GIS_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp")

NODE_COLUMNS = ["node_type", "elevation_m", "base_demand_m3s", "zone"]
LINK_COLUMNS = [
    "link_type",
    "start_node",
    "end_node",
    "length_m",
    "diameter_m",
    "roughness",
    "material",
    "install_year",
    "zone",
    "status",
]
VALVE_COLUMNS = ["link_id", "node_id"]


@dataclass(frozen=True)
class Network:
    """A water network in a projected metric CRS.

    Attributes
    ----------
    wn : wntr.network.WaterNetworkModel
        The hydraulic model, SI units (m, m³/s); node coordinates and link
        vertices in ``crs``.
    crs : pyproj.CRS
        Projected CRS in metres of every geometry here.
    nodes : geopandas.GeoDataFrame
        Index ``node_id`` (str). Columns ``node_type`` ("junction", "tank",
        "reservoir"), ``elevation_m`` (junction/tank elevation, reservoir
        head; NaN where the source had none), ``base_demand_m3s``, ``zone``
        (str or NA); Point geometry.
    links : geopandas.GeoDataFrame
        Index ``link_id`` (str). Columns ``link_type`` ("pipe", "pump",
        "valve"), ``start_node``, ``end_node``, ``length_m`` (pipes; NaN for
        pumps and valves), ``diameter_m``, ``roughness`` (Hazen-Williams C,
        or as the model's headloss formula says), ``material``,
        ``install_year`` (Int64), ``zone``, ``status`` ("open", "closed",
        "active", "cv"); extra columns ``valve_type``, ``setting``,
        ``minor_loss``. LineString geometry from the start node through the
        vertices to the end node.
    valves : geopandas.GeoDataFrame
        Isolation valves: index ``valve_id``; ``link_id`` (the pipe it sits
        on), ``node_id`` (the nearer end node); Point. Empty for ``.inp``.
    source : str
        The file the network was read from.
    """

    wn: wntr.network.WaterNetworkModel
    crs: pyproj.CRS
    nodes: gpd.GeoDataFrame
    links: gpd.GeoDataFrame
    valves: gpd.GeoDataFrame
    source: str

    def to_graph(self) -> nx.MultiGraph:
        """Undirected multigraph with ``length_m`` on edges; see :func:`graph_from_network`."""
        return graph_from_network(self)

    @property
    def pipes(self) -> gpd.GeoDataFrame:
        """The links that are pipes."""
        return self.links[self.links["link_type"] == "pipe"]

    def summary(self) -> dict[str, Any]:
        """Counts, total pipe length (km), lon/lat bounding box and zones, JSON-friendly."""
        node_counts = self.nodes["node_type"].value_counts()
        link_counts = self.links["link_type"].value_counts()
        bbox = lonlat_bounds(self)
        zones = sorted({str(z) for z in pd.concat([self.nodes["zone"], self.links["zone"]]).dropna()})
        return {
            "source": self.source,
            "crs": self.crs.to_string(),
            "junctions": int(node_counts.get("junction", 0)),
            "reservoirs": int(node_counts.get("reservoir", 0)),
            "tanks": int(node_counts.get("tank", 0)),
            "pipes": int(link_counts.get("pipe", 0)),
            "pumps": int(link_counts.get("pump", 0)),
            "valves": int(link_counts.get("valve", 0)),
            "isolation_valves": int(len(self.valves)),
            "pipe_length_km": float(self.pipes["length_m"].sum() / 1000.0),
            "bbox_lonlat": bbox,
            "zones": zones,
        }


# --------------------------------------------------------------------------- reading


def read_network(
    path: str | Path,
    *,
    crs: Any = None,
    to_crs: Any = None,
    **gis_options: Any,
) -> Network:
    """Read a network from an EPANET ``.inp`` or a GIS file.

    Parameters
    ----------
    path : str or Path
        ``.inp``, ``.gpkg``, ``.geojson`` or ``.shp``.
    crs : any pyproj input, optional
        CRS of the file's coordinates. Required for ``.inp`` (the format has
        none); for GIS files it overrides the layer's own CRS.
    to_crs : any pyproj input, optional
        Projected metric CRS to hold the network in. Default: ``crs`` when it
        is projected, else ``settings.DEFAULT_CRS`` (EPSG:4548).
    **gis_options
        Passed to :func:`twin.gis.read_gis_network` (``columns``,
        ``snap_tolerance_m``, ``diameter_unit``, layer names...).

    Returns
    -------
    Network

    Raises
    ------
    MissingFileError
        The file does not exist.
    NetworkError
        The file cannot be parsed or is not a usable network (the message
        names the file, the line or element where known, and the fix).
    CRSError
        The CRS is missing or unknown, or the coordinates are clearly lon/lat
        degrees while a metric CRS was declared.
    """
    p = require_file(path, what="network")
    suffix = p.suffix.lower()
    if suffix == ".inp":
        if gis_options:
            raise InputError(
                f"options {sorted(gis_options)} apply to GIS files only",
                path=p,
                fix="drop them for an .inp file",
            )
        return _read_inp(p, crs=crs, to_crs=to_crs)
    if suffix in GIS_SUFFIXES:
        from twin.gis import read_gis_network

        return read_gis_network(p, crs=crs, to_crs=to_crs, **gis_options)
    raise NetworkError(
        f"unknown network file type {p.suffix or '(none)'!r}",
        path=p,
        fix="give an EPANET .inp, a GeoPackage (.gpkg), GeoJSON (.geojson) or Shapefile (.shp)",
    )


def internal_crs(crs: pyproj.CRS | None, to_crs: Any = None) -> pyproj.CRS:
    """The projected CRS a network is held in: ``to_crs``, else ``crs`` if projected, else the default."""
    if to_crs is not None:
        return require_projected(to_crs, what="target")
    if crs is not None and crs.is_projected:
        return require_projected(crs, what="network")
    return require_projected(settings.DEFAULT_CRS, what="default")


_LINE_RE = re.compile(r"at line (\d+)")


def _inp_error(path: Path, exc: BaseException, lines: list[str]) -> NetworkError:
    """Translate a WNTR / EPANET parse exception into a NetworkError naming the line."""
    inner: BaseException = exc
    while inner.__cause__ is not None and "(Error 200)" in str(inner):
        inner = inner.__cause__
    text = " ".join(str(inner).split())
    line_no: int | None = None
    m = _LINE_RE.search(text)
    if m:
        line_no = int(m.group(1))
        text = _LINE_RE.sub("", text).rstrip(",: ")
        text = text.split(":")[0].rstrip(",: ") if "(Error" in text else text
    elif isinstance(inner, ValueError):
        # float('abc') and friends: find the offending token in the file.
        m2 = re.search(r"'([^']*)'", str(inner))
        if m2:
            token = m2.group(1)
            for i, line in enumerate(lines, start=1):
                body = line.split(";", 1)[0]
                if token in body.split():
                    line_no = i
                    break
            text = f"value {token!r} is not a number" if "float" in str(inner) or "int" in str(inner) else text
    elif isinstance(inner, KeyError):
        token = str(inner.args[0]) if inner.args else ""
        text = f"reference to undefined element {token!r}"
        for i, line in enumerate(lines, start=1):
            body = line.split(";", 1)[0]
            if token and token in body.split():
                line_no = i
                break
    where = ""
    if line_no is not None:
        section = _section_at(lines, line_no)
        snippet = lines[line_no - 1].strip()[:60] if 0 < line_no <= len(lines) else ""
        where = f"line {line_no}" + (f" in {section}" if section else "") + (f" ({snippet!r})" if snippet else "")
    reason = f"{where}: {text}" if where else f"cannot parse EPANET input: {text}"
    return NetworkError(
        reason,
        path=path,
        fix="correct that line (see the EPANET 2.2 manual for the section's format), "
        "or export the file again from EPANET",
    )


def _section_at(lines: list[str], line_no: int) -> str | None:
    for i in range(min(line_no, len(lines)) - 1, -1, -1):
        s = lines[i].strip()
        if s.startswith("["):
            return s.split()[0]
    return None


_INP_SECTIONS = {
    "[OPTIONS]", "[TITLE]", "[JUNCTIONS]", "[RESERVOIRS]", "[TANKS]", "[PIPES]", "[PUMPS]", "[VALVES]",
    "[EMITTERS]", "[CURVES]", "[PATTERNS]", "[ENERGY]", "[STATUS]", "[CONTROLS]", "[RULES]", "[DEMANDS]",
    "[QUALITY]", "[REACTIONS]", "[SOURCES]", "[MIXING]", "[TIMES]", "[REPORT]", "[COORDINATES]",
    "[VERTICES]", "[LABELS]", "[BACKDROP]", "[TAGS]", "[END]",
}
# Section -> (minimum fields, columns that must be numbers, what the line holds).
_INP_LAYOUT = {
    "[JUNCTIONS]": (2, (1, 2), "ID elevation, optional demand pattern"),
    "[RESERVOIRS]": (2, (1,), "ID head, optional pattern"),
    "[TANKS]": (6, (1, 2, 3, 4, 5), "ID elevation init_level min_level max_level diameter, optional min_vol curve"),
    "[PIPES]": (6, (3, 4, 5), "ID node1 node2 length diameter roughness, optional minor_loss status"),
    "[PUMPS]": (4, (), "ID node1 node2 HEAD curve | POWER kW"),
    "[VALVES]": (6, (3,), "ID node1 node2 diameter type setting [minor_loss]"),
    "[COORDINATES]": (3, (1, 2), "node X Y"),
    "[VERTICES]": (3, (1, 2), "link X Y"),
}


def _canonical_section(header: str) -> str:
    sec = header.split()[0].upper()
    if sec in _INP_SECTIONS:
        return sec
    for alt in (sec.replace("]", "S]"), sec.replace("S]", "]")):
        if alt in _INP_SECTIONS:
            return alt
    return sec


def _prescan_inp(path: Path, lines: list[str]) -> set[str]:
    """Check section names, field counts and numbers line by line, naming the first bad line.

    WNTR's own messages for these cases are cryptic ("'NoneType' object has
    no attribute 'factor'" for a truncated file), so the common mistakes are
    caught here first with the line number and what the line should hold.
    Returns the IDs listed in ``[COORDINATES]``.
    """
    with_xy: set[str] = set()
    section = None
    seen_end = False
    last = max((i for i, ln in enumerate(lines, start=1) if ln.strip()), default=0)
    for i, raw in enumerate(lines, start=1):
        body = raw.split(";", 1)[0].strip()
        if not body:
            continue
        if body.startswith("["):
            section = _canonical_section(body)
            if section not in _INP_SECTIONS:
                raise NetworkError(
                    f"line {i}: unknown section {body.split()[0]!r}",
                    path=path,
                    fix="correct the section name (EPANET sections: [JUNCTIONS], [PIPES], [COORDINATES]...) "
                    "or delete the section",
                )
            if section == "[END]":
                seen_end = True
                break
            continue
        if section is None:
            raise NetworkError(
                f"line {i}: text before the first [SECTION] header ({body[:40]!r})",
                path=path,
                fix="start the file with a section such as [TITLE] or [JUNCTIONS], or comment the line with ';'",
            )
        layout = _INP_LAYOUT.get(section)
        if layout is None:
            continue
        n_min, numeric, form = layout
        fields = body.split()
        if section == "[COORDINATES]":
            with_xy.add(fields[0])
        if len(fields) < n_min:
            hint = " (the file looks truncated)" if i == last else ""
            raise NetworkError(
                f"line {i} in {section}: {len(fields)} fields, expected at least {n_min} "
                f"({form}){hint}",
                path=path,
                fix="complete the line or export the network again from EPANET",
            )
        for col in numeric:
            if col < len(fields):
                try:
                    float(fields[col])
                except ValueError:
                    raise NetworkError(
                        f"line {i} in {section}: {fields[col]!r} is not a number (element {fields[0]}, "
                        f"field {col + 1} of '{form}')",
                        path=path,
                        element=None,
                        fix="write a plain number with '.' as the decimal mark",
                    ) from None
    if not seen_end:
        log.warning("%s has no [END] line: the file may be truncated", path)
    return with_xy


def _decode_inp(path: Path, raw: bytes) -> tuple[str, str]:
    """The file's text and the encoding it was read with (UTF-8, with or without BOM, else GB18030)."""
    if b"\x00" in raw[:4096]:
        raise NetworkError(
            "the file is binary, not EPANET text input",
            path=path,
            fix="give the .inp text file (EPANET: File > Export > Network)",
        )
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise NetworkError(  # pragma: no cover - gb18030 decodes nearly any byte string
        "the file is neither UTF-8 nor GB18030 text",
        path=path,
        fix="save the .inp as UTF-8 text",
    )


def _load_inp(path: Path) -> tuple[wntr.network.WaterNetworkModel, set[str]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NetworkError(f"cannot read the file ({exc.strerror})", path=path, fix="check permissions") from exc
    if not raw.strip():
        raise NetworkError("the file is empty", path=path, fix="give an EPANET .inp network with [JUNCTIONS] and [PIPES]")
    text, encoding = _decode_inp(path, raw)
    lines = text.splitlines()
    with_xy = _prescan_inp(path, lines)
    # WNTR reads UTF-8 only: files with a BOM or in GB18030 (Chinese Windows) go through a UTF-8 copy.
    needs_copy = raw.startswith(b"\xef\xbb\xbf") or encoding != "utf-8-sig"
    with tempfile.TemporaryDirectory() as tmp:
        source = path
        if needs_copy:
            source = Path(tmp) / path.name
            source.write_text(text, encoding="utf-8")
            log.debug("%s read as %s", path, encoding)
        try:
            wn = wntr.network.WaterNetworkModel(str(source))
        except Exception as exc:  # WNTR raises EpanetException, ValueError, KeyError, RuntimeError...
            err = _inp_error(path, exc, lines)
            if not any(ln.strip().upper().startswith("[END]") for ln in lines):
                err = NetworkError(
                    f"{err.reason} (the file has no [END] line: it looks truncated)", path=path, fix=err.fix
                )
            raise err from exc
    wn.name = str(path)
    if wn.num_nodes == 0:
        raise NetworkError(
            "no nodes found: the file has no [JUNCTIONS], [RESERVOIRS] or [TANKS] data",
            path=path,
            fix="check that this is an EPANET .inp network file and that it is complete",
        )
    if wn.num_links == 0:
        raise NetworkError(
            "no links found: the file has no [PIPES], [PUMPS] or [VALVES] data (truncated?)",
            path=path,
            fix="check that the file is complete",
        )
    return wn, with_xy


def _read_inp(path: Path, *, crs: Any, to_crs: Any) -> Network:
    wn, with_xy = _load_inp(path)
    if crs is None:
        raise CRSError(
            "an EPANET .inp file has no coordinate reference system",
            path=path,
            fix="name the CRS of its coordinates, e.g. --crs EPSG:32650",
        )
    pseudo = is_pseudo_crs(crs)
    src: Any = str(crs).upper().replace("-", "") if pseudo else parse_crs(crs, what="--crs")
    dst = internal_crs(None if pseudo else src, to_crs)
    names = list(wn.node_name_list)
    missing = [n for n in names if n not in with_xy]
    if missing:
        raise NetworkError(
            f"{len(missing)} of {len(names)} nodes have no coordinates, e.g. {missing[:3]}",
            path=path,
            fix="add them to the [COORDINATES] section (a file cut short loses that section at its end)",
        )
    coords = np.array([wn.get_node(n).coordinates for n in names], dtype=float).reshape(-1, 2)
    check_declared_crs(coords, src, path=path,
                       length_ratio=_inp_length_ratio(wn, dict(zip(names, map(tuple, coords)))))
    if pseudo or not src.equals(dst):
        wn = _transform_wn(wn, src, dst, path=path)
    nodes, links = tables_from_wn(wn, dst)
    net = Network(
        wn=wn,
        crs=dst,
        nodes=nodes,
        links=links,
        valves=empty_valves(dst),
        source=str(path),
    )
    _log_import(net)
    return net


def check_declared_crs(coords: np.ndarray, src: Any, *, path: Path, length_ratio: float | None = None) -> None:
    """Refuse coordinates that clearly do not fit the declared CRS.

    Raises :class:`CRSError` when lon/lat degrees are declared as a metric
    CRS, or when values beyond +-180 / +-90 are declared as degrees.
    """
    if coords.size == 0:
        return
    x, y = coords[:, 0], coords[:, 1]
    geographic = is_pseudo_crs(src) or not parse_crs(src).is_projected
    if geographic:
        if np.nanmax(np.abs(x)) > 180.0 or np.nanmax(np.abs(y)) > 90.0:
            name = src if is_pseudo_crs(src) else parse_crs(src).to_string()
            raise CRSError(
                f"coordinates reach x {np.nanmax(np.abs(x)):.1f}, y {np.nanmax(np.abs(y)):.1f}: not lon/lat degrees, "
                f"but {name} is geographic",
                path=path,
                fix="pass the projected CRS the coordinates are in, e.g. --crs EPSG:4548 or EPSG:32650",
            )
        return
    if degrees_declared_as_metres(x, y, src, length_ratio=length_ratio):
        raise CRSError(
            f"coordinates look like lon/lat degrees (x {np.nanmin(x):.4f}..{np.nanmax(x):.4f}, "
            f"y {np.nanmin(y):.4f}..{np.nanmax(y):.4f}) but {parse_crs(src).to_string()} is in metres",
            path=path,
            fix="pass --crs EPSG:4326 (or the geographic CRS they are in)",
        )


def _inp_length_ratio(wn: wntr.network.WaterNetworkModel, xy: dict[str, tuple[float, float]]) -> float | None:
    """Median of stated pipe length (m) over coordinate distance of its ends; None if undefined."""
    if not wn.num_pipes:
        return None
    lengths = []
    dists = []
    for _, pipe in wn.pipes():
        a = xy[pipe.start_node_name]
        b = xy[pipe.end_node_name]
        lengths.append(pipe.length)
        dists.append(np.hypot(a[0] - b[0], a[1] - b[1]))
    lengths_a = np.asarray(lengths)
    dists_a = np.asarray(dists)
    ok = dists_a > 0
    if not ok.any():
        return None
    return float(np.median(lengths_a[ok] / dists_a[ok]))


def _transform_wn(
    wn: wntr.network.WaterNetworkModel, src: Any, dst: pyproj.CRS, *, path: Path | None = None
) -> wntr.network.WaterNetworkModel:
    """A copy of ``wn`` with node coordinates and link vertices transformed from ``src`` to ``dst``."""
    wn = copy.deepcopy(wn)
    names = list(wn.node_name_list)
    xy = np.array([wn.get_node(n).coordinates for n in names], dtype=float).reshape(-1, 2)
    x, y = transform_xy(xy[:, 0], xy[:, 1], from_crs=src, to_crs=dst)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        name = src if isinstance(src, str) else src.to_string()
        raise CRSError(
            f"coordinates cannot be transformed from {name} to {dst.to_string()}",
            path=path,
            fix="check the --crs value: the coordinates do not fit it",
        )
    for n, xi, yi in zip(names, x.tolist(), y.tolist()):
        wn.get_node(n).coordinates = (xi, yi)
    with_vertices = [(name, link) for name, link in wn.links() if link.vertices]
    if with_vertices:
        counts = [len(link.vertices) for _, link in with_vertices]
        vxy = np.array([v for _, link in with_vertices for v in link.vertices], dtype=float)
        vx, vy = transform_xy(vxy[:, 0], vxy[:, 1], from_crs=src, to_crs=dst)
        pos = 0
        for (_, link), k in zip(with_vertices, counts):
            link.vertices = list(zip(vx[pos : pos + k].tolist(), vy[pos : pos + k].tolist()))
            pos += k
    return wn


def _status_name(link: Any) -> str:
    if getattr(link, "link_type", "") == "Pipe" and getattr(link, "check_valve", False):
        return "cv"
    status = getattr(link, "initial_status", None)
    name = getattr(status, "name", str(status))
    return str(name).lower()


def tables_from_wn(
    wn: wntr.network.WaterNetworkModel, crs: pyproj.CRS
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Node and link GeoDataFrames (see :class:`Network`) from a WNTR model whose coordinates are in ``crs``.

    ``material`` and ``install_year`` are NA: EPANET has no field for them.
    """
    node_rows = []
    for name, node in wn.nodes():
        kind = node.node_type.lower()
        if kind == "junction":
            elev = node.elevation
            demand = float(sum(ts.base_value for ts in node.demand_timeseries_list))
        elif kind == "tank":
            elev = node.elevation
            demand = 0.0
        else:
            elev = node.base_head
            demand = 0.0
        x, y = node.coordinates
        node_rows.append((name, kind, float(elev), demand, node.tag, float(x), float(y)))
    nodes_df = pd.DataFrame(
        node_rows, columns=["node_id", "node_type", "elevation_m", "base_demand_m3s", "zone", "x", "y"]
    ).set_index("node_id")
    nodes_df["zone"] = nodes_df["zone"].astype("string")
    nodes = gpd.GeoDataFrame(
        nodes_df[NODE_COLUMNS],
        geometry=gpd.points_from_xy(nodes_df["x"], nodes_df["y"]),
        crs=crs,
    )
    pos = {n: (x, y) for n, x, y in zip(nodes_df.index, nodes_df["x"], nodes_df["y"])}

    link_rows = []
    coord_list = []
    for name, link in wn.links():
        ltype = link.link_type.lower()
        length = float(link.length) if ltype == "pipe" else np.nan
        diameter = float(link.diameter) if ltype in ("pipe", "valve") else np.nan
        rough = float(link.roughness) if ltype == "pipe" else np.nan
        minor = float(getattr(link, "minor_loss", np.nan)) if ltype in ("pipe", "valve") else np.nan
        vtype = link.valve_type if ltype == "valve" else None
        setting = float(link.initial_setting) if ltype == "valve" and link.initial_setting is not None else np.nan
        link_rows.append(
            (name, ltype, link.start_node_name, link.end_node_name, length, diameter, rough, link.tag,
             _status_name(link), vtype, setting, minor)
        )
        coord_list.append([pos[link.start_node_name], *link.vertices, pos[link.end_node_name]])
    links_df = pd.DataFrame(
        link_rows,
        columns=["link_id", "link_type", "start_node", "end_node", "length_m", "diameter_m", "roughness",
                 "zone", "status", "valve_type", "setting", "minor_loss"],
    ).set_index("link_id")
    links_df["material"] = pd.Series(pd.NA, index=links_df.index, dtype="string")
    links_df["install_year"] = pd.Series(pd.NA, index=links_df.index, dtype="Int64")
    links_df["zone"] = links_df["zone"].astype("string")
    links_df["valve_type"] = links_df["valve_type"].astype("string")
    geoms = shapely.linestrings(np.concatenate([np.asarray(c, dtype=float) for c in coord_list]) if coord_list
                                else np.empty((0, 2)),
                                indices=np.repeat(np.arange(len(coord_list)), [len(c) for c in coord_list]))
    links = gpd.GeoDataFrame(
        links_df[LINK_COLUMNS + ["valve_type", "setting", "minor_loss"]],
        geometry=geoms if len(coord_list) else [],
        crs=crs,
    )
    return nodes, links


def empty_valves(crs: pyproj.CRS) -> gpd.GeoDataFrame:
    """An empty isolation-valve layer with the contract's columns."""
    df = pd.DataFrame(
        {"link_id": pd.Series(dtype="string"), "node_id": pd.Series(dtype="string")},
        index=pd.Index([], name="valve_id", dtype="object"),
    )
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def lonlat_bounds(network: Network) -> tuple[float, float, float, float]:
    """Bounding box of the nodes in WGS84 lon/lat degrees: (west, south, east, north)."""
    if network.nodes.empty:
        return (np.nan, np.nan, np.nan, np.nan)
    x0, y0, x1, y1 = network.nodes.total_bounds
    xs = np.array([x0, x1, x1, x0])
    ys = np.array([y0, y0, y1, y1])
    lon, lat = transform_xy(xs, ys, from_crs=network.crs, to_crs="EPSG:4326")
    return (float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat)))


def _log_import(net: Network) -> None:
    s = net.summary()
    log.info(
        "read %s: %d junctions, %d reservoirs, %d tanks, %d pipes (%.2f km), %d pumps, %d valves; CRS %s",
        Path(net.source).name, s["junctions"], s["reservoirs"], s["tanks"], s["pipes"], s["pipe_length_km"],
        s["pumps"], s["valves"], s["crs"],
    )


# --------------------------------------------------------------------------- graph


def graph_from_network(network: Network) -> nx.MultiGraph:
    """Undirected multigraph of the network for pipe distances.

    Parameters
    ----------
    network : Network

    Returns
    -------
    networkx.MultiGraph
        Nodes are node IDs (attributes ``node_type``, ``x``, ``y`` in the
        network CRS); one edge per link, keyed by link ID, with ``link_id``,
        ``link_type`` and ``length_m`` (pipe length; pumps and valves get
        their geometry length, usually a few metres).
    """
    g = nx.MultiGraph(crs=network.crs.to_string())
    nodes = network.nodes
    xs = nodes.geometry.x.to_numpy()
    ys = nodes.geometry.y.to_numpy()
    g.add_nodes_from(
        (nid, {"node_type": t, "x": float(x), "y": float(y)})
        for nid, t, x, y in zip(nodes.index, nodes["node_type"], xs, ys)
    )
    links = network.links
    length = links["length_m"].to_numpy(dtype=float)
    geom_len = links.geometry.length.to_numpy()
    length = np.where(np.isfinite(length), length, geom_len)
    g.add_edges_from(
        (s, e, lid, {"link_id": lid, "link_type": t, "length_m": float(metres)})
        for lid, s, e, t, metres in zip(links.index.tolist(), links["start_node"].tolist(),
                                        links["end_node"].tolist(), links["link_type"].tolist(), length.tolist())
    )
    return g


# --------------------------------------------------------------------------- writing


def write_network(network: Network, path: str | Path, *, to_crs: Any = None) -> list[Path]:
    """Write a network to ``.inp`` or GIS layers.

    Parameters
    ----------
    network : Network
    path : str or Path
        ``.inp``: EPANET 2.2 input file, in the model's original flow units,
        zones in ``[TAGS]``. ``.gpkg``: layers ``pipes`` (every link, with
        ``link_type``), ``nodes`` and ``valves``. ``.geojson``: the links to
        ``path`` and the nodes / valves beside it as ``<stem>.nodes.geojson``
        and ``<stem>.valves.geojson`` (read back together by
        :func:`read_network`). ``.shp``: the same as three shapefiles.
    to_crs : any pyproj input, optional
        CRS of the written coordinates (default: the network's CRS).

    Returns
    -------
    list of Path
        The files written.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    target = parse_crs(to_crs, what="--to-crs") if to_crs is not None else network.crs
    if suffix == ".inp":
        return [_write_inp(network, p, target)]
    if suffix in GIS_SUFFIXES:
        from twin.gis import write_gis_network

        return write_gis_network(network, p, to_crs=target)
    raise NetworkError(
        f"cannot write network files of type {p.suffix or '(none)'!r}",
        path=p,
        fix="use .inp, .gpkg, .geojson or .shp",
    )


def _write_inp(network: Network, path: Path, target: pyproj.CRS) -> Path:
    wn = network.wn
    if not target.equals(network.crs):
        wn = _transform_wn(wn, network.crs, target)
    units = wn.options.hydraulic.inpfile_units or "LPS"
    path.parent.mkdir(parents=True, exist_ok=True)
    # WNTR writes straight to the path; write beside it then rename so a failure leaves no half file.
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_file = Path(tmp) / path.name
        try:
            wntr.network.io.write_inpfile(wn, str(tmp_file), units=units, version=2.2)
        except Exception as exc:
            raise NetworkError(f"cannot write EPANET input: {exc}", path=path) from exc
        tmp_file.replace(path)
    log.info("wrote %s (%d nodes, %d links, %s)", path.name, wn.num_nodes, wn.num_links, target.to_string())
    return path
