"""The nightly job's memory: runs, leak alarms and their history, kept in the store.

Every run of the leak-localisation job from the store
(:func:`twin.pipeline.localise_store`) is recorded with its window and counts
(table ``runs``). Each leak it detects is matched against the alarms still
open from earlier nights:

- a leak **continues** an open alarm when both lie in the same DMA (or either
  is network-wide), their onsets differ by at most
  ``settings.ALARM_ONSET_TOLERANCE_H`` hours and their flows by at most
  ``settings.ALARM_FLOW_TOLERANCE`` of the larger one or
  ``settings.ALARM_FLOW_TOLERANCE_LPS`` L/s, whichever is more; the closest
  pair is matched first and each alarm takes at most one leak;
- a leak that continues no alarm opens a **new** one;
- an open alarm that no leak continues is **closed** ("step gone (repair?)")
  when the run's window covers its onset with a margin of
  ``settings.ALARM_COVER_MARGIN_H`` hours on both sides (its step would have
  been seen), and **unchecked** otherwise (the onset lies before the window,
  so the step cannot be seen; the alarm stays open).

Tables (created by :class:`twin.store.Store`): ``runs``, ``alarms`` (one row
per leak, its latest onset and flow, ``status`` open/closed),
``alarm_history`` (one row per alarm and run: ``state`` new, continuing,
closed or unchecked, with the onset, flow, t statistic and top candidate of
that run) and ``candidates`` (the ranked pipes of each run and alarm, the
best ``settings.ALARM_CANDIDATES_KEPT``). A run is written in one
transaction: all of it, or nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import InputError
from twin.store import Store

log = logging.getLogger(__name__)

#: Columns of :func:`leaks_from_report`.
LEAK_COLUMNS = ["leak_id", "dma", "onset", "flow_lps", "t_stat", "top_link_id", "top_p", "top_p_within_300m"]

#: The DMA name of a leak the job could not place in a district.
NETWORK = "network"

#: Why :func:`record_run` closes an alarm.
STEP_GONE = "step gone (repair?)"


@dataclass(frozen=True)
class Window:
    """The readings period of one run: ``[start, end)``, UTC."""

    start: pd.Timestamp
    end: pd.Timestamp

    def covers(self, onset: pd.Timestamp, margin_h: float = settings.ALARM_COVER_MARGIN_H) -> bool:
        """Whether a step at ``onset`` lies far enough inside the window to be seen."""
        margin = pd.Timedelta(hours=margin_h)
        return bool(self.start + margin <= onset <= self.end - margin)


@dataclass
class RunRecord:
    """What :func:`record_run` stored.

    Attributes
    ----------
    run_id : int
    states : DataFrame
        One row per alarm the run touched: ``alarm_id``, ``state`` (new,
        continuing, closed, unchecked), ``dma``, ``onset`` (UTC), ``flow_lps``,
        ``first_seen_run``, ``leak_id`` (the report's leak, NA for closed and
        unchecked alarms).
    counts : dict of str to int
        Alarms per state.
    """

    run_id: int
    states: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def leaks_from_report(report: dict[str, Any], candidates: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaks a localisation report detected, one row each.

    Reads the report's ``leaks`` list when it has one (several leaks, each with
    ``leak_id``, ``dma``, ``onset``, ``leak_flow_lps``), else its single leak
    (``detected``, ``onset``, ``leak_flow_lps``, ``leak_dma``,
    ``detection.t_night``). The top candidate of each leak comes from
    ``candidates`` (rows of its ``leak_id`` when that column exists).

    Parameters
    ----------
    report : dict
        ``report.json`` of :func:`twin.localise.localise`.
    candidates : DataFrame, optional
        Its ranked candidates (``rank``, ``link_id``, ``score``,
        ``p_within_300m``, optional ``leak_id``).

    Returns
    -------
    DataFrame
        Columns :data:`LEAK_COLUMNS`: ``onset`` tz-aware UTC, ``flow_lps`` L/s,
        ``dma`` a DMA name or :data:`NETWORK`. Empty when nothing was detected.
    """
    listed = report.get("leaks")
    if isinstance(listed, list) and listed:
        raw = [{"leak_id": item.get("leak_id", i + 1), "dma": item.get("dma") or item.get("leak_dma"),
                "onset": item.get("onset"), "flow_lps": item.get("leak_flow_lps", item.get("flow_lps")),
                "t_stat": item.get("t_stat", item.get("t_night"))} for i, item in enumerate(listed)]
    elif report.get("detected"):
        raw = [{"leak_id": 1, "dma": report.get("leak_dma"), "onset": report.get("onset"),
                "flow_lps": report.get("leak_flow_lps"), "t_stat": (report.get("detection") or {}).get("t_night")}]
    else:
        raw = []
    leaks = pd.DataFrame(raw, columns=["leak_id", "dma", "onset", "flow_lps", "t_stat"])
    leaks = leaks[leaks["onset"].notna()].reset_index(drop=True)
    leaks["dma"] = leaks["dma"].fillna(NETWORK).astype(str)
    leaks["onset"] = pd.to_datetime(leaks["onset"], utc=True).astype("datetime64[ns, UTC]")
    leaks["flow_lps"] = pd.to_numeric(leaks["flow_lps"], errors="coerce").astype(float)
    leaks["t_stat"] = pd.to_numeric(leaks["t_stat"], errors="coerce").astype(float)
    tops = [_top_candidate(candidates, leak_id, single=len(leaks) == 1) for leak_id in leaks["leak_id"]]
    top = pd.DataFrame(tops, columns=["top_link_id", "top_p", "top_p_within_300m"], index=leaks.index)
    return pd.concat([leaks, top], axis=1)[LEAK_COLUMNS]


