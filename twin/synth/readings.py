"""Synthetic smart-water readings simulated on a hidden "true" network.

The utility holds a network file; the truth that generated the readings
differs from it the way real networks differ from their models:

- pipe roughness within +/-10 % of the file's values;
- actual demands per customer (diurnal pattern by class, a personal time
  shift, day-to-day and weekday/weekend variation), not the nominal ones;
- background leakage as small pressure-dependent emitters at every junction,
  sized so that non-revenue water is about 10-12 % of system input;
- optionally leaks (:mod:`twin.synth.leaks`): emitters on nodes inserted
  along pipes, switched on at random times after the second day, abrupt or
  growing, anywhere, in different DMAs or in one.

EPANET (through WNTR) computes the hydraulics at a 15-minute step. The
readings are then sampled and degraded like field data: customer registers
about twice a day at irregular NB-IoT times with 2-5 % under-registration,
~1 % missing, duplicated and late rows; pressure loggers (5 cm noise) and flow
meters (0.5 % noise) every 15 minutes.

Files written (``DESIGN.md``, data contract): ``meters.csv``,
``readings.csv`` (or ``readings.parquet``) and ``truth.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pyproj
import scipy.sparse as sp
import shapely
import wntr

from twin import crs as tcrs
from twin.errors import (
    CRSError,
    InputError,
    MissingFileError,
    NetworkError,
    SimulationError,
    UnknownElementError,
)
from twin.hydraulics import EpanetSession
from twin.synth.leaks import LEAK_SEPARATION_M, LeakSpec, PlantedLeak, check_leaks, plant_leaks

if TYPE_CHECKING:  # geopandas is imported only when a customers layer is read
    import geopandas as gpd

log = logging.getLogger(__name__)

#: Reporting / hydraulic / pattern step of the truth simulation, seconds.
STEP_S = 900
STEPS_PER_DAY = 86400 // STEP_S
#: UTC offset of every synthetic timestamp (Yingtan, China Standard Time).
UTC_OFFSET = "+08:00"
UTC_OFFSET_S = 8 * 3600

CLASSES = ("residential", "commercial", "industrial")

# Hourly demand multipliers (local time, hour 0 = 00:00-01:00) by class,
# normalised to a mean of 1 below. Shapes follow typical Chinese urban
# metering studies: residential morning and evening peaks, commercial business
# hours, industrial two shifts with a flat night base.
_HOURLY = {
    "residential": [0.35, 0.28, 0.25, 0.25, 0.30, 0.55, 1.20, 1.75, 1.60, 1.20, 1.00, 1.05,
                    1.15, 1.00, 0.90, 0.85, 0.95, 1.20, 1.55, 1.70, 1.55, 1.20, 0.80, 0.50],
    "commercial": [0.20, 0.18, 0.18, 0.18, 0.20, 0.30, 0.55, 0.95, 1.45, 1.65, 1.70, 1.75,
                   1.70, 1.60, 1.55, 1.55, 1.60, 1.65, 1.60, 1.40, 1.10, 0.75, 0.45, 0.28],
    "industrial": [0.65, 0.62, 0.60, 0.60, 0.62, 0.70, 0.95, 1.25, 1.35, 1.35, 1.35, 1.30,
                   1.20, 1.30, 1.35, 1.35, 1.30, 1.20, 1.00, 0.90, 0.85, 0.80, 0.72, 0.68],
}
#: Day-of-week factors (Mon..Sun) by class.
_WEEKDAY = {
    "residential": [0.97, 0.97, 0.97, 0.97, 0.98, 1.06, 1.08],
    "commercial": [1.03, 1.03, 1.03, 1.03, 1.05, 0.95, 0.88],
    "industrial": [1.12, 1.12, 1.12, 1.12, 1.10, 0.75, 0.67],
}
#: Personal time shifts of the diurnal pattern, in 15-minute steps.
_SHIFTS = np.array([-4, -2, 0, 2, 4])

#: Typical daily consumption of one customer meter by class, m3/day:
#: (median, lognormal sigma, low clip, high clip).
CUSTOMER_SIZE_M3_PER_DAY = {
    "residential": (0.65, 0.45, 0.3, 1.5),
    "commercial": (5.0, 0.7, 1.5, 30.0),
    "industrial": (40.0, 0.8, 10.0, 300.0),
}


@dataclass(frozen=True)
class _Geo:
    """Coordinates of the network and the conversions the generator needs."""

    crs: pyproj.CRS
    unit_m: float  # metres per CRS unit
    to_lonlat: pyproj.Transformer


# ----------------------------------------------------------------------------
# argument checks and loading
# ----------------------------------------------------------------------------


def _parse_crs(crs: str | pyproj.CRS) -> pyproj.CRS:
    try:
        parsed = pyproj.CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises its own CRSError
        raise CRSError(
            f"unknown CRS {crs!r} ({exc})",
            fix="give an EPSG code such as EPSG:32650 or EPSG:4548",
        ) from None
    if not parsed.is_projected:
        raise CRSError(
            f"CRS {crs!r} is not projected; the network's coordinates must be in metres or feet",
            fix="give the projected CRS of the .inp coordinates, e.g. EPSG:32650",
        )
    return parsed


def _geo(crs: str | pyproj.CRS) -> _Geo:
    parsed = _parse_crs(crs)
    unit = parsed.axis_info[0].unit_conversion_factor if parsed.axis_info else 1.0
    return _Geo(
        crs=parsed,
        unit_m=float(unit),
        to_lonlat=pyproj.Transformer.from_crs(parsed, "EPSG:4326", always_xy=True),
    )


def _load_wn(path: str | Path) -> wntr.network.WaterNetworkModel:
    p = Path(path)
    if not p.exists():
        raise MissingFileError("network file does not exist", path=p, fix="check the path and spelling")
    if p.is_dir() or p.suffix.lower() != ".inp":
        raise NetworkError(
            "synthetic readings need an EPANET .inp network",
            path=p,
            fix="convert the GIS layers first with `twin network convert`, or pass the .inp",
        )
    try:
        return wntr.network.WaterNetworkModel(str(p))
    except Exception as exc:
        raise NetworkError(
            f"cannot read the EPANET file ({type(exc).__name__}: {exc})",
            path=p,
            fix="open it in EPANET and correct the section named in the message",
        ) from None


def _start_time(start: str | pd.Timestamp | None) -> pd.Timestamp:
    """Local midnight (naive, UTC+8 wall clock) at which the week starts."""
    if start is None:
        start = "2026-03-02"
    try:
        ts = pd.Timestamp(start)
    except (ValueError, TypeError):
        raise InputError(
            f"start {start!r} is not a date", element="start", fix="give a date like 2026-03-02"
        ) from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("Etc/GMT-8").tz_localize(None)
    return ts.normalize()


# ----------------------------------------------------------------------------
# network tables
# ----------------------------------------------------------------------------


def _node_table(wn: wntr.network.WaterNetworkModel) -> pd.DataFrame:
    """Nodes with type, coordinates (CRS units), elevation and nominal demand.

    ``demand_m3s`` is the nominal mean demand over the demand patterns' cycle;
    ``pattern`` is the name of the largest demand's pattern (for the class).
    """
    rows = []
    default_pat = wn.options.hydraulic.pattern
    for name, node in wn.nodes():
        kind = node.node_type.lower()
        q, pat, best = 0.0, "", -1.0
        if kind == "junction":
            for ts in node.demand_timeseries_list:
                pname = ts.pattern_name if ts.pattern_name else default_pat
                pattern = wn.get_pattern(pname) if pname and pname in wn.pattern_name_list else None
                mult = float(np.mean(pattern.multipliers)) if pattern is not None else 1.0
                v = float(ts.base_value) * mult
                q += v
                if abs(v) > best:
                    best, pat = abs(v), (pname or "")
        x, y = node.coordinates
        rows.append((name, kind, float(x), float(y), float(getattr(node, "elevation", 0.0) or 0.0), q, pat,
                     str(node.tag) if getattr(node, "tag", None) else ""))
    t = pd.DataFrame(rows, columns=["node_id", "node_type", "x", "y", "elevation_m", "demand_m3s", "pattern", "zone"])
    return t.set_index("node_id")


def _link_table(wn: wntr.network.WaterNetworkModel, nodes: pd.DataFrame, geo: _Geo) -> pd.DataFrame:
    rows = []
    for name, link in wn.links():
        kind = link.link_type.lower()
        verts = list(getattr(link, "vertices", []) or [])
        closed = kind == "pipe" and str(link.initial_status).lower().endswith("closed")
        rows.append((name, kind, link.start_node_name, link.end_node_name,
                     float(getattr(link, "length", 0.0) or 0.0),
                     float(getattr(link, "diameter", 0.0) or 0.0), verts,
                     str(link.tag) if getattr(link, "tag", None) else "", closed))
    t = pd.DataFrame(rows, columns=["link_id", "link_type", "start_node", "end_node", "length_m",
                                    "diameter_m", "vertices", "zone", "closed"]).set_index("link_id")
    sx = nodes.loc[t["start_node"], ["x", "y"]].to_numpy()
    ex = nodes.loc[t["end_node"], ["x", "y"]].to_numpy()
    geoms = []
    for (a, b, v) in zip(sx, ex, t["vertices"]):
        pts = [tuple(a), *[tuple(p) for p in v], tuple(b)]
        if pts[0] == pts[-1] and len(pts) == 2:
            pts = [pts[0], (pts[0][0] + 1e-6, pts[0][1])]
        geoms.append(pts)
    t["geometry"] = shapely.linestrings_from(geoms) if hasattr(shapely, "linestrings_from") else [
        shapely.LineString(g) for g in geoms
    ]
    return t.drop(columns="vertices")


def _class_of_pattern(name: str) -> str:
    n = name.lower()
    if "ind" in n:
        return "industrial"
    if "com" in n or "bus" in n or "shop" in n:
        return "commercial"
    return "residential"


# ----------------------------------------------------------------------------
# customers
# ----------------------------------------------------------------------------


def _customers_from_nodes(nodes: pd.DataFrame, links: pd.DataFrame, geo: _Geo,
                          rng: np.random.Generator) -> pd.DataFrame:
    """Split each junction's nominal demand into customer meters near it.

    Each customer sits on a pipe adjacent to its junction, within the half of
    the pipe nearest the junction, 5-40 m to one side of it.
    """
    junc = nodes[(nodes.node_type == "junction") & (nodes.demand_m3s > 0)]
    if junc.empty:
        raise NetworkError("the network has no junction with a positive demand, so no customers",
                           fix="give the junctions base demands, or pass a customers layer")
    adj = _junction_pipes(junc, links[links.link_type == "pipe"])
    owner, ccls, size = _split_demand(junc, rng)
    link_id, position, x, y = _place_customers(junc, adj, links, owner, geo, rng)
    width = max(6, len(str(len(owner))))
    return pd.DataFrame({
        "meter_id": [f"C{i:0{width}d}" for i in range(1, len(owner) + 1)],
        "customer_class": ccls,
        "base_demand_m3_per_day": size,
        "link_id": link_id,
        "position": position,
        "home_node": junc.index.to_numpy()[owner],
        "x": x,
        "y": y,
    })


def _junction_pipes(junc: pd.DataFrame, pipes: pd.DataFrame) -> pd.DataFrame:
    """Pipes at each junction (``node_id``, ``link_id``, ``at_start``), sorted by node and link."""
    adj = pd.concat([
        pd.DataFrame({"node_id": pipes.start_node.to_numpy(), "link_id": pipes.index.to_numpy(), "at_start": True}),
        pd.DataFrame({"node_id": pipes.end_node.to_numpy(), "link_id": pipes.index.to_numpy(), "at_start": False}),
    ], ignore_index=True)
    adj = adj[adj.node_id.isin(junc.index)].sort_values(["node_id", "link_id"], kind="stable")
    has_pipe = junc.index.isin(adj.node_id)
    if not has_pipe.all():
        log.debug("%d demand junctions have no pipe; their customers sit beside the node", (~has_pipe).sum())
    return adj


def _split_demand(junc: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers per junction by class size: owner junction (position), class, daily use (m3/day)."""
    daily = junc.demand_m3s.to_numpy() * 86400.0
    cls = np.array([_class_of_pattern(p) for p in junc.pattern])
    # number of meters per junction from the class's median size
    med = np.array([CUSTOMER_SIZE_M3_PER_DAY[c][0] for c in cls])
    n_per = np.maximum(1, np.rint(daily / med)).astype(np.int64)
    owner = np.repeat(np.arange(len(junc)), n_per)
    ccls = cls[owner]
    sig = np.array([CUSTOMER_SIZE_M3_PER_DAY[c][1] for c in ccls])
    lo = np.array([CUSTOMER_SIZE_M3_PER_DAY[c][2] for c in ccls])
    hi = np.array([CUSTOMER_SIZE_M3_PER_DAY[c][3] for c in ccls])
    raw = np.clip(np.exp(rng.normal(0.0, sig)), lo / med[owner], hi / med[owner])
    share = raw / np.bincount(owner, weights=raw)[owner]
    return owner, ccls, share * daily[owner]


