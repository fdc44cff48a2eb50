"""Consumption and demand from customer registers.

Customer meters report a cumulative register (m³) about twice a day at
irregular times. This module turns those registers into

- volumes per meter and reading interval (:func:`meter_consumption`), with
  register resets (meter replaced, rolled over) handled;
- registers at any instants (:func:`register_at`), by linear interpolation of
  the reset-corrected register, used for day boundaries and for simulation
  windows (:func:`window_volumes`);
- mean nodal demands per window (:func:`node_demand`), each meter's volume
  split onto its pipe's end nodes by its position along the pipe;
- a diurnal shape per DMA from its inflow (:func:`diurnal_pattern`).

All times are UTC (``datetime64[ns, UTC]``); volumes m³; demands m³/s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from twin import settings
from twin.errors import InputError
from twin.meters import node_weights

log = logging.getLogger(__name__)

#: Register decreases smaller than this are rounding, m³.
RESET_TOLERANCE_M3 = 0.0005

#: How far beyond a meter's first / last reading its register is
#: extrapolated at its mean rate, seconds (one day: twice-daily meters).
EXTRAPOLATE_S = 86400.0


def _epoch_s(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as float seconds since 1970."""
    return pd.DatetimeIndex(ts).as_unit("ns").asi8 / 1e9


class _Prepared(NamedTuple):
    """Readings as sorted arrays: meter code, time, register, reset flag."""

    meters: np.ndarray  # unique meter IDs, sorted (str)
    code: np.ndarray  # int64 index into meters, non-decreasing
    t: np.ndarray  # float64 seconds since 1970 (UTC), increasing within a meter
    v: np.ndarray  # float64 register, m³
    flagged: np.ndarray  # bool, the store flagged a reset at this reading