def _top_candidate(candidates: pd.DataFrame | None, leak_id: Any, *, single: bool) -> tuple[Any, float, float]:
    """``(link_id, score, p_within_300m)`` of a leak's best-ranked candidate (None, NaN, NaN when none)."""
    if candidates is None or not len(candidates):
        return None, np.nan, np.nan
    rows = candidates
    if "leak_id" in candidates.columns and not single:
        rows = candidates[candidates["leak_id"].astype(str) == str(leak_id)]
    if not len(rows):
        return None, np.nan, np.nan
    best = rows.sort_values("rank").iloc[0]
    return (str(best["link_id"]), float(best.get("score", np.nan)),
            float(best.get("p_within_300m", np.nan)))


def same_leak(
    dma_a: str, onset_a: pd.Timestamp, flow_a: float, dma_b: str, onset_b: pd.Timestamp, flow_b: float, *,
    onset_tolerance_h: float = settings.ALARM_ONSET_TOLERANCE_H,
    flow_tolerance: float = settings.ALARM_FLOW_TOLERANCE,
    flow_tolerance_lps: float = settings.ALARM_FLOW_TOLERANCE_LPS,
) -> bool:
    """Whether two detections are the same leak: same DMA, close onsets and similar flows (L/s)."""
    if dma_a != dma_b and NETWORK not in (dma_a, dma_b):
        return False
    if abs(onset_a - onset_b) > pd.Timedelta(hours=onset_tolerance_h):
        return False
    return abs(flow_a - flow_b) <= max(flow_tolerance * max(abs(flow_a), abs(flow_b)), flow_tolerance_lps)


