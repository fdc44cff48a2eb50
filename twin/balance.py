"""Water balance per DMA and local day: system input, consumption, NRW, night flow.

For each DMA and each complete local day (``settings.TIMEZONE``, UTC+8):

``siv_m3`` (system input volume)
    The DMA's net inflow (:func:`twin.dma.dma_net_inflow`, the same as the
    localisation's) summed over the 15-minute grid (sample ``t`` stands for
    ``[t, t + 15 min)``; the store fills gaps up to
    ``settings.GAP_FILL_SAMPLES``): the flow through its metered inlets, each
    signed into the DMA (``inflow_m3``), plus the water drawn from tanks
    inside it (``-storage_change_m3``: from the tank's link meters, else from
    its level logger smoothed over ``settings.TANK_SMOOTH_SAMPLES`` times the
    tank's area).
``consumption_m3``
    Metered consumption: every customer register interpolated to the local
    day boundaries (reset-corrected, :func:`twin.demand.register_at`), the
    difference split onto DMAs as the meter's demand is split onto its
    pipe's end nodes (:func:`twin.meters.join_meters`; a meter farther than
    the join distance goes to its nearest pipe for the balance).
``nrw_m3``, ``nrw_pct``
    ``siv - consumption`` and its share of ``siv`` (%). It holds real losses
    (leaks, background leakage) and apparent losses (meter under-registration).
``mnf_lps``
    Minimum night flow: the mean net inflow (tank draw included) over the
    night window (02:00-04:00 local), L/s. Averaging the window rather than
    taking its smallest sample keeps logger noise out.
``night_consumption_lps``
    Night use expected from the meters: the day's metered consumption as a
    mean rate times a night factor per customer class (night-window rate over
    daily mean rate; defaults :data:`NIGHT_FACTORS` are typical residential /
    commercial / industrial diurnal curves). ``night_leakage_lps`` =
    ``mnf_lps - night_consumption_lps`` estimates the leakage rate.
``inflow_in_m3``, ``inflow_out_m3``, ``siv_sd_m3``
    The water its boundary meters let in and out (``in - out`` is
    ``inflow_m3``) and the standard uncertainty of that difference when each
    meter's daily volume is off by :data:`FLOW_METER_ACCURACY`.
``boundary_meters``, ``mains_km``, ``role``
    Its metered boundary links, its length of open pipe, and ``district``
    or ``transmission`` (a zone that passes on at least
    :data:`TRANSMISSION_SHARE` of its inflow: trunk mains, a plant; see
    :func:`zone_summary` for what its figures mean).
``flag``, ``nrw_z``, ``mnf_z``
    ``nrw_jump`` / ``mnf_jump`` where the NRW (m³/day, complete days) or the
    night leakage (L/s) steps up and stays up (:func:`step_windows`,
    :func:`day_scores`): for every onset day the mean of the days since is
    tested against the days before it with a two-sample t-statistic whose
    scale is the district's own day-to-day scatter moderated by every
    district's over the run (empirical Bayes, :func:`variance_prior`: a
    district with a few quiet days borrows the others' scale, never a
    smaller one than its own; a transmission zone keeps its own). ``*_z``
    is the normal score of the strongest step covering the day; the
    threshold is family-wise:
    the chance that a leak-free run flags anything is
    :data:`FALSE_ALARM_RATE` (Bonferroni over the districts, windows and
    both flags; ``attrs["flag_z"]``, 4.2 for 20 zones x 7 days, 4.6 for
    139). ``partial`` days (more than :data:`PARTIAL_SHARE` of the meters
    extrapolated to a day boundary: the first and last) are not NRW-scored
    and are NRW history only for a district with fewer than two complete
    days; ``incomplete``: an unmetered boundary link.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special, stats

from twin import settings
from twin.demand import window_volumes
from twin.dma import DmaInflow, assign_dmas, dma_inlets, dma_net_inflow
from twin.errors import InputError
from twin.measure import element_series
from twin.meters import join_meters, node_weights
from twin.network import Network
from twin.store import Store
from twin.units import check_sensor_units

log = logging.getLogger(__name__)

#: Night-window consumption rate over the daily mean rate, by customer class.
NIGHT_FACTORS: dict[str, float] = {"residential": 0.25, "commercial": 0.18, "industrial": 0.61, "": 0.25}

#: Chance that one balance run flags a day of any leak-free district: the
#: flags' threshold is Bonferroni over the run's tests (districts x days x 2).
FALSE_ALARM_RATE = 0.01

#: Relative standard uncertainty of a boundary flow meter's daily volume
#: (electromagnetic meters of accuracy class 0.5 %).
FLOW_METER_ACCURACY = 0.005

#: A day is "partial" when more than this share of a DMA's meters has no
#: register on both sides of a day boundary (first / last day of the data).
PARTIAL_SHARE = 0.10

#: Days of customer readings processed at a time (memory on long periods).
BATCH_DAYS = 7

BALANCE_COLUMNS = [
    "dma", "date", "siv_m3", "consumption_m3", "nrw_m3", "nrw_pct", "mnf_lps",
    "night_consumption_lps", "night_leakage_lps", "flag", "inflow_m3", "storage_change_m3",
    "meters", "meters_missing", "meters_extrapolated", "unmetered_boundaries", "nrw_z", "mnf_z",
    "inflow_in_m3", "inflow_out_m3", "siv_sd_m3", "boundary_meters", "mains_km", "role",
]

#: A zone passing on at least this share of its metered inflow to other zones
#: is a transmission zone (trunk mains, a plant), not a district: its own
#: input is under a tenth of what its meters measure, a difference of large
#: numbers (a district feeding another one passes on less).
TRANSMISSION_SHARE = 0.9


def _meter_dma_matrix(
    join: pd.DataFrame, assignment: pd.Series, meters: pd.Index, dmas: pd.Index, links: pd.DataFrame
) -> sp.csr_matrix:
    """Sparse (meters x DMAs) share of each meter's consumption.

    Unmatched meters (beyond the join distance) go half to each end of their
    nearest pipe: for the balance the DMA matters, not the node.
    """
    j = join.copy()
    un = ~j["matched"].astype(bool) & j["nearest_link_id"].notna() if "nearest_link_id" in j.columns else None
    w = node_weights(j)
    if un is not None and un.any():
        extra = j.loc[un, ["nearest_link_id"]].copy()
        extra["start"] = links["start_node"].astype(str).reindex(extra["nearest_link_id"].astype(str)).to_numpy()
        extra["end"] = links["end_node"].astype(str).reindex(extra["nearest_link_id"].astype(str)).to_numpy()
        w2 = pd.DataFrame({
            "meter_id": np.concatenate([extra.index.astype(str), extra.index.astype(str)]),
            "node_id": np.concatenate([extra["start"].astype(str), extra["end"].astype(str)]),
            "weight": 0.5,
        })
        w = pd.concat([w, w2], ignore_index=True)
    w["dma"] = assignment.reindex(w["node_id"].astype(str)).to_numpy()
    w = w.dropna(subset=["dma"])
    mi = meters.get_indexer(w["meter_id"].astype(str))
    di = dmas.get_indexer(w["dma"].astype(str))
    ok = (mi >= 0) & (di >= 0)
    return sp.csr_matrix((w["weight"].to_numpy()[ok], (mi[ok], di[ok])), shape=(len(meters), len(dmas)))


def _trigamma_inverse(x: float) -> float:
    """``y`` with ``trigamma(y) = x`` (Newton's method, as limma's ``trigammaInverse``)."""
    if x > 1e7:
        return 1.0 / np.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1.0 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def variance_prior(rel_var: np.ndarray, dof: np.ndarray) -> tuple[float, float]:
    """The districts' common scale: an inverse-chi-squared prior of their variances.

    Empirical Bayes as limma's ``fitFDist`` (Smyth 2004): the log sample
    variances, corrected for their degrees of freedom, give the prior's
    centre ``s0²`` from their mean and its degrees of freedom ``nu0`` from
    their excess spread (``inf`` when they spread no more than sampling
    alone explains, i.e. the districts share one scale).

    Parameters
    ----------
    rel_var : ndarray
        Sample variances of the districts' days, each over the district's
        size squared (dimensionless).
    dof : ndarray
        Their degrees of freedom (days - 1, >= 1).

    Returns
    -------
    (float, float)
        ``s0²`` (relative variance) and ``nu0`` (0 when fewer than three
        districts: no prior).
    """
    ok = np.isfinite(rel_var) & (dof >= 1)
    v, d = rel_var[ok], dof[ok].astype(float)
    if len(v) < 3:
        return float(np.nanmedian(v)) if len(v) else float("nan"), 0.0
    pos = v[v > 0]
    v = np.maximum(v, 1e-6 * (float(np.median(pos)) if len(pos) else 1e-12))
    e = np.log(v) - special.digamma(d / 2) + np.log(d / 2)
    excess = float(np.var(e, ddof=1) - np.mean(special.polygamma(1, d / 2)))
    if excess <= 0:
        return float(np.exp(np.mean(e))), float("inf")
    nu0 = 2.0 * _trigamma_inverse(excess)
    return float(np.exp(np.mean(e) + special.digamma(nu0 / 2) - np.log(nu0 / 2))), nu0


def _step_z(before: np.ndarray, after: np.ndarray, size: np.ndarray, prior: tuple[float, float],
            pooled: np.ndarray) -> np.ndarray:
    """Normal score of each district's step from the days ``before`` to the days ``after`` (days x districts).

    A two-sample t-statistic of the means: the scatter of the days around
    their own segment's mean (pooled, ``n_before + n_after - 2`` degrees of
    freedom) moderated by ``prior`` (``s0²`` relative to ``size²``, ``nu0``:
    :func:`variance_prior` of every district's days), never below the
    district's own (the prior must not make a noisy district's usual days
    alarms), returned as the standard normal score of the same upper-tail
    probability. A district not ``pooled`` (a transmission zone) keeps its
    own scale and degrees of freedom. NaN with fewer than two days before,
    none after, or no degree of freedom.
    """
    nb, na = np.isfinite(before).sum(axis=0), np.isfinite(after).sum(axis=0)
    dof = nb + na - 2.0
    ok = (nb >= 2) & (na >= 1) & (size > 0)
    z = np.full(len(size), np.nan)
    if not ok.any():
        return z
    b, a = before[:, ok], after[:, ok]
    mb, ma = np.nanmean(b, axis=0), np.nanmean(a, axis=0)
    ss = np.nansum((b - mb) ** 2, axis=0) + np.nansum((a - ma) ** 2, axis=0)
    own, d, sz = ss / dof[ok], dof[ok], size[ok]
    s0sq, nu0 = prior
    if nu0 == 0:
        var, df = own, d
    elif np.isinf(nu0):
        var, df = s0sq * sz**2, np.full(len(d), np.inf)
    else:
        var, df = (nu0 * s0sq * sz**2 + d * own) / (nu0 + d), nu0 + d
    # never below its own scale: shrinking a noisy district's towards quieter
    # districts' would turn its usual days into alarms
    var = np.where(own > var, own, var)
    var, df = np.where(pooled[ok], var, own), np.where(pooled[ok], df, d)
    t = (ma - mb) / np.sqrt(var * (1.0 / nb[ok] + 1.0 / na[ok]))
    p = np.where(np.isinf(df), stats.norm.sf(t), stats.t.sf(t, np.where(np.isinf(df), 1.0, df)))
    z[ok] = np.where(np.isfinite(t), stats.norm.isf(np.clip(p, 1e-300, 1.0)), np.nan)
    return z


def step_windows(x: np.ndarray, size: np.ndarray, fallback: np.ndarray | None = None,
                 pooled: np.ndarray | None = None) -> np.ndarray:
    """Scores of every persistent step: days ``k..i`` of each district against its days before ``k``.

    For every onset day ``k`` with at least two usable days before it and
    every later day ``i``, the mean of days ``k+1..i`` (of day ``k`` alone
    when ``i = k``: a leak starting during day ``k`` shows only in part that
    day) is tested against the mean of the days before ``k``
    (:func:`_step_z`). A leak is a step that stays, so its evidence adds up
    over the days it lasts, while one odd day is scored alone.

    Parameters
    ----------
    x : ndarray
        Days x districts; NaN where a day is not usable (not history, not tested).
    size : ndarray
        Each district's scale reference (same unit as ``x``, > 0).
    fallback : ndarray, optional
        Days x districts: the history of a district with fewer than two
        usable days before ``k`` (for NRW: the partial first day too).
    pooled : ndarray of bool, optional
        Districts that share the prior (default all); the others (transmission
        zones, whose size is their throughput, not their use) keep their own scale.

    Returns
    -------
    ndarray
        Onset day x last day x district (NaN: not tested).
    """
    n_days = x.shape[0]
    z = np.full((n_days, n_days, x.shape[1]), np.nan)
    # the districts' scales over the whole run: many districts x several days
    # show how much they differ, which two days of history cannot
    pooled = np.ones(x.shape[1], dtype=bool) if pooled is None else pooled
    n = np.isfinite(x).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.nanvar(np.where(n >= 2, x, 0.0), axis=0, ddof=1) / size**2
    prior = variance_prior(np.where((n >= 2) & (size > 0) & pooled, rel, np.nan), n - 1.0)
    for k in range(2, n_days):
        hist = x[:k]
        if fallback is not None:
            few = np.isfinite(hist).sum(axis=0) < 2
            hist = np.where(few[None, :], fallback[:k], hist)
        for i in range(k, n_days):
            # the onset day holds only part of a step: the level after it is the later days'
            z[k, i] = _step_z(hist, x[k:k + 1] if i == k else x[k + 1:i + 1], size, prior, pooled)
    return z


def day_scores(windows: np.ndarray, z_crit: float) -> np.ndarray:
    """Each day's score from the step windows (:func:`step_windows`) of its district.

    Where a district's strongest window exceeds ``z_crit`` its first day is
    the step's onset ``k``: a day from ``k`` on scores the strongest window
    from ``k`` that reaches it (the step still there; day ``k`` itself only
    when its own value is above its baseline), a day before ``k``
    the strongest window that contains it and ends before ``k``. Without
    such a step a day scores the strongest window that contains it.

    Returns
    -------
    ndarray
        Days x districts (NaN: never tested).
    """
    n_days, _, n_d = windows.shape
    out = np.full((n_days, n_d), np.nan)
    k_idx, i_idx = np.meshgrid(np.arange(n_days), np.arange(n_days), indexing="ij")
    for d in range(n_d):
        w = windows[:, :, d]
        if not np.isfinite(w).any():
            continue
        k, _ = np.unravel_index(np.nanargmax(w), w.shape)
        onset = k if np.nanmax(w) > z_crit else n_days
        for j in range(n_days):
            if j == onset and not w[j, j] > 0:  # the onset day shows none of the step itself
                out[j, d] = w[j, j]
            elif j >= onset:
                cover = (k_idx == onset) & (i_idx >= j)
            else:
                cover = (k_idx <= j) & (i_idx >= j) & (i_idx < onset)
            vals = w[cover]
            if np.isfinite(vals).any():
                out[j, d] = np.nanmax(vals)
    return out


def water_balance(
    network: Network,
    store: Store,
    *,
    start: Any = None,
    end: Any = None,
    tz: str = settings.TIMEZONE,
    night_hours: tuple[int, int] = (settings.NIGHT_START_HOUR, settings.NIGHT_END_HOUR),
    night_factors: dict[str, float] | None = None,
    assignment: pd.Series | None = None,
    join: pd.DataFrame | None = None,
    max_distance_m: float = settings.SNAP_DISTANCE_M,
    false_alarm_rate: float = FALSE_ALARM_RATE,
    flag_z: float | None = None,
    meter_accuracy: float = FLOW_METER_ACCURACY,
) -> pd.DataFrame:
    """Daily water balance of every DMA with a metered inlet.

    Parameters
    ----------
    network : Network
        The network (projected CRS).
    store : Store
        Holds the meters and their readings.
    start, end : tz-aware time or date string, optional
        Limit the days (local dates, inclusive). Default: every complete day.
    tz : str
        Local time zone of "days" and the night window.
    night_hours : (int, int)
        Night window ``[start, end)`` in local hours.
    night_factors : dict, optional
        Night factor per ``customer_class`` (see :data:`NIGHT_FACTORS`).
    assignment : Series, optional
        Node -> DMA (default :func:`twin.dma.assign_dmas` with the flow
        meters' links as inlets).
    join : DataFrame, optional
        Meter join (default: the store's, else computed).
    max_distance_m : float
        Join distance when the join is computed here, metres.
    false_alarm_rate : float
        Chance that a run over leak-free districts flags any day: the flags'
        threshold is the normal score of ``false_alarm_rate / tests``
        (Bonferroni over the run's district-days and both flags).
    flag_z : float, optional
        A fixed threshold instead (z-score).
    meter_accuracy : float
        Relative standard uncertainty of a boundary flow meter's daily
        volume (``siv_sd_m3``).

    Returns
    -------
    DataFrame
        One row per DMA and local day, columns :data:`BALANCE_COLUMNS`
        (``date`` is a ``datetime.date``; volumes m³, flows L/s);
        ``attrs["flag_z"]`` holds the run's threshold.
    """
    meters = store.meter_table() if hasattr(store, "meter_table") else store.meters()
    inflow, flow = _measured_inflow(network, store, meters, assignment)
    days = _Days.of(inflow.inlet.index, tz=tz, night_hours=night_hours, start=start, end=end, path=store.path)
    volumes = _daily_inflow(inflow, days) | _daily_boundary(network, inflow, flow, days, meter_accuracy)
    cust = meters.loc[meters["kind"].astype(str).eq("customer").to_numpy()]
    join = _customer_join(store, network, cust, join, max_distance_m)
    # consumption follows the day: interpolate registers in "demand time",
    # from the network's inflow above half its night flow (leakage is flat)
    total = _net_m3s(inflow).sum(axis=1, min_count=1)
    night_total = float(total[days.night].mean()) if days.night.any() else 0.0
    shape = (total - 0.5 * night_total).clip(lower=0.05 * float(total.mean()))
    used = _metered_consumption(store, cust, join, inflow, network, days, shape,
                                NIGHT_FACTORS if night_factors is None else night_factors)
    out = flag_days(_balance_rows(inflow, days, volumes, used), false_alarm_rate=false_alarm_rate, flag_z=flag_z)
    n_flag, flag_z = int(out["flag"].str.contains("jump").sum()), out.attrs["flag_z"]
    log.info(
        "water balance: %d DMAs x %d days; NRW %.1f %% overall; %d DMA-days flagged (z > %.2f)",
        len(inflow.inlet.columns), len(days.dates),
        100.0 * out["nrw_m3"].sum() / out["siv_m3"].sum() if out["siv_m3"].sum() > 0 else float("nan"),
        n_flag, flag_z,
    )
    return out


def _measured_inflow(network: Network, store: Store, meters: pd.DataFrame,
                     assignment: pd.Series | None) -> tuple[DmaInflow, pd.DataFrame]:
    """The DMAs' metered inflow (m³/s) and the boundary meters' flows (m³/s, by link).

    Raises
    ------
    InputError
        No DMA has a metered inlet, or the store holds no flow readings.
    """
    kind = meters["kind"].astype(str)
    flow_m = meters.loc[kind.eq("flow").to_numpy()]
    inlet_links = sorted(set(flow_m["link_id"].dropna().astype(str)) & set(network.links.index.astype(str)))
    if assignment is None:
        assignment = assign_dmas(network, inlet_links=inlet_links)
    if dma_inlets(network, assignment, inlet_links).empty:
        raise InputError(
            "no DMA has a metered inlet, so no balance can be made",
            path=getattr(network, "source", None),
            fix="register flow meters (kind=flow, link_id) on the links that feed each DMA",
        )
    series = store.series("flow", meter_ids=list(flow_m.index.astype(str)))
    if series.empty:
        raise InputError("the store holds no flow readings", path=store.path, fix="ingest the flow meters' readings")
    flow_m = flow_m.loc[flow_m.index.astype(str).isin(series.columns)]
    check_sensor_units(series, flow_m["link_id"].astype(str), meters, network)  # m³/h: refused (twin.units)
    _, flow = element_series(series, flow_m["link_id"].astype(str), meters)
    tanks = set(network.wn.tank_name_list)
    p_m = meters.loc[kind.eq("pressure").to_numpy()]
    tank_loggers = p_m.loc[p_m["node_id"].astype(str).isin(tanks)]
    levels = pd.DataFrame(index=flow.index)
    if len(tank_loggers):
        lev = store.series("pressure", meter_ids=list(tank_loggers.index.astype(str)))
        tank_loggers = tank_loggers.loc[tank_loggers.index.astype(str).isin(lev.columns)]
        levels, _ = element_series(lev, tank_loggers["node_id"].astype(str), meters)
        levels = levels.reindex(flow.index)
    flow = flow.reindex(columns=inlet_links)
    return dma_net_inflow(network, flow, levels, assignment=assignment), flow


def _net_m3s(inflow: DmaInflow) -> pd.DataFrame:
    """Net inflow (m³/s) with an unknown tank draw taken as none (the balance keeps the day)."""
    return inflow.inlet + inflow.storage.fillna(0.0)


@dataclass
class _Days:
    """The complete local days of a grid."""

    dates: list[date]  # sorted
    tz: str
    day: np.ndarray  # local date of every grid instant
    in_day: np.ndarray  # grid instant in a complete day (bool)
    night: np.ndarray  # grid instant in the night window (bool)
    step_s: float

    @classmethod
    def of(cls, grid: pd.DatetimeIndex, *, tz: str, night_hours: tuple[int, int], start: Any, end: Any,
           path: Any) -> "_Days":
        """Complete local days (every grid step present) between ``start`` and ``end``.

        Raises
        ------
        InputError
            No complete day.
        """
        step_s = float(settings.LOGGER_INTERVAL_S)
        local = grid.tz_convert(tz)
        day = np.asarray(local.normalize().tz_localize(None).date)
        counts = pd.Series(1, index=day).groupby(level=0).size()
        full = [d for d, c in counts.items() if c == 86400 // step_s]
        if start is not None:
            full = [d for d in full if d >= pd.Timestamp(start).date()]
        if end is not None:
            full = [d for d in full if d <= pd.Timestamp(end).date()]
        if not full:
            raise InputError(
                "the flow readings cover no complete local day",
                path=path,
                fix="ingest at least one full day (00:00-24:00 local) of flow readings",
            )
        hour = np.asarray(local.hour)
        return cls(sorted(full), tz, day, pd.Series(day).isin(full).to_numpy(),
                   (hour >= night_hours[0]) & (hour < night_hours[1]), step_s)

    def edges(self) -> pd.DatetimeIndex:
        """Local midnights (UTC) bounding the days."""
        local = [pd.Timestamp(d).tz_localize(self.tz) for d in self.dates]
        return pd.DatetimeIndex(local + [local[-1] + pd.Timedelta(days=1)]).tz_convert("UTC").as_unit("ns")


def _daily_inflow(inflow: DmaInflow, days: _Days) -> dict[str, pd.DataFrame]:
    """Per day and DMA: metered inflow (m³), storage change (m³), mean night flow (L/s)."""
    sel = days.in_day
    by_day = np.asarray(days.day)[sel]
    inlet = inflow.inlet[sel]
    inflow_m3 = (inlet * days.step_s).groupby(by_day).sum(min_count=1).where(inlet.notna().groupby(by_day).all())
    draw = inflow.storage[sel]
    storage_m3 = -(draw * days.step_s).groupby(by_day).sum(min_count=1)
    net_lps = _net_m3s(inflow) * 1000.0
    night = sel & days.night
    mnf = net_lps[night].groupby(np.asarray(days.day)[night]).mean()
    return {"inflow_m3": inflow_m3, "storage_change_m3": storage_m3, "mnf_lps": mnf}


def _daily_boundary(network: Network, inflow: DmaInflow, flow: pd.DataFrame, days: _Days,
                    accuracy: float) -> dict[str, pd.DataFrame]:
    """Per day and DMA: the water in and out through its metered boundary links, and its uncertainty.

    ``in_m3`` sums every boundary meter's flow while it enters the DMA,
    ``out_m3`` while it leaves (both >= 0, ``in - out`` is the metered
    inflow). ``meter_sd_m3`` is the standard uncertainty of ``in - out``
    when each meter's daily volume is off by an independent ``accuracy``
    share of what it passed: ``sqrt(sum_k (accuracy V_k)^2)``.
    """
    inlets = dma_inlets(network, inflow.assignment, flow.columns)
    sel = days.in_day
    by_day = np.asarray(days.day)[sel]
    vol = flow[sel] * days.step_s  # m³ per sample, start to end node
    gross = vol.abs().groupby(by_day).sum(min_count=1)  # m³/day through each meter
    into, out, sd = {}, {}, {}
    for d, grp in inlets.groupby("dma", sort=True):
        signed = vol[grp["link_id"].tolist()] * grp["sign"].to_numpy(float)
        into[d] = signed.clip(lower=0).groupby(by_day).sum(min_count=1).sum(axis=1, min_count=1)
        out[d] = (-signed).clip(lower=0).groupby(by_day).sum(min_count=1).sum(axis=1, min_count=1)
        sd[d] = np.sqrt(((accuracy * gross[grp["link_id"].tolist()]) ** 2).sum(axis=1, min_count=1))
    return {"in_m3": pd.DataFrame(into), "out_m3": pd.DataFrame(out), "meter_sd_m3": pd.DataFrame(sd),
            "boundary_meters": inlets.groupby("dma").size(), "mains_km": _mains_km(network, inflow.assignment)}


def _mains_km(network: Network, assignment: pd.Series) -> pd.Series:
    """Length of open pipe in each DMA (km): both ends inside, half of a pipe on its boundary."""
    links = network.links
    open_ = ~links["status"].astype("string").str.lower().eq("closed").fillna(False) if "status" in links.columns \
        else pd.Series(True, index=links.index)
    pipes = links.loc[links["link_type"].astype(str).eq("pipe").to_numpy() & open_.to_numpy()]
    a = assignment.reindex(pipes["start_node"].astype(str)).to_numpy()
    b = assignment.reindex(pipes["end_node"].astype(str)).to_numpy()
    half = pipes["length_m"].to_numpy(float) / 2000.0
    both = pd.concat([pd.Series(half, index=a), pd.Series(half, index=b)])
    return both[both.index.notna()].groupby(level=0).sum()


def _customer_join(store: Store, network: Network, cust: pd.DataFrame, join: pd.DataFrame | None,
                   max_distance_m: float) -> pd.DataFrame:
    """The customers' join: given, the store's, else computed here."""
    if join is None:
        join = store.join() if hasattr(store, "join") else None
    if join is None or not set(cust.index.astype(str)) <= set(join.index.astype(str)):
        import geopandas as gpd  # heavy: only when the store holds no join

        pts = gpd.GeoDataFrame(cust, geometry=gpd.points_from_xy(cust["lon"], cust["lat"]), crs=settings.MAP_CRS)
        join = join_meters(pts, network, max_distance_m=max_distance_m)
    return join


def _metered_consumption(
    store: Store,
    cust: pd.DataFrame,
    join: pd.DataFrame,
    inflow: DmaInflow,
    network: Network,
    days: _Days,
    shape: pd.Series,
    night_factors: dict[str, float],
) -> dict[str, np.ndarray]:
    """Per day and DMA: metered consumption (m³), night-equivalent use, meter counts.

    A week of days at a time (with two days of readings either side) keeps
    memory bounded on long periods.
    """
    edges = days.edges()
    mids = pd.Index(sorted(cust.index.astype(str)), name="meter_id")
    vols, extraps = [], []
    margin = pd.Timedelta(days=2)
    for b0 in range(0, len(days.dates), BATCH_DAYS):
        e = edges[b0: min(b0 + BATCH_DAYS, len(days.dates)) + 1]
        readings = store.readings(kind="customer", start=e[0] - margin, end=e[-1] + margin, ordered=False)
        vols.append(window_volumes(readings, e, rate_shape=shape).reindex(columns=mids))
        # meters whose register had to be extrapolated to a day boundary
        span = readings.groupby("meter_id")["timestamp"].agg(["min", "max"]).reindex(mids)
        first = pd.DatetimeIndex(span["min"]).as_unit("ns").asi8[None, :]
        last = pd.DatetimeIndex(span["max"]).as_unit("ns").asi8[None, :]
        extraps.append(((e[:-1].asi8[:, None] < first) | (e[1:].asi8[:, None] > last)).astype(float))
        del readings
    V = pd.concat(vols, axis=0).to_numpy(dtype=float)  # days x meters, m³
    extrap = np.vstack(extraps)
    dmas = pd.Index(inflow.inlet.columns, name="dma")
    W = _meter_dma_matrix(join, inflow.assignment, mids, dmas, network.links)
    cls = (cust["customer_class"].astype("string").fillna("").reindex(mids).fillna("")
           if "customer_class" in cust.columns else pd.Series("", index=mids))
    nf = cls.map(lambda c: night_factors.get(str(c).strip().lower(), night_factors.get("", 0.25))).to_numpy(float)
    known = np.isfinite(V)
    in_any = np.asarray(W.sum(axis=1)).ravel() > 0
    has = (W > 0).astype(float)
    return {"consumption": np.nan_to_num(V) @ W, "night_eq": (np.nan_to_num(V) * nf[None, :]) @ W,
            "meters": np.asarray((W > 0).sum(axis=0)).ravel(),
            "missing": (~known & in_any[None, :]).astype(float) @ has,
            "extrapolated": (extrap * known) @ has}


def _balance_rows(inflow: DmaInflow, days: _Days, volumes: dict[str, pd.DataFrame],
                  used: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per DMA and day: volumes, NRW, night flows and counts (no flags yet)."""
    unmet = inflow.unmetered
    rows = []
    for di, d in enumerate(inflow.inlet.columns):
        n_unmet = int(((unmet["from_dma"] == d) | (unmet["to_dma"] == d)).sum())
        for k, dd in enumerate(days.dates):
            infl = _at(volumes["inflow_m3"], dd, d)
            dst = _at(volumes["storage_change_m3"], dd, d)
            siv = infl - (dst if np.isfinite(dst) else 0.0)
            c = float(used["consumption"][k, di])
            nrw = siv - c
            night_c = float(used["night_eq"][k, di]) / 86400.0 * 1000.0
            m = _at(volumes["mnf_lps"], dd, d)
            n_meters = int(used["meters"][di])
            rows.append({
                "dma": str(d), "date": dd, "siv_m3": siv, "consumption_m3": c, "nrw_m3": nrw,
                # a share of input is meaningless where no customer is metered (plant, trunk stubs)
                "nrw_pct": 100.0 * nrw / siv if np.isfinite(siv) and siv > 0 and n_meters > 0 else np.nan,
                "mnf_lps": m, "night_consumption_lps": night_c, "night_leakage_lps": m - night_c,
                "inflow_m3": infl, "storage_change_m3": dst,
                "inflow_in_m3": _at(volumes["in_m3"], dd, d), "inflow_out_m3": _at(volumes["out_m3"], dd, d),
                "siv_sd_m3": _at(volumes["meter_sd_m3"], dd, d),
                "boundary_meters": int(volumes["boundary_meters"].get(d, 0)),
                "mains_km": float(volumes["mains_km"].get(d, 0.0)),
                "meters": n_meters, "meters_missing": int(used["missing"][k, di]),
                "meters_extrapolated": int(used["extrapolated"][k, di]),
                "unmetered_boundaries": n_unmet,
            })
    return pd.DataFrame(rows)


def _at(table: pd.DataFrame, day: date, dma: str) -> float:
    """``table.at[day, dma]`` as a float, NaN when absent."""
    if day in table.index and dma in table.columns:
        return float(table.at[day, dma])
    return float("nan")


def flag_days(out: pd.DataFrame, *, false_alarm_rate: float = FALSE_ALARM_RATE,
              flag_z: float | None = None) -> pd.DataFrame:
    """Step scores of NRW and night leakage, the run's threshold and the flags.

    Scores from :func:`step_windows` and :func:`day_scores`.

    ``out`` holds the balance rows of :func:`water_balance` (at least
    ``dma``, ``date``, ``nrw_m3``, ``night_leakage_lps``, ``inflow_in_m3``,
    ``inflow_out_m3``, the meter counts and ``unmetered_boundaries``); it
    gets ``role``, ``nrw_z``, ``mnf_z`` and ``flag`` and is returned with
    :data:`BALANCE_COLUMNS` and ``attrs["flag_z"]``.

    NRW is scored on complete days only (partial ones are its history only
    while a district has fewer than two complete days), the night leakage on
    every day (the night flow is measured whole). Each district is scaled
    by the water its boundary meters pass on a median day (in + out). The
    threshold, unless given, is Bonferroni over every district, window and
    flag tested: ``z = Phi^-1(1 - false_alarm_rate / tests)``.
    """
    ratio = (out.groupby("dma")["inflow_out_m3"].transform("median")
             / out.groupby("dma")["inflow_in_m3"].transform("median"))
    out["role"] = np.where(ratio >= TRANSMISSION_SHARE, "transmission", "district")
    out["partial"] = (out["meters_extrapolated"] + out["meters_missing"]) > PARTIAL_SHARE * out["meters"].clip(lower=1)
    wide = out.pivot(index="date", columns="dma")
    partial = wide["partial"].to_numpy(bool)
    size = np.nan_to_num((wide["inflow_in_m3"] + wide["inflow_out_m3"]).median().to_numpy(float))
    night = wide["night_leakage_lps"].to_numpy(float)
    nrw = np.where(partial, np.nan, wide["nrw_m3"].to_numpy(float))
    pooled = wide["role"].eq("district").all().to_numpy(bool)
    wn = step_windows(nrw, size, fallback=wide["nrw_m3"].to_numpy(float), pooled=pooled)
    wm = step_windows(night, size / 86.4, pooled=pooled)
    if flag_z is None:
        tests = int(np.isfinite(wn).any(axis=2).sum() + np.isfinite(wm).any(axis=2).sum()) * len(size)
        flag_z = float(stats.norm.isf(false_alarm_rate / max(tests, 1)))
    key = pd.MultiIndex.from_arrays([out["date"], out["dma"]])
    for name, z in (("nrw_z", np.where(np.isnan(nrw), np.nan, day_scores(wn, flag_z))),
                    ("mnf_z", np.where(np.isnan(night), np.nan, day_scores(wm, flag_z)))):
        out[name] = pd.DataFrame(z, index=wide.index, columns=wide["nrw_m3"].columns).stack(
            future_stack=True).reindex(key).to_numpy(float)
    out["flag"] = [
        ",".join(x for x, on in (("nrw_jump", a > flag_z), ("mnf_jump", b > flag_z), ("incomplete", inc),
                                 ("partial", par)) if on)
        for a, b, inc, par in zip(out["nrw_z"].fillna(-np.inf), out["mnf_z"].fillna(-np.inf),
                                  out["unmetered_boundaries"] > 0, out["partial"])
    ]
    out = out[BALANCE_COLUMNS]
    out.attrs["flag_z"] = flag_z
    return out


ZONE_COLUMNS = [
    "dma", "role", "days", "inflow_in_m3", "inflow_out_m3", "siv_m3", "siv_sd_m3", "consumption_m3", "nrw_m3",
    "nrw_pct", "meters", "boundary_meters", "mains_km", "mains_share", "nrw_m3_per_km", "explanation",
]


def zone_summary(balance: pd.DataFrame, *, meter_accuracy: float = FLOW_METER_ACCURACY) -> pd.DataFrame:
    """Each zone's mean complete day, and what a transmission zone's NRW figure means.

    A transmission zone (trunk mains, a plant: ``role``) is metered as the
    difference of large flows: its input is what its boundary meters let in
    (from the sources) minus what they let out (to the DMAs), so it carries
    every one of those meters' errors (``siv_sd_m3``), and its NRW share is
    of a small input: few customers on long mains. Its NRW per km of main
    per day, next to the districts', tells real losses from the share's
    small denominator.

    Parameters
    ----------
    balance : DataFrame
        From :func:`water_balance`.
    meter_accuracy : float
        The boundary meters' relative accuracy the run used (for the text).

    Returns
    -------
    DataFrame
        One row per zone, columns :data:`ZONE_COLUMNS`: daily means (m³/day)
        over the complete days, ``mains_share`` of the network's mains,
        ``explanation`` (text; empty for a district).
    """
    b = balance.loc[~balance["flag"].str.contains("partial") & balance["siv_m3"].notna()]
    if b.empty:
        b = balance
    vols = ["inflow_in_m3", "inflow_out_m3", "siv_m3", "siv_sd_m3", "consumption_m3", "nrw_m3"]
    g = b.groupby("dma", sort=True)
    out = g[vols].mean()
    out["days"] = g.size()
    for c in ("role", "meters", "boundary_meters", "mains_km"):
        out[c] = g[c].first()
    out["nrw_pct"] = np.where((out["siv_m3"] > 0) & (out["meters"] > 0), 100.0 * out["nrw_m3"] / out["siv_m3"], np.nan)
    out["mains_share"] = out["mains_km"] / out["mains_km"].sum()
    out["nrw_m3_per_km"] = out["nrw_m3"] / out["mains_km"].where(out["mains_km"] > 0)
    per_km = out.loc[out["role"].eq("district"), "nrw_m3_per_km"].dropna()
    out["explanation"] = [
        _transmission_note(str(z), r, per_km, meter_accuracy) if r["role"] == "transmission" else ""
        for z, r in out.iterrows()
    ]
    return out.reset_index()[ZONE_COLUMNS]


def _transmission_note(zone: str, r: pd.Series, district_per_km: pd.Series, accuracy: float) -> str:
    """What a transmission zone's balance holds and why its NRW share is what it is (one paragraph)."""
    text = (
        f"{zone} is a transmission zone: it passes on {100 * r['inflow_out_m3'] / r['inflow_in_m3']:.1f} % of the "
        f"water entering it ({r['inflow_in_m3']:,.0f} m³/day in, {r['inflow_out_m3']:,.0f} m³/day out through "
        f"{r['boundary_meters']:.0f} boundary meters). Its own input is the difference, {r['siv_m3']:,.0f} "
        f"± {r['siv_sd_m3']:,.0f} m³/day (1 sigma if each meter is within {100 * accuracy:.1f} %), so it carries "
        f"every boundary meter's error. It holds {r['mains_km']:.1f} km of mains ({100 * r['mains_share']:.1f} % "
        f"of the network's) and {r['meters']:,.0f} customer meter{'' if r['meters'] == 1 else 's'} "
        f"using {r['consumption_m3']:,.0f} m³/day"
    )
    if abs(r["nrw_m3"]) <= 2.0 * r["siv_sd_m3"]:
        return text + (f". Its NRW, {r['nrw_m3']:,.0f} m³/day, is within twice the meters' uncertainty: its "
                       "balance cannot tell a loss from meter error.")
    pct = f"{r['nrw_pct']:.0f} % of its input" if np.isfinite(r["nrw_pct"]) else "all of its input"
    text += (f", so NRW = {r['nrw_m3']:,.0f} m³/day is {pct}: {r['nrw_m3_per_km']:.1f} m³ per km of main per "
             "day")
    if district_per_km.empty:
        return text + "."
    med, hi = float(district_per_km.median()), float(district_per_km.quantile(0.9))
    if r["nrw_m3_per_km"] <= hi:
        return text + (f", against {med:.1f} in the districts (median; 90 % below {hi:.1f}): the background "
                       "losses of long mains with few customers; the share is high because its input is small, "
                       "not because it leaks more.")
    return text + (f", more than 90 % of the districts (median {med:.1f}, 90th percentile {hi:.1f}): worth a "
                   f"check of its mains, or of the boundary meters (2 sigma = {2 * r['siv_sd_m3']:,.0f} m³/day).")


def write_balance(balance: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Write the balance (``balance.csv``/``.parquet``) and its zones (``balance_zones.csv``/``.json``) to ``out``.

    Parameters
    ----------
    balance : DataFrame
        :func:`water_balance` (volumes in m³ per local day).
    out : Path
        Existing output folder.

    Returns
    -------
    DataFrame
        :func:`zone_summary` of ``balance``.
    """
    balance.to_csv(out / "balance.csv", index=False, float_format="%.4f")
    balance.to_parquet(out / "balance.parquet", index=False)
    zones = zone_summary(balance)
    zones.to_csv(out / "balance_zones.csv", index=False, float_format="%.4f")
    (out / "balance_zones.json").write_text(zones.to_json(orient="records", indent=1, force_ascii=False),
                                            encoding="utf-8")
    return zones
