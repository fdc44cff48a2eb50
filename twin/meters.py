"""The meter registry: read, validate and join meters to the pipe network.

Three kinds of device are registered (``../shared/DESIGN.md``):

- ``customer``: a billing meter with a cumulative register (m³), located by
  lon/lat and snapped to its nearest pipe by :func:`join_meters`;
- ``pressure``: a pressure logger on a network node (``node_id``); on a tank
  the "pressure" is the water level;
- ``flow``: a flow meter on a network link (``link_id``).

Examples
--------
>>> meters = read_meters("meters.csv", crs="GCJ02")          # doctest: +SKIP
>>> meters, rejected = validate_meters(meters, network)      # doctest: +SKIP
>>> join = join_meters(meters, network, max_distance_m=50)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import settings
from twin.crs import is_pseudo_crs, parse_crs, transform_xy
from twin.errors import InputError, MeterError, require_file
from twin.network import Network

log = logging.getLogger(__name__)

#: Device kinds of the registry.
KINDS: tuple[str, ...] = ("customer", "pressure", "flow")

#: Columns every registry must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("meter_id", "kind", "lon", "lat")

#: Margin around the network's bounding box inside which a meter is "in the
#: network's area", metres.
AREA_MARGIN_M = 2000.0

#: Distances that differ by less than this are a tie in the join, metres.
TIE_TOLERANCE_M = 1e-6

#: A plausible join: at most this share of customer meters unmatched...
JOIN_UNMATCHED_WARN = 0.10
#: ... and a median distance to the nearest pipe no longer than a service
#: connection, metres. Beyond either the join gets a warning naming the cause.
JOIN_MEDIAN_WARN_M = 25.0
#: More than this share unmatched: the meters and the network do not fit (error).
JOIN_UNMATCHED_ERROR = 0.5
#: Fewer customer meters with coordinates than this: no verdict on the join.
JOIN_MIN_METERS = 20

#: Chinese web-map datums tried when a join looks wrong, with their --meters-crs.
WEB_DATUMS = {"GCJ02": "GCJ-02", "BD09": "BD-09"}



# --------------------------------------------------------------------------- reading


def _clean_str(s: pd.Series) -> pd.Series:
    """Strip strings; empty strings and nulls become ``pd.NA``; dtype ``string``."""
    out = s.astype("string").str.strip()
    return out.mask(out.isna() | (out == ""), pd.NA)


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        else:
            raise MeterError(
                f"unsupported meter registry format {suffix!r}",
                path=path,
                fix="give a .csv or .parquet file",
            )
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, MeterError):
            raise
        raise MeterError(
            f"cannot read the meter registry ({type(exc).__name__}: {exc})",
            path=path,
            fix="give a CSV with a header row (meter_id,kind,lon,lat,node_id,link_id) or a Parquet file",
        ) from exc
    return df


def meters_from_frame(
    df: pd.DataFrame, *, crs: Any = settings.MAP_CRS, source: str | Path = "meters"
) -> gpd.GeoDataFrame:
    """Normalise a raw registry table into the registry GeoDataFrame.

    Parameters
    ----------
    df : DataFrame
        Columns ``meter_id``, ``kind``, ``lon``, ``lat`` and optionally
        ``node_id``, ``link_id`` and any extra columns (kept as they are).
    crs : any pyproj input or ``"GCJ02"`` / ``"BD09"``
        CRS of the ``lon``/``lat`` columns (x first). Converted to EPSG:4326.
    source : str or Path
        Name of the file, for error messages.

    Returns
    -------
    GeoDataFrame
        As :func:`read_meters`.
    """
    df = df.copy()
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise MeterError(
            f"meter registry lacks the column(s) {', '.join(missing)} (has {', '.join(df.columns) or 'none'})",
            path=source,
            fix="the registry needs meter_id, kind, lon, lat (and node_id / link_id for loggers)",
            data={"missing_columns": missing, "columns": list(df.columns)},
        )
    for col in ("node_id", "link_id"):
        if col not in df.columns:
            df[col] = pd.NA
    df["source_row"] = np.arange(1, len(df) + 1, dtype=np.int64)
    df["meter_id"] = _clean_str(df["meter_id"])
    df["kind"] = _clean_str(df["kind"]).str.lower()
    df["node_id"] = _clean_str(df["node_id"])
    df["link_id"] = _clean_str(df["link_id"])
    x = pd.to_numeric(df["lon"], errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(df["lat"], errors="coerce").to_numpy(dtype=np.float64)
    if len(df) and not _is_wgs84(crs):
        ok = np.isfinite(x) & np.isfinite(y)
        tx = np.full_like(x, np.nan)
        ty = np.full_like(y, np.nan)
        if ok.any():
            tx[ok], ty[ok] = transform_xy(x[ok], y[ok], from_crs=crs, to_crs=settings.MAP_CRS)
        x, y = tx, ty
    df["lon"] = x
    df["lat"] = y
    geom = gpd.points_from_xy(x, y)
    geom[~(np.isfinite(x) & np.isfinite(y))] = None
    out = gpd.GeoDataFrame(df, geometry=geom, crs=settings.MAP_CRS)
    out = out.set_index("meter_id", drop=True)
    out.index.name = "meter_id"
    return out


def _is_wgs84(crs: Any) -> bool:
    if crs is None:
        return True
    if isinstance(crs, str) and crs.strip().upper() in ("EPSG:4326", "WGS84", "4326"):
        return True
    if is_pseudo_crs(crs):
        return False
    return parse_crs(crs, what="meters CRS").equals(parse_crs(settings.MAP_CRS))


def read_meters(path: str | Path, *, crs: Any = settings.MAP_CRS) -> gpd.GeoDataFrame:
    """Read a meter registry (``.csv`` or ``.parquet``).

    Parameters
    ----------
    path : str or Path
        The registry, one row per device (DESIGN.md data contract).
    crs : any pyproj input or ``"GCJ02"`` / ``"BD09"``, default ``"EPSG:4326"``
        CRS of the file's ``lon``/``lat`` columns. Chinese web-map
        coordinates (Amap/Tencent GCJ-02, Baidu BD-09) are converted to WGS84.

    Returns
    -------
    GeoDataFrame
        In EPSG:4326, index ``meter_id`` (string; not yet checked for
        duplicates), columns ``kind`` (lower case), ``lon``, ``lat`` (WGS84
        degrees, NaN where unreadable), ``node_id``, ``link_id`` (string or
        NA), ``source_row`` (1-based data row in the file), any extra columns,
        and Point geometry (None where the coordinates are missing).

    Raises
    ------
    MissingFileError
        The file does not exist.
    MeterError
        The file cannot be read or lacks a required column.
    """
    p = require_file(path, what="meter registry")
    df = _read_table(p)
    meters = meters_from_frame(df, crs=crs, source=p)
    meters.attrs["source"] = str(p)
    return meters


# --------------------------------------------------------------------------- validation


def _network_bbox(network: Network) -> tuple[float, float, float, float]:
    b = network.nodes.geometry.total_bounds
    if not np.all(np.isfinite(b)):
        b = network.links.geometry.total_bounds
    return tuple(float(v) for v in b)  # type: ignore[return-value]


def _to_network_xy(lon: np.ndarray, lat: np.ndarray, network: Network) -> tuple[np.ndarray, np.ndarray]:
    x = np.full_like(lon, np.nan, dtype=np.float64)
    y = np.full_like(lat, np.nan, dtype=np.float64)
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    if ok.any():
        x[ok], y[ok] = transform_xy(lon[ok], lat[ok], from_crs=settings.MAP_CRS, to_crs=network.crs)
    return x, y


class _FirstReason:
    """One rejection reason per row: the first check that marks a row wins.

    Parameters
    ----------
    n : int
        Number of rows.
    """

    def __init__(self, n: int) -> None:
        self.reason = np.full(n, None, dtype=object)

    def mark(self, mask: np.ndarray, text: str | Callable[[np.ndarray], list[str]]) -> None:
        """Give rows in ``mask`` without a reason yet ``text`` (or ``text(row_positions)``)."""
        sel = np.flatnonzero(mask & pd.isna(self.reason))
        if len(sel):
            self.reason[sel] = text(sel) if callable(text) else text

    @property
    def bad(self) -> np.ndarray:
        """Boolean mask of the rows that have a reason."""
        return pd.notna(self.reason)


def _require_registry_columns(meters: gpd.GeoDataFrame) -> None:
    missing = [c for c in ("kind", "lon", "lat", "node_id", "link_id") if c not in meters.columns]
    if missing:
        raise MeterError(
            f"meter table lacks the column(s) {', '.join(missing)}",
            path=meters.attrs.get("source"),
            fix="read the registry with twin.meters.read_meters",
            data={"missing_columns": missing, "columns": [str(c) for c in meters.columns]},
        )


def _mark_ids(reasons: _FirstReason, meters: gpd.GeoDataFrame, ids: pd.Series) -> None:
    """Missing IDs; duplicates (identical repeats keep the first row, conflicting rows all go)."""
    reasons.mark(ids.isna().to_numpy(), "missing meter_id")
    cols = ["kind", "lon", "lat", "node_id", "link_id"]
    frame = pd.DataFrame({c: meters[c].to_numpy() for c in cols})
    frame["meter_id"] = ids.to_numpy()
    dup_any = frame["meter_id"].duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
    if dup_any.any():
        n_variants = frame.loc[dup_any].astype("string").fillna("").drop_duplicates().groupby("meter_id").size()
        conflicting = frame["meter_id"].isin(n_variants.index[n_variants > 1]).to_numpy() & dup_any
        later = frame["meter_id"].duplicated(keep="first").to_numpy() & ids.notna().to_numpy()
        reasons.mark(conflicting, "duplicate meter_id with conflicting attributes")
        reasons.mark(later, "duplicate meter_id (repeated row)")


def _mark_kinds(reasons: _FirstReason, kind: pd.Series) -> None:
    kinds = kind.fillna("").to_numpy(dtype=object)
    reasons.mark(
        ~kind.isin(KINDS).fillna(False).to_numpy(),
        lambda i: [f"unknown kind {k!r} (expected customer, pressure or flow)" for k in kinds[i]],
    )


def _mark_coordinates(
    reasons: _FirstReason,
    lon: np.ndarray,
    lat: np.ndarray,
    is_customer: np.ndarray,
    network: Network | None,
    area_margin_m: float,
) -> None:
    """Missing (customers only), swapped, out-of-range and out-of-area coordinates, in that order."""
    no_xy = ~(np.isfinite(lon) & np.isfinite(lat))
    reasons.mark(no_xy & is_customer, "missing or non-numeric lon/lat")
    has_xy = ~no_xy
    invalid_range = has_xy & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
    swapped_range = invalid_range & (np.abs(lon) <= 90) & (np.abs(lat) <= 180)
    if network is None:
        reasons.mark(swapped_range, "lon/lat swapped (latitude beyond ±90°)")
        reasons.mark(invalid_range, "lon/lat out of range")
        return
    xmin, ymin, xmax, ymax = _network_bbox(network)
    xmin, ymin, xmax, ymax = xmin - area_margin_m, ymin - area_margin_m, xmax + area_margin_m, ymax + area_margin_m
    x, y = _to_network_xy(lon, lat, network)
    inside = (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
    sx, sy = _to_network_xy(lat, lon, network)
    inside_swapped = (sx >= xmin) & (sx <= xmax) & (sy >= ymin) & (sy <= ymax)
    reasons.mark(
        has_xy & ~inside & inside_swapped,
        "lon/lat swapped (the point falls in the network area with lon and lat exchanged)",
    )
    reasons.mark(swapped_range, "lon/lat swapped (latitude beyond ±90°)")
    reasons.mark(invalid_range, "lon/lat out of range")
    dist = np.hypot(np.maximum(np.maximum(xmin - x, x - xmax), 0), np.maximum(np.maximum(ymin - y, y - ymax), 0))
    dist = np.nan_to_num(dist)
    reasons.mark(
        has_xy & ~inside,
        lambda i: [f"outside the network area ({d / 1000:.1f} km beyond its bounding box)" for d in dist[i]],
    )


def _mark_logger_places(
    reasons: _FirstReason, meters: gpd.GeoDataFrame, kind: pd.Series, network: Network | None
) -> None:
    """Pressure loggers need a (known) node, flow meters a (known) link."""
    node_id = meters["node_id"].astype("string")
    link_id = meters["link_id"].astype("string")
    if network is not None:
        node_known = node_id.isin(set(map(str, network.nodes.index))).fillna(False).to_numpy()
        link_known = link_id.isin(set(map(str, network.links.index))).fillna(False).to_numpy()
    else:
        node_known = meters["node_id"].notna().to_numpy()
        link_known = meters["link_id"].notna().to_numpy()
    is_pressure = (kind == "pressure").fillna(False).to_numpy()
    is_flow = (kind == "flow").fillna(False).to_numpy()
    node_s = node_id.fillna("").to_numpy(dtype=object)
    link_s = link_id.fillna("").to_numpy(dtype=object)
    reasons.mark(is_pressure & meters["node_id"].isna().to_numpy(), "pressure logger without node_id")
    reasons.mark(is_pressure & ~node_known, lambda i: [f"pressure logger on unknown node {v!r}" for v in node_s[i]])
    reasons.mark(is_flow & meters["link_id"].isna().to_numpy(), "flow meter without link_id")
    reasons.mark(is_flow & ~link_known, lambda i: [f"flow meter on unknown link {v!r}" for v in link_s[i]])


def _place_loggers_without_xy(good: gpd.GeoDataFrame, network: Network) -> None:
    """Give loggers without coordinates their node's place / their link's midpoint (in place)."""
    fill = good.geometry.isna() | good.geometry.is_empty
    if not fill.any():
        return
    pts = []
    for _, row in good.loc[fill].iterrows():
        if row["kind"] == "pressure":
            pts.append(network.nodes.geometry.loc[row["node_id"]])
        else:
            pts.append(network.links.geometry.loc[row["link_id"]].interpolate(0.5, normalized=True))
    gs = gpd.GeoSeries(pts, index=good.index[fill], crs=network.crs).to_crs(settings.MAP_CRS)
    good.loc[fill, "geometry"] = gs.values
    good.loc[fill, "lon"] = gs.x.values
    good.loc[fill, "lat"] = gs.y.values


def _rejected_table(meters: gpd.GeoDataFrame, ids: pd.Series, kind: pd.Series, reasons: _FirstReason) -> pd.DataFrame:
    bad = reasons.bad
    return pd.DataFrame(
        {
            "meter_id": ids[bad].to_numpy(),
            "source_row": meters["source_row"].to_numpy()[bad] if "source_row" in meters else np.flatnonzero(bad) + 1,
            "kind": kind[bad].to_numpy(),
            "lon": meters["lon"].to_numpy(dtype=np.float64)[bad],
            "lat": meters["lat"].to_numpy(dtype=np.float64)[bad],
            "node_id": meters["node_id"].astype("string").to_numpy()[bad],
            "link_id": meters["link_id"].astype("string").to_numpy()[bad],
            "reason": reasons.reason[bad].astype(str),
        }
    )


def validate_meters(
    meters: gpd.GeoDataFrame,
    network: Network | None = None,
    *,
    area_margin_m: float = AREA_MARGIN_M,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Split a registry into usable meters and rejected rows with a reason.

    Checks, in this order (a row gets the first reason that applies):
    missing ``meter_id``; duplicate ``meter_id`` (identical repeats: the first
    is kept; conflicting rows with the same ID: all rejected); unknown
    ``kind``; missing or non-numeric coordinates (customer meters only:
    loggers may sit at their node's / link's place); lon/lat swapped; outside
    the network's area (bounding box of the nodes plus ``area_margin_m``);
    pressure logger without a known ``node_id``; flow meter without a known
    ``link_id``.

    Parameters
    ----------
    meters : GeoDataFrame
        As returned by :func:`read_meters` (EPSG:4326).
    network : Network, optional
        When given, coordinates are checked against its area and loggers /
        flow meters against its nodes / links. Without it only the checks
        that need no network run (a latitude beyond ±90° whose longitude would
        be a valid latitude still counts as swapped).
    area_margin_m : float, default 2000
        Margin around the network's bounding box, metres.

    Returns
    -------
    meters : GeoDataFrame
        The usable rows, unique index ``meter_id``, same columns. Loggers
        without coordinates are placed on their node / the middle of their
        link (only with ``network``).
    rejected : DataFrame
        The other rows: ``meter_id`` (column), ``source_row``, ``kind``,
        ``lon``, ``lat``, ``node_id``, ``link_id``, ``reason``.

    Raises
    ------
    MeterError
        When a required column is missing (a fatal problem, not a row
        problem); its ``data`` holds ``missing_columns`` and ``columns``.
    """
    _require_registry_columns(meters)
    reasons = _FirstReason(len(meters))
    ids = pd.Series(meters.index, dtype="string")
    kind = meters["kind"].astype("string")
    _mark_ids(reasons, meters, ids)
    _mark_kinds(reasons, kind)
    _mark_coordinates(
        reasons,
        meters["lon"].to_numpy(dtype=np.float64),
        meters["lat"].to_numpy(dtype=np.float64),
        (kind == "customer").fillna(False).to_numpy(),
        network,
        area_margin_m,
    )
    _mark_logger_places(reasons, meters, kind, network)
    good = meters.loc[~reasons.bad].copy()
    if network is not None and len(good):
        _place_loggers_without_xy(good, network)
    rejected = _rejected_table(meters, ids, kind, reasons)
    log.info(
        "validated %s meters: %s usable, %s rejected", f"{len(meters):,}", f"{len(good):,}", f"{len(rejected):,}"
    )
    return good, rejected


