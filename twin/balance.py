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
``flag``
    ``nrw_jump`` / ``mnf_jump`` where the day's NRW (m³) or night leakage
    (L/s) rises above the DMA's own earlier unflagged days: robust z-score
    ``(x - median) / scale > flag_z`` with ``scale = max(1.4826 MAD,
    rel_floor x |median|, abs_floor)`` (:data:`NRW_FLOOR`,
    :data:`NIGHT_FLOOR`; for NRW also 0.5 % of the DMA's consumption), once
    ``min_history_days`` earlier days exist. Flagged days are not history
    for later days; ``partial`` days (below) are not NRW-flagged and are NRW
    history only while too few complete days exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

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

#: Robust z-score above which a day is flagged.
FLAG_Z = 3.5

#: Floors of the flags' scale: (share of the baseline, absolute). NRW in m³/day:
#: 1 % or 3 m³; night leakage in L/s: 2 % or 0.1 L/s. Below these a change is
#: within the day-to-day noise of meters and demand.
NRW_FLOOR = (0.01, 3.0)
#: ... and 0.5 % of the DMA's daily consumption (register interpolation noise).
NRW_CONSUMPTION_FLOOR = 0.005
NIGHT_FLOOR = (0.02, 0.1)

#: A day is "partial" when more than this share of a DMA's meters has no
#: register on both sides of a day boundary (first / last day of the data).
PARTIAL_SHARE = 0.10

#: Days of customer readings processed at a time (memory on long periods).
BATCH_DAYS = 7

BALANCE_COLUMNS = [
    "dma", "date", "siv_m3", "consumption_m3", "nrw_m3", "nrw_pct", "mnf_lps",
    "night_consumption_lps", "night_leakage_lps", "flag", "inflow_m3", "storage_change_m3",
    "meters", "meters_missing", "meters_extrapolated", "unmetered_boundaries", "nrw_z", "mnf_z",
]


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


def _robust_z(hist: np.ndarray, x: float, *, rel_floor: float, abs_floor: float) -> float:
    """Robust z-score of ``x`` against ``hist``: ``(x - median) / scale``."""
    med = float(np.median(hist))
    mad = float(np.median(np.abs(hist - med))) * 1.4826
    return (x - med) / max(mad, rel_floor * abs(med), abs_floor)


def _jump_flags(
    nrw: np.ndarray,
    night: np.ndarray,
    partial: np.ndarray,
    *,
    z: float,
    nrw_floor: tuple[float, float],
    night_floor: tuple[float, float],
    min_history: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sequential robust z-scores of one DMA's days against its earlier normal days.

    A day that raised either flag is not history for later days (a leak does
    not become the baseline). Partial days are never NRW-flagged and serve
    as NRW history only while fewer than ``min_history`` complete days exist.
    """
    n = len(nrw)
    zn, zm = np.full(n, np.nan), np.full(n, np.nan)
    fn, fm = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for i in range(n):
        normal = ~(fn[:i] | fm[:i])
        h = nrw[:i][normal & ~partial[:i] & np.isfinite(nrw[:i])]
        if len(h) < min_history:
            h = nrw[:i][normal & np.isfinite(nrw[:i])]
        if len(h) >= min_history and np.isfinite(nrw[i]):
            zn[i] = _robust_z(h, nrw[i], rel_floor=nrw_floor[0], abs_floor=nrw_floor[1])
            fn[i] = bool(zn[i] > z) and not partial[i]
        h = night[:i][normal & np.isfinite(night[:i])]
        if len(h) >= min_history and np.isfinite(night[i]):
            zm[i] = _robust_z(h, night[i], rel_floor=night_floor[0], abs_floor=night_floor[1])
            fm[i] = bool(zm[i] > z)
    return zn, fn, zm, fm


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
    flag_z: float = FLAG_Z,
    min_history_days: int = 2,
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
    flag_z : float
        Robust z-score threshold of the flags.
    min_history_days : int
        Earlier days needed before a day can be flagged.

    Returns
    -------
    DataFrame
        One row per DMA and local day, columns :data:`BALANCE_COLUMNS`
        (``date`` is a ``datetime.date``; volumes m³, flows L/s).
    """
    meters = store.meter_table() if hasattr(store, "meter_table") else store.meters()
    inflow = _measured_inflow(network, store, meters, assignment)
    days = _Days.of(inflow.inlet.index, tz=tz, night_hours=night_hours, start=start, end=end, path=store.path)
    volumes = _daily_inflow(inflow, days)
    cust = meters.loc[meters["kind"].astype(str).eq("customer").to_numpy()]
    join = _customer_join(store, network, cust, join, max_distance_m)
    # consumption follows the day: interpolate registers in "demand time",
    # from the network's inflow above half its night flow (leakage is flat)
    total = _net_m3s(inflow).sum(axis=1, min_count=1)
    night_total = float(total[days.night].mean()) if days.night.any() else 0.0
    shape = (total - 0.5 * night_total).clip(lower=0.05 * float(total.mean()))
    used = _metered_consumption(store, cust, join, inflow, network, days, shape,
                                NIGHT_FACTORS if night_factors is None else night_factors)
    out = _flag_days(_balance_rows(inflow, days, volumes, used), flag_z=flag_z, min_history_days=min_history_days)
    n_flag = int(out["flag"].str.contains("jump").sum())
    log.info(
        "water balance: %d DMAs x %d days; NRW %.1f %% overall; %d DMA-days flagged",
        len(inflow.inlet.columns), len(days.dates),
        100.0 * out["nrw_m3"].sum() / out["siv_m3"].sum() if out["siv_m3"].sum() > 0 else float("nan"),
        n_flag,
    )
    return out


def _measured_inflow(network: Network, store: Store, meters: pd.DataFrame,
                     assignment: pd.Series | None) -> DmaInflow:
    """The DMAs' metered inflow (m³/s) from the store's flow and tank-level series.

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
    return dma_net_inflow(network, flow.reindex(columns=inlet_links), levels, assignment=assignment)


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


def _flag_days(out: pd.DataFrame, *, flag_z: float, min_history_days: int) -> pd.DataFrame:
    """Robust z-scores and flags of each DMA's days (:func:`_jump_flags`), columns in order."""
    out["nrw_z"] = np.nan
    out["mnf_z"] = np.nan
    out["flag"] = ""
    for _, g in out.groupby("dma", sort=False):
        idx = g.index.to_numpy()
        partial = ((g["meters_extrapolated"] + g["meters_missing"]) > PARTIAL_SHARE * g["meters"].clip(lower=1)).to_numpy()
        # the day-to-day noise of metered consumption sets a floor too
        nrw_floor = max(NRW_FLOOR[1], NRW_CONSUMPTION_FLOOR * float(np.nanmedian(g["consumption_m3"])))
        zn, fn, zm, fm = _jump_flags(
            g["nrw_m3"].to_numpy(), g["night_leakage_lps"].to_numpy(), partial, z=flag_z,
            nrw_floor=(NRW_FLOOR[0], nrw_floor), night_floor=NIGHT_FLOOR, min_history=min_history_days,
        )
        out.loc[idx, "nrw_z"] = zn
        out.loc[idx, "mnf_z"] = zm
        flags = []
        for a, b, inc, par in zip(fn, fm, g["unmetered_boundaries"] > 0, partial):
            f = [x for x, on in (("nrw_jump", a), ("mnf_jump", b), ("incomplete", inc), ("partial", par)) if on]
            flags.append(",".join(f))
        out.loc[idx, "flag"] = flags
    return out[BALANCE_COLUMNS]