def _place_customers(junc: pd.DataFrame, adj: pd.DataFrame, links: pd.DataFrame, owner: np.ndarray,
                     geo: _Geo, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Each customer's pipe, position along it (0-1) and x, y (CRS units) beside it."""
    adj_j = pd.Index(junc.index).get_indexer(adj.node_id.to_numpy())
    order = np.argsort(adj_j, kind="stable")
    adj_j, adj_link, adj_start = adj_j[order], adj.link_id.to_numpy()[order], adj.at_start.to_numpy()[order]
    first = np.searchsorted(adj_j, np.arange(len(junc)), side="left")
    count = np.searchsorted(adj_j, np.arange(len(junc)), side="right") - first
    c_count = count[owner]
    pick = first[owner] + np.floor(rng.random(len(owner)) * np.maximum(c_count, 1)).astype(np.int64)
    pick = np.minimum(pick, max(len(adj_j) - 1, 0))
    frac = rng.uniform(0.02, 0.45, len(owner))  # distance from the junction along the pipe, share
    side = rng.choice([-1.0, 1.0], len(owner))
    offset_m = rng.uniform(5.0, 40.0, len(owner))

    has = c_count > 0
    link_id = np.where(has, adj_link[pick] if len(adj_link) else "", "")
    at_start = np.where(has, adj_start[pick] if len(adj_start) else True, True)
    position = np.where(at_start, frac, 1.0 - frac)
    position = np.where(has, position, 0.0)

    x = np.empty(len(owner))
    y = np.empty(len(owner))
    if has.any():
        lines = links.geometry.reindex(link_id[has]).to_numpy()
        px, py, tx, ty = _point_and_tangent(lines, position[has])
        nx, ny = -ty, tx
        d = side[has] * offset_m[has] / geo.unit_m
        x[has], y[has] = px + nx * d, py + ny * d
    if (~has).any():
        ang = rng.uniform(0, 2 * np.pi, (~has).sum())
        d = offset_m[~has] / geo.unit_m
        x[~has] = junc.x.to_numpy()[owner[~has]] + np.cos(ang) * d
        y[~has] = junc.y.to_numpy()[owner[~has]] + np.sin(ang) * d
    return link_id, position, x, y


def _point_and_tangent(lines: np.ndarray, position: np.ndarray):
    """Point at ``position`` (0..1) along each line and the unit tangent there."""
    lengths = shapely.length(lines)
    pts = shapely.line_interpolate_point(lines, position, normalized=True)
    eps = np.minimum(0.01, 0.5 / np.maximum(lengths, 1e-9))
    a = shapely.line_interpolate_point(lines, np.clip(position - eps, 0, 1), normalized=True)
    b = shapely.line_interpolate_point(lines, np.clip(position + eps, 0, 1), normalized=True)
    ax, ay = shapely.get_x(a), shapely.get_y(a)
    bx, by = shapely.get_x(b), shapely.get_y(b)
    tx, ty = bx - ax, by - ay
    norm = np.hypot(tx, ty)
    norm[norm == 0] = 1.0
    return shapely.get_x(pts), shapely.get_y(pts), tx / norm, ty / norm


def _customers_from_layer(customers: gpd.GeoDataFrame | str | Path, links: pd.DataFrame, geo: _Geo) -> pd.DataFrame:
    """Normalise a customers layer (GeoDataFrame or GIS file) to the internal table."""
    import geopandas as gpd

    src = "customers"
    if isinstance(customers, (str, Path)):
        src = str(customers)
        p = Path(customers)
        if not p.exists():
            raise MissingFileError("customers file does not exist", path=p, fix="check the path")
        try:
            customers = gpd.read_file(p, layer="customers") if p.suffix.lower() == ".gpkg" else gpd.read_file(p)
        except Exception as exc:
            raise InputError(f"cannot read the customers layer ({exc})", path=p,
                             fix="give a GeoPackage with a layer named 'customers'") from None
    gdf = customers
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.crs is None:
        raise CRSError("the customers layer has no CRS", path=src, fix="set its CRS (e.g. EPSG:4548)")
    gdf = gdf.to_crs(geo.crs)
    idcol = "meter_id" if "meter_id" in gdf.columns else "customer_id" if "customer_id" in gdf.columns else None
    need = [c for c in ("customer_class", "base_demand_m3_per_day") if c not in gdf.columns]
    if idcol is None or need:
        raise InputError(f"the customers layer lacks columns {need or ['meter_id']}", path=src,
                         fix="give meter_id, customer_class, base_demand_m3_per_day (m3/day) and a Point geometry")
    out = pd.DataFrame({
        "meter_id": gdf[idcol].astype(str).to_numpy(),
        "customer_class": gdf["customer_class"].astype(str).str.lower().to_numpy(),
        "base_demand_m3_per_day": gdf["base_demand_m3_per_day"].astype(float).to_numpy(),
        "x": gdf.geometry.x.to_numpy(),
        "y": gdf.geometry.y.to_numpy(),
    })
    bad = ~out.customer_class.isin(CLASSES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"unknown customer_class {out.customer_class.iloc[i]!r}", path=src, row=i + 1,
                         fix=f"use one of {', '.join(CLASSES)}")
    if out.meter_id.duplicated().any():
        dup = out.meter_id[out.meter_id.duplicated()].iloc[0]
        raise InputError("duplicate meter_id in the customers layer", path=src, element=dup,
                         fix="give every customer its own meter_id")
    pipes = links[links.link_type == "pipe"]
    if "link_id" in gdf.columns and "position" in gdf.columns:
        out["link_id"] = gdf["link_id"].astype(str).to_numpy()
        out["position"] = gdf["position"].astype(float).clip(0, 1).to_numpy()
        unknown = ~out.link_id.isin(pipes.index)
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise UnknownElementError(f"customer's pipe {out.link_id.iloc[i]!r} is not in the network", path=src,
                                      row=i + 1, fix="regenerate the customers with the network they belong to")
    else:  # snap to the nearest pipe
        pts = shapely.points(out.x.to_numpy(), out.y.to_numpy())
        tree = shapely.STRtree(pipes.geometry.to_numpy())
        idx = tree.nearest(pts)
        lines = pipes.geometry.to_numpy()[idx]
        out["link_id"] = pipes.index.to_numpy()[idx]
        out["position"] = shapely.line_locate_point(lines, pts, normalized=True)
    out["home_node"] = ""
    return out


# ----------------------------------------------------------------------------
# demand patterns
# ----------------------------------------------------------------------------


def _class_patterns() -> np.ndarray:
    """Array (class, shift, 96) of 15-minute multipliers with daily mean 1."""
    hours = np.arange(STEPS_PER_DAY) * STEP_S / 3600.0 + STEP_S / 7200.0
    out = np.empty((len(CLASSES), len(_SHIFTS), STEPS_PER_DAY))
    for i, c in enumerate(CLASSES):
        h = np.asarray(_HOURLY[c], dtype=float)
        h = h / h.mean()
        # cyclic linear interpolation through hour centres
        xp = np.concatenate([[-0.5], np.arange(24) + 0.5, [24.5]])
        fp = np.concatenate([[h[-1]], h, [h[0]]])
        base = np.interp(hours, xp, fp)
        base = base / base.mean()
        for j, s in enumerate(_SHIFTS):
            out[i, j] = np.roll(base, s)
    return out


def _weights(cust: pd.DataFrame, nodes: pd.DataFrame, links: pd.DataFrame,
             junctions: pd.Index) -> sp.csr_matrix:
    """Sparse (junction, customer) matrix: share of each customer's use at each junction.

    A customer's consumption goes ``1 - position`` to its pipe's start node and
    ``position`` to its end node (the split `twin.meters.join_meters` uses);
    a share that would land on a tank or reservoir goes to the other end.
    """
    n = len(cust)
    has = cust.link_id.to_numpy() != ""
    rows, cols, vals = [], [], []
    ci = np.arange(n)
    if has.any():
        lk = links.loc[cust.link_id.to_numpy()[has]]
        pos = cust.position.to_numpy()[has]
        si = junctions.get_indexer(lk.start_node.to_numpy())
        ei = junctions.get_indexer(lk.end_node.to_numpy())
        ws, we = 1.0 - pos, pos.copy()
        ws = np.where(ei < 0, 1.0, ws)
        we = np.where(si < 0, 1.0, we)
        ws = np.where(si < 0, 0.0, ws)
        we = np.where(ei < 0, 0.0, we)
        orphan = (si < 0) & (ei < 0)
        if orphan.any():
            raise NetworkError(
                f"{orphan.sum()} customers sit on pipes between two non-junction nodes",
                element=str(lk.index[orphan][0]), fix="attach those customers to a distribution pipe",
            )
        c = ci[has]
        for idx, w in ((si, ws), (ei, we)):
            keep = (idx >= 0) & (w > 0)
            rows.append(idx[keep]); cols.append(c[keep]); vals.append(w[keep])
    if (~has).any():
        hi = junctions.get_indexer(cust.home_node.to_numpy()[~has])
        rows.append(hi); cols.append(ci[~has]); vals.append(np.ones((~has).sum()))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(junctions), n))