def match_alarms(
    leaks: pd.DataFrame,
    open_alarms: pd.DataFrame,
    window: Window,
    *,
    onset_tolerance_h: float = settings.ALARM_ONSET_TOLERANCE_H,
    flow_tolerance: float = settings.ALARM_FLOW_TOLERANCE,
    flow_tolerance_lps: float = settings.ALARM_FLOW_TOLERANCE_LPS,
    cover_margin_h: float = settings.ALARM_COVER_MARGIN_H,
) -> tuple[pd.Series, pd.Series]:
    """Match a run's leaks to the open alarms (the rule of this module's docstring).

    Parameters
    ----------
    leaks : DataFrame
        :func:`leaks_from_report`.
    open_alarms : DataFrame
        ``alarm_id``, ``dma``, ``onset`` (UTC), ``flow_lps`` of the open alarms.
    window : Window
        The run's readings period.
    onset_tolerance_h, flow_tolerance, flow_tolerance_lps, cover_margin_h : float
        The rule's tolerances (hours, share, L/s, hours).

    Returns
    -------
    alarm_of_leak : Series
        On ``leaks``' index: the alarm a leak continues, or NA (a new leak).
    unseen : Series
        Index the open alarms' ``alarm_id`` that no leak continues; value
        ``'closed'`` or ``'unchecked'``.
    """
    tol = {"onset_tolerance_h": onset_tolerance_h, "flow_tolerance": flow_tolerance,
           "flow_tolerance_lps": flow_tolerance_lps}
    pairs = []
    for i, leak in leaks.iterrows():
        for alarm in open_alarms.itertuples(index=False):
            if same_leak(leak["dma"], leak["onset"], leak["flow_lps"], alarm.dma, alarm.onset, alarm.flow_lps, **tol):
                hours = abs(leak["onset"] - alarm.onset) / pd.Timedelta(hours=1)
                cost = hours / onset_tolerance_h + abs(leak["flow_lps"] - alarm.flow_lps) / max(alarm.flow_lps, 1e-9)
                pairs.append((cost, i, int(alarm.alarm_id)))
    alarm_of_leak = pd.Series(pd.NA, index=leaks.index, dtype="Int64")
    taken: set[int] = set()
    for _, i, alarm_id in sorted(pairs):  # closest pairs first, each side used once
        if pd.isna(alarm_of_leak[i]) and alarm_id not in taken:
            alarm_of_leak[i] = alarm_id
            taken.add(alarm_id)
    rest = open_alarms[~open_alarms["alarm_id"].astype(int).isin(taken)]
    unseen = pd.Series({int(a.alarm_id): "closed" if window.covers(a.onset, cover_margin_h) else "unchecked"
                        for a in rest.itertuples(index=False)}, dtype=object)
    return alarm_of_leak, unseen


def open_alarms(store: Store) -> pd.DataFrame:
    """The store's open alarms (``alarm_id``, ``dma``, ``onset`` UTC, ``flow_lps``...), oldest first."""
    if not store.has_table("alarms"):
        return pd.DataFrame(columns=["alarm_id", "dma", "onset", "flow_lps"])
    df = store.query("SELECT * FROM alarms WHERE status = 'open' ORDER BY alarm_id")
    df["onset"] = pd.to_datetime(df["onset"], utc=True)
    return df


def record_run(
    store: Store,
    window: Window,
    report: dict[str, Any],
    candidates: pd.DataFrame | None,
    *,
    started_at: pd.Timestamp,
    days: int,
    network: str,
    network_sha256: str | None = None,
    out_dir: str | None = None,
    **tolerances: float,
) -> RunRecord:
    """Record one run of the job, match its leaks to the open alarms and update them, in one transaction.

    Parameters
    ----------
    store : Store
        Open for writing.
    window : Window
        The run's readings period (UTC).
    report : dict
        The run's ``report.json``.
    candidates : DataFrame, optional
        The run's ranked candidates.
    started_at : Timestamp
        When the run started (tz-aware).
    days : int
        Length of the window, days.
    network : str
        The network file the run used; ``network_sha256`` its hash.
    out_dir : str, optional
        Where the run wrote its outputs.
    **tolerances
        Passed to :func:`match_alarms`.

    Returns
    -------
    RunRecord
    """
    leaks = leaks_from_report(report, candidates)
    with store.transaction():
        run_id = _next_id(store, "runs", "run_id")
        alarms = open_alarms(store)
        alarm_of_leak, unseen = match_alarms(leaks, alarms, window, **tolerances)
        now = pd.Timestamp.now(tz="UTC")
        states = _write_alarms(store, run_id, now, leaks, alarm_of_leak, alarms, unseen)
        _write_candidates(store, run_id, candidates, leaks, states)
        counts = {s: int((states["state"] == s).sum()) for s in ("new", "continuing", "closed", "unchecked")}
        store.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, started_at.isoformat(), now.isoformat(), window.start.isoformat(), window.end.isoformat(),
             int(days), str(network), network_sha256, "leak" if len(leaks) else "no leak", len(leaks),
             counts["new"], counts["continuing"], counts["closed"], counts["unchecked"],
             int((report.get("data") or {}).get("readings_rows", 0) or 0), out_dir,
             json.dumps(report, default=str)])
    log.info("run %d: %d leak(s); alarms %s", run_id, len(leaks), ", ".join(f"{k} {v}" for k, v in counts.items()))
    return RunRecord(run_id, states, counts)


