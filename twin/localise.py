"""The leak-localisation job: reconcile the model with readings, rank the pipes.

Steps (``docs/localise.md`` gives the equations):

1. **Series.** Pressure loggers and flow meters on the 15-minute grid; silent,
   stuck or unknown sensors are set aside with a reason. Customer registers
   are interpolated at 12-hour local windows: metered consumption per node
   and window (m³/s), split to the pipe's end nodes by the join position.
2. **Detection** (:mod:`twin.detect`): system input minus metered
   consumption fitted as a step against a time-of-day profile gives the
   onset (to the 15-minute step) and the leak flow ``L``.
3. **Model driven by measurements.** One EPANET snapshot per analysed time
   step (:class:`twin.hydraulics.SnapshotSolver`): demands = the node shares of
   the window's metered consumption times (system input − estimated leak);
   tanks at their measured level (fixed heads); pumps and links into tanks
   open or closed from their flow meters.
4. **Calibration** on the leak-free part: per sensor and hour-of-day offsets
   (the mean residual), and the residual noise per sensor.
5. **Ranking.** The residual change after the onset ``Δr`` (pressure heads and
   metered flows) is compared with each pipe's leak signature (half the leak
   at each end node), from the analytic sensitivities
   (:func:`twin.hydraulics.sensitivities`). The score is a posterior
   probability: Gaussian likelihood with the leak size fitted (non-negative,
   tied to the water-balance estimate), a model-error allowance and a prior
   proportional to pipe length. The best candidates are refined by simulating
   the leak (non-linear) in the snapshots.
6. **Candidate zone**: connected pipes, grown from the best one by score,
   holding 90 % of the probability.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import settings
from twin.detect import Detection, detect_leak, dma_steps
from twin.dma import assign_dmas, dma_inlets, unmetered_boundaries
from twin.errors import InputError, ReadingsError, SimulationError
from twin.hydraulics import LinearModel, SnapshotSolver

log = logging.getLogger(__name__)

STEP = pd.Timedelta(seconds=settings.LOGGER_INTERVAL_S)
#: Smallest measured flow (m³/s) that counts a pump or a tank inlet as open.
OPEN_FLOW_M3S = 1e-4
#: Floors of the residual noise per snapshot: pressure (m), flow (m³/s).
SIGMA_FLOOR_P = 0.01
SIGMA_FLOOR_Q = 2e-5


@dataclass
class Localisation:
    """Result of :func:`localise`.

    Attributes
    ----------
    candidates : pd.DataFrame
        One row per pipe, best first: ``rank`` (1 = most likely), ``link_id``,
        ``score`` (posterior probability, sums to 1), ``leak_flow_lps``,
        ``lon``, ``lat`` (pipe midpoint, EPSG:4326), ``zone`` (DMA),
        ``in_candidate_zone``, ``length_m``. Empty when no leak is detected.
    report : dict
        JSON-serialisable: detection, data used and rejected, calibration,
        timings, warnings.
    residuals : pd.DataFrame
        Per sensor: ``kind``, ``element``, ``delta`` (residual change, m or
        L/s), ``sigma`` and ``z``; for maps.
    """

    candidates: pd.DataFrame
    report: dict
    residuals: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Intermediate arrays for the classic method and diagnostics (not serialised):
    #: ``delta``, ``sigma``, ``kinds``, ``elements``, ``demands``, ``tank_levels``,
    #: ``link_status`` (the mean leak operating point) and ``leak_m3s``.
    internals: dict = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- series


def _to_utc(ts: pd.Series) -> pd.Series:
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True, format="ISO8601")
    return ts.dt.tz_convert("UTC")


def _epoch_s(ts: pd.Series) -> np.ndarray:
    """Seconds since 1970 (float), whatever the datetime resolution."""
    return ((ts - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(float)


def sensor_series(
    readings: pd.DataFrame,
    meters: pd.DataFrame,
    wn: Any,
    *,
    min_coverage: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Logger and flow-meter readings on the regular grid.

    Parameters
    ----------
    readings : DataFrame
        Long: ``meter_id``, ``timestamp`` (tz-aware), ``value``.
    meters : DataFrame
        Registry: index ``meter_id``, ``kind``, ``node_id``, ``link_id``.
    wn : WaterNetworkModel
    min_coverage : float
        Smallest share of grid steps a sensor must report.

    Returns
    -------
    pressure : DataFrame
        index = grid times (UTC), columns = node ids; pressure head (m) or tank level (m).
    flow : DataFrame
        columns = link ids; flow (m³/s, start to end node).
    rejected : DataFrame
        ``meter_id``, ``kind``, ``element``, ``reason``.
    """
    reg = meters.copy()
    reg.index = reg.index.astype(str)
    kinds = reg["kind"].astype(str)
    sensors = reg[kinds.isin(["pressure", "flow"])]
    rej: list[dict] = []
    r = readings[readings["meter_id"].astype(str).isin(sensors.index)]
    empty = pd.DataFrame()
    if r.empty:
        return empty, empty, pd.DataFrame(
            [{"meter_id": m, "kind": sensors.at[m, "kind"], "element": "", "reason": "no readings"}
             for m in sensors.index], columns=["meter_id", "kind", "element", "reason"])
    t = _to_utc(r["timestamp"]).dt.round(STEP)
    wide = (pd.DataFrame({"t": t.to_numpy(), "m": r["meter_id"].astype(str).to_numpy(),
                          "v": pd.to_numeric(r["value"], errors="coerce").to_numpy(float)})
            .groupby(["t", "m"])["v"].mean().unstack("m"))
    grid = pd.date_range(wide.index.min(), wide.index.max(), freq=STEP, tz="UTC")
    wide = wide.reindex(grid)
    pressure, flow = {}, {}
    nodes, links = set(wn.node_name_list), set(wn.link_name_list)
    for mid, row in sensors.iterrows():
        kind = str(row["kind"])
        element = str(row["node_id"] if kind == "pressure" else row["link_id"])
        if element in ("", "nan", "<NA>", "None"):
            rej.append({"meter_id": mid, "kind": kind, "element": "", "reason": f"{kind} meter without "
                        f"{'node_id' if kind == 'pressure' else 'link_id'}"})
            continue
        if (kind == "pressure" and element not in nodes) or (kind == "flow" and element not in links):
            rej.append({"meter_id": mid, "kind": kind, "element": element, "reason": "not in the network"})
            continue
        if mid not in wide.columns:
            rej.append({"meter_id": mid, "kind": kind, "element": element, "reason": "silent: no readings"})
            continue
        v = wide[mid]
        cover = float(v.notna().mean())
        if cover < min_coverage:
            rej.append({"meter_id": mid, "kind": kind, "element": element,
                        "reason": f"silent: {cover:.0%} of the 15-min steps reported"})
            continue
        if v.nunique() <= 1 and kind == "pressure":
            rej.append({"meter_id": mid, "kind": kind, "element": element, "reason": "stuck: constant value"})
            continue
        v = v.interpolate(limit=4, limit_area="inside")
        if kind == "pressure":
            pressure[element] = v
        else:
            flow[element] = v / 1000.0
    rejected = pd.DataFrame(rej, columns=["meter_id", "kind", "element", "reason"])
    return pd.DataFrame(pressure, index=grid), pd.DataFrame(flow, index=grid), rejected