def _prepare(readings: pd.DataFrame) -> _Prepared:
    need = [c for c in ("meter_id", "timestamp", "value") if c not in readings.columns]
    if need:
        raise InputError(
            f"customer readings lack the column(s) {', '.join(need)}",
            fix="pass Store.readings(kind='customer') (meter_id, timestamp, value)",
        )
    ts = readings["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise InputError("customer readings timestamps carry no time zone", fix="give tz-aware (UTC) timestamps")
    v = readings["value"].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(v)
    code, meters = pd.factorize(readings["meter_id"].astype(str), sort=True)
    code = np.asarray(code, dtype=np.int64)
    t = _epoch_s(ts)
    flagged = np.zeros(len(v), dtype=bool)
    if "flag" in readings.columns:
        flagged = readings["flag"].astype("string").eq("reset").fillna(False).to_numpy(dtype=bool)
    code, t, v, flagged = code[ok], t[ok], v[ok], flagged[ok]
    if len(code) > 1 and not (
        np.all(np.diff(code) >= 0) and np.all((np.diff(t) >= 0) | (np.diff(code) > 0))
    ):
        order = np.lexsort((t, code))  # stable: the first of duplicates stays first
        code, t, v, flagged = code[order], t[order], v[order], flagged[order]
    dup = np.zeros(len(code), dtype=bool)
    dup[1:] = (code[1:] == code[:-1]) & (t[1:] == t[:-1])
    if dup.any():
        code, t, v, flagged = code[~dup], t[~dup], v[~dup], flagged[~dup]
    return _Prepared(np.asarray(meters, dtype=object).astype(str), code, t, v, flagged)


def _intervals(p: _Prepared, tolerance_m3: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per interval (row i-1 -> i of the same meter): volume m³, reset flag, and the mask."""
    same = p.code[1:] == p.code[:-1]
    dv = p.v[1:] - p.v[:-1]
    dt = p.t[1:] - p.t[:-1]
    reset = same & ((dv < -tolerance_m3) | p.flagged[1:])
    vol = np.maximum(dv, 0.0)
    if reset.any():
        normal = same & ~reset & (dt > 0)
        rate = pd.Series(vol[normal] / dt[normal]).groupby(p.code[1:][normal]).median()
        est = rate.reindex(p.code[1:][reset]).to_numpy(dtype=float) * dt[reset]
        new_reg = np.maximum(p.v[1:][reset], 0.0)
        vol[reset] = np.where(np.isfinite(est), np.maximum(new_reg, est), new_reg)
    return vol, reset, same


def meter_consumption(
    customer_readings: pd.DataFrame, *, tolerance_m3: float = RESET_TOLERANCE_M3
) -> pd.DataFrame:
    """Volume consumed by each meter between consecutive readings.

    Parameters
    ----------
    customer_readings : DataFrame
        ``meter_id``, ``timestamp`` (tz-aware), ``value`` (register, m³) and
        optionally ``flag`` (``'reset'`` from the store), any order.
    tolerance_m3 : float
        Decreases smaller than this count as zero consumption.

    Returns
    -------
    DataFrame
        One row per interval: ``meter_id``, ``start``, ``end`` (UTC),
        ``volume_m3`` (>= 0), ``reset`` (bool). Across a reset (the register
        drops: a new meter starting near zero, or a roll-over) the volume is
        estimated as ``max(new register, meter's median rate x interval)``:
        the new register is what the new meter counted since it was fitted,
        the rate covers the part of the interval on the old meter.
    """
    p = _prepare(customer_readings)
    vol, reset, same = _intervals(p, tolerance_m3)

    def times(x: np.ndarray) -> pd.DatetimeIndex:
        return pd.to_datetime(np.round(x * 1e9).astype(np.int64), utc=True).as_unit("ns")

    return pd.DataFrame(
        {
            "meter_id": p.meters[p.code[1:][same]],
            "start": times(p.t[:-1][same]),
            "end": times(p.t[1:][same]),
            "volume_m3": vol[same],
            "reset": reset[same],
        }
    )


def _continuous(p: _Prepared, tolerance_m3: float) -> np.ndarray:
    """Reset-corrected register: each meter's first reading + cumulative interval volumes."""
    vol, _, same = _intervals(p, tolerance_m3)
    inc = np.concatenate([[0.0], np.where(same, vol, 0.0)])
    first = np.concatenate([[True], ~same])
    base = np.where(first, p.v, 0.0)
    cum = np.cumsum(inc + base)
    grp = np.cumsum(first) - 1
    start_cum = (cum - (inc + base))[first]  # cum before each meter's first row
    return cum - start_cum[grp]


def register_at(
    customer_readings: pd.DataFrame,
    times: Sequence[Any] | pd.DatetimeIndex,
    *,
    extrapolate_s: float = EXTRAPOLATE_S,
    tolerance_m3: float = RESET_TOLERANCE_M3,
    rate_shape: pd.Series | None = None,
) -> pd.DataFrame:
    """Registers interpolated at given instants.

    The register is made continuous across resets first (see
    :func:`meter_consumption`), then interpolated linearly in time, or, with
    ``rate_shape``, linearly in "demand time" (the integral of the shape), so
    that a night hour gets less of an interval's volume than an evening hour.
    Up to ``extrapolate_s`` before a meter's first or after its last reading
    it is extrapolated at the meter's mean rate (over the same clock); further
    out it is NaN.

    Parameters
    ----------
    customer_readings : DataFrame
        ``meter_id``, ``timestamp`` (tz-aware), ``value`` (m³), opt. ``flag``.
    times : sequence of tz-aware times
        Instants wanted (e.g. local midnights).
    extrapolate_s : float, default 86400
        Largest extrapolation, seconds.
    rate_shape : Series, optional
        Relative consumption rate on a regular UTC grid (e.g. a DMA's inflow
        above its night minimum); outside the grid the rate is its mean.

    Returns
    -------
    DataFrame
        Index ``times`` (UTC), columns ``meter_id`` (sorted), register m³
        (continuous: differences between rows are volumes);
        ``attrs["extrapolated"]`` counts the (time, meter) values extrapolated.
    """
    idx = pd.DatetimeIndex(pd.to_datetime(list(times) if not isinstance(times, pd.DatetimeIndex) else times))
    if idx.tz is None:
        raise InputError("register_at needs tz-aware times", fix="e.g. pd.Timestamp('2026-03-02', tz='Asia/Shanghai')")
    idx = idx.tz_convert("UTC").astype("datetime64[ns, UTC]")
    p = _prepare(customer_readings)
    meters = p.meters
    if len(p.code) == 0:
        return pd.DataFrame(index=idx, columns=pd.Index([], name="meter_id"), dtype=float)
    reg = _continuous(p, tolerance_m3)
    out, n_extrapolated = _interpolate(p.code, p.t, reg, idx.asi8 / 1e9, len(meters), rate_shape, extrapolate_s)
    wide = pd.DataFrame(out.reshape(len(meters), len(idx)).T, index=idx, columns=pd.Index(meters, name="meter_id"))
    wide.index.name = "timestamp"
    wide.attrs["extrapolated"] = n_extrapolated
    return wide


def _interpolate(
    code: np.ndarray,
    t_clock: np.ndarray,
    reg: np.ndarray,
    tq_clock: np.ndarray,
    n_meters: int,
    rate_shape: pd.Series | None,
    extrapolate_s: float,
) -> tuple[np.ndarray, int]:
    """Registers of every meter at every query instant (meter-major, flat), and the number extrapolated.

    ``code``, ``t_clock`` (s since 1970), ``reg`` (continuous register, m³):
    the sorted readings; ``tq_clock``: the instants (s since 1970).
    """
    t = _demand_time(t_clock, rate_shape)
    tq = _demand_time(tq_clock, rate_shape)
    t0 = min(t.min(), tq.min()) - 1.0
    span = max(t.max(), tq.max()) - t0 + 2.0
    key = code * span + (t - t0)
    lo = np.searchsorted(code, np.arange(n_meters), side="left")
    hi = np.searchsorted(code, np.arange(n_meters), side="right")
    qm = np.repeat(np.arange(n_meters), len(tq))
    qt = np.tile(tq, n_meters)
    j = np.searchsorted(key, qm * span + (qt - t0), side="left")  # first reading at or after the instant
    first, last = lo[qm], hi[qm] - 1
    # mean rate per meter (m³ per demand second) for extrapolation
    dur = t[hi - 1] - t[lo]
    rate = np.where(dur > 0, (reg[hi - 1] - reg[lo]) / np.where(dur > 0, dur, 1.0), 0.0)
    out = np.full(len(qt), np.nan)
    inside = (j > first) & (j <= last)
    jj, ii = j[inside], j[inside] - 1
    w = (qt[inside] - t[ii]) / np.where(t[jj] > t[ii], t[jj] - t[ii], 1.0)
    out[inside] = reg[ii] + w * (reg[jj] - reg[ii])
    exact = (j <= last) & (j >= first) & (t[np.minimum(j, len(t) - 1)] == qt)
    out[exact] = reg[j[exact]]
    # up to extrapolate_s (clock seconds) outside a meter's readings: its mean rate
    qt_clock = np.tile(tq_clock, n_meters)
    before = (j == first) & ~exact
    ok_b = (t_clock[first[before]] - qt_clock[before]) <= extrapolate_s
    out[before] = np.where(ok_b, reg[first[before]] - rate[qm[before]] * (t[first[before]] - qt[before]), np.nan)
    after = j > last
    ok_a = (qt_clock[after] - t_clock[last[after]]) <= extrapolate_s
    out[after] = np.where(ok_a, reg[last[after]] + rate[qm[after]] * (qt[after] - t[last[after]]), np.nan)
    return out, int(ok_b.sum() + ok_a.sum())


def _demand_time(t_s: np.ndarray, shape: pd.Series | None) -> np.ndarray:
    """Map clock seconds to "demand seconds": the integral of a relative rate.

    The rate is ``shape`` normalised to mean 1 (piecewise constant: sample
    ``k`` holds on ``[t_k, t_k+1)``), 1 outside its grid, so one demand
    second is one clock second on average.
    """
    if shape is None or len(shape) < 2:
        return t_s
    g = pd.DatetimeIndex(shape.index).as_unit("ns").asi8 / 1e9
    w = shape.to_numpy(dtype=float)
    fill = np.nanmean(w) if np.isfinite(w).any() else 1.0
    w = np.where(np.isfinite(w), w, fill)
    w = np.clip(w, 0.0, None)
    m = w.mean()
    if not m > 0:
        return t_s
    w = np.maximum(w / m, 0.02)  # never a zero rate: time must keep moving
    c = np.concatenate([[0.0], np.cumsum(w[:-1] * np.diff(g))])
    out = np.interp(t_s, g, c)
    out = np.where(t_s < g[0], c[0] - (g[0] - t_s), out)
    out = np.where(t_s > g[-1], c[-1] + (t_s - g[-1]), out)
    return out + g[0]


def window_volumes(
    customer_readings: pd.DataFrame, edges: Sequence[Any] | pd.DatetimeIndex, **kwargs: Any
) -> pd.DataFrame:
    """Volume each meter used in consecutive windows.

    Parameters
    ----------
    customer_readings : DataFrame
        As :func:`register_at`.
    edges : sequence of tz-aware times
        Window boundaries (n + 1 edges give n windows).
    **kwargs
        Passed to :func:`register_at`.

    Returns
    -------
    DataFrame
        Index window start (UTC), columns ``meter_id``, volume m³ (NaN where
        a register is unknown at an edge); ``attrs["window_s"]`` holds the
        window lengths in seconds.
    """
    reg = register_at(customer_readings, edges, **kwargs)
    vol = reg.diff().iloc[1:]
    vol.index = reg.index[:-1]
    vol.index.name = "start"
    vol = vol.clip(lower=0.0)
    vol.attrs["window_s"] = np.diff(reg.index.asi8) / 1e9
    vol.attrs["extrapolated"] = reg.attrs.get("extrapolated", 0)
    return vol


def node_demand(
    join: pd.DataFrame,
    window_volumes: pd.DataFrame,
    *,
    window_s: float | Sequence[float] | None = None,
) -> pd.DataFrame:
    """Mean nodal demand per window from meter volumes.

    Each joined meter's volume goes ``1 - position`` to its pipe's
    ``start_node`` and ``position`` to its ``end_node`` (one sparse product).
    Unmatched meters and meters with an unknown volume (NaN) add nothing.

    Parameters
    ----------
    join : DataFrame
        From :func:`twin.meters.join_meters`.
    window_volumes : DataFrame
        Index window start, columns ``meter_id``, volumes m³ (as from
        :func:`window_volumes`).
    window_s : float or sequence, optional
        Window lengths, seconds; default ``window_volumes.attrs["window_s"]``
        or the spacing of the index.

    Returns
    -------
    DataFrame
        Index window start, columns ``node_id`` (sorted; only nodes that get
        demand), mean demand m³/s.
    """
    if window_s is None:
        window_s = window_volumes.attrs.get("window_s")
    if window_s is None:
        if len(window_volumes.index) < 2:
            raise InputError("cannot tell the window length of a single window", fix="pass window_s (seconds)")
        step = np.diff(pd.DatetimeIndex(window_volumes.index).as_unit("ns").asi8) / 1e9
        window_s = np.append(step, step[-1])
    ws = np.broadcast_to(np.asarray(window_s, dtype=float), (len(window_volumes),))
    if np.any(ws <= 0):
        raise InputError("window lengths must be positive", fix="check the window edges")
    w = node_weights(join)
    meters = pd.Index(window_volumes.columns.astype(str))
    nodes = pd.Index(np.unique(w["node_id"].to_numpy()), name="node_id")
    mi = meters.get_indexer(w["meter_id"])
    ok = mi >= 0
    mat = sp.csr_matrix(
        (w["weight"].to_numpy()[ok], (mi[ok], nodes.get_indexer(w["node_id"].to_numpy()[ok]))),
        shape=(len(meters), len(nodes)),
    )
    vol = np.nan_to_num(window_volumes.to_numpy(dtype=float), nan=0.0)
    dem = (mat.T @ vol.T).T / ws[:, None]
    out = pd.DataFrame(dem, index=window_volumes.index, columns=nodes)
    log.info(
        "node demand: %d windows, %s meters onto %s nodes, mean total %.4f m³/s",
        len(out), f"{int(ok.sum() // 2 if ok.any() else 0):,}", f"{len(nodes):,}", float(out.sum(axis=1).mean()) if len(out) else 0.0,
    )
    return out


def window_demand(
    customer_readings: pd.DataFrame,
    join: pd.DataFrame,
    edges: Sequence[Any] | pd.DatetimeIndex,
    *,
    rate_shape: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Mean metered demand per node and window, with counts for a report.

    :func:`window_volumes` of the joined meters (registers interpolated at
    the edges, in "demand time" when ``rate_shape`` is given) split onto the
    nodes by :func:`node_demand`.

    Parameters
    ----------
    customer_readings : DataFrame
        ``meter_id``, ``timestamp`` (tz-aware), ``value`` (m³), opt. ``flag``.
    join : DataFrame
        From :func:`twin.meters.join_meters` (index ``meter_id``).
    edges : sequence of tz-aware times
        Window boundaries (n + 1 edges give n windows).
    rate_shape : Series, optional
        Relative consumption rate on the grid (see :func:`register_at`), e.g.
        the system input minus a leak.

    Returns
    -------
    DataFrame
        Index window number (0 .. n-1), columns node IDs, mean demand (m³/s).
    dict
        ``customer_meters``, ``customer_meters_joined``,
        ``customer_meters_with_readings``, ``customer_windows_filled``
        (meter windows whose volume was extrapolated or is unknown).
    """
    joined = join.index[join["matched"].astype(bool)].astype(str)
    ids = customer_readings["meter_id"].astype(str)
    mine = customer_readings[ids.isin(joined)]
    n_w = max(len(edges) - 1, 0)
    info = {"customer_meters": int(len(join)), "customer_meters_joined": int(len(joined)),
            "customer_meters_with_readings": 0, "customer_windows_filled": 0}
    if mine.empty or n_w < 1:
        return pd.DataFrame(index=range(n_w)), info
    vol = window_volumes(mine, edges, rate_shape=rate_shape)
    extrapolated = vol.attrs.get("extrapolated", 0)
    info["customer_meters_with_readings"] = int(vol.shape[1])
    info["customer_windows_filled"] = int(extrapolated + vol.isna().to_numpy().sum())
    dem = node_demand(join, vol)
    return dem.reset_index(drop=True), info


def window_coverage(
    customer_readings: pd.DataFrame,
    join: pd.DataFrame,
    edges: Sequence[Any] | pd.DatetimeIndex,
) -> np.ndarray:
    """Share of each window that the joined meters' registers bracket.

    A meter brackets the part of a window between its first and its last
    reading; outside that span its register is extrapolated at its mean rate
    (:func:`register_at`), which is not the window's own use. The coverage of
    a window is that bracketed part, averaged over the joined meters with
    readings: 1 when every meter has a reading at or before the window's
    start and at or after its end, 0 when no meter has both.

    Parameters
    ----------
    customer_readings : DataFrame
        ``meter_id``, ``timestamp`` (tz-aware), ``value`` (m³).
    join : DataFrame
        From :func:`twin.meters.join_meters` (index ``meter_id``, ``matched``).
    edges : sequence of tz-aware times
        Window boundaries (n + 1 edges give n windows).

    Returns
    -------
    ndarray of float
        Coverage of each of the n windows, 0..1 (0 without joined readings).
    """
    idx = pd.DatetimeIndex(pd.to_datetime(list(edges) if not isinstance(edges, pd.DatetimeIndex) else edges))
    e = idx.tz_convert("UTC").as_unit("ns").asi8 / 1e9
    n_w = max(len(e) - 1, 0)
    joined = join.index[join["matched"].astype(bool)].astype(str)
    mine = customer_readings[customer_readings["meter_id"].astype(str).isin(joined)]
    mine = mine[np.isfinite(mine["value"].to_numpy(dtype=np.float64, na_value=np.nan))]
    if mine.empty or n_w < 1:
        return np.zeros(n_w)
    t = pd.Series(_epoch_s(mine["timestamp"]), index=mine.index).groupby(mine["meter_id"].astype(str).to_numpy())
    first, last = t.min().to_numpy()[:, None], t.max().to_numpy()[:, None]
    lo, hi = e[None, :-1], e[None, 1:]
    inside = np.clip(np.minimum(hi, last) - np.maximum(lo, first), 0.0, None)
    return (inside / (hi - lo)).mean(axis=0)


def diurnal_pattern(
    inflow: pd.DataFrame | pd.Series,
    *,
    step_s: int = 3600,
    tz: str = settings.TIMEZONE,
) -> pd.DataFrame:
    """Diurnal shape of each DMA's inflow, local time.

    Parameters
    ----------
    inflow : DataFrame or Series
        Index UTC times, columns DMAs, flow (any unit), e.g. ``net`` of
        :func:`twin.dma.dma_net_inflow` (m³/s).
    step_s : int, default 3600
        Slot length, seconds (must divide a day).
    tz : str, default ``settings.TIMEZONE``
        Local time zone.

    Returns
    -------
    DataFrame
        Index ``slot`` (0 .. 86400/step_s - 1, local time of day), columns
        DMAs, multipliers with mean 1 (the shape of the inflow: customer use
        plus leakage, which flattens it).
    """
    if 86400 % int(step_s):
        raise InputError(f"step_s={step_s} does not divide a day", fix="use 900, 1800 or 3600")
    frame = inflow.to_frame() if isinstance(inflow, pd.Series) else inflow
    local = pd.DatetimeIndex(frame.index).tz_convert(tz)
    sec = local.hour * 3600 + local.minute * 60 + local.second
    slot = pd.Index(np.asarray(sec) // int(step_s), name="slot")
    prof = frame.groupby(slot).mean().reindex(range(86400 // int(step_s)))
    prof = prof.interpolate(limit_direction="both")
    mean = prof.mean()
    return prof / mean.where(mean != 0)