def _next_id(store: Store, table: str, column: str) -> int:
    return int(store.con.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}").fetchall()[0][0])


def _write_alarms(store: Store, run_id: int, now: pd.Timestamp, leaks: pd.DataFrame, alarm_of_leak: pd.Series,
                  alarms: pd.DataFrame, unseen: pd.Series) -> pd.DataFrame:
    """Insert new alarms, update continuing and closed ones, append the history; return the states."""
    con, rows = store.con, []
    next_alarm = _next_id(store, "alarms", "alarm_id")
    first_seen = dict(zip(alarms["alarm_id"].astype(int), alarms.get("first_seen_run", pd.Series(dtype=int))))
    for i, leak in leaks.iterrows():
        top = [leak["top_link_id"], _num(leak["top_p"])]
        if pd.isna(alarm_of_leak[i]):
            alarm_id, state = next_alarm, "new"
            next_alarm += 1
            con.execute("INSERT INTO alarms VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', NULL, NULL, NULL, ?, ?)",
                        [alarm_id, leak["dma"], leak["onset"].isoformat(), float(leak["flow_lps"]), run_id, run_id,
                         now.isoformat(), now.isoformat(), *top])
            first_seen[alarm_id] = run_id
        else:
            alarm_id, state = int(alarm_of_leak[i]), "continuing"
            con.execute("UPDATE alarms SET onset = ?, flow_lps = ?, last_seen_run = ?, last_seen_at = ?, "
                        "top_link_id = ?, top_p = ?, dma = CASE WHEN dma = ? THEN ? ELSE dma END WHERE alarm_id = ?",
                        [leak["onset"].isoformat(), float(leak["flow_lps"]), run_id, now.isoformat(), *top,
                         NETWORK, leak["dma"], alarm_id])
        con.execute("INSERT INTO alarm_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [alarm_id, run_id, state, leak["onset"].isoformat(), float(leak["flow_lps"]),
                     _num(leak["t_stat"]), *top, _num(leak["top_p_within_300m"])])
        rows.append({"alarm_id": alarm_id, "state": state, "dma": leak["dma"], "onset": leak["onset"],
                     "flow_lps": float(leak["flow_lps"]), "first_seen_run": first_seen[alarm_id],
                     "leak_id": leak["leak_id"]})
    by_id = alarms.set_index(alarms["alarm_id"].astype(int)) if len(alarms) else alarms
    for alarm_id, state in unseen.items():
        alarm = by_id.loc[alarm_id]
        note = STEP_GONE if state == "closed" else "onset before the window: its step cannot be seen; kept open"
        if state == "closed":
            con.execute("UPDATE alarms SET status = 'closed', closed_at = ?, closed_run = ?, closed_reason = ? "
                        "WHERE alarm_id = ?", [now.isoformat(), run_id, STEP_GONE, int(alarm_id)])
        con.execute("INSERT INTO alarm_history VALUES (?, ?, ?, NULL, NULL, NULL, NULL, NULL, NULL, ?)",
                    [int(alarm_id), run_id, state, note])
        rows.append({"alarm_id": int(alarm_id), "state": state, "dma": alarm["dma"], "onset": alarm["onset"],
                     "flow_lps": float(alarm["flow_lps"]), "first_seen_run": first_seen.get(int(alarm_id)),
                     "leak_id": pd.NA})
    return pd.DataFrame(rows, columns=["alarm_id", "state", "dma", "onset", "flow_lps", "first_seen_run", "leak_id"])


