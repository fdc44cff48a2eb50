"""The Yingtan reference city: a synthetic but plausible water network.

The network is laid out in Yingtan's central urban area (Yuehu district,
about 28.20-28.30 N, 116.98-117.10 E) in CGCS2000 / 3-degree Gauss-Kruger
CM 117E (EPSG:4548), metres:

- a street-like distribution grid (a lattice warped and jittered, with a
  random spanning tree plus most of the remaining streets, so there are
  loops, dead ends and no perfect rectangles);
- the Xin River crossing the city from west to east; pipes cross it only at a
  few bridges, which carry trunk mains;
- treatment plants (clear-well reservoir + duty pumps) feeding looped trunk
  mains (every few streets) that enclose district metered areas (DMAs);
- each DMA fed through one or two metered inlets from the trunk, the other
  trunk connections closed (boundary valves); low-lying DMAs through PRVs;
- a pumped high zone on the hills, with a booster pump controlled by the
  level of an elevated tank;
- diameters DN100-DN800 by hierarchy, sized so that peak-hour head losses are
  moderate; Hazen-Williams C by material and age; elevations from a smooth
  terrain of 30-80 m;
- isolation valves placed with WNTR's strategic N-1 rule;
- customers by class (residential, commercial, industrial) 5-40 m off their
  pipe, whose nominal consumption is the junction demand in the ``.inp``.

Outputs ``yingtan-<size>.inp`` (EPSG:4548 coordinates, zones in [TAGS],
demand patterns by class) and ``yingtan-<size>.gpkg`` (layers ``pipes`` with
pumps and PRVs as ``link_type`` rows, ``nodes``, ``valves``, ``customers``,
``dmas``, ``river``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
import wntr
from numpy.random import Generator
from wntr.network import WaterNetworkModel
from wntr.network.controls import Control, ControlAction, ValueCondition

from twin.errors import InputError, SimulationError
from twin.graph import edge_components, spanning_tree
from twin.hydraulics import simulate
from twin.synth.readings import _HOURLY, CLASSES, CUSTOMER_SIZE_M3_PER_DAY

log = logging.getLogger(__name__)

CRS = "EPSG:4548"
#: Hydraulic grade line the plants aim at, m above datum, at the peak hour.
PLANT_HGL_M = 86.0
#: DMAs with ground above this are boosted (pumped high zone), m.
HIGH_ZONE_GROUND_M = 61.0
#: Pressure the high zone's boosters aim at above its highest ground, m.
HIGH_ZONE_PRESSURE_M = 24.0
#: Nominal diameters, mm.
DN = np.array([100, 150, 200, 250, 300, 400, 500, 600, 800])


@dataclass(frozen=True)
class CitySpec:
    """Parameters of one city size."""

    extent_m: tuple[float, float]  # width (W-E), height (S-N)
    spacing_m: float  # street spacing
    trunk_every: int  # a trunk main every this many streets
    customers: int
    plants: int
    bridges: int
    keep_extra: float  # share of non-tree streets kept


SIZES = {
    "small": CitySpec(extent_m=(3600.0, 3300.0), spacing_m=125.0, trunk_every=7, customers=10_000,
                      plants=1, bridges=2, keep_extra=0.35),
    "city": CitySpec(extent_m=(11400.0, 10400.0), spacing_m=92.0, trunk_every=11, customers=130_000,
                     plants=2, bridges=5, keep_extra=0.62),
}

#: Centre of the layout: Yuehu district, Yingtan (lon, lat degrees).
CENTRE_LONLAT = (117.04, 28.25)


# ----------------------------------------------------------------------------
# layout
# ----------------------------------------------------------------------------


def _terrain(x: np.ndarray, y: np.ndarray, river_y: np.ndarray, spec: CitySpec,
             rng_hill: tuple[float, float]) -> np.ndarray:
    """Smooth ground elevation, m: a river valley, a gentle rise and hills to the north-east."""
    w, h = spec.extent_m
    u, v = x / w, y / h  # 0..1
    z = 34.0 + 16.0 * np.clip(np.abs(y - river_y) / (0.5 * h), 0, 1) ** 1.3
    z += 6.0 * np.sin(2.3 * np.pi * u + 0.7) * np.cos(1.7 * np.pi * v)
    hx, hy = rng_hill
    d2 = ((u - hx) / 0.16) ** 2 + ((v - hy) / 0.14) ** 2
    z += 30.0 * np.exp(-d2)
    return np.clip(z, 30.0, 80.0)


@dataclass
class _Layout:
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    row: np.ndarray
    col: np.ndarray
    trunk: np.ndarray  # node on a trunk line
    cell: np.ndarray  # DMA cell id (-1 for trunk)
    edges: np.ndarray  # (m, 2) node indices
    edge_trunk: np.ndarray
    bridge: np.ndarray
    river: np.ndarray  # (k, 2) polygon ring of the river, layout coordinates


@dataclass
class _Grid:
    """The warped street lattice before streets are chosen; layout coordinates, m."""

    x: np.ndarray
    y: np.ndarray
    gx: np.ndarray  # unwarped lattice coordinates
    gy: np.ndarray
    row: np.ndarray
    col: np.ndarray
    nr: int
    nc: int
    trunk: np.ndarray  # node on a trunk line


def _layout(spec: CitySpec, rng: Generator) -> _Layout:
    """Streets, trunk mains, DMA cells, bridges, the river and the terrain (draws from ``rng`` in this order)."""
    w, h = spec.extent_m
    s = spec.spacing_m
    grid = _grid(spec, rng)
    # the Xin River: a W-E band a little south of the middle
    phase = rng.uniform(0, 2 * np.pi)
    river_mid = 0.42 * h
    river_y = river_mid + 0.06 * h * np.sin(2 * np.pi * grid.gx / w * 1.3 + phase)
    in_river = np.abs(grid.gy - river_y) < 1.25 * s
    north = grid.gy > river_y
    edges, e_trunk, cell = _street_edges(spec, grid, in_river, north, rng)
    edges, e_trunk, bridge = _add_bridges(spec, grid, edges, e_trunk, in_river, north)
    alive, edges, e_trunk, bridge = _main_part(grid, edges, e_trunk, bridge, in_river)
    # river polygon in the warped coordinates, narrower than the cleared band
    rx = np.linspace(-s, w + s, 200)
    ry = river_mid + 0.06 * h * np.sin(2 * np.pi * rx / w * 1.3 + phase) + 0.22 * s * np.sin(rx / (9.1 * s) + 1.0)
    bank = 0.85 * s
    river = np.vstack([np.column_stack([rx, ry - bank]), np.column_stack([rx[::-1], ry[::-1] + bank])])
    hill = (float(rng.uniform(0.72, 0.82)), float(rng.uniform(0.72, 0.82)))
    z = _terrain(grid.x, grid.y, river_y, spec, hill)
    return _Layout(x=grid.x[alive], y=grid.y[alive], z=z[alive], row=grid.row[alive], col=grid.col[alive],
                   trunk=grid.trunk[alive], cell=cell[alive], edges=edges, edge_trunk=e_trunk, bridge=bridge,
                   river=river)


def _grid(spec: CitySpec, rng: Generator) -> _Grid:
    """A lattice warped (curved streets) and jittered (irregular blocks); trunk lines straighter."""
    w, h = spec.extent_m
    s = spec.spacing_m
    nc, nr = int(w // s) + 1, int(h // s) + 1
    col, row = np.meshgrid(np.arange(nc), np.arange(nr))
    col, row = col.ravel(), row.ravel()
    gx, gy = col * s, row * s
    x = gx + 0.18 * s * np.sin(gy / (7.3 * s)) + rng.uniform(-0.2, 0.2, gx.size) * s
    y = gy + 0.22 * s * np.sin(gx / (9.1 * s) + 1.0) + rng.uniform(-0.2, 0.2, gy.size) * s
    t = spec.trunk_every
    trunk = (row % t == 0) | (col % t == 0) | (row == nr - 1) | (col == nc - 1)
    # on trunk lines no jitter across the line: straighter main roads
    x = np.where(col % t == 0, gx + 0.18 * s * np.sin(gy / (7.3 * s)), x)
    y = np.where(row % t == 0, gy + 0.22 * s * np.sin(gx / (9.1 * s) + 1.0), y)
    return _Grid(x=x, y=y, gx=gx, gy=gy, row=row, col=col, nr=nr, nc=nc, trunk=trunk)


def _street_edges(spec: CitySpec, grid: _Grid, in_river: np.ndarray, north: np.ndarray,
                  rng: Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Streets kept: trunk lines, a random spanning forest of each block plus a share of the rest.

    Returns the edges (node index pairs), which are trunk mains, and each node's DMA cell (-1 on the trunk).
    """
    nr, nc, row, col = grid.nr, grid.nc, grid.row, grid.col
    t = spec.trunk_every
    e_h = np.array([(r * nc + c, r * nc + c + 1) for r in range(nr) for c in range(nc - 1)])
    e_v = np.array([(r * nc + c, (r + 1) * nc + c) for r in range(nr - 1) for c in range(nc)])
    edges = np.vstack([e_h, e_v])
    edges = edges[~in_river[edges[:, 0]] & ~in_river[edges[:, 1]]]
    trunk_row = (row % t == 0) | (row == nr - 1)
    trunk_col = (col % t == 0) | (col == nc - 1)
    a_, b_ = edges[:, 0], edges[:, 1]
    e_trunk = ((row[a_] == row[b_]) & trunk_row[a_]) | ((col[a_] == col[b_]) & trunk_col[a_])
    # cells: the blocks between trunk lines; cells split by the river get separate ids for each bank
    cell = np.where(grid.trunk, -1, (row // t) * ((nc - 1) // t + 1) + col // t)
    cell = np.where((cell >= 0) & north, cell + 100_000, cell)
    # distribution streets: random spanning forest + a share of the other streets
    dist = ~e_trunk
    same_cell = (cell[edges[:, 0]] == cell[edges[:, 1]]) & (cell[edges[:, 0]] >= 0)
    to_trunk = dist & ~same_cell & ((cell[edges[:, 0]] >= 0) ^ (cell[edges[:, 1]] >= 0))
    inner = dist & same_cell
    idx = np.flatnonzero(inner)
    wts = rng.uniform(1.0, 2.0, idx.size)
    in_tree = np.zeros(len(edges), dtype=bool)
    in_tree[idx] = spanning_tree(grid.x.size, edges[idx, 0], edges[idx, 1], wts)
    extra = inner & ~in_tree & (rng.random(len(edges)) < spec.keep_extra)
    # links from a block to the trunk: many streets meet the main road
    trunk_links = to_trunk & (rng.random(len(edges)) < 0.6)
    keep = e_trunk | (inner & in_tree) | extra | trunk_links
    return edges[keep], e_trunk[keep], cell


def _add_bridges(spec: CitySpec, grid: _Grid, edges: np.ndarray, e_trunk: np.ndarray, in_river: np.ndarray,
                 north: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bridges: trunk columns chosen across the width, joining the banks; returns edges, trunk, bridge flags."""
    row, col, nc = grid.row, grid.col, grid.nc
    t = spec.trunk_every
    tcols = np.unique(col[grid.trunk & (col % t == 0)])
    tcols = tcols[(tcols > 0) & (tcols < nc - 1)]
    pick = np.unique(np.linspace(0, len(tcols) - 1, spec.bridges).round().astype(int)) if len(tcols) else []
    bridges = []
    for c in tcols[pick]:
        on = np.flatnonzero((col == c) & ~in_river)
        s_side = on[~north[on]]
        n_side = on[north[on]]
        if len(s_side) and len(n_side):
            bridges.append((s_side[np.argmax(row[s_side])], n_side[np.argmin(row[n_side])]))
    bridge = np.zeros(len(edges), dtype=bool)
    if bridges:
        edges = np.vstack([edges, np.array(bridges)])
        e_trunk = np.concatenate([e_trunk, np.ones(len(bridges), dtype=bool)])
        bridge = np.concatenate([bridge, np.ones(len(bridges), dtype=bool)])
    return edges, e_trunk, bridge


def _main_part(grid: _Grid, edges: np.ndarray, e_trunk: np.ndarray, bridge: np.ndarray,
               in_river: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drop river nodes and anything not connected to the trunk; edges renumbered to the kept nodes."""
    n = grid.x.size
    used = np.zeros(n, dtype=bool)
    used[edges.ravel()] = True
    ncomp, lab = edge_components(n, edges[:, 0], edges[:, 1])
    trunk_lab = np.bincount(lab[grid.trunk & used], minlength=ncomp)
    alive = used & (lab == np.argmax(trunk_lab)) & ~in_river
    remap = -np.ones(n, dtype=np.int64)
    remap[alive] = np.arange(alive.sum())
    ok = alive[edges[:, 0]] & alive[edges[:, 1]]
    return alive, remap[edges[ok]], e_trunk[ok], bridge[ok]


# ----------------------------------------------------------------------------
# the public function
# ----------------------------------------------------------------------------


def synth_city(*, size: str = "small", seed: int = 2026, out_dir: str | Path) -> dict[str, Path]:
    """Generate the Yingtan reference network and its GIS layers.

    Parameters
    ----------
    size : {"small", "city"}
        ``small``: ~1,000 pipes, ~10,000 customers, one plant (a few seconds).
        ``city``: 20,000+ pipes, 130,000 customers, two plants (a minute or two).
    seed : int
        Seed of every random draw (layout, attributes, customers, valves).
        The ``.inp`` is byte-identical for the same seed.
    out_dir : str or Path
        Directory for ``yingtan-<size>.inp`` and ``yingtan-<size>.gpkg``.

    Returns
    -------
    dict of str to Path
        ``{"inp": ..., "gpkg": ...}``. Coordinates in EPSG:4548 (metres).

    Raises
    ------
    InputError
        Unknown size.
    SimulationError
        The generated network does not converge (should not happen).
    """
    if size not in SIZES:
        raise InputError(f"unknown city size {size!r}", element="size", fix="use 'small' or 'city'")
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    r_lay, r_att, r_cus, _r_hyd, r_val = rng.spawn(5)  # _r_hyd: spare, kept so r_val draws as before
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    lay = _layout(spec, r_lay)
    # place the layout in Yingtan
    cx, cy = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(*CENTRE_LONLAT)
    x0 = round(cx - spec.extent_m[0] / 2.0)
    y0 = round(cy - spec.extent_m[1] / 2.0)
    X, Y = np.round(lay.x + x0, 2), np.round(lay.y + y0, 2)
    net = _build(lay, X, Y, spec, r_att, r_cus, size)
    wn, nodes, links, customers, dmas = net

    inp = out / f"yingtan-{size}.inp"
    _write_inp(wn, inp)
    valves = _valves(wn, links, r_val)
    river = gpd.GeoDataFrame({"name": ["Xin River"], "name_zh": ["信江"]},
                             geometry=[shapely.Polygon(np.round(lay.river + [x0, y0], 2))], crs=CRS)
    gpkg = out / f"yingtan-{size}.gpkg"
    _write_gpkg(gpkg, nodes, links, valves, customers, dmas, river)
    log.info("built Yingtan %s: %d junctions, %d pipes, %d DMAs, %d customers, %d valves -> %s",
             size, wn.num_junctions, wn.num_pipes, len(dmas), len(customers), len(valves), inp)
    return {"inp": inp, "gpkg": gpkg}


# ----------------------------------------------------------------------------
# network building
# ----------------------------------------------------------------------------


def _hw_c(material: np.ndarray, year: np.ndarray) -> np.ndarray:
    """Hazen-Williams C from material and installation year (ageing to 2026)."""
    age = np.clip(2026 - year, 0, 80)
    base = {"PE": 148.0, "PVC": 145.0, "DI": 135.0, "STEEL": 125.0, "CI": 115.0}
    decay = {"PE": 0.05, "PVC": 0.08, "DI": 0.35, "STEEL": 0.6, "CI": 0.9}
    b = np.array([base[m] for m in material])
    d = np.array([decay[m] for m in material])
    return np.round(np.clip(b - d * age, 70.0, 150.0), 1)


@dataclass
class _Zones:
    """Zones of the layout's nodes and the DMA inlets that may feed them."""

    zone: np.ndarray  # per node: "TRUNK", "DMAnn", or "" for dropped tiny blocks
    alive: np.ndarray  # per node: kept in the network
    keep_e: np.ndarray  # per edge: both ends kept
    cand: np.ndarray  # per edge: a street from the trunk into a DMA (candidate inlet)
    dma_node: np.ndarray  # per edge: its DMA-side node
    dma_names: list[str]
    high: str  # the high zone, which carries the elevated tank
    boosted: list[str]  # DMAs fed by booster pumps
    prv_dmas: set[str]  # pressure-managed DMAs (PRV inlets)


@dataclass
class _Streets:
    """Per-edge attributes of the pipes."""

    inlet: np.ndarray  # open DMA inlet
    boundary: np.ndarray  # closed boundary valve
    length: np.ndarray  # m
    year: np.ndarray
    mat: np.ndarray
    dn: np.ndarray  # nominal diameter, mm


@dataclass
class _Customers:
    """Customers along the distribution streets."""

    pipe_of: np.ndarray  # edge each customer hangs on
    cls: np.ndarray  # customer class
    size_m3: np.ndarray  # nominal consumption, m3/day
    position: np.ndarray  # 0..1 along the edge
    x: np.ndarray  # layout-placed coordinates, EPSG:4548 m
    y: np.ndarray


def _build(
    lay: _Layout, X: np.ndarray, Y: np.ndarray, spec: CitySpec, r_att: Generator, r_cus: Generator, size: str
) -> tuple[WaterNetworkModel, gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The network from the layout: zones, inlets, attributes, customers, the WNTR model and its tables.

    Returns the model (SI, EPSG:4548 coordinates) and the ``nodes``, ``pipes``, ``customers`` and ``dmas``
    layers. ``r_att`` draws the inlets and pipe attributes, ``r_cus`` the customers, in a fixed order:
    the same seed gives the same city.
    """
    E = lay.edges
    zones = _zones(lay, X, Y)
    streets = _streets(lay, X, Y, spec, zones, r_att, size)
    cust = _customers(lay, X, Y, spec, zones, streets, r_cus)
    dem = _node_demands(len(X), E, cust)
    node_ids = np.array([f"J{i + 1:05d}" for i in range(len(X))], dtype=object)
    link_ids = np.array([f"P{i + 1:05d}" for i in range(len(E))], dtype=object)

    wn = _new_model()
    _add_junctions(wn, lay, X, Y, zones, dem, node_ids)
    is_prv = _add_pipes(wn, lay, zones, streets, node_ids, link_ids)
    _add_plants(wn, lay, X, Y, spec, zones, float(dem.sum()), node_ids)
    boosters = _add_boosters(wn, lay, zones, streets.inlet, dem, link_ids)
    tank_floor = _add_tank(wn, lay, X, Y, zones, boosters, node_ids)

    res = _size_pipes(wn)
    _tune_boosters(wn, res, boosters, lay, zones, tank_floor)
    prv_settings = _add_prvs(wn, link_ids[is_prv])

    nodes, links = _tables(wn, mat_year=dict(zip(link_ids, zip(streets.mat, streets.year))))
    customers = gpd.GeoDataFrame({
        "meter_id": [f"YT{i + 1:06d}" for i in range(len(cust.pipe_of))],
        "customer_class": cust.cls,
        "base_demand_m3_per_day": np.round(cust.size_m3, 4),
        "link_id": link_ids[cust.pipe_of],
        "position": cust.position,
        "zone": zones.zone[E[cust.pipe_of, 0]],
    }, geometry=shapely.points(np.round(cust.x, 2), np.round(cust.y, 2)), crs=CRS)
    dmas = _dma_polygons(nodes, links, customers, zones.prv_dmas, set(boosters), prv_settings, zones.high)
    return wn, nodes, links, customers, dmas


def _zones(lay: _Layout, X: np.ndarray, Y: np.ndarray) -> _Zones:
    """DMAs (connected blocks named south-west first), the high zone, the boosted and the PRV-fed DMAs."""
    n = len(X)
    E = lay.edges
    # DMA components: each cell's nodes connected by inner streets
    inner = (lay.cell[E[:, 0]] == lay.cell[E[:, 1]]) & (lay.cell[E[:, 0]] >= 0)
    _, comp = edge_components(n, E[inner, 0], E[inner, 1])
    comp = np.where(lay.cell >= 0, comp, -1)
    # candidate inlets: streets from the trunk into a component
    into = ~lay.edge_trunk & ~inner
    a_tr = lay.trunk[E[:, 0]] & (comp[E[:, 1]] >= 0)
    b_tr = lay.trunk[E[:, 1]] & (comp[E[:, 0]] >= 0)
    cand = into & (a_tr | b_tr)
    dma_node = np.where(a_tr, E[:, 1], E[:, 0])
    comp_sizes = np.bincount(comp[comp >= 0])
    # components: order by centroid (south-west first) for stable, readable names
    comps = np.unique(comp[comp >= 0])
    cxs = np.array([X[comp == c].mean() for c in comps])
    cys = np.array([Y[comp == c].mean() for c in comps])
    order = np.lexsort((cxs, -np.round(cys / 1000.0)))
    zone_of_comp = {}
    k = 0
    for i in order:
        c = comps[i]
        if comp_sizes[c] < 4 or not (cand & (comp[dma_node] == c)).any():
            continue
        k += 1
        zone_of_comp[c] = f"DMA{k:02d}" if k < 100 else f"DMA{k:03d}"
    zone = np.array([zone_of_comp.get(c, "") if c >= 0 else "TRUNK" for c in comp], dtype=object)
    alive = zone != ""
    # nodes of dropped tiny components are removed with their streets
    keep_e = alive[E[:, 0]] & alive[E[:, 1]]

    # high zone: the DMA with the highest mean ground, and every DMA reaching above HIGH_ZONE_GROUND_M
    dma_names = sorted(set(zone[alive]) - {"TRUNK"})
    z_mean = {d: float(lay.z[zone == d].mean()) for d in dma_names}
    high = max(dma_names, key=lambda d: z_mean[d])  # carries the elevated tank
    z_max = {d: float(lay.z[zone == d].max()) for d in dma_names}
    boosted = sorted({high} | {d for d in dma_names if z_max[d] > HIGH_ZONE_GROUND_M})
    # pressure-managed DMAs: the lowest third by ground level (PRV inlets)
    low_cut = np.quantile([z_mean[d] for d in dma_names], 0.33)
    prv_dmas = {d for d in dma_names if z_mean[d] <= low_cut and d not in boosted}
    return _Zones(zone=zone, alive=alive, keep_e=keep_e, cand=cand, dma_node=dma_node, dma_names=dma_names,
                  high=high, boosted=boosted, prv_dmas=prv_dmas)


def _streets(lay: _Layout, X: np.ndarray, Y: np.ndarray, spec: CitySpec, zones: _Zones, r_att: Generator,
             size: str) -> _Streets:
    """Inlets (one or two per DMA, far apart), closed boundaries, lengths, ages, materials and diameters."""
    E = lay.edges
    m = len(E)
    w, h = spec.extent_m
    inlet = np.zeros(m, dtype=bool)
    for d in zones.dma_names:
        c_idx = np.flatnonzero(zones.cand & zones.keep_e & (zones.zone[zones.dma_node] == d))
        if len(c_idx) == 0:
            continue
        first = c_idx[r_att.integers(len(c_idx))]
        inlet[first] = True
        two = (d not in zones.boosted and d not in zones.prv_dmas and len(c_idx) > 1
               and r_att.random() < (0.45 if size == "city" else 0.5))
        if two:
            p0 = np.array([X[E[first]].mean(), Y[E[first]].mean()])
            dd = np.hypot(X[E[c_idx]].mean(1) - p0[0], Y[E[c_idx]].mean(1) - p0[1])
            inlet[c_idx[np.argmax(dd)]] = True
    boundary = zones.cand & zones.keep_e & ~inlet  # closed boundary valves

    length = np.hypot(X[E[:, 0]] - X[E[:, 1]], Y[E[:, 0]] - Y[E[:, 1]])
    length = np.maximum(np.round(length * 1.02, 1), 5.0)  # streets are not straight
    mx, my = _midpoints(X, Y, E)
    # old town: centre-north of the river, laid earlier
    old = np.hypot((mx - 0.45 * w) / w, (my - 0.62 * h) / h) < 0.22
    year = np.where(old, r_att.integers(1972, 2000, m), r_att.integers(1990, 2024, m))
    mat = np.empty(m, dtype=object)
    u = r_att.random(m)
    mat[:] = np.where(year < 1992, np.where(u < 0.7, "CI", "STEEL"),
                      np.where(year < 2008, np.where(u < 0.55, "DI", "PVC"), np.where(u < 0.55, "PE", "DI")))
    mat = np.where(lay.edge_trunk, np.where(year < 1995, "STEEL", "DI"), mat)
    # initial diameters by hierarchy
    dn = np.where(lay.edge_trunk, 400, np.where(inlet, 250, 150))
    dn = np.where(lay.bridge, 600, dn)
    # DMA streets that are not part of the spanning structure: smaller
    dn = np.where(~lay.edge_trunk & ~inlet & (r_att.random(m) < 0.45), 100, dn)
    mat = np.where((dn >= 300) & (mat == "PE"), "DI", mat)
    return _Streets(inlet=inlet, boundary=boundary, length=length, year=year, mat=mat, dn=dn)


def _midpoints(X: np.ndarray, Y: np.ndarray, E) -> tuple[np.ndarray, np.ndarray]:
    """Edge midpoints relative to the south-west corner of the nodes, m."""
    return (X[E[:, 0]] + X[E[:, 1]]) / 2 - X.min(), (Y[E[:, 0]] + Y[E[:, 1]]) / 2 - Y.min()


def _customers(lay: _Layout, X: np.ndarray, Y: np.ndarray, spec: CitySpec, zones: _Zones, streets: _Streets,
               r_cus: Generator) -> _Customers:
    """Customers on the DMA streets, denser in the centre; class by area, size log-normal by class."""
    E = lay.edges
    m = len(E)
    w, h = spec.extent_m
    zone = zones.zone
    serve = zones.keep_e & ~lay.edge_trunk & ~streets.boundary & ~streets.inlet & (zone[E[:, 0]] != "TRUNK") & (
        zone[E[:, 0]] == zone[E[:, 1]])
    mx, my = _midpoints(X, Y, E)
    centre_d = np.hypot((mx - 0.45 * w) / w, (my - 0.55 * h) / h)
    density = np.exp(-(centre_d / 0.45) ** 2) + 0.25
    wgt = np.where(serve, streets.length * density, 0.0)
    n_c = spec.customers
    pipe_of = r_cus.choice(m, size=n_c, p=wgt / wgt.sum())
    pipe_of.sort()
    cd = centre_d[pipe_of]
    p_com = np.clip(0.12 * np.exp(-(cd / 0.25) ** 2) + 0.03, 0, 1)
    industrial_area = (mx[pipe_of] > 0.62 * w) & (my[pipe_of] < 0.35 * h)
    p_ind = np.where(industrial_area, 0.06, 0.002)
    u = r_cus.random(n_c)
    cls = np.where(u < p_ind, "industrial", np.where(u < p_ind + p_com, "commercial", "residential"))
    size_m3 = np.empty(n_c)
    for c in CLASSES:
        med, sig, lo, hi = CUSTOMER_SIZE_M3_PER_DAY[c]
        sel = cls == c
        if c == "industrial":
            med = med * 0.6
        size_m3[sel] = np.clip(med * np.exp(r_cus.normal(0, sig, sel.sum())), lo, hi)
    position = np.round(r_cus.uniform(0.1, 0.9, n_c), 4)
    offset = 5.0 + 35.0 * r_cus.beta(1.6, 3.0, n_c)
    side = r_cus.choice([-1.0, 1.0], n_c)
    ax, ay = X[E[pipe_of, 0]], Y[E[pipe_of, 0]]
    bx, by = X[E[pipe_of, 1]], Y[E[pipe_of, 1]]
    L = np.hypot(bx - ax, by - ay)
    tx, ty = (bx - ax) / L, (by - ay) / L
    cxp = ax + (bx - ax) * position - ty * side * offset
    cyp = ay + (by - ay) * position + tx * side * offset
    return _Customers(pipe_of=pipe_of, cls=cls, size_m3=size_m3, position=position, x=cxp, y=cyp)


def _node_demands(n: int, E: np.ndarray, cust: _Customers) -> np.ndarray:
    """Nominal node demand by class, m3/s, shape (nodes, classes): split like the meter join."""
    q = cust.size_m3 / 86400.0
    dem = np.zeros((n, len(CLASSES)))
    ci = pd.Index(CLASSES).get_indexer(cust.cls)
    np.add.at(dem, (E[cust.pipe_of, 0], ci), q * (1 - cust.position))
    np.add.at(dem, (E[cust.pipe_of, 1], ci), q * cust.position)
    return dem


def _new_model() -> WaterNetworkModel:
    """An empty model: LPS, Hazen-Williams, a day at 15 minutes, hourly demand patterns by class."""
    wn = WaterNetworkModel()
    wn.options.hydraulic.inpfile_units = "LPS"
    wn.options.hydraulic.headloss = "H-W"
    wn.options.time.duration = 86400
    wn.options.time.hydraulic_timestep = 900
    wn.options.time.pattern_timestep = 3600
    wn.options.time.report_timestep = 900
    for c in CLASSES:
        hrs = np.asarray(_HOURLY[c], float)
        wn.add_pattern(c.upper()[:3], (hrs / hrs.mean()).round(4).tolist())
    return wn


def _add_junctions(wn: WaterNetworkModel, lay: _Layout, X: np.ndarray, Y: np.ndarray, zones: _Zones,
                   dem: np.ndarray, node_ids: np.ndarray) -> None:
    """One junction per kept node, a demand per class with its pattern, tagged with its zone."""
    for i in np.flatnonzero(zones.alive):
        wn.add_junction(node_ids[i], base_demand=0.0, elevation=float(round(lay.z[i], 2)),
                        coordinates=(float(X[i]), float(Y[i])))
        j = wn.get_node(node_ids[i])
        j.demand_timeseries_list.clear()
        for k_, c in enumerate(CLASSES):
            if dem[i, k_] > 0:
                j.add_demand(float(dem[i, k_]), c.upper()[:3], category=c)
        j.tag = zones.zone[i]


def _add_pipes(wn: WaterNetworkModel, lay: _Layout, zones: _Zones, streets: _Streets, node_ids: np.ndarray,
               link_ids: np.ndarray) -> np.ndarray:
    """One pipe per kept edge (boundaries closed); returns which edges are inlets of PRV-fed DMAs."""
    E = lay.edges
    zone = zones.zone
    C = _hw_c(streets.mat, streets.year)
    inlet, boundary = streets.inlet, streets.boundary
    is_prv = np.zeros(len(E), dtype=bool)
    for e in np.flatnonzero(zones.keep_e):
        a, b = E[e]
        # inlets and boundaries point from the trunk into the DMA
        if (inlet[e] or boundary[e]) and not lay.trunk[a]:
            a, b = b, a
        d_zone = zone[b] if zone[b] != "TRUNK" else zone[a]
        if inlet[e] and d_zone in zones.prv_dmas:
            is_prv[e] = True
        wn.add_pipe(link_ids[e], node_ids[a], node_ids[b], length=float(streets.length[e]),
                    diameter=streets.dn[e] / 1000.0, roughness=float(C[e]), minor_loss=0.0,
                    initial_status="CLOSED" if boundary[e] else "OPEN")
        wn.get_link(link_ids[e]).tag = d_zone if (inlet[e] or boundary[e]) else zone[a] if zone[a] == zone[b] \
            else "TRUNK"
    return is_prv


def _add_plants(wn: WaterNetworkModel, lay: _Layout, X: np.ndarray, Y: np.ndarray, spec: CitySpec,
                zones: _Zones, total_q: float, node_ids: np.ndarray) -> None:
    """Treatment plants: a clear well, two duty pumps on one curve, one or two DN800 mains to the trunk."""
    w, h = spec.extent_m
    trunk_nodes = np.flatnonzero(zones.alive & (zones.zone == "TRUNK"))
    plant_sites = [(0.02, 0.58), (0.97, 0.25)][: spec.plants]
    for p_i, (fx, fy) in enumerate(plant_sites, start=1):
        px, py = X.min() + fx * w, Y.min() + fy * h
        near = trunk_nodes[np.argsort(np.hypot(X[trunk_nodes] - px, Y[trunk_nodes] - py))[:1]][0]
        res, suc, dis = f"PLANT{p_i}-CW", f"PLANT{p_i}-SUC", f"PLANT{p_i}-OUT"
        ground = float(lay.z[near]) - 1.0
        ox, oy = float(X[near] - 180.0 * (1 if fx < 0.5 else -1)), float(Y[near])
        wn.add_reservoir(res, base_head=ground + 4.0, coordinates=(ox - 60.0, oy))
        wn.add_junction(suc, base_demand=0.0, elevation=ground, coordinates=(ox - 30.0, oy))
        wn.add_junction(dis, base_demand=0.0, elevation=ground, coordinates=(ox, oy))
        wn.get_node(suc).tag = "PLANT"
        wn.get_node(res).tag = "PLANT"
        wn.get_node(dis).tag = "PLANT"
        wn.add_pipe(f"PLANT{p_i}-INTAKE", res, suc, length=30.0, diameter=0.8, roughness=130.0)
        wn.get_link(f"PLANT{p_i}-INTAKE").tag = "PLANT"
        qd = 1.6 * total_q / spec.plants / 2.0  # two duty pumps share the peak
        head = PLANT_HGL_M - (ground + 4.0)
        curve = f"PLANT{p_i}-CURVE"
        wn.add_curve(curve, "HEAD", [(0.0, round(1.12 * head, 2)), (round(qd, 4), round(head, 2)),
                                     (round(1.8 * qd, 4), round(0.7 * head, 2))])
        for k_ in (1, 2):
            wn.add_pump(f"PLANT{p_i}-PUMP{k_}", suc, dis, pump_type="HEAD", pump_parameter=curve)
            wn.get_link(f"PLANT{p_i}-PUMP{k_}").tag = "PLANT"
        outlets = 1 if total_q / spec.plants < 0.45 else 2
        nb = trunk_nodes[np.argsort(np.hypot(X[trunk_nodes] - X[near], Y[trunk_nodes] - Y[near]))]
        targets = [near] + ([nb[min(len(nb) - 1, 6)]] if outlets == 2 else [])
        for k_, tnode in enumerate(targets, start=1):
            lid = f"PLANT{p_i}-MAIN{k_}"
            Lm = float(np.hypot(X[tnode] - ox, Y[tnode] - oy)) * 1.05 + 20.0
            wn.add_pipe(lid, dis, node_ids[tnode], length=round(Lm, 1), diameter=0.8, roughness=120.0)
            wn.get_link(lid).tag = "TRUNK"


def _add_boosters(wn: WaterNetworkModel, lay: _Layout, zones: _Zones, inlet: np.ndarray, dem: np.ndarray,
                  link_ids: np.ndarray) -> dict[str, tuple[str, str, float]]:
    """Booster pumps replace the inlets of the boosted DMAs: DMA -> (pump, suction node, demand m3/s)."""
    E = lay.edges
    zone = zones.zone
    zone_of_edge = np.where(zone[E[:, 0]] != "TRUNK", zone[E[:, 0]], zone[E[:, 1]])
    boosters = {}
    for d in zones.boosted:
        for e in np.flatnonzero(inlet & (zone_of_edge == d))[:1]:
            pipe = wn.get_link(link_ids[e])
            a, b = pipe.start_node_name, pipe.end_node_name
            wn.remove_link(link_ids[e])
            name = f"{d}-BOOSTER"
            q_d = max(float(dem[zone == d].sum()), 0.002)
            wn.add_curve(f"{name}-CURVE", "HEAD", [(0.0, 39.0), (round(2.0 * q_d, 5), 30.0),
                                                   (round(3.6 * q_d, 5), 16.5)])
            wn.add_pump(name, a, b, pump_type="HEAD", pump_parameter=f"{name}-CURVE")
            wn.get_link(name).tag = d
            boosters[d] = (name, a, q_d)
    return boosters


def _add_tank(wn: WaterNetworkModel, lay: _Layout, X: np.ndarray, Y: np.ndarray, zones: _Zones,
              boosters: dict, node_ids: np.ndarray) -> float:
    """An elevated tank at the high zone's top, switching its booster by level; returns its floor, m."""
    high = zones.high
    hz_nodes = np.flatnonzero(zones.zone == high)
    top = hz_nodes[np.argmax(lay.z[hz_nodes])]
    tank = f"{high}-TANK"
    tank_floor = round(float(lay.z[top]) + HIGH_ZONE_PRESSURE_M, 2)  # an elevated tank on a tower
    wn.add_tank(tank, elevation=tank_floor, init_level=5.0, min_level=1.0, max_level=8.0,
                diameter=14.0, coordinates=(float(X[top]) + 40.0, float(Y[top]) + 40.0))
    wn.get_node(tank).tag = high
    wn.add_pipe(f"{tank}-RISER", tank, node_ids[top], length=60.0, diameter=0.3, roughness=130.0)
    wn.get_link(f"{tank}-RISER").tag = high
    if high in boosters:
        pump = wn.get_link(boosters[high][0])
        t_obj = wn.get_node(tank)
        wn.add_control(f"{high}-BOOSTER-ON", Control(ValueCondition(t_obj, "level", "<", 3.0),
                                                     ControlAction(pump, "status", wntr.network.LinkStatus.Open)))
        wn.add_control(f"{high}-BOOSTER-OFF", Control(ValueCondition(t_obj, "level", ">", 7.5),
                                                      ControlAction(pump, "status", wntr.network.LinkStatus.Closed)))
    return tank_floor


def _tune_boosters(wn: WaterNetworkModel, res, boosters: dict, lay: _Layout, zones: _Zones, tank_floor: float) -> None:
    """Booster curves from the suction head at the peak to the zone's target head."""
    H = res.node["head"].iloc[0]
    for d, (name, suction, q_d) in boosters.items():
        target = (tank_floor + 8.5) if d == zones.high else float(lay.z[zones.zone == d].max()) + 17.0
        hd = max(target - float(H[suction]) + 4.0, 8.0)
        wn.get_curve(f"{name}-CURVE").points = [(0.0, round(1.25 * hd, 2)), (round(2.0 * q_d, 5), round(hd, 2)),
                                                (round(3.6 * q_d, 5), round(0.55 * hd, 2))]


def _peak_run(wn: WaterNetworkModel, multiplier: float = 1.0):
    """Steady-state run at the peak hour (07:00-08:00, residential peak) with ``multiplier``.

    The model's time options are changed for the run and restored afterwards
    (a deep copy of a 20,000-pipe model costs more than the simulation).
    """
    t, hyd = wn.options.time, wn.options.hydraulic
    saved = (t.duration, t.pattern_start, hyd.demand_multiplier)
    t.duration, t.pattern_start, hyd.demand_multiplier = 0, 7 * 3600, multiplier
    try:
        return simulate(wn)
    except SimulationError as exc:
        raise SimulationError(f"the generated city does not converge ({exc})",
                              fix="try another --seed and report the problem") from None
    finally:
        t.duration, t.pattern_start, hyd.demand_multiplier = saved


def _size_pipes(wn: WaterNetworkModel, rounds: int = 5):
    """Upsize pipes whose peak-hour unit head loss is too high (trunk 1.5 m/km, streets 5 m/km).

    Returns the results of the last steady-state run (after the last change).
    """
    pipes = np.array(wn.pipe_name_list, dtype=object)
    tag = np.array([wn.get_link(p).tag or "" for p in pipes], dtype=object)
    is_trunk = tag == "TRUNK"
    limit = np.where(is_trunk, 1.5, 5.0) / 1000.0
    top = np.where(is_trunk, 800, 300)
    status = np.array([str(wn.get_link(p).initial_status).lower() for p in pipes])
    for i in range(rounds + 1):
        res = _peak_run(wn, 1.15)
        H = res.node["head"].iloc[0]
        s = np.array([wn.get_link(p).start_node_name for p in pipes], dtype=object)
        e = np.array([wn.get_link(p).end_node_name for p in pipes], dtype=object)
        L = np.array([wn.get_link(p).length for p in pipes])
        grad = np.abs(H.reindex(s).to_numpy() - H.reindex(e).to_numpy()) / L
        d_mm = np.array([round(wn.get_link(p).diameter * 1000) for p in pipes])
        up = (grad > limit) & (d_mm < top) & (status != "closed") & ~pd.Index(pipes).str.startswith("PLANT")
        if i == rounds or not up.any():
            break
        for p, d in zip(pipes[up], d_mm[up]):
            nxt = DN[np.searchsorted(DN, d, side="right")] if d < DN[-1] else d
            wn.get_link(p).diameter = float(nxt) / 1000.0
    return res


def _add_prvs(wn: WaterNetworkModel, inlet_ids) -> dict[str, float]:
    """Replace the inlets of pressure-managed DMAs by PRVs set to 28-32 m downstream."""
    settings = {}
    for lid in inlet_ids:
        pipe = wn.get_link(lid)
        a, b, d, tag = pipe.start_node_name, pipe.end_node_name, pipe.diameter, pipe.tag
        wn.remove_link(lid)
        # a short valve at the DMA end of the inlet main
        mid = f"{lid}-V"
        na, nb = wn.get_node(a), wn.get_node(b)
        xa, ya = na.coordinates
        xb, yb = nb.coordinates
        wn.add_junction(mid, base_demand=0.0, elevation=nb.elevation,
                        coordinates=(round(xa + 0.8 * (xb - xa), 2), round(ya + 0.8 * (yb - ya), 2)))
        wn.get_node(mid).tag = "TRUNK"
        wn.add_pipe(lid, a, mid, length=max(pipe.length - 3.0, 1.0), diameter=d, roughness=pipe.roughness)
        wn.get_link(lid).tag = "TRUNK"
        setting = 32.0
        wn.add_valve(f"{lid}-PRV", mid, b, diameter=d, valve_type="PRV", initial_setting=setting)
        wn.get_link(f"{lid}-PRV").tag = tag
        settings[tag] = setting
    return settings


def _tables(wn: WaterNetworkModel, mat_year: dict):
    rows = []
    for name, nd in wn.nodes():
        kind = nd.node_type.lower()
        q = sum(ts.base_value for ts in nd.demand_timeseries_list) if kind == "junction" else 0.0
        rows.append({
            "node_id": name, "node_type": kind,
            "elevation_m": float(getattr(nd, "elevation", np.nan)) if kind != "reservoir" else float(nd.base_head),
            "base_demand_m3s": float(q), "zone": nd.tag or "",
            "init_level_m": getattr(nd, "init_level", np.nan) if kind == "tank" else np.nan,
            "min_level_m": getattr(nd, "min_level", np.nan) if kind == "tank" else np.nan,
            "max_level_m": getattr(nd, "max_level", np.nan) if kind == "tank" else np.nan,
            "tank_diameter_m": getattr(nd, "diameter", np.nan) if kind == "tank" else np.nan,
            "x": nd.coordinates[0], "y": nd.coordinates[1],
        })
    nodes = pd.DataFrame(rows)
    nodes = gpd.GeoDataFrame(nodes.drop(columns=["x", "y"]), geometry=shapely.points(nodes.x, nodes.y), crs=CRS)
    lrows = []
    for name, lk in wn.links():
        kind = lk.link_type.lower()
        a, b = wn.get_node(lk.start_node_name), wn.get_node(lk.end_node_name)
        mat, year = mat_year.get(name, ("DI", 2015))
        row = {
            "link_id": name, "link_type": kind, "start_node": lk.start_node_name, "end_node": lk.end_node_name,
            "length_m": float(getattr(lk, "length", 0.0) or 0.0) if kind == "pipe" else 0.0,
            "diameter_m": float(getattr(lk, "diameter", np.nan)) if kind != "pump" else np.nan,
            "dn_mm": int(round(lk.diameter * 1000)) if kind != "pump" else 0,
            "roughness": float(lk.roughness) if kind == "pipe" else np.nan,
            "material": mat if kind == "pipe" else "",
            "install_year": int(year) if kind == "pipe" else 0,
            "zone": lk.tag or "",
            "status": str(lk.initial_status).lower() if kind == "pipe" else "open",
            "valve_type": lk.valve_type if kind == "valve" else "",
            "setting": float(lk.initial_setting) if kind == "valve" else np.nan,
            "pump_curve": json.dumps([list(map(float, p)) for p in wn.get_curve(lk.pump_curve_name).points])
            if kind == "pump" else "",
            "geometry": shapely.LineString([a.coordinates, b.coordinates]),
        }
        if kind == "pipe" and row["status"] not in ("open", "closed"):
            row["status"] = "open"
        lrows.append(row)
    links = gpd.GeoDataFrame(lrows, geometry="geometry", crs=CRS)
    return nodes, links


def _dma_polygons(nodes, links, customers, prv_dmas, boosted, prv_settings, tank_zone):
    rows = []
    feed_nodes = set(nodes.node_id[nodes.zone.isin(["TRUNK", "PLANT"])])
    is_inlet = (links.status == "open") & (links.start_node.isin(feed_nodes) | (links.link_type != "pipe")) & \
        ~links.link_id.str.endswith("RISER")
    inlets = links[is_inlet].groupby("zone").link_id.agg(lambda s: ",".join(sorted(s)))
    n_cust = customers.zone.value_counts()
    for d, grp in nodes[nodes.zone.str.startswith("DMA")].groupby("zone", sort=True):
        poly = shapely.concave_hull(shapely.multipoints(grp.geometry.to_numpy()), ratio=0.3).buffer(45.0)
        rows.append({
            "dma": d,
            "inlets": inlets.get(d, ""),
            "pressure_managed": d in prv_dmas,
            "prv_setting_m": prv_settings.get(d, np.nan),
            "pumped": d in boosted,
            "tank": d == tank_zone,
            "n_junctions": len(grp),
            "n_customers": int(n_cust.get(d, 0)),
            "mean_elevation_m": round(float(grp.elevation_m.mean()), 2),
            "geometry": poly,
        })
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)


def _valves(wn: WaterNetworkModel, links, rng):
    """Isolation valves, WNTR's strategic N-1 rule (a local seed), as points 2 m from the node."""
    seed = int(rng.integers(0, 2**31 - 1))
    layer = wntr.network.generate_valve_layer(wn, placement_type="strategic", n=1, seed=seed)
    layer = layer.sort_values(["link", "node"]).reset_index(drop=True)
    lk = links.set_index("link_id")
    geom = lk.geometry.reindex(layer.link).to_numpy()
    lengths = shapely.length(geom)
    d = np.minimum(2.0, lengths / 2.0)
    at_start = lk.start_node.reindex(layer.link).to_numpy() == layer.node.to_numpy()
    pts = shapely.line_interpolate_point(geom, np.where(at_start, d, lengths - d))
    return gpd.GeoDataFrame({"valve_id": [f"V{i + 1:05d}" for i in range(len(layer))],
                             "link_id": layer.link.to_numpy(), "node_id": layer.node.to_numpy()},
                            geometry=pts, crs=CRS)


def _write_inp(wn: WaterNetworkModel, path: Path) -> None:
    wntr.network.write_inpfile(wn, str(path), units="LPS")


def _write_gpkg(path: Path, nodes, links, valves, customers, dmas, river) -> None:
    if path.exists():
        path.unlink()
    for name, layer in (("pipes", links), ("nodes", nodes), ("valves", valves), ("customers", customers),
                        ("dmas", dmas), ("river", river)):
        layer.to_file(path, layer=name, driver="GPKG", engine="pyogrio")
