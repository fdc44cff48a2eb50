"""Water balance per DMA and local day: system input, consumption, NRW, night flow.

For each DMA and each complete local day (``settings.TIMEZONE``, UTC+8):

``siv_m3`` (system input volume)
    The net inflow through the DMA's metered inlets (each flow meter's L/s
    times its sign, summed over the 15-minute grid: sample ``t`` stands for
    ``[t, t + 15 min)``; gaps up to 2 h interpolated) plus the water drawn
    from tanks inside the DMA: ``(level at start - level at end) x area``,
    levels from the tank's logger interpolated to the day boundaries, area
    from the tank's diameter (cylindrical tank).
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
import math
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from twin import settings
from twin.errors import InputError

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

#: Centred moving mean of tank levels, samples (2 h at 15 min).
TANK_SMOOTH_SAMPLES = 9

#: Days of customer readings processed at a time (memory on long periods).
BATCH_DAYS = 7

#: Gaps in logger series filled by time interpolation, samples (2 h).
GAP_SAMPLES = 8

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
    from twin.meters import node_weights

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
    network: Any,
    store: Any,
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
    from twin.demand import window_volumes
    from twin.dma import assign_dmas, dma_inflow, dma_inlets, unmetered_boundaries
    from twin.meters import join_meters

    meters = store.meter_table() if hasattr(store, "meter_table") else store.meters()
    kind = meters["kind"].astype(str)
    flow_m = meters.loc[kind.eq("flow").to_numpy()]
    inlet_links = sorted(set(flow_m["link_id"].dropna().astype(str)) & set(network.links.index.astype(str)))
    if assignment is None:
        assignment = assign_dmas(network, inlet_links=inlet_links)
    inlets = dma_inlets(network, assignment, inlet_links)
    if inlets.empty:
        raise InputError(
            "no DMA has a metered inlet, so no balance can be made",
            path=getattr(network, "source", None),
            fix="register flow meters (kind=flow, link_id) on the links that feed each DMA",
        )
    dmas = pd.Index(sorted(inlets["dma"].unique()), name="dma")
    unmet = unmetered_boundaries(network, assignment, inlet_links)
    unmet_count = {d: int(((unmet["from_dma"] == d) | (unmet["to_dma"] == d)).sum()) for d in dmas}

    # --- inflow on the 15-minute grid -------------------------------------------------
    flow = store.series("flow", meter_ids=list(flow_m.index.astype(str)))
    if flow.empty:
        raise InputError("the store holds no flow readings", path=store.path, fix="ingest the flow meters' readings")
    step_s = int(settings.LOGGER_INTERVAL_S)
    flow = flow.interpolate(method="time", limit=GAP_SAMPLES, limit_area="inside")
    inflow = dma_inflow(flow, inlets, flow_m)  # L/s, NaN where an inlet is missing
    grid = inflow.index
    # tanks inside DMAs: storage (m³) on the grid
    storage = pd.DataFrame(0.0, index=grid, columns=dmas)
    nodes = network.nodes
    tanks = nodes.index[nodes["node_type"].astype(str).eq("tank").to_numpy()].astype(str)
    p_m = meters.loc[kind.eq("pressure").to_numpy()]
    tank_loggers = p_m.loc[p_m["node_id"].astype(str).isin(tanks)]
    tank_missing: set[str] = set()
    if len(tank_loggers):
        lev = store.series("pressure", meter_ids=list(tank_loggers.index.astype(str)))
        lev = lev.reindex(grid.union(lev.index)).interpolate(method="time", limit=GAP_SAMPLES, limit_area="inside").reindex(grid)
        # level loggers are noisy (cm) and a tank's area multiplies that:
        # a centred 2-hour mean keeps the storage change, not the noise
        lev = lev.rolling(TANK_SMOOTH_SAMPLES, center=True, min_periods=TANK_SMOOTH_SAMPLES).mean().fillna(lev)
        for mid, tnode in zip(tank_loggers.index.astype(str), tank_loggers["node_id"].astype(str)):
            d = assignment.get(tnode, pd.NA)
            if pd.isna(d) or d not in dmas or mid not in lev.columns:
                continue
            diam = float(network.wn.get_node(tnode).diameter)
            storage[d] = storage[d] + lev[mid] * math.pi * diam**2 / 4.0
    in_dmas = set(assignment.reindex(tanks).dropna().astype(str)) & set(dmas)
    logged = {assignment.get(t) for t in tank_loggers["node_id"].astype(str)}
    for t in tanks:
        d = assignment.get(t, pd.NA)
        if not pd.isna(d) and d in in_dmas and d not in logged:
            tank_missing.add(str(d))
    if tank_missing:
        log.warning("DMAs with an unlogged tank (storage change unknown): %s", ", ".join(sorted(tank_missing)))
    draw_lps = -(storage.diff().shift(-1)) / step_s * 1000.0  # water drawn from storage over [t, t+step)
    net_lps = inflow + draw_lps.fillna(0.0)

    # --- local days fully covered by the grid ----------------------------------------
    local = grid.tz_convert(tz)
    day = pd.Index(local.normalize().tz_localize(None).date, name="date")
    counts = pd.Series(1, index=day).groupby(level=0).size()
    full_days = [d for d, c in counts.items() if c == 86400 // step_s]
    if start is not None:
        full_days = [d for d in full_days if d >= pd.Timestamp(start).date()]
    if end is not None:
        full_days = [d for d in full_days if d <= pd.Timestamp(end).date()]
    if not full_days:
        raise InputError(
            "the flow readings cover no complete local day",
            path=store.path,
            fix="ingest at least one full day (00:00-24:00 local) of flow readings",
        )
    full_days = sorted(full_days)
    in_day = pd.Series(day, index=grid).isin(full_days).to_numpy()
    inflow_m3 = (inflow[in_day] * step_s / 1000.0).groupby(np.asarray(day)[in_day]).sum(min_count=1)
    complete = inflow[in_day].notna().groupby(np.asarray(day)[in_day]).all()
    inflow_m3 = inflow_m3.where(complete)
    edges_local = pd.DatetimeIndex([pd.Timestamp(d).tz_localize(tz) for d in full_days] + [pd.Timestamp(full_days[-1]).tz_localize(tz) + pd.Timedelta(days=1)])
    edges = edges_local.tz_convert("UTC").as_unit("ns")
    st = storage.reindex(grid.union(edges)).interpolate(method="time", limit_area="inside").ffill(limit=1).reindex(edges)
    st_change = pd.DataFrame(st.diff().iloc[1:].to_numpy(), index=full_days, columns=dmas)
    hour = np.asarray(local.hour)
    night = (hour >= night_hours[0]) & (hour < night_hours[1])
    mnf = net_lps[in_day & night].groupby(np.asarray(day)[in_day & night]).mean()

    # --- metered consumption -----------------------------------------------------------
    if join is None:
        join = store.join() if hasattr(store, "join") else None
    cust = meters.loc[kind.eq("customer").to_numpy()]
    if join is None or not set(cust.index.astype(str)) <= set(join.index.astype(str)):
        import geopandas as gpd

        pts = gpd.GeoDataFrame(cust, geometry=gpd.points_from_xy(cust["lon"], cust["lat"]), crs=settings.MAP_CRS)
        join = join_meters(pts, network, max_distance_m=max_distance_m)
    # consumption follows the day: interpolate registers in "demand time",
    # from the network's inflow above half its night flow (leakage is flat)
    total = net_lps.sum(axis=1, min_count=1)
    night_total = float(total[night].mean()) if night.any() else 0.0
    shape = (total - 0.5 * night_total).clip(lower=0.05 * float(total.mean()))
    # a week of days at a time (with two days of readings either side) keeps
    # memory bounded on long periods
    mids = pd.Index(sorted(cust.index.astype(str)), name="meter_id")
    vols, extraps = [], []
    margin = pd.Timedelta(days=2)
    for b0 in range(0, len(full_days), BATCH_DAYS):
        e = edges[b0: min(b0 + BATCH_DAYS, len(full_days)) + 1]
        readings = store.readings(kind="customer", start=e[0] - margin, end=e[-1] + margin, ordered=False)
        vols.append(window_volumes(readings, e, rate_shape=shape).reindex(columns=mids))
        # meters whose register had to be extrapolated to a day boundary
        span = readings.groupby("meter_id")["timestamp"].agg(["min", "max"]).reindex(mids)
        first = pd.DatetimeIndex(span["min"]).as_unit("ns").asi8[None, :]
        last = pd.DatetimeIndex(span["max"]).as_unit("ns").asi8[None, :]
        extraps.append(((e[:-1].asi8[:, None] < first) | (e[1:].asi8[:, None] > last)).astype(float))
        del readings
    vol = pd.concat(vols, axis=0)  # days x meters, m³
    extrap = np.vstack(extraps)
    W = _meter_dma_matrix(join, assignment, mids, dmas, network.links)
    factors = dict(NIGHT_FACTORS if night_factors is None else night_factors)
    cls = cust["customer_class"].astype("string").fillna("").reindex(mids).fillna("") if "customer_class" in cust.columns else pd.Series("", index=mids)
    nf = cls.map(lambda c: factors.get(str(c).strip().lower(), factors.get("", 0.25))).to_numpy(dtype=float)
    V = vol.to_numpy(dtype=float)
    known = np.isfinite(V)
    cons = np.nan_to_num(V) @ W  # days x dmas
    night_eq = (np.nan_to_num(V) * nf[None, :]) @ W
    in_any = np.asarray(W.sum(axis=1)).ravel() > 0
    n_meters = np.asarray((W > 0).sum(axis=0)).ravel()
    missing = (~known & in_any[None, :]).astype(float) @ (W > 0).astype(float)
    n_extrap = (extrap * known) @ (W > 0).astype(float)

    # --- assemble -----------------------------------------------------------------------
    rows = []
    for di, d in enumerate(dmas):
        for k, dd in enumerate(full_days):
            infl = float(inflow_m3.at[dd, d]) if d in inflow_m3.columns else np.nan
            dst = float(st_change.at[dd, d])
            siv = infl - (dst if np.isfinite(dst) else 0.0)
            c = float(cons[k, di])
            nrw = siv - c
            night_c = float(night_eq[k, di]) / 86400.0 * 1000.0
            m = float(mnf.at[dd, d]) if (dd in mnf.index and d in mnf.columns) else np.nan
            rows.append({
                "dma": str(d), "date": dd, "siv_m3": siv, "consumption_m3": c, "nrw_m3": nrw,
                # a share of input is meaningless where no customer is metered (plant, trunk stubs)
                "nrw_pct": 100.0 * nrw / siv if np.isfinite(siv) and siv > 0 and n_meters[di] > 0 else np.nan,
                "mnf_lps": m, "night_consumption_lps": night_c, "night_leakage_lps": m - night_c,
                "inflow_m3": infl, "storage_change_m3": dst,
                "meters": int(n_meters[di]), "meters_missing": int(missing[k, di]),
                "meters_extrapolated": int(n_extrap[k, di]),
                "unmetered_boundaries": unmet_count.get(d, 0),
            })
    out = pd.DataFrame(rows)
    out["nrw_z"] = np.nan
    out["mnf_z"] = np.nan
    out["flag"] = ""
    for d, g in out.groupby("dma", sort=False):
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
    out = out[BALANCE_COLUMNS]
    n_flag = int(out["flag"].str.contains("jump").sum())
    log.info(
        "water balance: %d DMAs x %d days; NRW %.1f %% overall; %d DMA-days flagged",
        len(dmas), len(full_days),
        100.0 * out["nrw_m3"].sum() / out["siv_m3"].sum() if out["siv_m3"].sum() > 0 else float("nan"),
        n_flag,
    )
    return out