# --------------------------------------------------------------------------- join


def _customer_points(meters: gpd.GeoDataFrame, network: Network) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """Customer meters as points in ``network.crs``.

    Returns
    -------
    index : Index
        ``meter_id`` (string) of the customer rows.
    points : ndarray of shapely Point
        In ``network.crs`` (metres).
    has_point : ndarray of bool
        Whether the meter has finite coordinates.
    """
    cust = meters.loc[meters["kind"].astype("string").eq("customer").fillna(False).to_numpy()]
    if cust.crs is None:
        cust = cust.set_crs(settings.MAP_CRS)
    geom = np.asarray(cust.geometry.values, dtype=object)
    has_pt = ~(shapely.is_missing(geom) | shapely.is_empty(geom))
    gx = shapely.get_x(np.where(has_pt, geom, shapely.Point(0, 0)))
    gy = shapely.get_y(np.where(has_pt, geom, shapely.Point(0, 0)))
    has_pt &= np.isfinite(gx) & np.isfinite(gy)
    px, py = transform_xy(gx, gy, from_crs=cust.crs, to_crs=network.crs)
    return pd.Index(cust.index.astype(str), name="meter_id"), shapely.points(px, py), has_pt


def _candidate_pipes(network: Network) -> gpd.GeoDataFrame:
    """Pipes with a geometry, sorted by ID so that tree indices follow the tie-break order."""
    pipes = network.links.loc[network.links["link_type"].astype("string").eq("pipe").fillna(False).to_numpy()]
    pipes = pipes.loc[~(pipes.geometry.isna() | pipes.geometry.is_empty)]
    return pipes.iloc[np.argsort(pipes.index.astype(str).to_numpy(), kind="stable")]


