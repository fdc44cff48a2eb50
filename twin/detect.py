"""Leak detection from the water balance: supply minus metered consumption.

With every source and tank metered, the system input ``s(t)`` (m³/s, on the
15-minute grid) is the customers' consumption plus background leakage plus a
new leak. Customer meters only give volumes per 12-hour window, so the
consumption is shaped inside each window by a time-of-day profile ``p``
estimated from the supply itself:

``D(t) = C_w · p(tod(t)) / mean_{t' in w} p(tod(t'))``,

and the supply is fitted as

``s(t) = a · D(t) + b + L · 1[t >= τ] + ε(t)``

where ``a`` absorbs meter under-registration, ``b`` the background leakage
and ``L`` (m³/s) is the leak that starts at ``τ``. For every candidate ``τ``
on the grid the least-squares fit has a closed form (reverse cumulative sums
on the residual of the step-free fit), so the scan over a week costs a few
milliseconds; the profile is re-estimated without the step and the scan
repeated. A leak is declared when ``L`` is positive, large against the
day-to-day scatter of the balance at the same time of day (placebo days)
and above a minimum share of the supply.

Windows whose consumption the customer registers do not bracket (the first
and last of a period, :func:`twin.demand.window_coverage`) are left out by
the caller (``use``); onsets are only scanned where they can be tested: two
leak-free days before, a day after.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from twin.errors import ReadingsError

log = logging.getLogger(__name__)

#: Smallest share of a 12-hour window that the customer registers must
#: bracket for its metered consumption to enter the balance (see
#: :func:`twin.demand.window_coverage`).
MIN_WINDOW_COVERAGE = 0.9


def require_metered_supply(supply: pd.Series | None, notes: list[str], rejected: pd.DataFrame | None = None) -> pd.Series:
    """The system input, or an error saying why a leak cannot be detected without it.

    Detection is the step in supply minus metered consumption; with a source
    neither metered nor level-logged there is no supply, and "no leak
    detected" would be a non-result reported as a result.

    Parameters
    ----------
    supply : Series or None
        :func:`twin.dma.system_input` (m³/s), None when a source is unmetered.
    notes : list of str
        Its notes (which source is unmetered).
    rejected : DataFrame, optional
        Sensors set aside (``meter_id``, ``kind``, ``reason``); flow meters
        among them are named, as one of them may be the missing inflow meter.

    Raises
    ------
    ReadingsError
        ``supply`` is None.
    """
    if supply is not None:
        return supply
    why = "; ".join(n for n in notes if "not metered" in n) or "the system input is not metered"
    aside = ""
    if rejected is not None and len(rejected):
        flows = rejected[rejected["kind"].astype(str).eq("flow")]
        aside = "; ".join(f"{r.meter_id} set aside ({r.reason})" for r in flows.itertuples())
    raise ReadingsError(
        f"no flow meter measures the system input ({why}{'; ' + aside if aside else ''}): "
        "a leak cannot be detected from the water balance, so the job gives no result rather than "
        "'no leak detected'",
        element="flow meters",
        fix="add the flow meter on every link leaving each reservoir (kind=flow, link_id) and a level logger "
            "or flow meters for each tank to meters.csv, with their 15-min readings",
        data={"notes": notes})


@dataclass
class Detection:
    """Result of :func:`detect_leak`.

    Attributes
    ----------
    detected : bool
        Whether a leak (step increase of the unexplained supply) was found.
    onset : pd.Timestamp or None
        First 15-minute step with the leak (UTC).
    leak_m3s : float
        Estimated leak flow (m³/s); 0 when not detected.
    leak_se_m3s : float
        Standard error of ``leak_m3s`` from the night-to-night scatter (m³/s).
    t_night : float
        Step size over its night-to-night standard error.
    details : dict
        JSON-friendly fit details (``a``, ``b_lps``, scatter, thresholds).
    """

    detected: bool
    onset: pd.Timestamp | None
    leak_m3s: float
    leak_se_m3s: float
    t_night: float
    details: dict = field(default_factory=dict)
    demand_m3s: pd.Series | None = None


def _profile(values: np.ndarray, slot: np.ndarray, n_slots: int, period: int = 96) -> np.ndarray:
    """Median of ``values`` per slot (time of day x day type), mean 1 per day type."""
    prof = np.full(n_slots, np.nan)
    df = pd.DataFrame({"v": values, "s": slot})
    med = df.groupby("s")["v"].median()
    prof[med.index.to_numpy()] = med.to_numpy()
    prof = prof.reshape(-1, period)
    for k in range(len(prof)):
        row = prof[k]
        ok = ~np.isnan(row)
        if not ok.any():
            continue
        if not ok.all():  # slots never observed: interpolate around the clock
            idx = np.arange(period)
            row = np.interp(idx, idx[ok], row[ok], period=period)
        row = np.maximum(row, 1e-6 * max(np.nanmax(row), 1e-12))
        prof[k] = row / row.mean()
    if np.isnan(prof).any():  # a day type never observed: the mean shape of the others
        mean_row = np.nanmean(prof, axis=0)
        prof = np.where(np.isnan(prof), mean_row[None, :], prof)
    return prof.reshape(-1)


def shaped_consumption(
    window_m3s: pd.Series,
    times: pd.DatetimeIndex,
    profile: np.ndarray,
    slot: np.ndarray,
    window_of: np.ndarray,
) -> np.ndarray:
    """Consumption (m³/s) at ``times``: window means shaped by ``profile``.

    Parameters
    ----------
    window_m3s : pd.Series
        Mean metered consumption (m³/s) per window, index = window number.
    times : DatetimeIndex
        The grid.
    profile : ndarray
        Relative time-of-day profile per slot.
    slot, window_of : ndarray of int
        Slot and window number of every time.
    """
    p = profile[slot]
    mean_p = pd.Series(p).groupby(window_of).transform("mean").to_numpy()
    c = window_m3s.reindex(window_of).to_numpy(float)
    return c * p / mean_p


def detect_leak(
    supply_m3s: pd.Series,
    window_m3s: pd.Series,
    window_of: np.ndarray,
    slot: np.ndarray,
    night: np.ndarray,
    night_id: np.ndarray,
    *,
    n_slots: int = 96,
    min_leak_share: float = 0.005,
    t_threshold: float = 5.0,
    min_gap_steps: int = 8,
    min_after_h: float = 24.0,
    floor_share: float = 0.001,
    day_type: np.ndarray | None = None,
    use: np.ndarray | None = None,
    window_alpha: float | None = 0.01,
    scan_alpha: float | None = 0.01,
    scan_draws: int = 2000,
) -> Detection:
    """Fit the supply as consumption plus a step; decide whether a leak started.

    Parameters
    ----------
    supply_m3s : pd.Series
        System input (m³/s) on the regular grid (UTC index); NaN where unknown.
    window_m3s : pd.Series
        Mean metered consumption per 12-hour window (m³/s), index = window number.
    window_of, slot : ndarray of int
        Window number and time-of-day slot of every grid time.
    night, night_id : ndarray
        Whether a time is in the night window, and the night's number.
    n_slots : int
        Slots per day (96 for 15 minutes).
    min_leak_share : float
        Smallest leak declared, as a share of the mean supply.
    t_threshold : float
        Smallest step over its night-to-night standard error.
    min_gap_steps : int
        Onset not closer than this to either end of the record (steps).
    min_after_h : float
        Hours of usable balance after a candidate onset: a step in the last
        hours of the record cannot be told from that day's own consumption
        (on twin's Yingtan weeks a Sunday morning looks like a leak of 1-2 %
        of the supply), so such onsets are not scanned. A leak that starts
        later shows in the next run.
    floor_share : float
        Floor of the night-to-night standard deviation, share of the mean supply.
    day_type : ndarray of int, optional
        Day type of every time (e.g. 0 weekday, 1 weekend): one consumption
        profile per type.
    use : ndarray of bool, optional
        Grid times the balance may use; False in windows whose metered
        consumption is not known well enough (e.g. not bracketed by the
        customer registers). They are left out of the fit, the onset scan,
        the reference days and the placebo statistics. Default: every time.
    window_alpha : float, optional
        Level of the volume test. The step of the window totals (mean supply
        against metered consumption per 12-hour window, one scale per day
        type, :func:`_window_step`) is estimated at the onset found, with its
        standard error from the week's own window residuals; the leak is
        rejected when the fitted step exceeds it by more than Student's t
        quantile ``1 − window_alpha`` (the fit's degrees of freedom) times
        that error: the step is then a change of the consumption's shape,
        not water the registers miss. Not applied when fewer than two degrees
        of freedom remain; None switches it off (figures still reported).
    scan_alpha : float, optional
        Family-wise level of the onset scan on the window totals
        (:func:`_window_scan`): the largest step statistic over every onset
        scanned must exceed the ``1 − scan_alpha`` quantile of the same
        maximum under no leak, computed for this week's own windows (their
        count, day types and consumption) by Monte Carlo. Searching many
        onsets for the best one inflates its statistic; this threshold
        accounts for the search, so no constant is tuned to one generator's
        noise. None switches the requirement off (figures still reported).
    scan_draws : int
        Monte Carlo draws of that maximum (drawn 2000 at a time): a small
        ``scan_alpha`` needs many more than ``1 / scan_alpha``.

    Returns
    -------
    Detection
    """
    times = supply_m3s.index
    s_all = supply_m3s.to_numpy(float)
    ok = np.isfinite(s_all) & np.isfinite(window_m3s.reindex(window_of).to_numpy(float))
    if use is not None:
        ok &= np.asarray(use, bool)
    n_ok = int(ok.sum())
    mean_supply = float(np.nanmean(s_all)) if n_ok else float("nan")
    if n_ok < 4 * min_gap_steps:
        return Detection(False, None, 0.0, float("nan"), 0.0,
                         {"reason": "too few supply readings for the balance"})
    # one consumption shape per day type (weekday / weekend): weekends differ
    dtype_ = np.zeros(len(s_all), int) if day_type is None else np.asarray(day_type, int)
    span = _scan_span(night_id[ok], min_gap_steps, int(np.ceil(min_after_h / max(_step_h(times), 1e-9))))
    # where: the onset scan on the window totals, which a change of the consumption's shape cannot move
    scan = _window_scan(s_all[ok], window_m3s, window_of[ok], dtype_[ok], span, min_gap_steps, scan_alpha,
                        n_null=scan_draws)
    if scan is None:
        return Detection(False, None, 0.0, float("nan"), 0.0,
                         {"reason": "no positive step of the window totals with two leak-free days before it "
                                    f"and {min_after_h:g} h of balance after it"})
    # when, to the 15-minute step: the shaped fit, inside the scan's confidence set of the onset
    fit = _fit_step(s_all[ok], window_m3s, times[ok], slot[ok], window_of[ok], dtype_[ok],
                    n_slots=n_slots, span=scan.near(span))
    if fit is None:
        return _window_only(scan, times[ok], mean_supply, min_leak_share, n_ok * _step_h(times))
    onset = times[np.flatnonzero(ok)[fit.k_best]]
    resid_nostep = s_all[ok] - fit.X0 @ fit.beta[:-1]
    floor = floor_share * mean_supply
    night_test = _night_step(resid_nostep, fit, night_id[ok], night[ok], times[ok], onset, floor)
    # slot-matched test: every 15-min step after the onset against the same
    # time of day on the leak-free days, weighted by that slot's day-to-day
    # scatter; its noise from placebo days (each leak-free day against the others)
    L_slot, se_slot, n_ref_days = _slot_matched(resid_nostep, night_id[ok], slot[ok], times[ok] >= onset,
                                                n_slots, floor)
    t_slot = L_slot / se_slot if se_slot > 0 else 0.0
    # volume test: the leak is water the registers do not see, so it must show in the
    # window totals, which a change of the consumption's shape inside a window cannot move
    vol = _window_step(s_all[ok], window_m3s, window_of[ok], dtype_[ok], times[ok] >= onset, min_gap_steps)
    L, volume_ok, flow_from = _volume_verdict(fit.leak, vol, window_alpha)
    share = L / mean_supply if mean_supply > 0 else 0.0
    detected = bool(L > 0 and t_slot >= t_threshold and share >= min_leak_share and n_ref_days >= 2 and volume_ok
                    and scan.significant)
    details = (_details(fit, night_test, (L_slot, se_slot, t_slot, n_ref_days)) | vol.details(fit.leak, window_alpha)
               | scan.details(times[ok])) | {
        "leak_flow_from": flow_from, "onset_from": "15-minute fit",
        "share_of_supply": round(share, 5), "t_threshold": t_threshold, "min_leak_share": min_leak_share,
        "hours_used": round(n_ok * _step_h(times), 2),
        "hours_after_onset": round(float(np.sum(times[ok] >= onset)) * _step_h(times), 2),
        "min_hours_after_onset": min_after_h, "mean_supply_lps": round(mean_supply * 1000, 3)}
    demand = pd.Series(np.nan, index=times)
    demand.iloc[np.flatnonzero(ok)] = fit.X0 @ fit.beta[:-1]
    log.debug("balance step %.3f L/s at %s, t=%.1f", L * 1000, onset, t_slot)
    return Detection(detected, onset if detected else None, L if detected else 0.0,
                     float(se_slot), float(t_slot), details | {"best_onset": onset.isoformat()},
                     demand_m3s=demand)


@dataclass
class _WindowStep:
    """Step of the window totals at the onset: estimate and standard error (m³/s), degrees of freedom."""

    leak: float
    se: float
    dof: int

    @property
    def t(self) -> float:
        """Step over its standard error (0 when it cannot be estimated)."""
        return self.leak / self.se if self.se > 0 and np.isfinite(self.se) else 0.0

    def threshold(self, alpha: float | None) -> float:
        """Student's t quantile ``1 − alpha`` at ``dof``; NaN below two degrees of freedom or without ``alpha``."""
        if alpha is None or self.dof < 2:
            return float("nan")
        return float(stats.t.ppf(1.0 - alpha, self.dof))

    def excess_t(self, claimed: float) -> float:
        """How far ``claimed`` (m³/s) exceeds the window step, in its standard errors."""
        return (claimed - self.leak) / self.se if self.se > 0 and np.isfinite(self.se) else 0.0

    def passed(self, claimed: float, alpha: float | None) -> bool:
        """Whether a step of ``claimed`` (m³/s) is water the window totals miss.

        Fails when ``claimed`` exceeds the window step by more than Student's
        t quantile ``1 − alpha`` times its standard error. True when the test
        is off or cannot be made (too few windows).
        """
        thr = self.threshold(alpha)
        return not np.isfinite(thr) or self.excess_t(claimed) <= thr

    def details(self, claimed: float, alpha: float | None) -> dict:
        """JSON-friendly figures (L/s)."""
        ok = self.dof >= 2
        thr = self.threshold(alpha)
        return {"window_step_lps": round(self.leak * 1000, 4) if ok else None,
                "window_se_lps": round(self.se * 1000, 4) if ok else None,
                "t_window": round(self.t, 2) if ok else None, "window_dof": int(self.dof),
                "t_window_excess": round(self.excess_t(claimed), 2) if ok else None,
                "t_window_threshold": round(thr, 3) if np.isfinite(thr) else None}


