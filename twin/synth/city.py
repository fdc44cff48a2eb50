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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import shapely

from twin.errors import InputError, SimulationError
from twin.scratch import epanet_scratch
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


def _layout(spec: CitySpec, rng: np.random.Generator) -> _Layout:
    w, h = spec.extent_m
    s = spec.spacing_m
    nc, nr = int(w // s) + 1, int(h // s) + 1
    col, row = np.meshgrid(np.arange(nc), np.arange(nr))
    col, row = col.ravel(), row.ravel()
    gx, gy = col * s, row * s
    # warp (curved streets) and jitter (irregular blocks)
    x = gx + 0.18 * s * np.sin(gy / (7.3 * s)) + rng.uniform(-0.2, 0.2, gx.size) * s
    y = gy + 0.22 * s * np.sin(gx / (9.1 * s) + 1.0) + rng.uniform(-0.2, 0.2, gy.size) * s
    t = spec.trunk_every
    trunk = (row % t == 0) | (col % t == 0) | (row == nr - 1) | (col == nc - 1)
    # on trunk lines no jitter across the line: straighter main roads
    x = np.where(col % t == 0, gx + 0.18 * s * np.sin(gy / (7.3 * s)), x)
    y = np.where(row % t == 0, gy + 0.22 * s * np.sin(gx / (9.1 * s) + 1.0), y)

    # the Xin River: a W-E band a little south of the middle
    phase = rng.uniform(0, 2 * np.pi)
    river_mid = 0.42 * h
    river_y = river_mid + 0.06 * h * np.sin(2 * np.pi * gx / w * 1.3 + phase)
    half_width = 1.25 * s
    in_river = np.abs(gy - river_y) < half_width
    north = gy > river_y

    def rc_index(r, c):
        return r * nc + c

    # lattice edges
    e_h = np.array([(rc_index(r, c), rc_index(r, c + 1)) for r in range(nr) for c in range(nc - 1)])
    e_v = np.array([(rc_index(r, c), rc_index(r + 1, c)) for r in range(nr - 1) for c in range(nc)])
    edges = np.vstack([e_h, e_v])
    keep = ~in_river[edges[:, 0]] & ~in_river[edges[:, 1]]
    edges = edges[keep]
    trunk_row = (row % t == 0) | (row == nr - 1)
    trunk_col = (col % t == 0) | (col == nc - 1)
    a_, b_ = edges[:, 0], edges[:, 1]
    e_trunk = ((row[a_] == row[b_]) & trunk_row[a_]) | ((col[a_] == col[b_]) & trunk_col[a_])
    # cells: the blocks between trunk lines
    cell_r, cell_c = row // t, col // t
    ncell_c = (nc - 1) // t + 1
    cell = np.where(trunk, -1, cell_r * ncell_c + cell_c)
    # cells split by the river get separate ids for each bank
    cell = np.where((cell >= 0) & north, cell + 100_000, cell)

    # distribution streets: random spanning forest + a share of the other streets
    dist = ~e_trunk
    same_cell = (cell[edges[:, 0]] == cell[edges[:, 1]]) & (cell[edges[:, 0]] >= 0)
    to_trunk = dist & ~same_cell & ((cell[edges[:, 0]] >= 0) ^ (cell[edges[:, 1]] >= 0))
    inner = dist & same_cell
    n = x.size
    idx = np.flatnonzero(inner)
    wts = rng.uniform(1.0, 2.0, idx.size)
    g = sp.coo_matrix((wts, (edges[idx, 0], edges[idx, 1])), shape=(n, n)).tocsr()
    tree = csgraph.minimum_spanning_tree(g).tocoo()
    tree_pairs = set(zip(np.minimum(tree.row, tree.col).tolist(), np.maximum(tree.row, tree.col).tolist()))
    lo, hi = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    in_tree = np.array([(a, b) in tree_pairs for a, b in zip(lo.tolist(), hi.tolist())])
    extra = inner & ~in_tree & (rng.random(len(edges)) < spec.keep_extra)
    # links from a block to the trunk: many streets meet the main road
    trunk_links = to_trunk & (rng.random(len(edges)) < 0.6)
    keep = e_trunk | (inner & in_tree) | extra | trunk_links
    edges, e_trunk = edges[keep], e_trunk[keep]

    # bridges: trunk columns chosen across the width, joining the banks
    tcols = np.unique(col[trunk & (col % t == 0)])
    tcols = tcols[(tcols > 0) & (tcols < nc - 1)]
    pick = np.unique(np.linspace(0, len(tcols) - 1, spec.bridges).round().astype(int)) if len(tcols) else []
    bridges = []
    for c in tcols[pick]:
        on = np.flatnonzero((col == c) & ~in_river)
        s_side = on[~north[on]]
        n_side = on[north[on]]
        if len(s_side) and len(n_side):
            a = s_side[np.argmax(row[s_side])]
            b = n_side[np.argmin(row[n_side])]
            bridges.append((a, b))
    bridge = np.zeros(len(edges), dtype=bool)
    if bridges:
        edges = np.vstack([edges, np.array(bridges)])
        e_trunk = np.concatenate([e_trunk, np.ones(len(bridges), dtype=bool)])
        bridge = np.concatenate([bridge, np.ones(len(bridges), dtype=bool)])

    # drop river nodes and anything not connected to the trunk
    used = np.zeros(n, dtype=bool)
    used[edges.ravel()] = True
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    ncomp, lab = csgraph.connected_components(adj, directed=False)
    trunk_lab = np.bincount(lab[trunk & used], minlength=ncomp)
    main = lab == np.argmax(trunk_lab)
    alive = used & main & ~in_river
    remap = -np.ones(n, dtype=np.int64)
    remap[alive] = np.arange(alive.sum())
    ok = alive[edges[:, 0]] & alive[edges[:, 1]]
    edges, e_trunk, bridge = remap[edges[ok]], e_trunk[ok], bridge[ok]
    # river polygon in the warped coordinates, narrower than the cleared band
    rx = np.linspace(-s, w + s, 200)
    ry = river_mid + 0.06 * h * np.sin(2 * np.pi * rx / w * 1.3 + phase) + 0.22 * s * np.sin(rx / (9.1 * s) + 1.0)
    bank = 0.85 * s
    river = np.vstack([np.column_stack([rx, ry - bank]), np.column_stack([rx[::-1], ry[::-1] + bank])])
    hill = (float(rng.uniform(0.72, 0.82)), float(rng.uniform(0.72, 0.82)))
    z = _terrain(x, y, river_y, spec, hill)
    return _Layout(x=x[alive], y=y[alive], z=z[alive], row=row[alive], col=col[alive], trunk=trunk[alive],
                   cell=cell[alive], edges=edges, edge_trunk=e_trunk, bridge=bridge, river=river)


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
    r_lay, r_att, r_cus, r_hyd, r_val = rng.spawn(5)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    lay = _layout(spec, r_lay)
    # place the layout in Yingtan
    cx, cy = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(*CENTRE_LONLAT)
    x0 = round(cx - spec.extent_m[0] / 2.0)
    y0 = round(cy - spec.extent_m[1] / 2.0)
    X, Y = np.round(lay.x + x0, 2), np.round(lay.y + y0, 2)
    net = _build(lay, X, Y, spec, r_att, r_cus, r_hyd, size)
    wn, nodes, links, customers, dmas = net

    inp = out / f"yingtan-{size}.inp"
    _write_inp(wn, inp)
    valves = _valves(wn, links, r_val)
    import geopandas as gpd

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


def _build(lay: _Layout, X, Y, spec: CitySpec, r_att, r_cus, r_hyd, size: str):
    import wntr

    n = len(X)
    E = lay.edges
    m = len(E)
    w, h = spec.extent_m
    # --- zones -----------------------------------------------------------------
    # DMA components: each cell's nodes connected by inner streets
    inner = (lay.cell[E[:, 0]] == lay.cell[E[:, 1]]) & (lay.cell[E[:, 0]] >= 0)
    g = sp.coo_matrix((np.ones(inner.sum()), (E[inner, 0], E[inner, 1])), shape=(n, n))
    _, comp = csgraph.connected_components(g, directed=False)
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

    # --- high zone: the DMA with the highest mean ground ---------------------------
    dma_names = sorted(set(zone[alive]) - {"TRUNK"})
    z_mean = {d: float(lay.z[zone == d].mean()) for d in dma_names}
    high = max(dma_names, key=lambda d: z_mean[d])  # carries the elevated tank
    z_max = {d: float(lay.z[zone == d].max()) for d in dma_names}
    boosted = sorted({high} | {d for d in dma_names if z_max[d] > HIGH_ZONE_GROUND_M})
    # pressure-managed DMAs: the lowest third by ground level (PRV inlets)
    low_cut = np.quantile([z_mean[d] for d in dma_names], 0.33)
    prv_dmas = {d for d in dma_names if z_mean[d] <= low_cut and d not in boosted}

    # --- inlets: one or two per DMA, far apart ---------------------------------
    inlet = np.zeros(m, dtype=bool)
    for d in dma_names:
        c_idx = np.flatnonzero(cand & keep_e & (zone[dma_node] == d))
        if len(c_idx) == 0:
            continue
        first = c_idx[r_att.integers(len(c_idx))]
        inlet[first] = True
        two = d not in boosted and d not in prv_dmas and len(c_idx) > 1 and r_att.random() < (0.45 if size == "city" else 0.5)
        if two:
            p0 = np.array([X[E[first]].mean(), Y[E[first]].mean()])
            dd = np.hypot(X[E[c_idx]].mean(1) - p0[0], Y[E[c_idx]].mean(1) - p0[1])
            inlet[c_idx[np.argmax(dd)]] = True
    boundary = cand & keep_e & ~inlet  # closed boundary valves

    # --- attributes ------------------------------------------------------------
    length = np.hypot(X[E[:, 0]] - X[E[:, 1]], Y[E[:, 0]] - Y[E[:, 1]])
    length = np.maximum(np.round(length * 1.02, 1), 5.0)  # streets are not straight
    mx, my = (X[E[:, 0]] + X[E[:, 1]]) / 2 - X.min(), (Y[E[:, 0]] + Y[E[:, 1]]) / 2 - Y.min()
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

    # --- customers ---------------------------------------------------------------
    serve = keep_e & ~lay.edge_trunk & ~boundary & ~inlet & (zone[E[:, 0]] != "TRUNK") & (
        zone[E[:, 0]] == zone[E[:, 1]])
    centre_d = np.hypot((mx - 0.45 * w) / w, (my - 0.55 * h) / h)
    density = np.exp(-(centre_d / 0.45) ** 2) + 0.25
    wgt = np.where(serve, length * density, 0.0)
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

    # --- nominal node demand by class (m3/s), split like the meter join -------------
    q = size_m3 / 86400.0
    dem = np.zeros((n, len(CLASSES)))
    ci = pd.Index(CLASSES).get_indexer(cls)
    np.add.at(dem, (E[pipe_of, 0], ci), q * (1 - position))
    np.add.at(dem, (E[pipe_of, 1], ci), q * position)

    # --- names -------------------------------------------------------------------
    node_ids = np.array([f"J{i + 1:05d}" for i in range(n)], dtype=object)
    link_ids = np.array([f"P{i + 1:05d}" for i in range(m)], dtype=object)

    # --- WNTR model ------------------------------------------------------------
    wn = wntr.network.WaterNetworkModel()
    wn.options.hydraulic.inpfile_units = "LPS"
    wn.options.hydraulic.headloss = "H-W"
    wn.options.time.duration = 86400
    wn.options.time.hydraulic_timestep = 900
    wn.options.time.pattern_timestep = 3600
    wn.options.time.report_timestep = 900
    for c in CLASSES:
        hrs = np.asarray(_HOURLY[c], float)
        wn.add_pattern(c.upper()[:3], (hrs / hrs.mean()).round(4).tolist())
    for i in np.flatnonzero(alive):
        wn.add_junction(node_ids[i], base_demand=0.0, elevation=float(round(lay.z[i], 2)),
                        coordinates=(float(X[i]), float(Y[i])))
        j = wn.get_node(node_ids[i])
        j.demand_timeseries_list.clear()
        for k_, c in enumerate(CLASSES):
            if dem[i, k_] > 0:
                j.add_demand(float(dem[i, k_]), c.upper()[:3], category=c)
        j.tag = zone[i]
    C = _hw_c(mat, year)
    is_prv = np.zeros(m, dtype=bool)
    for e in np.flatnonzero(keep_e):
        a, b = E[e]
        # inlets and boundaries point from the trunk into the DMA
        if (inlet[e] or boundary[e]) and not lay.trunk[a]:
            a, b = b, a
        d_zone = zone[b] if zone[b] != "TRUNK" else zone[a]
        if inlet[e] and d_zone in prv_dmas:
            is_prv[e] = True
        wn.add_pipe(link_ids[e], node_ids[a], node_ids[b], length=float(length[e]), diameter=dn[e] / 1000.0,
                    roughness=float(C[e]), minor_loss=0.0, initial_status="CLOSED" if boundary[e] else "OPEN")
        wn.get_link(link_ids[e]).tag = d_zone if (inlet[e] or boundary[e]) else zone[a] if zone[a] == zone[b] \
            else "TRUNK"

    # --- plants: clear well + duty pumps + DN800 outlets --------------------------
    total_q = float(dem.sum())
    trunk_nodes = np.flatnonzero(alive & (zone == "TRUNK"))
    plant_sites = [(0.02, 0.58), (0.97, 0.25)][: spec.plants]
    plants = []
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
        plants.append((res, dis))

    # --- high zone: booster pumps replace the inlets; an elevated tank ---------------
    zone_of_edge = np.where(zone[E[:, 0]] != "TRUNK", zone[E[:, 0]], zone[E[:, 1]])
    boosters = {}
    for d in boosted:
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
    hz_nodes = np.flatnonzero(zone == high)
    top = hz_nodes[np.argmax(lay.z[hz_nodes])]
    tank = f"{high}-TANK"
    tank_floor = round(float(lay.z[top]) + HIGH_ZONE_PRESSURE_M, 2)  # an elevated tank on a tower
    wn.add_tank(tank, elevation=tank_floor, init_level=5.0, min_level=1.0, max_level=8.0,
                diameter=14.0, coordinates=(float(X[top]) + 40.0, float(Y[top]) + 40.0))
    wn.get_node(tank).tag = high
    wn.add_pipe(f"{tank}-RISER", tank, node_ids[top], length=60.0, diameter=0.3, roughness=130.0)
    wn.get_link(f"{tank}-RISER").tag = high
    if high in boosters:
        from wntr.network.controls import Control, ControlAction, ValueCondition

        pump = wn.get_link(boosters[high][0])
        t_obj = wn.get_node(tank)
        wn.add_control(f"{high}-BOOSTER-ON", Control(ValueCondition(t_obj, "level", "<", 3.0),
                                                     ControlAction(pump, "status", wntr.network.LinkStatus.Open)))
        wn.add_control(f"{high}-BOOSTER-OFF", Control(ValueCondition(t_obj, "level", ">", 7.5),
                                                      ControlAction(pump, "status", wntr.network.LinkStatus.Closed)))

    # --- size pipes for the peak hour, then PRVs ---------------------------------------
    res = _size_pipes(wn)
    # booster curves: from the suction head at the peak to the zone's target head
    H = res.node["head"].iloc[0]
    for d, (name, suction, q_d) in boosters.items():
        target = (tank_floor + 8.5) if d == high else float(lay.z[zone == d].max()) + 17.0
        hd = max(target - float(H[suction]) + 4.0, 8.0)
        wn.get_curve(f"{name}-CURVE").points = [(0.0, round(1.25 * hd, 2)), (round(2.0 * q_d, 5), round(hd, 2)),
                                                (round(3.6 * q_d, 5), round(0.55 * hd, 2))]
    prv_settings = _add_prvs(wn, link_ids[is_prv])

    # --- tables for the GIS layers -------------------------------------------------
    nodes, links = _tables(wn, mat_year=dict(zip(link_ids, zip(mat, year))))
    import geopandas as gpd

    customers = gpd.GeoDataFrame({
        "meter_id": [f"YT{i + 1:06d}" for i in range(n_c)],
        "customer_class": cls,
        "base_demand_m3_per_day": np.round(size_m3, 4),
        "link_id": link_ids[pipe_of],
        "position": position,
        "zone": zone[E[pipe_of, 0]],
    }, geometry=shapely.points(np.round(cxp, 2), np.round(cyp, 2)), crs=CRS)
    dmas = _dma_polygons(nodes, links, customers, prv_dmas, set(boosters), prv_settings, high)
    return wn, nodes, links, customers, dmas


def _peak_run(wn, multiplier: float = 1.0):
    """Steady-state run at the peak hour (07:00-08:00, residential peak) with ``multiplier``.

    The model's time options are changed for the run and restored afterwards
    (a deep copy of a 20,000-pipe model costs more than the simulation).
    """
    import wntr

    t, hyd = wn.options.time, wn.options.hydraulic
    saved = (t.duration, t.pattern_start, hyd.demand_multiplier)
    t.duration, t.pattern_start, hyd.demand_multiplier = 0, 7 * 3600, multiplier
    try:
        with tempfile.TemporaryDirectory(prefix="twin-city-") as tmp, epanet_scratch(tmp):
            return wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "peak"),
                                                        convergence_error=True)
    except Exception as exc:
        raise SimulationError(f"the generated city does not converge ({exc})",
                              fix="try another --seed and report the problem") from None
    finally:
        t.duration, t.pattern_start, hyd.demand_multiplier = saved


def _size_pipes(wn, rounds: int = 5):
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


def _add_prvs(wn, inlet_ids) -> dict[str, float]:
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


def _tables(wn, mat_year: dict):
    import geopandas as gpd

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
    import geopandas as gpd

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


def _valves(wn, links, rng):
    """Isolation valves, WNTR's strategic N-1 rule (a local seed), as points 2 m from the node."""
    import geopandas as gpd
    import wntr

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


def _write_inp(wn, path: Path) -> None:
    import wntr

    wntr.network.write_inpfile(wn, str(path), units="LPS")


def _write_gpkg(path: Path, nodes, links, valves, customers, dmas, river) -> None:
    if path.exists():
        path.unlink()
    for name, layer in (("pipes", links), ("nodes", nodes), ("valves", valves), ("customers", customers),
                        ("dmas", dmas), ("river", river)):
        layer.to_file(path, layer=name, driver="GPKG", engine="pyogrio")