@dataclass
class _Demand:
    """Customer demand model: rate(c, t) = base[c] * dayfac[c, day] * P[var[c], step]."""

    base_m3s: np.ndarray  # (n,) nominal daily-mean rate, m3/s
    dayfac: np.ndarray  # (n, days)
    var: np.ndarray  # (n,) index into patterns.reshape(-1, 96)
    patterns: np.ndarray  # (K, 96)

    def node_series(self, W: sp.csr_matrix) -> np.ndarray:
        """Junction demand, m3/s, array (junction, step) over the whole period."""
        n, days = self.dayfac.shape
        K = self.patterns.shape[0]
        out = np.empty((W.shape[0], days * STEPS_PER_DAY))
        for d in range(days):
            S = sp.csr_matrix((self.base_m3s * self.dayfac[:, d], (np.arange(n), self.var)), shape=(n, K))
            A = (W @ S).toarray()  # (junction, K)
            out[:, d * STEPS_PER_DAY:(d + 1) * STEPS_PER_DAY] = A @ self.patterns
        return out

    def cumulative(self, c: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Volume used by customers ``c`` from the start to ``t_s`` seconds, m3."""
        days = self.dayfac.shape[1]
        cum_p = np.concatenate([np.zeros((self.patterns.shape[0], 1)),
                                np.cumsum(self.patterns, axis=1)], axis=1) * STEP_S  # (K, 97) s
        day_int = cum_p[:, -1]
        cum_day = np.concatenate([np.zeros((self.dayfac.shape[0], 1)), np.cumsum(self.dayfac, axis=1)], axis=1)
        d = np.minimum((t_s // 86400).astype(np.int64), days - 1)
        within = t_s - d * 86400.0
        j = np.minimum((within // STEP_S).astype(np.int64), STEPS_PER_DAY - 1)
        rem = within - j * STEP_S
        k = self.var[c]
        part = cum_p[k, j] + rem * self.patterns[k, j]
        return self.base_m3s[c] * (cum_day[c, d] * day_int[k] + self.dayfac[c, d] * part)


def _demand_model(cust: pd.DataFrame, days: int, start: pd.Timestamp,
                  rng: np.random.Generator) -> _Demand:
    n = len(cust)
    cls_idx = pd.Index(CLASSES).get_indexer(cust.customer_class.to_numpy())
    shift = rng.integers(0, len(_SHIFTS), n)
    pats = _class_patterns()
    var = cls_idx * len(_SHIFTS) + shift
    # actual use differs from the nominal: a personal factor, and day-to-day noise
    personal = np.exp(rng.normal(0.0, 0.15, n))
    personal /= personal.mean()
    wd = np.array([_WEEKDAY[c] for c in CLASSES])  # (3, 7)
    dow = (start.day_of_week + np.arange(days)) % 7
    dayfac = wd[cls_idx][:, dow] * np.exp(rng.normal(0.0, 0.12, (n, days)))
    return _Demand(
        base_m3s=cust.base_demand_m3_per_day.to_numpy() * personal / 86400.0,
        dayfac=dayfac,
        var=var,
        patterns=pats.reshape(-1, STEPS_PER_DAY),
    )


# ----------------------------------------------------------------------------
# the true model and its simulation
# ----------------------------------------------------------------------------


def _simulate(wn: wntr.network.WaterNetworkModel, duration_s: int, *,
              pattern_len: int | None = None) -> wntr.sim.results.SimulationResults:
    """Run EPANET 2.2 on ``wn`` for ``duration_s`` (an extended-period session).

    ``pattern_len`` truncates the patterns written (enough for a short
    calibration run). Sets ``wn``'s duration.
    """
    wn.options.time.duration = int(duration_s)
    try:
        return EpanetSession.period(wn, pattern_len=pattern_len).run_period(convergence_error=True)
    except SimulationError as exc:
        raise SimulationError(
            f"EPANET failed on the true model ({_cause(exc)})",
            fix="check the network runs in EPANET over the requested days (tanks, pumps, controls)",
        ) from None


def _cause(exc: BaseException) -> str:
    """``Type: message`` of the error behind ``exc`` (EPANET's own, when there is one)."""
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}"


def _resample_pattern(mult: list[float], old_step: int, n: int) -> list[float]:
    m = np.asarray(mult, dtype=float)
    if len(m) == 0:
        return [1.0] * n
    idx = (np.arange(n) * STEP_S // max(int(old_step), 1)) % len(m)
    return m[idx].tolist()


def _truth_model(wn0: wntr.network.WaterNetworkModel, node_demand: np.ndarray, junctions: pd.Index, days: int,
                 rng: np.random.Generator) -> wntr.network.WaterNetworkModel:
    """The utility's model turned into the truth: roughness, demands and a 15-min clock.

    ``wn0`` is changed in place: it is the generator's own freshly read copy
    (a deep copy of a 20,000-pipe model costs tens of seconds).
    """
    wn = wn0
    opts = wn.options
    old_step = int(opts.time.pattern_timestep or 3600)
    n_steps = days * STEPS_PER_DAY
    for name in list(wn.pattern_name_list):  # reservoir heads, pump speeds, prices
        pat = wn.get_pattern(name)
        pat.multipliers = _resample_pattern(pat.multipliers, old_step, n_steps)
    opts.time.hydraulic_timestep = STEP_S
    opts.time.pattern_timestep = STEP_S
    opts.time.report_timestep = STEP_S
    opts.time.report_start = 0
    opts.time.pattern_start = 0
    opts.time.start_clocktime = 0
    opts.time.rule_timestep = min(int(opts.time.rule_timestep or STEP_S), STEP_S)
    opts.time.quality_timestep = STEP_S
    opts.quality.parameter = "NONE"
    opts.hydraulic.demand_model = "DDA"
    opts.hydraulic.emitter_exponent = 0.5
    opts.hydraulic.trials = max(int(opts.hydraulic.trials or 200), 200)

    for name in wn.pipe_name_list:
        pipe = wn.get_link(name)
        pipe.roughness = float(pipe.roughness) * float(rng.uniform(0.9, 1.1))

    mean = node_demand.mean(axis=1)
    for i, name in enumerate(junctions):
        j = wn.get_node(name)
        j.demand_timeseries_list.clear()
        j.emitter_coefficient = 0.0
        if mean[i] > 0:
            pname = f"twin_q_{name}"
            wn.add_pattern(pname, (node_demand[i] / mean[i]).tolist())
            j.add_demand(float(mean[i]), pname)
    return wn


def _adjacent_half_length(links: pd.DataFrame, junctions: pd.Index, unit_m: float) -> np.ndarray:
    pipes = links[links.link_type == "pipe"]
    half = pipes.length_m.to_numpy() / 2.0
    out = np.zeros(len(junctions))
    for col in ("start_node", "end_node"):
        i = junctions.get_indexer(pipes[col].to_numpy())
        keep = i >= 0
        np.add.at(out, i[keep], half[keep])
    return out


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------


def iso_timestamps(t_s: np.ndarray, start: pd.Timestamp) -> pa.Array:
    """ISO 8601 strings with +08:00 for seconds since local midnight ``start``.

    Returned dictionary-encoded: a week has at most 604,800 distinct seconds,
    so each distinct time is formatted once.
    """
    base = np.datetime64(start.to_datetime64(), "s").astype(np.int64)
    uniq, inv = np.unique(np.asarray(t_s, dtype=np.int64), return_inverse=True)
    arr = pa.array((base + uniq).astype("datetime64[s]"))
    text = pc.strftime(arr, format=f"%Y-%m-%dT%H:%M:%S{UTC_OFFSET}")
    return pa.DictionaryArray.from_arrays(pa.array(inv.astype(np.int32)), text)


def iso_timestamp(t_s: float, start: pd.Timestamp) -> str:
    """One ISO 8601 string with +08:00 for ``t_s`` seconds since local midnight ``start``."""
    return iso_timestamps(np.array([t_s]), start).dictionary[0].as_py()


def _write_csv(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as f:
        f.write((",".join(table.column_names) + "\n").encode())
        pcsv.write_csv(table, f, pcsv.WriteOptions(include_header=False, quoting_style="none",
                                                   batch_size=1 << 16))


def _round(a: np.ndarray, decimals: int) -> np.ndarray:
    return np.round(np.asarray(a, dtype=float), decimals)


# ----------------------------------------------------------------------------
# the steps of synth_readings
# ----------------------------------------------------------------------------


def _check_formats(crs: str | pyproj.CRS, readings_format: str, meters_crs: str) -> tuple[_Geo, str]:
    """The network's CRS and the meters' datum ("EPSG:4326", "GCJ02" or "BD09"), checked."""
    if readings_format not in ("csv", "parquet"):
        raise InputError(f"readings format {readings_format!r} is not supported", element="readings_format",
                         fix="use csv or parquet")
    geo = _geo(crs)
    datum = str(meters_crs).upper().replace("-", "").replace("_", "")
    if datum in ("EPSG:4326", "WGS84", "4326"):
        datum = "EPSG:4326"
    elif datum not in ("GCJ02", "BD09"):
        raise CRSError(f"meters CRS {meters_crs!r} is not supported", element="meters_crs",
                       fix="use EPSG:4326, GCJ02 or BD09")
    return geo, datum


def _shift_and_write(wn: wntr.network.WaterNetworkModel, geo: _Geo, path: Path) -> list[float]:
    """Move ``wn`` into Yingtan (:func:`_shift_to_yingtan`) and write it to ``path``."""
    shift = _shift_to_yingtan(wn, geo)
    wntr.network.write_inpfile(wn, str(path), units=wn.options.hydraulic.inpfile_units)
    return shift


def gpkg_beside(network_path: str | Path, layer: str = "customers", *,
                option: str = "--customers") -> Path | None:
    """The ``<network>.gpkg`` beside the ``.inp`` when it has a layer named ``layer``.

    ``option`` is the command-line option that overrides the GeoPackage, named
    in the error raised when the file cannot be read.
    """
    sib = Path(network_path).with_suffix(".gpkg")
    if not sib.exists() or sib == Path(network_path):
        return None
    import pyogrio  # third-party GIS I/O, loaded only when a GeoPackage is there

    try:
        layers = [n for n, _ in pyogrio.list_layers(sib)]
    except Exception as exc:
        raise InputError(f"cannot read the GeoPackage beside the network ({exc})", path=sib,
                         fix=f"repair or remove it, or pass {option}") from None
    return sib if layer in layers else None


@dataclass
class _Background:
    """Background leakage: emitters ``C = k * half adjacent pipe length`` where ``ok``."""

    p_mean: np.ndarray  # (junction,) mean pressure head of the first day, m
    k: float  # m3/s per m^0.5 per m of pipe
    ok: np.ndarray  # (junction,) bool: junctions with an emitter
    coef: np.ndarray  # (junction,) emitter coefficient, m3/s per m^0.5

    def summary(self) -> dict[str, Any]:
        return {
            "model": "emitter q = C sqrt(p) at every junction with positive pressure, C proportional "
                     "to half the length of the adjacent pipes",
            "coefficient_m3s_per_m_of_pipe": float(f"{self.k:.6g}"),
            "junctions": int(self.ok.sum()),
        }


def _add_background_leakage(wn: wntr.network.WaterNetworkModel, links: pd.DataFrame, junctions: pd.Index,
                            geo: _Geo, *, q_sys: float, target_nrw_pct: tuple[float, float],
                            rng: np.random.Generator, network_path: str | Path) -> _Background:
    """Size emitters on the first day's pressures so that NRW is in ``target_nrw_pct``; set them on ``wn``."""
    cal = _simulate(wn, 86400, pattern_len=STEPS_PER_DAY)
    p_day = cal.node["pressure"].reindex(columns=junctions).iloc[:-1]
    p_mean = p_day.mean().to_numpy()
    half_len = _adjacent_half_length(links, junctions, geo.unit_m)
    ok = (p_mean > 2.0) & (half_len > 0)
    nrw = rng.uniform(*target_nrw_pct) / 100.0
    q_bg = q_sys * nrw / (1.0 - nrw)
    denom = float((half_len[ok] * np.sqrt(p_mean[ok])).sum())
    if denom <= 0:
        raise SimulationError("no junction has a positive pressure on the first day",
                              path=network_path, fix="check the network's heads and elevations")
    # leakage lowers pressures a little; +3 % compensates on average
    k = 1.03 * q_bg / denom
    coef = np.where(ok, k * half_len, 0.0)
    for name, c in zip(junctions, coef):
        if c > 0:
            wn.get_node(name).emitter_coefficient = float(c)
    return _Background(p_mean, k, ok, coef)


def _leak_record(lk: PlantedLeak, start_ts: pd.Timestamp) -> dict[str, Any]:
    """The leak's ``truth.json`` record before the simulation (flows are added by :func:`_truth_balance`)."""
    return {
        "link_id": lk.link_id,
        "position": round(lk.position, 4),
        "node_start": lk.node_start,
        "node_end": lk.node_end,
        "onset": iso_timestamp(lk.onset_s, start_ts),
        "onset_s": lk.onset_s,
        "emitter_coefficient": float(f"{lk.coef:.6g}"),
        "emitter_coefficient_units": "m3/s per m^0.5",
        "target_flow_lps": round(lk.target_q * 1000, 4),
    }


@dataclass
class _Hydraulics:
    """The truth's EPANET results on the 15-minute grid (SI)."""

    t_index: np.ndarray  # seconds from the start
    pressure: pd.DataFrame  # m, columns = nodes
    flow: pd.DataFrame  # m3/s, columns = links
    demand: pd.DataFrame  # m3/s, columns = nodes (reservoirs negative)


def _simulate_truth(wn0: wntr.network.WaterNetworkModel, city: _City, geo: _Geo, *, spec: LeakSpec,
                    days: int, start_ts: pd.Timestamp, target_nrw_pct: tuple[float, float],
                    rng_model: np.random.Generator, rng_leaks: np.random.Generator,
                    network_path: str | Path) -> tuple[_Background, list[dict[str, Any]], _Hydraulics, _Balance]:
    """Turn ``wn0`` (changed in place) into the truth, add the leakage and leaks, simulate, balance.

    Returns the background leakage, the leaks' ``truth.json`` records (in
    the order planted), the hydraulics and the water balance.
    """
    junctions = city.junctions
    wn = _truth_model(wn0, city.node_q, junctions, days, rng_model)
    background = _add_background_leakage(wn, city.links, junctions, geo, q_sys=city.q_sys,
                                         target_nrw_pct=target_nrw_pct, rng=rng_leaks, network_path=network_path)
    jp = pd.Series(background.p_mean, index=junctions)
    inflow = pd.Series(city.node_q.mean(axis=1) + background.coef * np.sqrt(np.clip(background.p_mean, 0, None)),
                       index=junctions)
    planted = plant_leaks(wn, spec, nodes=city.nodes, links=city.links, jp=jp, node_inflow=inflow, q_sys=city.q_sys,
                          inlet_links=_flow_meter_links(city.nodes, city.links), days=days, rng=rng_leaks,
                          network_path=network_path)
    hyd = _run_truth(wn, days, network_path)
    balance, records = _truth_balance(hyd, city.nodes, junctions, city.node_q, planted, days=days, start_ts=start_ts)
    return background, records, hyd, balance


def _true_week(wn0: wntr.network.WaterNetworkModel, geo: _Geo, customers: gpd.GeoDataFrame | str | Path | None, *,
               spec: LeakSpec, days: int, start_ts: pd.Timestamp, target_nrw_pct: tuple[float, float],
               rng: np.random.Generator, network_path: str | Path,
               ) -> tuple[_City, _Background, list[dict[str, Any]], _Hydraulics, _Balance, np.random.Generator]:
    """The city, its truth (``wn0`` becomes the true model) and its simulation.

    Returns ``(city, background, leak records, hydraulics, balance, rng)``,
    the last the random stream of the pressure loggers.
    """
    rng_c, rng_d, rng_m, rng_l, _spare, rng_n = rng.spawn(6)  # six streams: the seeds stay as they were
    city = _city(wn0, geo, customers, days=days, start_ts=start_ts, rng_customers=rng_c, rng_demand=rng_d)
    background, records, hyd, balance = _simulate_truth(
        wn0, city, geo, spec=spec, days=days, start_ts=start_ts, target_nrw_pct=target_nrw_pct,
        rng_model=rng_m, rng_leaks=rng_l, network_path=network_path)
    return city, background, records, hyd, balance, rng_n


def _leaks_text(records: list[dict[str, Any]]) -> str:
    if not records:
        return "none"
    return "; ".join(f"on {r['link_id']} from {r['onset']}, {r['flow_lps']:.2f} L/s" for r in records)


def _run_truth(wn: wntr.network.WaterNetworkModel, days: int, network_path: str | Path) -> _Hydraulics:
    """The extended-period run of the truth, on the 15-minute grid."""
    res = _simulate(wn, days * 86400)
    t_index = np.arange(days * STEPS_PER_DAY) * STEP_S
    try:
        return _Hydraulics(t_index, res.node["pressure"].loc[t_index], res.link["flowrate"].loc[t_index],
                           res.node["demand"].loc[t_index])
    except KeyError:
        raise SimulationError("EPANET did not report every 15-minute step", path=network_path,
                              fix="check the network's time options") from None


@dataclass
class _Balance:
    """The truth's water balance per 15-minute step (m3/s) and per day."""

    src: np.ndarray  # source (reservoir) outflow
    tank: np.ndarray  # tank filling
    cons: np.ndarray  # customer consumption
    bg: np.ndarray  # background leakage
    lk: np.ndarray  # burst
    per_day: list[dict[str, Any]]
    nrw_pre: float  # background NRW before the burst, % of system input

    def summary(self, days: int) -> dict[str, Any]:
        return {
            "nrw_pct_before_leak": round(self.nrw_pre, 3),
            "system_input_m3_per_day": round(float((self.src - self.tank).sum() * STEP_S / days), 3),
            "source_input_m3_per_day": round(float(self.src.sum() * STEP_S / days), 3),
            "consumption_m3": round(float(self.cons.sum() * STEP_S), 3),
            "background_leakage_m3": round(float(self.bg.sum() * STEP_S), 3),
            "leak_m3": round(float(self.lk.sum() * STEP_S), 3),
            "tank_filling_m3": round(float(self.tank.sum() * STEP_S), 3),
            "balance_note": ("system_input_m3 = consumption_m3 + background_leakage_m3 + leak_m3 + "
                             "tank_filling_m3 (per day, from EPANET at 15-min steps); customers register "
                             "consumption times (1 - under_registration)"),
            "per_day": self.per_day,
        }


def _truth_balance(hyd: _Hydraulics, nodes: pd.DataFrame, junctions: pd.Index, node_q: np.ndarray,
                   planted: list[PlantedLeak], *, days: int,
                   start_ts: pd.Timestamp) -> tuple[_Balance, list[dict[str, Any]]]:
    """Water balance of the truth (all leaks summed) and every leak's record with its simulated flows (L/s)."""
    t_index, D = hyd.t_index, hyd.demand
    src = -D.reindex(columns=nodes.index[nodes.node_type == "reservoir"]).sum(axis=1).to_numpy()
    tank = D.reindex(columns=nodes.index[nodes.node_type == "tank"]).sum(axis=1).to_numpy()
    jd = D.reindex(columns=junctions).to_numpy()
    cons = node_q.sum(axis=0)
    bg = (jd - node_q.T).sum(axis=1)
    each = D.reindex(columns=[p.node for p in planted]).to_numpy()  # (step, leak), m3/s
    lk = each.sum(axis=1) if planted else np.zeros(len(t_index))
    records = [_leak_flows(p, each[:, k], t_index, start_ts) for k, p in enumerate(planted)]
    day_of = t_index // 86400
    per_day = []
    for d in range(days):
        m = day_of == d
        per_day.append({
            "date": (start_ts + pd.Timedelta(days=d)).strftime("%Y-%m-%d"),
            "system_input_m3": round(float(src[m].sum() * STEP_S), 3),
            "tank_filling_m3": round(float(tank[m].sum() * STEP_S), 3),
            "consumption_m3": round(float(cons[m].sum() * STEP_S), 3),
            "background_leakage_m3": round(float(bg[m].sum() * STEP_S), 3),
            "leak_m3": round(float(lk[m].sum() * STEP_S), 3),
        })
    pre = t_index < min((p.onset_s for p in planted), default=days * 86400)
    siv_pre = float((src[pre] - tank[pre]).sum())
    nrw_pre = 100.0 * float(bg[pre].sum()) / siv_pre if siv_pre > 0 else float("nan")
    return _Balance(src, tank, cons, bg, lk, per_day, nrw_pre), records


def _leak_flows(lk: PlantedLeak, q: np.ndarray, t_index: np.ndarray, start_ts: pd.Timestamp) -> dict[str, Any]:
    """One leak's record: the drawn figures, then its simulated mean, final flow (L/s) and volume (m3).

    ``flow_lps`` is the mean from the onset to the end of the period;
    ``final_flow_lps`` the mean of the last hour.
    """
    after = t_index >= lk.onset_s
    return {
        **_leak_record(lk, start_ts),
        "flow_lps": round(float(q[after].mean() * 1000), 4),
        "leak_node": lk.node,
        "kind": lk.kind,
        "ramp_h": round(lk.ramp_s / 3600.0, 2),
        "final_flow_lps": round(float(q[-(3600 // STEP_S):].mean() * 1000), 4),
        "volume_m3": round(float(q.sum() * STEP_S), 3),
        "dma": lk.dma,
    }


def _logger_nodes(hyd: _Hydraulics, nodes: pd.DataFrame, junctions: pd.Index, logger_share: float,
                  rng: np.random.Generator) -> list[str]:
    """Pressure logger nodes: a farthest-point spread of pressurised junctions, and every tank."""
    jx = nodes.loc[junctions, ["x", "y"]].to_numpy()
    n_log = max(1, int(round(logger_share * len(junctions))))
    cand = np.flatnonzero(hyd.pressure.reindex(columns=junctions).mean().to_numpy() > 0)
    if len(cand) == 0:
        cand = np.arange(len(junctions))
    sel = _farthest_points(jx[cand], min(n_log, len(cand)), rng)
    return [*junctions[cand[sel]].tolist(), *nodes.index[nodes.node_type == "tank"].tolist()]


#: Readings of one kind of meter: (meter IDs, meter position per row, time s, value, arrival time s).
_Readings = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _customer_readings(cust: pd.DataFrame, dem: _Demand, days: int,
                       rng: np.random.Generator) -> tuple[list[_Readings], np.ndarray]:
    """Customer registers about twice a day at irregular NB-IoT times, and their under-registration."""
    n_c = len(cust)
    under = rng.uniform(0.02, 0.05, n_c)
    r0 = np.round(rng.gamma(2.0, 400.0, n_c), 3)
    offset = rng.uniform(0, 12 * 3600, n_c)
    per = 2 * days
    t_c = (np.arange(per)[None, :] * 43200.0 + offset[:, None]
           + rng.normal(0, 1200.0, (n_c, per))).clip(0, days * 86400 - 1)
    t_c = np.floor(t_c)
    c_idx = np.repeat(np.arange(n_c), per)
    t_flat = t_c.ravel()
    vol = dem.cumulative(c_idx, t_flat)
    reg = np.floor((r0[c_idx] + vol * (1.0 - under[c_idx])) * 1000.0) / 1000.0
    keep = rng.random(len(c_idx)) >= 0.01
    dup = keep & (rng.random(len(c_idx)) < 0.005)
    late = rng.random(len(c_idx)) < 0.01
    arrive = t_flat + rng.uniform(5, 300, len(c_idx)) + np.where(late, rng.uniform(3600, 2 * 86400,
                                                                                   len(c_idx)), 0.0)
    ids = np.concatenate([np.flatnonzero(keep), np.flatnonzero(dup)])
    dup_arrive = arrive[dup] + rng.uniform(60, 6 * 3600, dup.sum())
    return [(cust.meter_id.to_numpy(), c_idx[ids], t_flat[ids], reg[ids],
             np.concatenate([arrive[keep], dup_arrive]))], under


def _logger_readings(hyd: _Hydraulics, log_nodes: list[str], flow_links: list[str],
                     rng: np.random.Generator) -> list[_Readings]:
    """Pressure (m, 5 cm noise) and flow (L/s, 0.5 % noise) every 15 minutes, 0.2 % missing."""
    t_index = hyd.t_index
    pids = np.array([f"PRS-{n}" for n in log_nodes], dtype=object)
    pv = hyd.pressure[log_nodes].to_numpy() + rng.normal(0, 0.05, (len(t_index), len(log_nodes)))
    fids = np.array([f"FLW-{l}" for l in flow_links], dtype=object)
    fq = hyd.flow[flow_links].to_numpy() * 1000.0
    fv = fq * (1.0 + rng.normal(0, 0.005, fq.shape))
    out = []
    for ids_, vals, dec in ((pids, pv, 3), (fids, fv, 3)):
        if len(ids_) == 0:
            continue
        miss = rng.random(vals.shape) < 0.002
        ti = np.repeat(t_index[:, None], len(ids_), axis=1)
        mi = np.repeat(np.arange(len(ids_))[None, :], len(t_index), axis=0)
        k_ = ~miss
        arr = ti[k_] + rng.uniform(1, 120, k_.sum())
        out.append((ids_, mi[k_], ti[k_].astype(float), _round(vals[k_], dec), arr))
    return out


def _readings_table(parts: list[_Readings], start_ts: pd.Timestamp) -> pa.Table:
    """All readings in arrival order (late rows out of time order): meter_id, timestamp, value."""
    all_ids = np.concatenate([t[0] for t in parts])
    offs = np.cumsum([0] + [len(t[0]) for t in parts[:-1]])
    code = np.concatenate([t[1] + o for t, o in zip(parts, offs)]).astype(np.int32)
    ts = np.concatenate([t[2] for t in parts]).astype(np.int64)
    val = np.concatenate([t[3] for t in parts])
    arr_t = np.concatenate([t[4] for t in parts])
    order = np.lexsort((code, ts, arr_t))
    return pa.table({
        "meter_id": pa.DictionaryArray.from_arrays(pa.array(code[order]), pa.array(all_ids.astype(str))),
        "timestamp": iso_timestamps(ts[order], start_ts),
        "value": pa.array(val[order]),
    })


def _write_data(out: Path, meters: pd.DataFrame, table: pa.Table, readings_format: str, *,
                with_network: bool) -> dict[str, Path]:
    """Write meters.csv and the readings; the paths of every file (truth.json still to write)."""
    paths = {"meters": out / "meters.csv", "truth": out / "truth.json"}
    if with_network:
        paths["network"] = out / "network.inp"
    _write_meters(meters, paths["meters"])
    if readings_format == "parquet":
        paths["readings"] = out / "readings.parquet"
        table = table.set_column(0, "meter_id", pc.cast(table["meter_id"], pa.string()))
        table = table.set_column(1, "timestamp", pc.cast(table["timestamp"], pa.string()))
        pq.write_table(table, paths["readings"], compression="zstd")
    else:
        paths["readings"] = out / "readings.csv"
        _write_csv(table, paths["readings"])
    return paths


@dataclass
class _City:
    """The utility's network as tables, its customers and their demand over the period."""

    nodes: pd.DataFrame
    links: pd.DataFrame
    junctions: pd.Index
    cust: pd.DataFrame
    dem: _Demand
    node_q: np.ndarray  # (junction, step) demand, m3/s

    @property
    def q_sys(self) -> float:
        """Mean system demand, m3/s."""
        return float(self.node_q.sum(axis=0).mean())


def _city(wn: wntr.network.WaterNetworkModel, geo: _Geo, customers: gpd.GeoDataFrame | str | Path | None, *, days: int,
          start_ts: pd.Timestamp, rng_customers: np.random.Generator,
          rng_demand: np.random.Generator) -> _City:
    """Network tables, customers (from the layer, else split from node demands) and demands."""
    nodes = _node_table(wn)
    links = _link_table(wn, nodes, geo)
    links["length_m"] = np.where(links.link_type == "pipe", links.length_m, 0.0)
    cust = (_customers_from_layer(customers, links, geo) if customers is not None
            else _customers_from_nodes(nodes, links, geo, rng_customers))
    junctions = pd.Index(nodes.index[nodes.node_type == "junction"])
    dem = _demand_model(cust, days, start_ts, rng_demand)
    node_q = dem.node_series(_weights(cust, nodes, links, junctions))
    return _City(nodes, links, junctions, cust, dem, node_q)


def _truth_document(*, leaks: list[dict[str, Any]], seed: int, days: int, geo: _Geo, datum: str,
                    network_path: str | Path, shift: list[float] | None, start_ts: pd.Timestamp,
                    balance: _Balance, background: _Background, hyd: _Hydraulics, city: _City,
                    under: np.ndarray, from_layer: bool, log_nodes: list[str], flow_links: list[str],
                    n_rows: int) -> dict[str, Any]:
    """The content of ``truth.json`` (key order is part of the file)."""
    junctions = city.junctions
    return {
        **_leak_keys(leaks),
        "seed": int(seed),
        "days": days,
        "crs": geo.crs.to_string(),
        "meters_crs": datum,
        "network": Path(network_path).name,
        "shift_crs_units": shift,
        "start": iso_timestamp(0, start_ts),
        "timezone_offset": UTC_OFFSET,
        "step_s": STEP_S,
        **balance.summary(days),
        "customers": _customer_summary(city.cust, city.dem, under, days, from_layer=from_layer),
        "pressure_loggers": len(log_nodes),
        "flow_meters": len(flow_links),
        "readings_rows": int(n_rows),
        "roughness_perturbation": "uniform x[0.9, 1.1] per pipe",
        "background_leakage": background.summary(),
        "min_pressure_m": round(float(hyd.pressure.reindex(columns=junctions[city.node_q.max(axis=1) > 0])
                                      .min().min()), 3),
        "min_pressure_note": "lowest pressure head at a junction with customers over the period, m",
    }


def _leak_keys(leaks: list[dict[str, Any]]) -> dict[str, Any]:
    """``leak`` (the one leak, or the largest by mean flow), ``leak_note`` when several, and ``leaks``."""
    if not leaks:
        return {"leak": None, "leaks": []}
    if len(leaks) == 1:
        return {"leak": leaks[0], "leaks": leaks}
    largest = max(leaks, key=lambda r: r["flow_lps"])
    return {
        "leak": largest,
        "leak_note": (f"{len(leaks)} leaks: 'leak' is the largest by mean flow after its onset "
                      f"({largest['link_id']}); 'leaks' lists them all; leak_m3 and per_day sum them all"),
        "leaks": leaks,
    }


def _customer_summary(cust: pd.DataFrame, dem: _Demand, under: np.ndarray, days: int, *,
                      from_layer: bool) -> dict[str, Any]:
    n_c = len(cust)
    return {
        "count": n_c,
        "source": "layer" if from_layer else "split from node demands",
        "under_registration_mean": round(float(under.mean()), 5),
        "registered_m3": round(float(((dem.cumulative(np.arange(n_c), np.full(n_c, days * 86400.0)))
                                     * (1 - under)).sum()), 3),
        "by_class": {c: int((cust.customer_class == c).sum()) for c in CLASSES},
    }


# ----------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------


def synth_readings(
    network_path: str | Path,
    *,
    crs: str | pyproj.CRS,
    days: int = 7,
    leak: str | Sequence[str] | None = "random",
    seed: int = 0,
    out_dir: str | Path,
    customers: gpd.GeoDataFrame | str | Path | None = None,
    leak_flow_lps: float | None = None,
    leaks: int | None = None,
    leak_districts: str = "any",
    leak_growth: str = "abrupt",
    leak_separation_m: float = LEAK_SEPARATION_M,
    start: str | pd.Timestamp | None = "2026-03-02",
    readings_format: str = "csv",
    logger_share: float = 0.04,
    target_nrw_pct: tuple[float, float] = (10.5, 11.5),
    shift_to_yingtan: bool = False,
    meters_crs: str = "EPSG:4326",
) -> dict[str, Path]:
    """Simulate a true network and write synthetic meters, readings and truth.

    Parameters
    ----------
    network_path : str or Path
        The utility's EPANET ``.inp`` (any flow units).
    crs : str or pyproj.CRS
        CRS of the ``.inp`` coordinates (projected; e.g. ``"EPSG:32650"``).
        Meter lon/lat are the exact inverse of this CRS, so joining them back
        with the same ``--crs`` lands on the network. Coordinates are not
        shifted: a network in local metres (L-Town) lands wherever the CRS
        puts those numbers.
    days : int
        Length of the simulated period, whole local days (>= 1; >= 3 with a leak).
    leak : str or sequence of str
        ``"random"`` (random pipes, positions and onsets after day 2),
        ``"none"``, or pipe IDs of the network (a comma list, or a
        sequence): one leak on each.
    seed : int
        Seed of every random draw; the same seed gives byte-identical files.
    out_dir : str or Path
        Directory for the files (created).
    customers : GeoDataFrame or path, optional
        Customer meters (``meter_id``, ``customer_class``,
        ``base_demand_m3_per_day``, Point geometry, optionally ``link_id`` and
        ``position``). Default: a ``<network>.gpkg`` beside the ``.inp`` with
        a ``customers`` layer, else customers split from node demands.
    leak_flow_lps : float, optional
        Flow of every leak at full size, L/s (default: random, 1-6 % of the
        system demand for one leak anywhere, else of the leak's DMA mean
        inflow; all leaks together at most 10 % of the system demand, the
        leaks of one DMA at most 15 % of its inflow).
    leaks : int, optional
        Number of random leaks (default 1 with ``leak="random"``, 0 with
        ``"none"``; the number of pipes when pipes are named).
    leak_districts : {"any", "different", "same"}
        Random leaks anywhere, each in its own DMA (among DMAs with at least
        10 pipes under pressure), or all in one DMA.
    leak_growth : {"abrupt", "growing", "mixed"}
        Leaks at full size from their onset, growing linearly from zero over
        a ramp of 6-48 h, or some of each (both kinds from two leaks on).
    leak_separation_m : float
        Random leaks lie on distinct pipes more than this far apart along
        the pipes (middle to middle), m.
    start : str, optional
        Local date of the first day (timestamps are UTC+8).
    readings_format : {"csv", "parquet"}
        Format of the readings file.
    logger_share : float
        Share of junctions with a pressure logger (farthest-point spread).
    target_nrw_pct : (float, float)
        Range of the background non-revenue water before the burst, % of
        system input.
    shift_to_yingtan : bool
        Translate the network (by whole hundreds of CRS units) so that its
        centre lies in Yingtan (117.04 E, 28.25 N), and write the shifted
        copy as ``network.inp`` in ``out_dir``: meters and maps then land in
        the city, and the pair (``network.inp``, ``meters.csv``) is
        consistent. For networks in local coordinates such as L-Town.
    meters_crs : {"EPSG:4326", "GCJ02", "BD09"}
        Datum of the meters' lon/lat: WGS84 (default), or the Chinese web-map
        datums GCJ-02 (Amap, Tencent) or BD-09 (Baidu), as a utility's
        registry digitised on those maps would hold them. Read them back
        with ``--meters-crs`` of the same name.

    Returns
    -------
    dict of str to Path
        ``{"meters": ..., "readings": ..., "truth": ...}``.

    Raises
    ------
    InputError, MissingFileError, NetworkError, CRSError
        Bad arguments or files.
    UnknownElementError
        ``leak`` names a link that is not in the network.
    SimulationError
        EPANET does not converge on the true model.
    """
    days = _check_days(days)
    geo, datum = _check_formats(crs, readings_format, meters_crs)
    wn0 = _load_wn(network_path)
    start_ts = _start_time(start)
    spec = check_leaks(wn0, leak, leaks, districts=leak_districts, growth=leak_growth, flow_lps=leak_flow_lps,
                       separation_m=leak_separation_m, days=days, network_path=network_path)
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shift = _shift_and_write(wn0, geo, out / "network.inp") if shift_to_yingtan else None
    customers = gpkg_beside(network_path) if customers is None else customers
    city, background, records, hyd, balance, rng_n = _true_week(
        wn0, geo, customers, spec=spec, days=days, start_ts=start_ts, target_nrw_pct=target_nrw_pct, rng=rng,
        network_path=network_path)
    nodes, links, junctions = city.nodes, city.links, city.junctions

    log_nodes = _logger_nodes(hyd, nodes, junctions, logger_share, rng_n)
    flow_links = _flow_meter_links(nodes, links)
    meters = _meters_table(city.cust, nodes, links, log_nodes, flow_links, geo, datum)
    parts, under = _customer_readings(city.cust, city.dem, days, rng.spawn(1)[0])
    parts += _logger_readings(hyd, log_nodes, flow_links, rng.spawn(1)[0])
    table = _readings_table(parts, start_ts)
    paths = _write_data(out, meters, table, readings_format, with_network=shift is not None)

    truth = _truth_document(
        leaks=records, seed=seed, days=days, geo=geo, datum=datum, network_path=network_path, shift=shift,
        start_ts=start_ts, balance=balance, background=background, hyd=hyd, city=city, under=under,
        from_layer=customers is not None, log_nodes=log_nodes, flow_links=flow_links, n_rows=table.num_rows)
    paths["truth"].write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n")
    log.info("synthesised %d days on %s: %d customers, %d pressure loggers, %d flow meters, %d readings; "
             "NRW %.1f %% before the leaks; leaks %s", days, Path(network_path).name, len(city.cust),
             len(log_nodes), len(flow_links), table.num_rows, balance.nrw_pre, _leaks_text(records))
    return paths


#: Centre of Yingtan's central urban area (Yuehu district), lon/lat degrees.
YINGTAN_LONLAT = (117.04, 28.25)


def _shift_to_yingtan(wn: wntr.network.WaterNetworkModel, geo: _Geo) -> list[float]:
    """Translate ``wn`` in place so its bounding-box centre lies in Yingtan; return (dx, dy)."""
    xy = np.array([n.coordinates for _, n in wn.nodes()], dtype=float)
    cx, cy = (xy.min(0) + xy.max(0)) / 2.0
    tx, ty = pyproj.Transformer.from_crs("EPSG:4326", geo.crs, always_xy=True).transform(*YINGTAN_LONLAT)
    dx, dy = round((tx - cx) / 100.0) * 100.0, round((ty - cy) / 100.0) * 100.0
    for _, node in wn.nodes():
        x, y = node.coordinates
        node.coordinates = (x + dx, y + dy)
    for _, link in wn.links():
        if getattr(link, "vertices", None):
            link.vertices = [(x + dx, y + dy) for x, y in link.vertices]
    return [dx, dy]


def _check_days(days: Any) -> int:
    try:
        d = int(days)
    except (TypeError, ValueError):
        raise InputError(f"days {days!r} is not a whole number", element="days", fix="give e.g. --days 7") from None
    if d != days or d < 1:
        raise InputError(f"days must be a positive whole number, got {days}", element="days",
                         fix="give e.g. --days 7")
    if d > 366:
        raise InputError(f"{d} days is more than a year", element="days", fix="simulate at most 366 days at once")
    return d


def farthest_points(xy: np.ndarray, n: int, first: int) -> np.ndarray:
    """Indices of ``n`` points spread out by farthest-point sampling from point ``first``.

    Parameters
    ----------
    xy : ndarray, shape (m, 2)
        Coordinates (m, projected CRS).
    n : int
        Points wanted (at most ``m``).
    first : int
        Index of the starting point (chosen by the caller, e.g. at random).
    """
    if n <= 0 or len(xy) == 0:
        return np.array([], dtype=np.int64)
    chosen = [int(first)]
    d = ((xy - xy[first]) ** 2).sum(1)
    for _ in range(min(n, len(xy)) - 1):
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, ((xy - xy[i]) ** 2).sum(1))
    return np.array(chosen, dtype=np.int64)


def _farthest_points(xy: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Farthest-point sampling from a random point near the centre (different seeds differ slightly)."""
    if n <= 0 or len(xy) == 0:
        return np.array([], dtype=np.int64)
    near = np.argsort(((xy - xy.mean(axis=0)) ** 2).sum(1))[: max(1, len(xy) // 50)]
    return farthest_points(xy, n, int(near[rng.integers(len(near))]))


def _flow_meter_links(nodes: pd.DataFrame, links: pd.DataFrame) -> list[str]:
    """Links with a flow meter: pumps, valves, source outlets, tank feeds and open zone crossings."""
    ks = nodes.node_type.reindex(links.start_node).to_numpy()
    ke = nodes.node_type.reindex(links.end_node).to_numpy()
    zs = nodes.zone.reindex(links.start_node).to_numpy()
    ze = nodes.zone.reindex(links.end_node).to_numpy()
    crossing = (zs != "") & (ze != "") & (zs != ze)
    storage = np.isin(ks, ["reservoir", "tank"]) | np.isin(ke, ["reservoir", "tank"])
    chosen = ~links.closed.to_numpy() & (links.link_type.isin(["pump", "valve"]).to_numpy() | storage | crossing)
    return [str(x) for x in links.index[chosen]]


def _meters_table(cust: pd.DataFrame, nodes: pd.DataFrame, links: pd.DataFrame, log_nodes: list[str],
                  flow_links: list[str], geo: _Geo, datum: str = "EPSG:4326") -> pd.DataFrame:
    mid = links.loc[flow_links, "geometry"].to_numpy()
    mp = shapely.line_interpolate_point(mid, 0.5, normalized=True) if len(mid) else np.array([])
    xs = np.concatenate([cust.x.to_numpy(), nodes.loc[log_nodes, "x"].to_numpy(), shapely.get_x(mp)])
    ys = np.concatenate([cust.y.to_numpy(), nodes.loc[log_nodes, "y"].to_numpy(), shapely.get_y(mp)])
    lon, lat = geo.to_lonlat.transform(xs, ys)
    if datum != "EPSG:4326":
        lon, lat = (tcrs.wgs84_to_gcj02 if datum == "GCJ02" else tcrs.wgs84_to_bd09)(lon, lat)
    n_c, n_p, n_f = len(cust), len(log_nodes), len(flow_links)
    return pd.DataFrame({
        "meter_id": [*cust.meter_id, *(f"PRS-{n}" for n in log_nodes), *(f"FLW-{l}" for l in flow_links)],
        "kind": ["customer"] * n_c + ["pressure"] * n_p + ["flow"] * n_f,
        "lon": np.round(lon, 7),
        "lat": np.round(lat, 7),
        "node_id": [""] * n_c + list(log_nodes) + [""] * n_f,
        "link_id": [""] * (n_c + n_p) + list(flow_links),
        "customer_class": [*cust.customer_class, *([""] * (n_p + n_f))],
    })


def _write_meters(meters: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(meters, preserve_index=False)
    _write_csv(table, path)