def _volume_verdict(claimed: float, vol: "_WindowStep", alpha: float | None) -> tuple[float, bool, str]:
    """Leak flow (m³/s), whether the window totals allow a leak, and where the flow comes from.

    The 15-minute step ``claimed`` stands when the window step is consistent
    with it (or the test is off or cannot be made). When it exceeds the
    window step by more than the t quantile, part of it is a change of the
    consumption's shape: if the window totals still step significantly the
    leak is their step, otherwise there is no leak.
    """
    if vol.passed(claimed, alpha):
        return claimed, True, "15-minute fit"
    if vol.t >= vol.threshold(alpha):
        return vol.leak, True, "window totals"
    return claimed, False, "15-minute fit"


@dataclass
class _WindowScan:
    """Best onset of the window totals' step and its significance, the scan accounted for.

    ``position`` indexes the usable samples; ``leak``, ``se`` in m³/s;
    ``threshold`` is the ``1 − alpha`` quantile of the largest statistic over
    the scanned onsets under no leak (``strict_threshold`` at ``alpha / 10``); ``interval`` the first and past-last
    sample of the onset's confidence set (:func:`_onset_interval`).
    """

    position: int
    leak: float
    se: float
    t: float
    threshold: float
    strict_threshold: float
    p_value: float
    dof: int
    n_windows: int
    n_onsets: int
    interval: tuple[int, int]
    alpha: float | None

    @property
    def significant(self) -> bool:
        """Whether the step exceeds the scan's threshold (True when the requirement is off)."""
        return self.alpha is None or (self.leak > 0 and self.t >= self.threshold)

    @property
    def significant_alone(self) -> bool:
        """Whether the step exceeds the threshold at a tenth of the level, for a verdict without the 15-minute tests.

        The threshold assumes independent window errors; on leak-free weeks
        of twin's generator the scan's p-values run low (6 of 20 below
        0.035), so a verdict resting on the window totals alone asks for
        ten times the evidence.
        """
        return self.alpha is None or (self.leak > 0 and self.t >= self.strict_threshold)

    def near(self, span: tuple[int, int], margin: int = 4) -> tuple[int, int]:
        """The onset's confidence interval, ``margin`` samples wider on each side, inside ``span``."""
        return max(span[0], self.interval[0] - margin), min(span[1], self.interval[1] + margin)

    def details(self, times: pd.DatetimeIndex) -> dict:
        """JSON-friendly figures (L/s)."""
        return {"scan_onset": times[self.position].isoformat(), "scan_step_lps": round(self.leak * 1000, 4),
                "scan_se_lps": round(self.se * 1000, 4), "t_scan": round(self.t, 2),
                "t_scan_threshold": round(self.threshold, 3),
                "t_scan_threshold_alone": round(self.strict_threshold, 3), "scan_p_value": round(self.p_value, 4),
                "scan_alpha": self.alpha, "scan_windows": self.n_windows, "scan_dof": self.dof,
                "scan_onsets": self.n_onsets, "scan_interval": [times[self.interval[0]].isoformat(),
                                                                times[self.interval[1] - 1].isoformat()]}