def _write_candidates(store: Store, run_id: int, candidates: pd.DataFrame | None, leaks: pd.DataFrame,
                      states: pd.DataFrame, keep: int = settings.ALARM_CANDIDATES_KEPT) -> None:
    """Append the best ``keep`` candidates of each detected leak, with the alarm they belong to."""
    if candidates is None or not len(candidates) or not len(leaks):
        return
    seen = states[states["leak_id"].notna()]
    alarm_by_leak = {str(k): int(v) for k, v in zip(seen["leak_id"], seen["alarm_id"])}
    cand = candidates.sort_values("rank").copy()
    if "leak_id" in cand.columns and len(leaks) > 1:
        cand["alarm_id"] = cand["leak_id"].astype(str).map(alarm_by_leak)
    else:
        cand["alarm_id"] = next(iter(alarm_by_leak.values()))
    cand = cand[cand["alarm_id"].notna()].groupby("alarm_id", sort=False).head(keep)
    table = pd.DataFrame({
        "run_id": run_id, "alarm_id": cand["alarm_id"].astype(int), "rank": cand["rank"].astype(int),
        "link_id": cand["link_id"].astype(str), "score": cand.get("score", np.nan),
        "p_within_300m": cand.get("p_within_300m", np.nan), "leak_flow_lps": cand.get("leak_flow_lps", np.nan),
        "zone": cand["zone"].astype("string") if "zone" in cand else None})
    store.con.register("_run_candidates", table)
    try:
        store.con.execute("INSERT INTO candidates SELECT * FROM _run_candidates")
    finally:
        store.con.unregister("_run_candidates")


def _num(value: Any) -> float | None:
    """A float for SQL, None for NaN/NA."""
    return None if value is None or pd.isna(value) else float(value)


def alarm_table(store: Store, *, include_closed: bool = False) -> pd.DataFrame:
    """The store's alarms, open first, newest onset first within each status.

    Returns
    -------
    DataFrame
        The ``alarms`` table (``onset``, ``first_seen_at``... UTC) plus
        ``runs_seen`` (runs that detected it). Empty when no run was recorded.
    """
    if not store.has_table("alarms"):
        return pd.DataFrame()
    where = "" if include_closed else "WHERE a.status = 'open'"
    return store.query(
        "SELECT a.*, (SELECT count(*) FROM alarm_history h WHERE h.alarm_id = a.alarm_id "
        "AND h.state IN ('new', 'continuing')) AS runs_seen "
        f"FROM alarms a {where} ORDER BY a.status DESC, a.onset DESC, a.alarm_id")


def alarm_history(store: Store, alarm_ids: list[int] | None = None) -> pd.DataFrame:
    """The history rows of alarms (all, or ``alarm_ids``), with their run's window, oldest run first."""
    if not store.has_table("alarm_history"):
        return pd.DataFrame()
    df = store.query("SELECT h.*, r.started_at, r.window_start, r.window_end FROM alarm_history h "
                   "LEFT JOIN runs r USING (run_id) ORDER BY h.alarm_id, h.run_id")
    return df if alarm_ids is None else df[df["alarm_id"].isin(alarm_ids)].reset_index(drop=True)


def require_runs(store: Store) -> None:
    """Raise when the store holds no alarm tables (a store no run was recorded in, opened read-only)."""
    if not store.has_table("alarms"):
        raise InputError("the store holds no runs yet", path=store.path,
                         fix="run `twin localise --store DB --network ...` first")