def window_consumption(
    customer: pd.DataFrame,
    join: pd.DataFrame,
    edges: pd.DatetimeIndex,
    *,
    clock: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Mean metered consumption per node and window, from cumulative registers.

    Registers are read about twice a day at irregular times. Between two
    readings the volume is spread in proportion to ``clock`` (the cumulative
    system input minus the estimated leak, see :func:`supply_clock`), not
    linearly in time, so that a window's share follows the day's use; a window
    that a meter's readings do not bracket, or with a negative difference
    (register reset), gets the meter's mean rate over its record.

    Parameters
    ----------
    customer : DataFrame
        Long customer readings: ``meter_id``, ``timestamp``, ``value`` (m³).
    join : DataFrame
        From :func:`twin.meters.join_meters` (index ``meter_id``).
    edges : DatetimeIndex
        Window edges (UTC), ``len(edges) - 1`` windows.

    Returns
    -------
    DataFrame
        index = window number, columns = node ids, mean consumption (m³/s).
    dict
        Counts for the report.
    """
    j = join[join["matched"].astype(bool)]
    c = customer[customer["meter_id"].astype(str).isin(j.index.astype(str))]
    info = {"customer_meters": int(len(join)), "customer_meters_joined": int(len(j)),
            "customer_meters_with_readings": 0, "customer_windows_filled": 0}
    n_w = len(edges) - 1
    if c.empty or n_w < 1:
        return pd.DataFrame(index=range(max(n_w, 0))), info
    t = _epoch_s(_to_utc(c["timestamp"]))
    clock = clock or (lambda x: x)
    v = pd.to_numeric(c["value"], errors="coerce").to_numpy(float)
    ids = c["meter_id"].astype(str).to_numpy()
    ok = np.isfinite(v)
    codes, uniq = pd.factorize(ids[ok])
    t, v = t[ok], v[ok]
    order = np.lexsort((t, codes))
    codes, t, v = codes[order], t[order], v[order]
    span = t.max() - t.min() + 1.0
    key = codes * (span * 4) + (t - t.min())
    te = _epoch_s(pd.Series(edges))
    nm = len(uniq)
    q_code = np.repeat(np.arange(nm), len(te))
    q_t = np.tile(te, nm)
    q_key = q_code * (span * 4) + (q_t - t.min())
    pos = np.searchsorted(key, q_key, side="right")
    lo, hi = pos - 1, pos
    valid = (lo >= 0) & (hi < len(key))
    lo_c, hi_c = np.clip(lo, 0, len(key) - 1), np.clip(hi, 0, len(key) - 1)
    valid &= (codes[lo_c] == q_code) & (codes[hi_c] == q_code)
    ct, cq = clock(t), clock(q_t)
    dt = ct[hi_c] - ct[lo_c]
    w = np.where(dt > 0, (cq - ct[lo_c]) / np.where(dt > 0, dt, 1.0), 0.0)
    regs = np.where(valid, v[lo_c] + w * (v[hi_c] - v[lo_c]), np.nan).reshape(nm, len(te))
    # exact hits at the last reading
    vol = np.diff(regs, axis=1)  # m³ per window
    secs = np.diff(te)
    rate = vol / secs[None, :]
    # each meter's mean rate over its record
    first = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
    last = np.r_[first[1:] - 1, len(codes) - 1]
    dur = ct[last] - ct[first]
    mean_rate = np.where(dur > 0, (v[last] - v[first]) / np.where(dur > 0, dur, 1.0), np.nan)
    mean_rate = np.where(mean_rate >= 0, mean_rate, np.nan)  # m³ per clock unit
    bad = ~np.isfinite(rate) | (rate < 0)
    info["customer_windows_filled"] = int(bad.sum())
    ce = clock(te)
    rate = np.where(bad, mean_rate[:, None] * (np.diff(ce) / secs)[None, :], rate)
    rate = np.nan_to_num(rate, nan=0.0)
    info["customer_meters_with_readings"] = int(nm)
    # meters -> nodes
    jj = j.loc[j.index.astype(str).isin(uniq)]
    m_idx = pd.Index(uniq).get_indexer(jj.index.astype(str))
    pos_ = jj["position"].to_numpy(float)
    nodes = np.concatenate([jj["start_node"].astype(str).to_numpy(), jj["end_node"].astype(str).to_numpy()])
    weights = np.concatenate([1 - pos_, pos_])
    rows = np.concatenate([m_idx, m_idx])
    node_codes, node_names = pd.factorize(nodes)
    import scipy.sparse as sp

    W = sp.csr_matrix((weights, (node_codes, rows)), shape=(len(node_names), nm))
    node_rate = W @ rate  # nodes x windows
    return pd.DataFrame(node_rate.T, columns=node_names), info


def supply_clock(supply: pd.Series, leak_m3s: float = 0.0, onset: pd.Timestamp | None = None
                 ) -> Callable[[np.ndarray], np.ndarray]:
    """Cumulative system input minus the leak as a function of time.

    Parameters
    ----------
    supply : Series
        System input (m³/s) on the grid (UTC index).
    leak_m3s, onset :
        Leak flow removed from ``onset`` on.

    Returns
    -------
    callable
        Maps epoch seconds to cumulative consumption-like volume (m³),
        strictly increasing; linear at the mean rate outside the grid.
    """
    s = supply.to_numpy(float).copy()
    if onset is not None and leak_m3s > 0:
        s = s - leak_m3s * (supply.index >= onset)
    mean = float(np.nanmean(s)) if np.isfinite(s).any() else 1.0
    s = np.where(np.isfinite(s), s, mean)
    s = np.maximum(s, 0.02 * max(mean, 1e-9))
    dt = STEP.total_seconds()
    t = _epoch_s(pd.Series(supply.index))
    knots = np.concatenate([t, [t[-1] + dt]])
    cum = np.concatenate([[0.0], np.cumsum(s * dt)])

    def clock(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        y = np.interp(x, knots, cum)
        y = np.where(x < knots[0], (x - knots[0]) * mean, y)
        return np.where(x > knots[-1], cum[-1] + (x - knots[-1]) * mean, y)

    return clock


def supply_series(flow: pd.DataFrame, pressure: pd.DataFrame, wn: Any) -> tuple[pd.Series | None, list[str]]:
    """System input (m³/s): net outflow of every reservoir and tank.

    A source whose links are all metered counts from its meters; a tank with
    a level logger but unmetered links from ``-area · dlevel/dt``.

    Returns
    -------
    Series or None
        None when some source is neither metered nor level-logged.
    list of str
        Notes for the report.
    """
    notes: list[str] = []
    total = pd.Series(0.0, index=flow.index if len(flow.columns) else pressure.index)
    for name in [*wn.reservoir_name_list, *wn.tank_name_list]:
        links = wn.get_links_for_node(name)
        if all(l in flow.columns for l in links):
            out = sum(flow[l] * (1.0 if wn.get_link(l).start_node_name == name else -1.0) for l in links)
            total = total + out
        elif name in wn.tank_name_list and name in pressure.columns:
            area = np.pi * wn.get_node(name).diameter ** 2 / 4.0
            lvl = pressure[name]
            total = total - area * lvl.diff().shift(-1) / STEP.total_seconds()
            notes.append(f"tank {name}: outflow from its level logger (links not all metered)")
        else:
            notes.append(f"source {name} is not metered: no water-balance detection")
            return None, notes
    return total, notes


def dma_inflows(network: Any, flow: pd.DataFrame, pressure: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame, dict]:
    """DMAs with a complete metered balance and their net inflow.

    DMAs come from :func:`twin.dma.assign_dmas` (the network's zones, or cut
    at the metered links). A DMA's net inflow is the flow through its metered
    boundary links (signed into the DMA) plus the outflow of any tank inside
    it (from the tank's metered links, or ``−A dh/dt`` from its level
    logger). A DMA with an unmetered open boundary link, or a tank neither
    metered nor logged, has no complete balance and is left out.

    Parameters
    ----------
    network : twin.network.Network
    flow : DataFrame
        Flow per metered link (m³/s), index the grid (UTC).
    pressure : DataFrame
        Pressure heads and tank levels (m), same index.

    Returns
    -------
    Series
        DMA of every node with a complete balance (index node ID).
    DataFrame
        Net inflow (m³/s) per such DMA, index the grid.
    dict
        ``method`` (zones / inlets), ``dmas`` with a balance, ``left_out``.
    """
    wn = network.wn
    empty = (pd.Series(dtype="string"), pd.DataFrame(index=flow.index), {"dmas": 0})
    links = [str(x) for x in flow.columns]
    try:
        assignment = assign_dmas(network, inlet_links=links)
        inlets = dma_inlets(network, assignment, links)
    except InputError:
        return empty
    open_b = unmetered_boundaries(network, assignment, links)
    incomplete = set(open_b["from_dma"].dropna().astype(str)) | set(open_b["to_dma"].dropna().astype(str))
    inflow: dict[str, pd.Series] = {}
    for dma, grp in inlets.groupby("dma", sort=True):
        if dma in incomplete:
            continue
        q = sum(flow[lid] * float(sg) for lid, sg in zip(grp["link_id"], grp["sign"]))
        for tank in wn.tank_name_list:
            if assignment.get(tank, pd.NA) is pd.NA or str(assignment.get(tank)) != dma:
                continue
            t_links = wn.get_links_for_node(tank)
            if all(l in flow.columns for l in t_links):
                q = q + sum(flow[l] * (1.0 if wn.get_link(l).start_node_name == tank else -1.0) for l in t_links)
            elif tank in pressure.columns:
                area = np.pi * wn.get_node(tank).diameter ** 2 / 4.0
                q = q - area * pressure[tank].diff().shift(-1) / STEP.total_seconds()
            else:
                q = None
                break
        if q is None:
            incomplete.add(dma)
            continue
        inflow[dma] = q
    member = assignment[assignment.isin(list(inflow))].astype(str)
    info = {"method": assignment.attrs.get("method"), "dmas": len(inflow), "left_out": sorted(incomplete)}
    return member, pd.DataFrame(inflow, index=flow.index), info


# --------------------------------------------------------------------------- model runs


def _snapshot_inputs(
    times: pd.DatetimeIndex,
    pressure: pd.DataFrame,
    flow: pd.DataFrame,
    wn: Any,
) -> tuple[pd.DataFrame, dict[str, pd.Series], list[str]]:
    """Tank levels and link states per time from the measurements."""
    tanks = {t: pressure[t].reindex(times) for t in wn.tank_name_list if t in pressure.columns}
    status = {}
    notes = []
    for name in flow.columns:
        link = wn.get_link(name)
        q = flow[name].reindex(times)
        ends = (link.start_node_name, link.end_node_name)
        into_tank = any(e in wn.tank_name_list for e in ends)
        if link.link_type == "Pump" or (into_tank and link.link_type == "Pipe") or (
                link.link_type == "Pipe" and link.check_valve):
            status[name] = q.abs() > OPEN_FLOW_M3S
    for name, pump in wn.pumps():
        if name not in flow.columns:
            notes.append(f"pump {name} has no flow meter: kept at its initial status")
    for t in wn.tank_name_list:
        if t not in tanks:
            notes.append(f"tank {t} has no level logger: kept at its initial level")
    return pd.DataFrame(status, index=times), tanks, notes


def _grid_labels(grid: pd.DatetimeIndex, tz: str, night_hours: tuple[int, int]):
    local = grid.tz_convert(tz)
    hour = np.asarray(local.hour)
    slot = hour * 4 + np.asarray(local.minute) // 15
    day = local.normalize()
    day_num = np.asarray((day - day[0]).days)
    window_of = day_num * 2 + (hour >= 12).astype(int)
    night = (hour >= night_hours[0]) & (hour < night_hours[1])
    return slot, window_of, night, day_num, local


# --------------------------------------------------------------------------- ranking


def _pipe_signatures(S: np.ndarray, junctions: list[str], pipes: pd.DataFrame) -> np.ndarray:
    """Sensor x pipe signatures: half the leak at each end node (fixed heads: 0)."""
    col = {n: k for k, n in enumerate(junctions)}
    n = len(junctions)
    si = pipes["start_node"].map(col).fillna(n).astype(int).to_numpy()
    ei = pipes["end_node"].map(col).fillna(n).astype(int).to_numpy()
    Sx = np.hstack([S, np.zeros((S.shape[0], 1))])
    return 0.5 * (Sx[:, si] + Sx[:, ei])


def _loglik(delta, sigma, sig, L_prior, L_sd, alpha, nu=None):
    """Log-likelihood per pipe with a non-negative fitted leak size.

    ``delta`` (k,), ``sigma`` (k,), ``sig`` (k, m) signatures per m³/s;
    ``nu``: Student-t degrees of freedom (None: Gaussian); returns
    (loglik (m,), L (m,)).
    """
    w = 1.0 / sigma ** 2
    num = (sig * (w * delta)[:, None]).sum(0) + L_prior / L_sd ** 2
    den = (sig ** 2 * w[:, None]).sum(0) + 1.0 / L_sd ** 2
    L = np.maximum(num / den, 0.0)
    pred = sig * L[None, :]
    alpha = np.asarray(alpha, float)
    a_col = alpha[:, None] if alpha.ndim == 1 else alpha
    var = sigma[:, None] ** 2 + (a_col * pred) ** 2
    z2 = ((delta[:, None] - pred) ** 2) / var
    if nu is None:
        ll = -0.5 * (z2 + np.log(var / sigma[:, None] ** 2)).sum(0)
    else:  # heavy tails: a sensor the model cannot explain does not decide alone
        ll = -(0.5 * (nu + 1) * np.log1p(z2 / nu) + 0.5 * np.log(var / sigma[:, None] ** 2)).sum(0)
    ll -= 0.5 * ((L - L_prior) / L_sd) ** 2
    return ll, L


def _centre_pressure(x: np.ndarray, blocks: np.ndarray, is_p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Remove the weighted mean over the pressure sensors of each block (rows of ``x``).

    A change common to every logger (a supply head or demand-level error of
    the model) is then not taken as a leak signature; only the pattern across
    loggers, and the flows, locate the leak.
    """
    x = np.array(x, dtype=float, copy=True)
    two_d = x.ndim == 2
    for b in np.unique(blocks):
        m = (blocks == b) & is_p
        if m.sum() < 2:
            continue
        wb = w[m] / w[m].sum()
        mean = (x[m] * (wb[:, None] if two_d else wb)).sum(axis=0)
        x[m] = x[m] - mean
    return x


def candidate_zone(scores: pd.Series, pipes: pd.DataFrame, *, share: float = settings.CANDIDATE_ZONE_SHARE) -> set[str]:
    """Connected pipes grown from the best one, by score, until they hold ``share``.

    Parameters
    ----------
    scores : Series
        Probability per pipe (index link ids, sums to 1).
    pipes : DataFrame
        ``start_node``, ``end_node`` per link id (pumps and valves may be
        included: they connect but hold no score).
    """
    if scores.empty:
        return set()
    by_node: dict[str, list[str]] = {}
    for lid, s, e in zip(pipes.index, pipes["start_node"], pipes["end_node"]):
        by_node.setdefault(s, []).append(lid)
        by_node.setdefault(e, []).append(lid)
    sc = scores.to_dict()
    best = scores.idxmax()
    zone, held = set(), 0.0
    heap = [(-sc.get(best, 0.0), best)]
    seen = {best}
    while heap and held < share:
        neg, lid = heapq.heappop(heap)
        zone.add(lid)
        held += -neg
        for node in (pipes.at[lid, "start_node"], pipes.at[lid, "end_node"]):
            for nb in by_node.get(node, ()):
                if nb not in seen:
                    seen.add(nb)
                    heapq.heappush(heap, (-sc.get(nb, 0.0), nb))
    return {z for z in zone if z in sc}


# --------------------------------------------------------------------------- the job


def localise(
    network: Any,
    *,
    meters: pd.DataFrame,
    join: pd.DataFrame,
    readings: pd.DataFrame,
    hours: tuple[int, int] | None = None,
    refine_top: int = 10,
    block_hours: int = 4,
    alpha: float = 0.1,
    alpha_flow: float = 2.0,
    nu: float | None = None,
    common_mode: bool = False,
    pool_sigma: bool = False,
    dma_shape: bool = True,
    dma_prior: float = 20.0,
    t_threshold: float = 5.0,
    min_leak_share: float = 0.005,
    progress: Callable[[str, int, int], None] | None = None,
) -> Localisation:
    """Detect a leak in a week of readings and rank the pipes where it may be.

    Parameters
    ----------
    network : twin.network.Network
        The utility's network (``wn`` in SI, geometry in ``network.crs``).
    meters : DataFrame
        Meter registry (index ``meter_id``; ``kind``, ``node_id``, ``link_id``).
    join : DataFrame
        Customer meters joined to pipes (:func:`twin.meters.join_meters`).
    readings : DataFrame
        Long readings: ``meter_id``, ``timestamp`` (tz-aware), ``value`` in the
        data contract's units (m³ registers, m pressure head, L/s flows).
    hours : (int, int), optional
        Local hours [start, end) used for the localisation snapshots; default
        the whole day (0, 24): day-time flows make leak signatures larger, and
        offsets per hour of the day absorb the model's systematic errors.
    refine_top : int
        Candidates refined by a non-linear leak simulation.
    block_hours : int
        Hours of the day pooled into one operating point (signatures, noise).
    alpha : float
        Model-error allowance: relative error of a pressure leak signature.
    alpha_flow : float
        The same for flow meters (how a leak's flow splits between sources).
    common_mode : bool
        Remove the change common to all pressure loggers (per block) from the
        residuals and the signatures: robust to model errors that shift every
        pressure alike.
    pool_sigma : bool
        Pool each sensor's noise over the blocks of the day.
    nu : float, optional
        Degrees of freedom of a Student-t likelihood (robust to sensors the
        model cannot explain); None for Gaussian.
    dma_shape : bool
        Shape each node's demand by its own DMA's metered net inflow (minus
        the leak in the DMA whose balance stepped up at the onset) instead of
        the system input, where the DMA's balance is fully metered.
    dma_prior : float
        Prior odds of a pipe in the DMA whose balance stepped up at the onset
        against a pipe elsewhere (1 switches it off). Applied only when that
        DMA's step is significant (``z ≥ 3``) and at least half the leak
        estimate; a soft weight, so a strong pressure signature elsewhere
        still wins.
    t_threshold, min_leak_share : float
        Detection thresholds (see :func:`twin.detect.detect_leak`).
    progress : callable, optional
        ``progress(stage, done, total)`` for long loops (the CLI's bar).

    Returns
    -------
    Localisation

    Raises
    ------
    ReadingsError
        The readings cover less than two nights, or no sensor is usable.
    SimulationError
        The network does not converge with the measured boundary conditions.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    wn = network.wn
    tz = settings.TIMEZONE
    hours = hours or (0, 24)
    warnings: list[str] = []
    report: dict[str, Any] = {"network": str(getattr(network, "source", "")), "warnings": warnings}

    # ---- 1. series
    pressure, flow, rejected = sensor_series(readings, meters, wn)
    for _, r in rejected.iterrows():
        warnings.append(f"sensor {r['meter_id']} ({r['kind']} at {r['element'] or '?'}) not used: {r['reason']}")
    if pressure.empty and flow.empty:
        raise ReadingsError("no pressure logger or flow meter has usable readings",
                            fix="check that meters.csv lists loggers with node_id/link_id of this network "
                                "and that readings.csv holds their 15-min values")
    grid = pressure.index if not pressure.empty else flow.index
    slot, window_of, night, day_num, local = _grid_labels(grid, tz, (settings.NIGHT_START_HOUR,
                                                                     settings.NIGHT_END_HOUR))
    n_nights = len(np.unique(day_num[night]))
    span_h = (grid[-1] - grid[0]).total_seconds() / 3600.0
    report["period"] = {"start": local[0].isoformat(), "end": local[-1].isoformat(),
                        "hours": round(span_h, 2), "nights": int(n_nights)}
    if n_nights < 2 or span_h < 36:
        raise ReadingsError(
            f"readings cover {span_h:.0f} h ({n_nights} night(s)); the job needs at least two nights "
            "(a leak-free reference and a night to compare)",
            fix="give at least two days of readings, a week is best")
    junction_set = set(wn.junction_name_list)
    p_sensors = [n for n in pressure.columns if n in junction_set]
    tank_levels_logged = [n for n in pressure.columns if n in wn.tank_name_list]
    cust = readings[readings["meter_id"].astype(str).isin(
        meters.index[meters["kind"].astype(str) == "customer"].astype(str))]
    local_start = local[0].normalize()
    edges_local = pd.date_range(local_start, local[-1].normalize() + pd.Timedelta(days=1), freq="12h")
    edges = edges_local.tz_convert("UTC")
    supply, snotes = supply_series(flow, pressure, wn)
    warnings.extend(snotes)
    clock = supply_clock(supply) if supply is not None else None
    node_window, cinfo = window_consumption(cust, join, edges, clock=clock)
    timings["series_s"] = time.perf_counter() - t0
    report["data"] = {
        "pressure_loggers_used": len(p_sensors), "tank_level_loggers_used": len(tank_levels_logged),
        "flow_meters_used": int(len(flow.columns)), "sensors_rejected": rejected.to_dict("records"),
        **cinfo, "readings_rows": int(len(readings)),
    }
    if cinfo["customer_meters_with_readings"] == 0:
        raise ReadingsError("no customer meter joined to the network has readings",
                            fix="check that meters.csv customers lie on this network (--crs / --meters-crs) "
                                "and that readings.csv holds their registers")
    # ---- 2. detection (twice: the second with consumption shaped by supply minus the leak)
    t1 = time.perf_counter()
    night_id = day_num
    day_type = (np.asarray(local.day_of_week) >= 5).astype(int)  # weekend days use their own shape
    if supply is not None:
        det = detect_leak(supply, node_window.sum(axis=1), window_of, slot, night, night_id,
                          t_threshold=t_threshold, min_leak_share=min_leak_share, day_type=day_type)
        if det.detected:
            node_window, cinfo = window_consumption(
                cust, join, edges, clock=supply_clock(supply, det.leak_m3s, det.onset))
            det = detect_leak(supply, node_window.sum(axis=1), window_of, slot, night, night_id,
                              t_threshold=t_threshold, min_leak_share=min_leak_share, day_type=day_type)
    else:
        det = Detection(False, None, 0.0, float("nan"), 0.0, {"reason": "supply not metered"})
        warnings.append("degraded: without metered supply the leak cannot be detected from the balance")
    total_window = node_window.sum(axis=1)
    timings["detection_s"] = time.perf_counter() - t1
    report["detected"] = bool(det.detected)
    report["onset"] = det.onset.tz_convert(tz).isoformat() if det.onset is not None else None
    report["leak_flow_lps"] = round(det.leak_m3s * 1000, 3) if det.detected else 0.0
    report["leak_flow_se_lps"] = round(det.leak_se_m3s * 1000, 3) if np.isfinite(det.leak_se_m3s) else None
    report["detection"] = {"t_night": round(det.t_night, 2), **det.details}
    cols = ["rank", "link_id", "score", "leak_flow_lps", "lon", "lat", "zone", "in_candidate_zone", "length_m"]
    if not det.detected:
        report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        log.info("localise: no leak detected (balance step %.2f L/s, t=%.1f)",
                 det.details.get("step_lps", 0.0), det.t_night)
        return Localisation(pd.DataFrame(columns=cols), report)

    # ---- 3. model snapshots
    t2 = time.perf_counter()
    h0, h1 = hours
    sel = (local.hour >= h0) & (local.hour < h1)
    times = grid[sel]
    leak_on = (times >= det.onset)
    sup = supply.reindex(times).to_numpy(float)
    w_of = window_of[sel]
    status, tanks, mnotes = _snapshot_inputs(times, pressure, flow, wn)
    warnings.extend(mnotes)
    junctions = list(wn.junction_name_list)
    # demand of node i at time t: its metered rate in the window, scaled so that
    # its DMA's total follows the DMA's metered net inflow (minus the leak in
    # the leak's DMA); nodes of no fully metered DMA follow the system input
    rate_mat = node_window.reindex(columns=junctions, fill_value=0.0)  # m³/s per window
    q_sys = np.maximum(sup - np.where(leak_on, det.leak_m3s, 0.0), 0.0)
    tw = total_window.reindex(w_of).to_numpy(float)
    fac_sys = np.where(tw > 0, q_sys / np.where(tw > 0, tw, 1.0), 0.0)
    member, dma_in, dinfo = dma_inflows(network, flow, pressure) if dma_shape else (
        pd.Series(dtype="string"), pd.DataFrame(index=grid), {"dmas": 0})
    dma_names = list(dma_in.columns)
    node_dma = pd.Index(dma_names).get_indexer(pd.Series(junctions).map(member).to_numpy()) if dma_names \
        else np.full(len(junctions), -1)
    dma_report: dict[str, Any] = {"shaping": "dma inflow" if dma_names else "system input", **dinfo}
    if dma_names:
        onehot = np.zeros((len(junctions), len(dma_names)))
        onehot[node_dma >= 0, node_dma[node_dma >= 0]] = 1.0
        cons_w = pd.DataFrame(rate_mat.to_numpy(float) @ onehot, index=rate_mat.index, columns=dma_names)
        steps = dma_steps(dma_in, cons_w, window_of, slot, det.onset)
        leak_dma = str(steps.index[0]) if len(steps) else None
        dma_sure = bool(leak_dma is not None and steps["z"].iat[0] >= 3.0
                        and steps["step_m3s"].iat[0] >= 0.5 * det.leak_m3s)
        target = dma_in.reindex(times).to_numpy(float).copy()
        if leak_dma is not None:
            target[:, dma_names.index(leak_dma)] -= np.where(leak_on, det.leak_m3s, 0.0)
        target = np.maximum(target, 0.0)
        cw = cons_w.reindex(w_of).to_numpy(float)
        fac_dma = np.where(cw > 0, target / np.where(cw > 0, cw, 1.0), 0.0)
        dma_report.update({"leak_dma": leak_dma, "leak_dma_significant": dma_sure, "steps_lps": {
            str(k): round(float(v) * 1000, 3) for k, v in steps["step_m3s"].head(5).items()},
            "steps_z": {str(k): round(float(v), 2) for k, v in steps["z"].head(5).items()}})
        report["leak_dma"] = leak_dma
    else:
        fac_dma = np.zeros((len(times), 0))
        leak_dma, dma_sure = None, False
    report["dma"] = dma_report
    fac = np.hstack([fac_dma, fac_sys[:, None]])
    fac_col = np.where(node_dma >= 0, node_dma, len(dma_names))
    p_meas = pressure[p_sensors].reindex(times) if p_sensors else pd.DataFrame(index=times)
    q_meas = flow.reindex(times)
    ok = np.isfinite(sup) & p_meas.notna().all(axis=1).to_numpy() & q_meas.notna().all(axis=1).to_numpy()
    for t_name, lv in tanks.items():
        ok &= lv.notna().to_numpy()
    ok &= pd.Series(w_of).isin(rate_mat.index).to_numpy() & np.isfinite(fac).all(axis=1)
    elev = np.array([wn.get_node(n).elevation for n in p_sensors])
    res_p, res_q, keep_t = [], [], []
    failures = 0
    p_arr = p_meas.to_numpy(float)
    q_arr = q_meas.to_numpy(float)
    flow_links = list(flow.columns)
    tank_arr = {tn: lv.to_numpy(float) for tn, lv in tanks.items()}
    status_arr = {ln: status[ln].to_numpy(bool) for ln in status.columns}
    rate_arr = rate_mat.to_numpy(float)
    w_row = rate_mat.index.get_indexer(w_of)

    def demands_at(k: np.ndarray | int) -> np.ndarray:
        """Junction demands (m³/s) at snapshot(s) ``k``."""
        return rate_arr[w_row[k]] * fac[k][..., fac_col]
    with SnapshotSolver(wn) as solver:
        todo = np.flatnonzero(ok)
        for n_done, k in enumerate(todo):
            try:
                snap = solver.solve(
                    demands_at(k), scale=1.0,
                    tank_levels={tn: lv[k] for tn, lv in tank_arr.items()},
                    link_status={ln: bool(st[k]) for ln, st in status_arr.items()},
                    heads_of=p_sensors, flows_of=flow_links)
            except SimulationError:
                failures += 1
                continue
            res_p.append(p_arr[k] - (snap.heads.to_numpy() - elev))
            res_q.append(q_arr[k] - snap.flows.to_numpy())
            keep_t.append(k)
            if progress is not None and (n_done + 1) % 50 == 0:
                progress("snapshots", n_done + 1, len(todo))
        if not keep_t:
            raise SimulationError("no snapshot of the measured conditions converged",
                                  fix="check tank levels, pump states and the network's supply links")
        if failures:
            warnings.append(f"{failures} snapshot(s) did not converge and were skipped")
        keep_t = np.array(keep_t)
        R = np.hstack([np.array(res_p).reshape(len(keep_t), -1), np.array(res_q).reshape(len(keep_t), -1)])
        kinds = ["pressure"] * len(p_sensors) + ["flow"] * len(flow.columns)
        elements = p_sensors + list(flow.columns)
        t_on = leak_on[keep_t]
        hour = np.asarray(local[sel][keep_t].hour)
        timings["snapshots_s"] = time.perf_counter() - t2
        report["snapshots"] = {"solved": int(len(keep_t)), "failed": int(failures), "hours_local": [h0, h1],
                               "reference": int((~t_on).sum()), "leak": int(t_on.sum())}
        if (~t_on).sum() < 4 or t_on.sum() < 4:
            warnings.append("degraded: too few snapshots before or after the onset for a reliable ranking")
        # ---- 4. calibration: offsets per sensor and hour, noise per sensor
        t3 = time.perf_counter()
        df = pd.DataFrame(R, columns=range(R.shape[1]))
        offsets = df[~t_on].groupby(hour[~t_on]).mean()
        have = np.isin(hour, offsets.index.to_numpy())
        centred = df.to_numpy() - offsets.reindex(hour).to_numpy()
        if (t_on & have).sum() == 0 or (~t_on & have).sum() < 2:
            raise ReadingsError("no analysed hour has snapshots both before and after the onset",
                                fix="give readings over more days, or widen the hours used")
        floor = np.array([SIGMA_FLOOR_P if k == "pressure" else SIGMA_FLOOR_Q for k in kinds])
        days_all = day_num[sel][keep_t]
        group = hour // block_hours
        groups = [g for g in np.unique(group) if ((group == g) & t_on & have).any()
                  and ((group == g) & ~t_on & have).sum() >= 2]
        deltas, sigmas, ops = [], [], []
        for g in groups:
            mref = (group == g) & ~t_on & have
            mleak = (group == g) & t_on & have
            ref_c, leak_c = centred[mref], centred[mleak]
            n_ref = len(ref_c)
            sd_snap = np.sqrt(np.nanmean(ref_c ** 2, axis=0) * n_ref / max(n_ref - block_hours, 1))
            sd_snap = np.maximum(np.nan_to_num(sd_snap, nan=0.0), floor)
            days_ref = len(np.unique(days_all[mref]))
            days_leak = len(np.unique(days_all[mleak]))
            # residuals are correlated within a day: the change's noise from placebo
            # change points between leak-free days, never below the snapshot scatter
            placebo = _placebo_sd(ref_c, days_all[mref])
            per_day = max(n_ref / max(days_ref, 1), 1.0)
            sigma_day = np.maximum(placebo, sd_snap / np.sqrt(per_day))
            sigmas.append(sigma_day * np.sqrt(1.0 / max(days_ref, 1) + 1.0 / max(days_leak, 1)))
            deltas.append(np.nanmean(leak_c, axis=0))
            lk = keep_t[mleak]
            ops.append((np.mean(demands_at(lk), axis=0),
                        {tn: float(lv.iloc[lk].mean()) for tn, lv in tanks.items()},
                        {ln: bool(status[ln].iloc[lk].mean() >= 0.5) for ln in status.columns}))
        delta_all = np.concatenate(deltas)
        n_s = len(elements)
        if pool_sigma:  # few leak-free days make per-block noise estimates erratic: pool them
            sig_arr = np.vstack(sigmas)
            pooled = np.sqrt(np.mean(sig_arr ** 2, axis=0))
            sigmas = [np.maximum(pooled, 0.5 * sb) for sb in sigmas]
        sigma_all = np.concatenate(sigmas)
        row_block = np.repeat(np.arange(len(groups)), n_s)
        row_is_p = np.tile(np.array(kinds) == "pressure", len(groups))
        w_rows = 1.0 / sigma_all ** 2
        if common_mode:
            delta_all = _centre_pressure(delta_all, row_block, row_is_p, w_rows)
        # how a leak's flow splits between sources and DMAs depends on roughness
        # the model does not know: flow signatures get their own allowance
        alpha_rows = np.where(row_is_p, alpha, alpha_flow)
        report["calibration"] = {
            "offsets": {f"{k}:{e}": round(float(v), 4) for k, e, v in
                        zip(kinds, elements, np.nanmean(offsets.to_numpy(), axis=0))},
            "hour_blocks": [int(g * block_hours) for g in groups],
            "reference_days": int(len(np.unique(days_all[~t_on & have]))),
            "leak_days": int(len(np.unique(days_all[t_on & have]))),
        }
        timings["calibration_s"] = time.perf_counter() - t3
        # ---- 5. signatures at the mean leak operating point of each hour block
        t4 = time.perf_counter()
        pipes = network.links[network.links["link_type"] == "pipe"]
        bases, sigs = [], []
        for d_g, tank_g, stat_g in ops:
            base = solver.solve(d_g, tank_levels=tank_g, link_status=stat_g)
            lin = LinearModel(solver.wn, base.heads, base.flows)
            S = np.vstack([lin.response(p_sensors, "pressure").to_numpy(),
                           lin.response(list(flow.columns), "flow").to_numpy()])
            sigs.append(_pipe_signatures(S, lin.junctions, pipes))
            bases.append(base)
        sig = np.vstack(sigs)
        if common_mode:
            sig = _centre_pressure(sig, row_block, row_is_p, w_rows)
        L_prior = det.leak_m3s
        L_sd = max(det.leak_se_m3s if np.isfinite(det.leak_se_m3s) else 0.0, 0.15 * L_prior, 1e-5)
        # measured - model: the model lacks the leak, so delta ≈ S L (S < 0 for pressures)
        ll, Lfit = _loglik(delta_all, sigma_all, sig, L_prior, L_sd, alpha_rows, nu)
        timings["signatures_s"] = time.perf_counter() - t4
        # ---- refinement: non-linear leak at the top candidates
        t5 = time.perf_counter()
        length = pipes["length_m"].to_numpy(float)
        prior = np.log(np.maximum(np.nan_to_num(length, nan=1.0), 1.0))
        if dma_sure and dma_prior > 1.0:
            # the per-DMA balance says which DMA the leak is in: a soft prior
            in_dma = (pipes["start_node"].astype(str).map(member).eq(leak_dma).fillna(False).to_numpy(bool)
                      | pipes["end_node"].astype(str).map(member).eq(leak_dma).fillna(False).to_numpy(bool))
            prior = prior + np.log(dma_prior) * in_dma
            dma_report["prior_pipes"] = int(in_dma.sum())
        post = ll + prior
        top = np.argsort(-post)[:refine_top]
        jidx = {n: k for k, n in enumerate(solver.junctions)}
        refined_pred: dict[int, np.ndarray] = {}
        for k in top:
            s_node, e_node = pipes["start_node"].iat[k], pipes["end_node"].iat[k]
            Lk = max(Lfit[k], 0.25 * L_prior)
            preds = []
            try:
                for (d_g, tank_g, stat_g), base in zip(ops, bases):
                    dd = d_g.copy()
                    for node in (s_node, e_node):
                        if node in jidx:
                            dd[jidx[node]] += Lk / 2.0
                    lsnap = solver.solve(dd, tank_levels=tank_g, link_status=stat_g)
                    preds.append(np.concatenate([
                        (lsnap.heads[p_sensors] - base.heads[p_sensors]).to_numpy(),
                        (lsnap.flows[list(flow.columns)] - base.flows[list(flow.columns)]).to_numpy()]))
            except SimulationError:
                continue
            g = (np.concatenate(preds) / Lk)[:, None]
            if common_mode:
                g = _centre_pressure(g, row_block, row_is_p, w_rows)
            llk, Lr = _loglik(delta_all, sigma_all, g, L_prior, L_sd, alpha_rows, nu)
            ll[k], Lfit[k] = llk[0], Lr[0]
            refined_pred[k] = g[:, 0] * Lr[0]
        # the noise model is estimated from a few leak-free days: when even the
        # best candidate misfits (reduced chi-square > 1), widen it accordingly
        best = int(np.argmax(ll + prior))
        pred_best = refined_pred.get(best, sig[:, best] * Lfit[best])
        var_best = sigma_all ** 2 + (alpha_rows * pred_best) ** 2
        chi2 = float((((delta_all - pred_best) ** 2) / var_best).sum())
        dof = max(len(delta_all) - 1, 1)
        temper = max(1.0, chi2 / dof) if nu is None else 1.0
        report["calibration"]["misfit_reduced_chi2"] = round(chi2 / dof, 3)
        post = ll / temper + prior
        timings["refine_s"] = time.perf_counter() - t5
        # per-sensor summary over the blocks, for maps and the report
        w = 1.0 / sigma_all.reshape(-1, n_s) ** 2
        delta = (np.concatenate(deltas).reshape(-1, n_s) * w).sum(0) / w.sum(0)
        sigma = 1.0 / np.sqrt(w.sum(0))
        d_mean, tank_mean, stat_mean = ops[len(ops) // 2]
    post = post - post.max()
    prob = np.exp(post)
    prob /= prob.sum()
    score = pd.Series(prob, index=pipes.index)
    zone_links = network.links[["start_node", "end_node"]]
    zone = candidate_zone(score, zone_links)
    mid = pipes.geometry.interpolate(0.5, normalized=True)
    ll_pts = gpd.GeoSeries(mid, crs=network.crs).to_crs(settings.MAP_CRS)
    cand = pd.DataFrame({
        "link_id": pipes.index.astype(str),
        "score": prob,
        "leak_flow_lps": Lfit * 1000.0,
        "lon": ll_pts.x.to_numpy(),
        "lat": ll_pts.y.to_numpy(),
        "zone": pipes["zone"].astype("string").to_numpy() if "zone" in pipes else pd.NA,
        "in_candidate_zone": pipes.index.isin(list(zone)),
        "length_m": length,
    }).sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    cand.insert(0, "rank", np.arange(1, len(cand) + 1))
    reg = meters.reset_index()
    reg["meter_id"] = reg[reg.columns[0]].astype(str) if "meter_id" not in reg else reg["meter_id"].astype(str)
    by_el = {(str(k), str(n if k == "pressure" else l)): m for m, k, n, l in
             zip(reg["meter_id"], reg["kind"].astype(str), reg["node_id"].astype(str), reg["link_id"].astype(str))}
    residuals = pd.DataFrame({"meter_id": [by_el.get((k, e), e) for k, e in zip(kinds, elements)],
                              "kind": kinds, "element": elements,
                              "delta": np.where(np.array(kinds) == "flow", delta * 1000, delta),
                              "sigma": np.where(np.array(kinds) == "flow", sigma * 1000, sigma),
                              "z": delta / sigma})
    timings["total_s"] = time.perf_counter() - t0
    report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    report["candidate_zone"] = {"pipes": int(len(zone)),
                                "length_m": round(float(pipes.loc[list(zone), "length_m"].sum()), 1)}
    report["top"] = cand.head(5)[["rank", "link_id", "score", "leak_flow_lps"]].round(4).to_dict("records")
    log.info("localise: leak of %.2f L/s from %s; top pipe %s (p=%.2f); zone of %d pipes",
             det.leak_m3s * 1000, report["onset"], cand["link_id"].iat[0], cand["score"].iat[0], len(zone))
    internals = {"delta": delta, "sigma": sigma, "kinds": kinds, "elements": elements,
                 "demands": d_mean, "tank_levels": tank_mean, "link_status": stat_mean,
                 "leak_m3s": det.leak_m3s, "p_sensors": p_sensors, "flow_links": list(flow.columns)}
    return Localisation(cand, report, residuals, internals)


def _placebo_sd(ref_c: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Day-to-day sd of the mean residual per sensor (placebo change points).

    Splitting the leak-free days at every day boundary gives placebo
    "changes"; their spread estimates the sd of one day's mean residual.
    """
    ud = np.unique(days)
    if len(ud) < 2:
        return np.zeros(ref_c.shape[1])
    means = np.vstack([np.nanmean(ref_c[days == d], axis=0) for d in ud])
    diffs = []
    for cut in range(1, len(ud)):
        a, b = means[:cut].mean(0), means[cut:].mean(0)
        diffs.append((b - a) / np.sqrt(1.0 / cut + 1.0 / (len(ud) - cut)))
    return np.sqrt(np.mean(np.square(diffs), axis=0))