def _window_design(
    s: np.ndarray,
    window_m3s: pd.Series,
    window_of: np.ndarray,
    day_type: np.ndarray,
    min_samples: int,
) -> pd.DataFrame:
    """One row per usable window: mean supply, consumption, day type and its first/last usable sample."""
    df = pd.DataFrame({"s": s, "w": window_of, "k": day_type, "pos": np.arange(len(s))})
    g = df.groupby("w").agg(s=("s", "mean"), k=("k", "first"), n=("s", "size"), lo=("pos", "min"),
                            hi=("pos", "max"))
    g["C"] = window_m3s.reindex(g.index).to_numpy(float)
    return g[(g["n"] >= min_samples) & np.isfinite(g["C"])]


def _scale_design(g: pd.DataFrame) -> np.ndarray:
    """Leak-free design of the window totals: ``C_w`` in one column per day type, and a constant."""
    return np.column_stack([g["C"].to_numpy() * (g["k"].to_numpy() == k) for k in sorted(g["k"].unique())]
                           + [np.ones(len(g))])


def _window_scan(
    s: np.ndarray,
    window_m3s: pd.Series,
    window_of: np.ndarray,
    day_type: np.ndarray,
    span: tuple[int, int],
    min_samples: int,
    alpha: float | None,
    n_null: int = 2000,
    alpha_ci: float = 0.01,
    chunk: int = 2000,
) -> _WindowScan | None:
    """Scan every onset in ``span`` for a step of the window totals; threshold by Monte Carlo.

    For an onset at usable sample ``j`` the window means follow
    ``s̄_w = a_k C_w + b + L f_w(j)`` (:func:`_window_step`), ``f_w(j)`` the
    share of window ``w``'s usable samples at or after ``j``. With ``M`` the
    projection off the leak-free design and ``g_j = M f(j)``, the step is
    ``L_j = g_j·r / g_j·g_j`` and its t statistic follows from the residual
    sum of squares, for every onset at once. The statistic does not depend on
    the noise scale, so its largest value over the scan under no leak is
    simulated with standard normal window errors on the same design
    (``n_null`` draws, fixed seed: the same week gives the same threshold).
    None when no onset can be tested (too few windows or onsets).
    """
    g = _window_design(s, window_m3s, window_of, day_type, min_samples)
    X0 = _scale_design(g)
    dof = len(g) - X0.shape[1] - 1
    positions = np.arange(span[0], span[1])
    if dof < 2 or len(positions) == 0 or np.linalg.matrix_rank(X0) < X0.shape[1]:
        return None
    q, _ = np.linalg.qr(X0)
    M = np.eye(len(g)) - q @ q.T
    lo, hi = g["lo"].to_numpy(), g["hi"].to_numpy() + 1
    G = np.clip((hi[None, :] - positions[:, None]) / (hi - lo)[None, :], 0.0, 1.0) @ M
    gg = np.einsum("ij,ij->i", G, G)
    testable = gg > 1e-9 * len(g)
    if not testable.any():
        return None
    G, gg, positions = G[testable], gg[testable], positions[testable]
    r = M @ g["s"].to_numpy()
    L, t = (a[:, 0] for a in _scan_t(G, gg, r[:, None], dof))
    best = int(np.argmax(np.where(L > 0, t, -np.inf)))
    inside = _onset_interval(G, gg, r, best, dof, alpha_ci)
    rng = np.random.default_rng(20260301)
    null = np.concatenate([_scan_t(G, gg, M @ rng.standard_normal((len(g), min(chunk, n_null - k))), dof)[1].max(axis=0)
                           for k in range(0, n_null, chunk)])  # in chunks: memory bounded for many draws
    thr = np.quantile(null, [1.0 - alpha, 1.0 - alpha / 10]) if alpha is not None else [np.nan, np.nan]
    return _WindowScan(
        position=int(positions[best]), leak=float(L[best]), se=float(L[best] / t[best]) if t[best] else float("inf"),
        t=float(t[best]), threshold=float(thr[0]), strict_threshold=float(thr[1]),
        p_value=float(np.mean(null >= t[best])), dof=int(dof), n_windows=len(g), n_onsets=len(positions),
        interval=(int(positions[inside.min()]), int(positions[inside.max()]) + 1), alpha=alpha)