def _nearest_pipes(
    points: np.ndarray, lines: np.ndarray, max_distance_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest pipe of every point, ties to the smallest index.

    Every pipe within the limit, then per point the nearest; distances within
    :data:`TIE_TOLERANCE_M` are a tie (coordinates that went through a CRS
    round trip are never exactly equidistant) and the smallest line index
    (= smallest link ID) wins. Points beyond the limit get their nearest pipe
    for the report.

    Returns
    -------
    point_index, line_index : ndarray of int
        Pairs, one per point (in no particular order).
    distance_m : ndarray of float
        Point-to-pipe distances, metres.
    """
    tree = shapely.STRtree(lines)
    pi, ti = tree.query(points, predicate="dwithin", distance=max_distance_m)
    d = shapely.distance(points[pi], lines[ti])
    key = np.floor(d / TIE_TOLERANCE_M)
    order = np.lexsort((ti, key, pi))
    pi, ti, d = pi[order], ti[order], d[order]
    first = np.ones(len(pi), dtype=bool)
    first[1:] = pi[1:] != pi[:-1]
    pi, ti, d = pi[first], ti[first], d[first]
    far = np.ones(len(points), dtype=bool)
    far[pi] = False
    if far.any():
        fi, fti = tree.query_nearest(points[far], all_matches=False)
        fi = np.flatnonzero(far)[fi]
        pi = np.concatenate([pi, fi])
        ti = np.concatenate([ti, fti])
        d = np.concatenate([d, shapely.distance(points[fi], lines[fti])])
    return pi, ti, d


def _join_frame(
    index: pd.Index,
    *,
    link: np.ndarray | None = None,
    position: np.ndarray | None = None,
    start: np.ndarray | None = None,
    end: np.ndarray | None = None,
    distance_m: np.ndarray | None = None,
    matched: np.ndarray | None = None,
    nearest: np.ndarray | None = None,
) -> pd.DataFrame:
    """The join table of :func:`join_meters`; columns not given are empty (NA, NaN, False)."""
    n = len(index)

    def ids(values: np.ndarray | None) -> pd.api.extensions.ExtensionArray:
        return pd.array([pd.NA] * n if values is None else values, dtype="string")

    def floats(values: np.ndarray | None) -> np.ndarray:
        return np.full(n, np.nan) if values is None else values

    return pd.DataFrame(
        {
            "link_id": ids(link),
            "position": floats(position),
            "start_node": ids(start),
            "end_node": ids(end),
            "distance_m": floats(distance_m),
            "matched": np.zeros(n, dtype=bool) if matched is None else matched,
            "nearest_link_id": ids(nearest),
        },
        index=index,
    )


def _join_from_pairs(
    index: pd.Index,
    rows: np.ndarray,
    line_index: np.ndarray,
    distance_m: np.ndarray,
    ok: np.ndarray,
    position: np.ndarray,
    pipes: gpd.GeoDataFrame,
) -> pd.DataFrame:
    """The join table from (meter row, pipe) pairs.

    Parameters
    ----------
    index : Index
        ``meter_id`` of every customer meter.
    rows, line_index : ndarray of int
        Per pair, the meter's position in ``index`` and the pipe's in ``pipes``.
    distance_m : ndarray of float
        Per pair, metres.
    ok : ndarray of bool
        Per pair, within the join distance (matched).
    position : ndarray of float
        Per matched pair (``ok``), 0..1 from the pipe's ``start_node``.
    pipes : GeoDataFrame
        The candidate pipes, as from :func:`_candidate_pipes`.
    """
    n = len(index)
    link_ids = pipes.index.astype(str).to_numpy()
    link, nearest, start, end = (np.full(n, None, dtype=object) for _ in range(4))
    pos = np.full(n, np.nan)
    dist = np.full(n, np.nan)
    matched = np.zeros(n, dtype=bool)
    nearest[rows] = link_ids[line_index]
    dist[rows] = distance_m
    ok_rows, ok_lines = rows[ok], line_index[ok]
    link[ok_rows] = link_ids[ok_lines]
    start[ok_rows] = pipes["start_node"].astype(str).to_numpy()[ok_lines]
    end[ok_rows] = pipes["end_node"].astype(str).to_numpy()[ok_lines]
    pos[ok_rows] = position
    matched[ok_rows] = True
    return _join_frame(
        index, link=link, position=pos, start=start, end=end, distance_m=dist, matched=matched, nearest=nearest
    )


def join_meters(
    meters: gpd.GeoDataFrame,
    network: Network,
    *,
    max_distance_m: float = settings.SNAP_DISTANCE_M,
) -> pd.DataFrame:
    """Snap every customer meter to its nearest pipe.

    Meters are projected into ``network.crs`` (metres); the candidate pipes
    within ``max_distance_m`` come from a shapely STRtree (``dwithin``); the
    nearest wins, pipes within 1 µm of the same distance are tied and the
    smallest ``link_id`` (string order) wins, so the result does not depend
    on the order of the input. Meters beyond the limit get the distance to
    their nearest pipe (``query_nearest``). The position along the pipe is
    ``line.project(point, normalized=True)`` on the pipe's geometry, which
    runs from ``start_node`` to ``end_node``.

    Parameters
    ----------
    meters : GeoDataFrame
        Registry (any CRS; EPSG:4326 from :func:`read_meters`). Only rows of
        kind ``customer`` are joined.
    network : Network
        The network; only links of type ``pipe`` are candidates.
    max_distance_m : float, default 50
        Largest meter-to-pipe distance, metres.

    Returns
    -------
    DataFrame
        Index ``meter_id`` (customer meters only, every one of them), columns
        ``link_id`` (NA when unmatched), ``position`` (0..1 from
        ``start_node``), ``start_node``, ``end_node``, ``distance_m`` (to the
        joined pipe, or to the nearest pipe when unmatched; NaN without
        coordinates), ``matched`` (bool) and ``nearest_link_id`` (the nearest
        pipe whatever its distance). Consumption goes ``1 - position`` to
        ``start_node`` and ``position`` to ``end_node``.
    """
    if max_distance_m is None or not np.isfinite(max_distance_m) or max_distance_m < 0:
        raise InputError(
            f"max_distance_m must be a non-negative number of metres, got {max_distance_m!r}",
            fix="give a distance such as 50",
        )
    index, points, has_pt = _customer_points(meters, network)
    pipes = _candidate_pipes(network)
    n = len(index)
    if n == 0 or len(pipes) == 0:
        if len(pipes) == 0 and n:
            log.warning("network has no pipes: none of %d customer meters joined", n)
        return _join_frame(index)
    lines = np.asarray(pipes.geometry.values, dtype=object)
    q_idx = np.flatnonzero(has_pt)
    qpts = points[q_idx]
    pi, ti, d = _nearest_pipes(qpts, lines, max_distance_m)
    rows = q_idx[pi]
    ok = d <= max_distance_m
    pos = shapely.line_locate_point(lines[ti[ok]], qpts[pi[ok]], normalized=True)
    pos = np.where(np.isfinite(pos), pos, 0.5)  # zero-length pipe
    out = _join_from_pairs(index, rows, ti, d, ok, np.clip(pos, 0.0, 1.0), pipes)
    n_match = int(out["matched"].sum())
    log.info(
        "joined %s of %s customer meters within %g m; %s unmatched",
        f"{n_match:,}", f"{n:,}", max_distance_m, f"{n - n_match:,}",
    )
    out.attrs["warnings"] = join_warnings(out, network, meters=meters, max_distance_m=max_distance_m, strict=True)
    return out


def _median_nearest_m(lon: np.ndarray, lat: np.ndarray, network: Network, lines: np.ndarray) -> float:
    """Median distance (m) from WGS84 points to their nearest pipe."""
    x, y = transform_xy(lon, lat, from_crs=settings.MAP_CRS, to_crs=network.crs)
    pts = shapely.points(x, y)
    tree = shapely.STRtree(lines)
    pi, ti = tree.query_nearest(pts, all_matches=False)
    return float(np.median(shapely.distance(pts[pi], lines[ti])))


def _likely_cause(meters: gpd.GeoDataFrame | None, network: Network, median_m: float) -> tuple[str, str]:
    """Why a join looks wrong, and the fix: a Chinese web-map datum read as WGS84, else a wrong CRS.

    Each datum of :data:`WEB_DATUMS` is tried on the meters' lon/lat (taken
    as that datum, converted to WGS84): one that brings the median distance
    to the nearest pipe within a service connection is named.
    """
    if meters is not None and len(meters):
        cust = meters.loc[meters["kind"].astype("string").eq("customer").fillna(False).to_numpy()]
        cust = (cust if cust.crs is not None else cust.set_crs(settings.MAP_CRS)).to_crs(settings.MAP_CRS)
        geom = cust.geometry
        ok = (~(geom.isna() | geom.is_empty)).to_numpy()
        lon, lat = geom[ok].x.to_numpy(), geom[ok].y.to_numpy()
        lines = np.asarray(_candidate_pipes(network).geometry.values, dtype=object)
        for datum, name in WEB_DATUMS.items():
            if len(lon) and len(lines):
                wlon, wlat = transform_xy(lon, lat, from_crs=datum, to_crs=settings.MAP_CRS)
                alt = _median_nearest_m(wlon, wlat, network, lines)
                if alt <= JOIN_MEDIAN_WARN_M and alt < 0.6 * median_m:
                    return (f"the meters' lon/lat look like {name} (a Chinese web-map datum, about 300-700 m "
                            f"off WGS84) read as WGS84: taken as {name} the median distance falls to {alt:.0f} m",
                            f"give --meters-crs {name}")
    return ("the network's CRS may be wrong (e.g. EPSG:32650 given for coordinates in EPSG:4548), or the "
            "meters' datum, or the meters belong to another area",
            f"check --crs of the network (here {network.crs.to_string() if network.crs else '?'}) "
            "and --meters-crs of the registry")


def join_warnings(
    join: pd.DataFrame,
    network: Network,
    *,
    meters: gpd.GeoDataFrame | None = None,
    max_distance_m: float = settings.SNAP_DISTANCE_M,
    strict: bool = False,
) -> list[str]:
    """Warnings when a join is implausible: too many meters unmatched or too far from their pipes.

    A service connection is a few metres to a few tens of metres long: a
    median distance to the nearest pipe above :data:`JOIN_MEDIAN_WARN_M` or
    more than :data:`JOIN_UNMATCHED_WARN` unmatched means the coordinates and
    the network do not fit (a GCJ-02 / BD-09 datum read as WGS84 shifts every
    meter by 300-700 m; a wrong network CRS shifts the network), and the
    "joined" meters sit on other pipes. The likely cause is named
    (:func:`_likely_cause` tries the web-map datums on ``meters``).

    Parameters
    ----------
    join : DataFrame
        From :func:`join_meters` (``matched``, ``distance_m``).
    network : Network
    meters : GeoDataFrame, optional
        The joined registry, to test the datums.
    max_distance_m : float
        The join distance used, metres.
    strict : bool
        Raise instead of warning when more than :data:`JOIN_UNMATCHED_ERROR`
        of the meters are unmatched.

    Returns
    -------
    list of str
        Empty for a plausible join (or fewer than :data:`JOIN_MIN_METERS`
        meters with coordinates); each warning is also logged at WARNING.

    Raises
    ------
    MeterError
        ``strict`` and more than :data:`JOIN_UNMATCHED_ERROR` unmatched.
    """
    dist = pd.to_numeric(join["distance_m"], errors="coerce")
    placed = dist.notna().to_numpy()
    n = int(placed.sum())
    if n < JOIN_MIN_METERS:
        return []
    unmatched = int((~join["matched"].astype(bool).to_numpy() & placed).sum())
    share, median = unmatched / n, float(dist[placed].median())
    if share <= JOIN_UNMATCHED_WARN and median <= JOIN_MEDIAN_WARN_M:
        return []
    cause, fix = _likely_cause(meters, network, median)
    what = (f"{unmatched:,} of {n:,} customer meters ({share:.0%}) are farther than {max_distance_m:g} m from any "
            f"pipe and the median distance to the nearest pipe is {median:.0f} m (a service connection is "
            f"under {JOIN_MEDIAN_WARN_M:g} m)")
    if strict and share > JOIN_UNMATCHED_ERROR:
        raise MeterError(f"{what}: the meters and the network do not fit; likely cause: {cause}", fix=fix,
                         data={"unmatched": unmatched, "meters": n, "median_distance_m": median})
    text = f"meter join implausible: {what}, so joined meters are likely on the wrong pipes; likely cause: {cause}. Fix: {fix}"
    log.warning("%s", text)
    return [text]


def node_weights(join: pd.DataFrame) -> pd.DataFrame:
    """Long table of how each joined meter's consumption splits onto nodes.

    Parameters
    ----------
    join : DataFrame
        From :func:`join_meters`.

    Returns
    -------
    DataFrame
        Columns ``meter_id``, ``node_id``, ``weight`` (0..1; the two weights
        of a meter sum to 1). Unmatched meters are left out.
    """
    j = join.loc[join["matched"].astype(bool)]
    mids = j.index.astype(str).to_numpy()
    pos = j["position"].to_numpy(dtype=np.float64)
    w = pd.DataFrame(
        {
            "meter_id": np.concatenate([mids, mids]),
            "node_id": np.concatenate([j["start_node"].astype(str).to_numpy(), j["end_node"].astype(str).to_numpy()]),
            "weight": np.concatenate([1.0 - pos, pos]),
        }
    )
    return w.groupby(["meter_id", "node_id"], as_index=False, sort=True)["weight"].sum()