def _onset_interval(G: np.ndarray, gg: np.ndarray, r: np.ndarray, best: int, dof: int,
                    alpha_ci: float) -> np.ndarray:
    """Onsets (row numbers) whose fit is not worse than the best one's by more than the F test at ``alpha_ci``.

    ``RSS_j − RSS_best ≤ F_{1,dof}(1 − alpha_ci) · σ̂²_best``: a confidence
    set of the onset from the window totals alone.
    """
    num = G @ r
    gain = num * num / gg
    rss_best = float(r @ r - gain[best])
    bound = stats.f.ppf(1.0 - alpha_ci, 1, dof) * max(rss_best, 0.0) / dof
    return np.flatnonzero(gain[best] - gain <= bound)


def _scan_t(G: np.ndarray, gg: np.ndarray, r: np.ndarray, dof: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``L`` and its t statistic for every onset (rows of ``G``) and residual vector (columns of ``r``)."""
    num = G @ r
    L = num / gg[:, None]
    gain = num * L
    sig2 = np.maximum((r * r).sum(axis=0)[None, :] - gain, 1e-300) / dof
    return L, L / np.sqrt(sig2 / gg[:, None])


def _window_only(scan: _WindowScan, times: pd.DatetimeIndex, mean_supply: float, min_leak_share: float,
                 hours_used: float) -> Detection:
    """The verdict of the window totals alone, when no 15-minute step lies near their onset.

    This happens when the days after the onset have no leak-free day of
    their type before it (a leak from a Saturday in a Monday-to-Sunday
    week): the shaped 15-minute fit takes the step for that day type's own
    consumption. The window totals still see the water; onset and flow are
    theirs, less precise (a window's resolution).
    """
    share = scan.leak / mean_supply if mean_supply > 0 else 0.0
    detected = bool(scan.leak > 0 and scan.significant_alone and share >= min_leak_share)
    onset = times[scan.position]
    details = scan.details(times) | {
        "leak_flow_from": "window totals", "onset_from": "window totals",
        "share_of_supply": round(share, 5), "min_leak_share": min_leak_share,
        "hours_used": round(hours_used, 2), "mean_supply_lps": round(mean_supply * 1000, 3),
        "best_onset": onset.isoformat(),
        "note": "no 15-minute step near the window totals' onset (no leak-free day of the same type before "
                "it): onset and flow from the window totals, to about a window"}
    return Detection(detected, onset if detected else None, scan.leak if detected else 0.0, scan.se, scan.t, details)


def _window_step(
    s: np.ndarray,
    window_m3s: pd.Series,
    window_of: np.ndarray,
    day_type: np.ndarray,
    after: np.ndarray,
    min_samples: int,
) -> _WindowStep:
    """Leak step from the window totals: ``s̄_w = a_k C_w + b + L f_w``, ordinary least squares.

    ``s̄_w`` is the mean supply (m³/s) over the usable samples of window
    ``w``, ``C_w`` its metered consumption, ``k`` the window's day type and
    ``f_w`` the share of its samples at or after the onset. How the
    consumption is shaped inside a window does not enter: a day whose use
    shifts towards the night (a weekly cycle the calendar's day types do not
    follow) leaves its window totals on ``a_k C_w + b``, a leak does not.
    Windows with fewer than ``min_samples`` usable samples are left out.
    """
    g = _window_design(s, window_m3s, window_of, day_type, min_samples)
    g["f"] = pd.Series(after.astype(float)).groupby(window_of).mean().reindex(g.index).to_numpy()
    X = np.column_stack([_scale_design(g), g["f"].to_numpy()])
    dof = len(g) - X.shape[1]
    if dof < 2 or np.linalg.matrix_rank(X) < X.shape[1]:
        return _WindowStep(0.0, float("nan"), min(dof, 1))
    beta, *_ = np.linalg.lstsq(X, g["s"].to_numpy(), rcond=None)
    r = g["s"].to_numpy() - X @ beta
    cov = (r @ r) / dof * np.linalg.inv(X.T @ X)
    return _WindowStep(float(beta[-1]), float(np.sqrt(max(cov[-1, -1], 0.0))), int(dof))


def _details(fit: "_StepFit", night_test: tuple, slot_test: tuple) -> dict:
    """JSON-friendly figures of the fit, the night step and the slot-matched test (L/s)."""
    L_night, sd, n_before, n_after, _ = night_test
    L_slot, se_slot, t_slot, n_ref_days = slot_test
    n_types = fit.n_types
    return {
        "a": round(float(np.mean(fit.beta[:n_types])), 5),
        "a_per_day_type": [round(float(v), 5) for v in fit.beta[:n_types]],
        "b_lps": round(float(fit.beta[-2]) * 1000, 4),
        "step_lps": round(fit.leak * 1000, 4),
        "slot_step_lps": round(L_slot * 1000, 4),
        "slot_se_lps": round(se_slot * 1000, 4),
        "t_slot": round(t_slot, 2),
        "reference_days": int(n_ref_days),
        "night_step_lps": round(L_night * 1000, 4),
        "night_sd_lps": round(sd * 1000, 4),
        "nights_before": n_before,
        "nights_after": n_after,
    }


def _step_h(times: pd.DatetimeIndex) -> float:
    """Grid step (hours): the median spacing of ``times``."""
    if len(times) < 2:
        return 0.0
    return float(np.median(np.diff(times.as_unit("ns").asi8))) / 3.6e12


@dataclass
class _StepFit:
    """Weighted least-squares fit of the supply as consumption + background + a step."""

    beta: np.ndarray  # scale per day type, background b, step L (m³/s)
    X0: np.ndarray  # step-free design: consumption per day type, constant
    r: np.ndarray  # residual of the step-free fit
    k_best: int  # first sample of the step
    n_types: int

    @property
    def leak(self) -> float:
        """Fitted step (m³/s)."""
        return float(self.beta[-1])


def _fit_step(
    s: np.ndarray,
    window_m3s: pd.Series,
    times: pd.DatetimeIndex,
    slot: np.ndarray,
    window_of: np.ndarray,
    day_type: np.ndarray,
    *,
    n_slots: int,
    span: tuple[int, int],
) -> _StepFit | None:
    """Scan every step position (closed form) and re-estimate the profile, four times.

    ``s`` and the labels are the finite samples only; the step may start at
    samples ``span[0] .. span[1] - 1``. None when no positive step fits.
    """
    n_types = int(day_type.max()) + 1
    kslot = day_type * n_slots + slot
    step = np.zeros(len(s))
    L, b, k_best, beta = 0.0, 0.0, None, None
    for _ in range(4):
        # consumption shape: supply without background leakage and the leak
        prof = _profile((s - b - L * step), kslot, n_slots * n_types)
        D = shaped_consumption(window_m3s, times, prof, kslot, window_of)
        # heteroscedastic weights: the shape error grows with the demand
        w = 1.0 / (D + 0.1 * np.nanmean(D)) ** 2
        # one scale per day type (the class mix, hence meter under-registration, differs on weekends)
        X0 = np.column_stack([D * (day_type == k) for k in range(n_types)] + [np.ones(len(s))])
        G = (X0 * w[:, None]).T @ X0
        beta0 = np.linalg.solve(G, (X0 * w[:, None]).T @ s)
        r = s - X0 @ beta0
        k_best = _best_step(r, w, X0, G, span)
        if k_best is None:
            return None
        step = (np.arange(len(s)) >= k_best).astype(float)
        X = np.column_stack([X0, step])
        beta = np.linalg.solve((X * w[:, None]).T @ X, (X * w[:, None]).T @ s)
        b, L = float(beta[-2]), max(float(beta[-1]), 0.0)
    return _StepFit(beta, X0, r, k_best, n_types)


def _scan_span(day: np.ndarray, min_gap_steps: int, min_after_steps: int, min_ref_days: int = 2) -> tuple[int, int]:
    """Samples where a step may start: after ``min_ref_days`` days, ``min_after_steps`` before the end.

    ``day``: the (non-decreasing) day number of every usable sample. An onset
    with fewer leak-free reference days before it, or less balance after it,
    cannot be tested (:func:`_slot_matched`); leaving it out of the scan lets
    the scan find the best step that can.
    """
    days = np.unique(day)
    lo = int(np.searchsorted(day, days[min_ref_days])) if len(days) > min_ref_days else len(day)
    return max(lo, min_gap_steps), len(day) - max(min_after_steps, min_gap_steps)


def _best_step(r: np.ndarray, w: np.ndarray, X0: np.ndarray, G: np.ndarray, span: tuple[int, int]) -> int | None:
    """Position of the best positive step in ``r`` (all positions at once), or None.

    ``u_k = 1[t >= t_k]`` projected out of ``X0``: weighted least squares
    from reverse cumulative sums.
    """
    rev_r = np.cumsum((w * r)[::-1])[::-1]
    cnt = np.cumsum(w[::-1])[::-1]
    xu = np.cumsum((X0 * w[:, None])[::-1], axis=0)[::-1]
    uperp = cnt - np.einsum("ij,jk,ik->i", xu, np.linalg.inv(G), xu)
    with np.errstate(divide="ignore", invalid="ignore"):
        Lk = rev_r / uperp
        gain = rev_r ** 2 / uperp
    valid = np.zeros(len(r), bool)
    valid[span[0]:max(span[1], span[0])] = True
    valid &= np.isfinite(gain) & (Lk > 0) & (uperp > 1e-9 * cnt[0])
    if not valid.any():
        return None
    return int(np.argmax(np.where(valid, gain, -np.inf)))


def _night_step(
    resid: np.ndarray,
    fit: _StepFit,
    night_id: np.ndarray,
    night: np.ndarray,
    times: pd.DatetimeIndex,
    onset: pd.Timestamp,
    floor: float,
) -> tuple[float, float, int, int, float]:
    """Step of the unexplained supply between the nights before and after the onset.

    Returns the step (m³/s), the night-to-night sd (m³/s), the nights before
    and after, and the step over its standard error. ``floor``: 0.1 % of the
    supply (meter accuracy, day-to-day use); without enough nights, the
    15-min scatter averaged over a night.
    """
    nights = pd.DataFrame({"e": resid, "night": night_id, "is_night": night, "t": times})
    nights = nights[nights["is_night"]]
    per_night = nights.groupby("night").agg(e=("e", "mean"), t0=("t", "min"), t1=("t", "max"), n=("e", "size"))
    per_night = per_night[per_night["n"] >= 4]
    before = per_night[per_night["t1"] < onset]["e"].to_numpy()
    after = per_night[per_night["t0"] >= onset]["e"].to_numpy()
    dev = np.concatenate([before - before.mean() if len(before) else [], after - after.mean() if len(after) else []])
    dof = max(len(dev) - (len(before) > 0) - (len(after) > 0), 0)
    if dof < 2:
        floor = max(floor, np.std(fit.r) / np.sqrt(max(per_night["n"].median() if len(per_night) else 1, 1)))
    sd = float(np.sqrt((dev ** 2).sum() / dof)) if dof >= 2 else floor
    sd = max(sd, floor)
    if len(before) and len(after):
        L_night = float(after.mean() - before.mean())
        se = sd * np.sqrt(1.0 / len(before) + 1.0 / len(after))
    else:
        L_night, se = fit.leak, sd
    return L_night, sd, int(len(before)), int(len(after)), (L_night / se if se > 0 else 0.0)


def _slot_matched(
    e: np.ndarray,
    day: np.ndarray,
    slot: np.ndarray,
    after: np.ndarray,
    n_slots: int,
    floor: float,
) -> tuple[float, float, int]:
    """Step of ``e`` after the onset against the same slots on leak-free days.

    Returns the weighted mean difference (m³/s), its standard error from
    placebo days, and the number of leak-free reference days.
    """
    days = np.unique(day)
    ref_days = [d for d in days if not after[day == d].any()]
    if len(ref_days) < 2 or not after.any():
        return 0.0, float("inf"), len(ref_days)
    E = np.full((len(days), n_slots), np.nan)
    di = np.searchsorted(days, day)
    E[di, slot] = e
    R = E[np.searchsorted(days, ref_days)]
    with warnings.catch_warnings():  # slots seen on fewer than two reference days (a part day left out)
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(R, axis=0)
        var = np.nanvar(R, axis=0, ddof=1)
    var = np.where(np.isfinite(var) & (var > 0), var, np.nanmedian(var[var > 0]) if (var > 0).any() else floor ** 2)
    w_slot = 1.0 / np.maximum(var, floor ** 2)
    a_slot = slot[after]
    diff = e[after] - m[a_slot]
    w = w_slot[a_slot]
    okd = np.isfinite(diff)
    if not okd.any():
        return 0.0, float("inf"), len(ref_days)
    L = float((w[okd] * diff[okd]).sum() / w[okd].sum())
    # the after set's slot mix, in "days" of data
    counts = np.bincount(a_slot[okd], minlength=n_slots).astype(float)
    n_eff = max(counts[counts > 0].mean(), 1.0)
    cw = counts * w_slot
    placebo = []
    for k in range(len(R)):
        others = np.delete(R, k, axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            dk = R[k] - np.nanmean(others, axis=0)
        good = np.isfinite(dk) & (cw > 0)
        if good.any():
            placebo.append((cw[good] * dk[good]).sum() / cw[good].sum() * np.sqrt((len(R) - 1) / len(R)))
    sd_day = max(float(np.sqrt(np.mean(np.square(placebo)))) if placebo else floor, floor)
    se = sd_day * np.sqrt(1.0 / n_eff + 1.0 / len(R))
    return L, se, len(ref_days)


def dma_steps(
    inflow_m3s: pd.DataFrame,
    consumption_m3s: pd.DataFrame,
    window_of: np.ndarray,
    slot: np.ndarray,
    onset: pd.Timestamp,
) -> pd.DataFrame:
    """Step of each DMA's unexplained inflow at a leak's onset.

    The balance of a DMA is its metered net inflow minus the mean metered
    consumption of its nodes in the 12-hour window, ``b(t) = Q(t) − C_w``.
    Its diurnal shape repeats from day to day, so every time after the onset
    is compared with the mean of the same time-of-day slot before it:
    ``step = mean_{t≥τ} (b(t) − b̄_ref(slot(t)))``. The DMA holding the leak
    is the one whose balance steps up by about the leak flow.

    Parameters
    ----------
    inflow_m3s : DataFrame
        Net inflow of each DMA (m³/s), index the grid (UTC), columns DMAs.
    consumption_m3s : DataFrame
        Metered consumption of each DMA per window (m³/s), index window
        number, columns as ``inflow_m3s``.
    window_of, slot : ndarray of int
        Window number and time-of-day slot of every grid time.
    onset : Timestamp
        Estimated leak onset (UTC).

    Returns
    -------
    DataFrame
        Index DMA, columns ``step_m3s`` (m³/s) and ``z`` (step over its
        standard error from the day-to-day scatter of the balance per slot),
        largest step first. Empty when either side of the onset has no data.
    """
    cols = list(inflow_m3s.columns)
    if not cols:
        return pd.DataFrame(columns=["step_m3s", "z"])
    q = inflow_m3s.to_numpy(float)
    c = consumption_m3s.reindex(index=np.unique(window_of), columns=cols).reindex(window_of).to_numpy(float)
    b = q - c
    after = np.asarray(inflow_m3s.index >= onset)
    ok = np.isfinite(b).all(axis=1)
    ref, aft = ok & ~after, ok & after
    if ref.sum() < 2 or aft.sum() < 1:
        return pd.DataFrame(columns=["step_m3s", "z"])
    ref_df = pd.DataFrame(b[ref]).groupby(slot[ref])
    mean_slot = ref_df.mean()
    sd_slot = ref_df.std(ddof=1)
    m_aft = mean_slot.reindex(slot[aft]).to_numpy(float)
    dev = b[aft] - m_aft
    step = np.nanmean(dev, axis=0)
    n_ref_days = max(ref.sum() / max(len(mean_slot), 1), 1.0)
    n_aft_days = max(aft.sum() / max(len(mean_slot), 1), 1.0)
    sd = np.nanmedian(sd_slot.to_numpy(float), axis=0) * np.sqrt(1.0 / n_ref_days + 1.0 / n_aft_days)
    z = step / np.where(np.isfinite(sd) & (sd > 0), sd, np.inf)
    out = pd.DataFrame({"step_m3s": step, "z": z}, index=pd.Index(cols, name="dma"))
    return out.sort_values("step_m3s", ascending=False)
