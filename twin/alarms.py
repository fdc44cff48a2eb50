"""The nightly job's memory: runs, leak alarms and their history, kept in the store.

Every run of the leak-localisation job from the store
(:func:`twin.pipeline.localise_store`) is recorded with its window and counts
(table ``runs``). Each leak it detects is matched against the alarms still
open from earlier nights. A leak is the same as an open alarm when both lie
in the same DMA (or either is network-wide) and their onsets differ by at
most ``settings.ALARM_ONSET_TOLERANCE_H`` hours; the closest pair (onset and
flow) is matched first, and each alarm takes at most one leak. Then:

- **continuing**: tonight's flow is within ``settings.ALARM_FLOW_TOLERANCE``
  of the alarm's (or ``settings.ALARM_FLOW_TOLERANCE_LPS`` L/s, whichever is
  more), or larger (a growing leak, noted in the history);
- **closed**, "flow fell ... (repair?)": tonight's flow is smaller beyond that
  tolerance. The step is fitted from the onset to the end of the window, so
  a leak repaired inside the window shows as a smaller step (its mean since
  the onset), not as a new leak;
- **new**: no open alarm matches;
- an open alarm that no leak matches is **closed**, "step gone (repair?)",
  when the run's window could have seen its step
  (``settings.ALARM_COVER_BEFORE_H`` hours of readings before its onset,
  ``settings.ALARM_COVER_AFTER_H`` after), and **unchecked** otherwise (it
  stays open). A run from the store starts its window early enough to see
  every open alarm's step, within ``settings.ALARM_LOOKBACK_DAYS`` days
  (:func:`window_for_alarms`).

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

#: States of an alarm in a run (``alarm_history.state``).
STATES = ("new", "continuing", "closed", "reopened", "stays closed", "unchecked")

#: Why :func:`record_run` closes an alarm.
STEP_GONE = "step gone (repair?)"


@dataclass(frozen=True)
class Window:
    """The readings period of one run: ``[start, end)``, UTC."""

    start: pd.Timestamp
    end: pd.Timestamp

    def covers(self, onset: pd.Timestamp, *, before_h: float = settings.ALARM_COVER_BEFORE_H,
               after_h: float = settings.ALARM_COVER_AFTER_H) -> bool:
        """Whether a step at ``onset`` lies far enough inside the window for detection to see it."""
        return bool(self.start + pd.Timedelta(hours=before_h) <= onset <= self.end - pd.Timedelta(hours=after_h))

    @property
    def days(self) -> float:
        """Length, days."""
        return (self.end - self.start) / pd.Timedelta(days=1)


def window_for_alarms(window: Window, alarms: pd.DataFrame, *, max_days: int = settings.ALARM_LOOKBACK_DAYS,
                      before_h: float = settings.ALARM_COVER_BEFORE_H) -> Window:
    """Start ``window`` early enough to see the step of every open alarm, within ``max_days`` days.

    Parameters
    ----------
    window : Window
        The run's window (local midnights).
    alarms : DataFrame
        Open alarms (``onset`` UTC).
    max_days : int
        Longest window, days.
    before_h : float
        Hours of readings needed before an onset.

    Returns
    -------
    Window
        Same end; start at a local midnight, never later than ``window.start``
        and never more than ``max_days`` before the end.
    """
    if not len(alarms):
        return window
    need = (pd.to_datetime(alarms["onset"], utc=True).min() - pd.Timedelta(hours=before_h)).tz_convert(settings.TIMEZONE)
    start = max(need.floor("D").tz_convert("UTC"), window.end - pd.Timedelta(days=max_days))
    return Window(min(start, window.start), window.end)


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
    dma_a: str, onset_a: pd.Timestamp, dma_b: str, onset_b: pd.Timestamp, *,
    onset_tolerance_h: float = settings.ALARM_ONSET_TOLERANCE_H,
) -> bool:
    """Whether two detections are the same leak: the same DMA (or either network-wide) and close onsets."""
    if dma_a != dma_b and NETWORK not in (dma_a, dma_b):
        return False
    return abs(onset_a - onset_b) <= pd.Timedelta(hours=onset_tolerance_h)


def flow_verdict(
    flow_lps: float, alarm_flow_lps: float, *,
    flow_tolerance: float = settings.ALARM_FLOW_TOLERANCE,
    flow_tolerance_lps: float = settings.ALARM_FLOW_TOLERANCE_LPS,
) -> str:
    """How tonight's step of a known leak compares with the alarm's flow (L/s).

    Returns
    -------
    str
        ``'continuing'`` (within the tolerance, or larger: a growing leak) or
        ``'closed'`` (smaller beyond the tolerance: the step fitted from the
        onset to the end of the window averages a leak that stopped part-way,
        a repair).
    """
    allowed = max(flow_tolerance * max(abs(flow_lps), abs(alarm_flow_lps)), flow_tolerance_lps)
    return "closed" if alarm_flow_lps - flow_lps > allowed else "continuing"


def match_alarms(
    leaks: pd.DataFrame,
    alarms: pd.DataFrame,
    window: Window,
    *,
    onset_tolerance_h: float = settings.ALARM_ONSET_TOLERANCE_H,
    flow_tolerance: float = settings.ALARM_FLOW_TOLERANCE,
    flow_tolerance_lps: float = settings.ALARM_FLOW_TOLERANCE_LPS,
    cover_before_h: float = settings.ALARM_COVER_BEFORE_H,
    cover_after_h: float = settings.ALARM_COVER_AFTER_H,
) -> tuple[pd.DataFrame, pd.Series]:
    """Match a run's leaks to the known alarms (the rule of this module's docstring).

    Parameters
    ----------
    leaks : DataFrame
        :func:`leaks_from_report`.
    alarms : DataFrame
        ``alarm_id``, ``dma``, ``onset`` (UTC), ``flow_lps`` and ``status``
        (``open``, or ``closed`` for alarms closed earlier whose step may
        still be in the window; default open).
    window : Window
        The run's readings period.
    onset_tolerance_h, flow_tolerance, flow_tolerance_lps, cover_before_h, cover_after_h : float
        The rule's tolerances (hours, share, L/s, hours, hours).

    Returns
    -------
    matched : DataFrame
        On ``leaks``' index: ``alarm_id`` (Int64; NA for a new leak) and
        ``state``: ``'new'``; for an open alarm ``'continuing'`` or
        ``'closed'`` (its flow fell: it stopped inside the window); for a
        closed one ``'reopened'`` (the step is back at its flow) or
        ``'stays closed'`` (the stopped leak's smaller step, still in the
        window). Open alarms are matched before closed ones.
    unseen : Series
        Index the ``alarm_id`` of open alarms no leak matched; value
        ``'closed'`` (the window covers the onset, the step is gone) or
        ``'unchecked'``.
    """
    status = alarms["status"] if "status" in alarms else pd.Series("open", index=alarms.index)
    pairs = []
    for i, leak in leaks.iterrows():
        for alarm, st in zip(alarms.itertuples(index=False), status):
            if same_leak(leak["dma"], leak["onset"], alarm.dma, alarm.onset, onset_tolerance_h=onset_tolerance_h):
                hours = abs(leak["onset"] - alarm.onset) / pd.Timedelta(hours=1)
                cost = hours / onset_tolerance_h + abs(leak["flow_lps"] - alarm.flow_lps) / max(alarm.flow_lps, 1e-9)
                pairs.append((st != "open", cost, i, int(alarm.alarm_id), float(alarm.flow_lps), st))
    matched = pd.DataFrame({"alarm_id": pd.Series(pd.NA, index=leaks.index, dtype="Int64"),
                            "state": pd.Series("new", index=leaks.index, dtype=object)})
    taken: set[int] = set()
    for _, _, i, alarm_id, alarm_flow, st in sorted(pairs):  # open first, closest first, each side once
        if pd.isna(matched.at[i, "alarm_id"]) and alarm_id not in taken:
            verdict = flow_verdict(leaks.at[i, "flow_lps"], alarm_flow, flow_tolerance=flow_tolerance,
                                   flow_tolerance_lps=flow_tolerance_lps)
            if st != "open":
                verdict = "reopened" if verdict == "continuing" else "stays closed"
            matched.at[i, "alarm_id"] = alarm_id
            matched.at[i, "state"] = verdict
            taken.add(alarm_id)
    rest = alarms[status.eq("open").to_numpy() & ~alarms["alarm_id"].astype(int).isin(taken).to_numpy()]
    unseen = pd.Series({int(a.alarm_id): "closed" if window.covers(a.onset, before_h=cover_before_h,
                                                                   after_h=cover_after_h) else "unchecked"
                        for a in rest.itertuples(index=False)}, dtype=object)
    return matched, unseen


def known_alarms(store: Store, window: Window | None = None,
                 onset_tolerance_h: float = settings.ALARM_ONSET_TOLERANCE_H) -> pd.DataFrame:
    """The open alarms, and (with ``window``) the closed ones whose onset lies in it, oldest first.

    Returns
    -------
    DataFrame
        Rows of the ``alarms`` table (``onset`` UTC).
    """
    if not store.has_table("alarms"):
        return pd.DataFrame(columns=["alarm_id", "dma", "onset", "flow_lps", "status"])
    sql, params = "SELECT * FROM alarms WHERE status = 'open'", []
    if window is not None:
        sql += " OR (status = 'closed' AND onset >= CAST(? AS TIMESTAMPTZ))"
        params.append((window.start - pd.Timedelta(hours=onset_tolerance_h)).isoformat())
    df = store.query(sql + " ORDER BY alarm_id", params)
    df["onset"] = pd.to_datetime(df["onset"], utc=True)
    return df


def open_alarms(store: Store) -> pd.DataFrame:
    """The store's open alarms (``alarm_id``, ``dma``, ``onset`` UTC, ``flow_lps``...), oldest first."""
    return known_alarms(store)


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
        alarms = known_alarms(store, window)
        matched, unseen = match_alarms(leaks, alarms, window, **tolerances)
        now = pd.Timestamp.now(tz="UTC")
        states = _write_alarms(store, run_id, now, leaks, matched, alarms, unseen)
        _write_candidates(store, run_id, candidates, leaks, states)
        counts = {s: int((states["state"] == s).sum()) for s in STATES}
        _insert_run(store, run_id, window, report, status="leak" if len(leaks) else "no leak", leaks=len(leaks),
                    counts=counts, started_at=started_at, finished_at=now, days=days, network=network,
                    network_sha256=network_sha256, out_dir=out_dir)
    log.info("run %d: %d leak(s); alarms %s", run_id, len(leaks), ", ".join(f"{k} {v}" for k, v in counts.items()))
    return RunRecord(run_id, states, counts)


def record_failed_run(store: Store, window: Window, error: BaseException, *, started_at: pd.Timestamp, days: int,
                      network: str, network_sha256: str | None = None, out_dir: str | None = None) -> int:
    """Record a run that stopped on bad input (status ``failed: ...``); the alarms are left as they were.

    Returns
    -------
    int
        The run's ``run_id``.
    """
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    with store.transaction():
        run_id = _next_id(store, "runs", "run_id")
        _insert_run(store, run_id, window, {"error": message}, status=f"failed: {message}"[:500], leaks=0,
                    counts=dict.fromkeys(STATES, 0), started_at=started_at, finished_at=pd.Timestamp.now(tz="UTC"),
                    days=days, network=network, network_sha256=network_sha256, out_dir=out_dir)
    return run_id


def _insert_run(store: Store, run_id: int, window: Window, report: dict[str, Any], *, status: str, leaks: int,
                counts: dict[str, int], started_at: pd.Timestamp, finished_at: pd.Timestamp, days: int, network: str,
                network_sha256: str | None, out_dir: str | None) -> None:
    """One row of the ``runs`` table."""
    store.con.execute(
        "INSERT INTO runs (run_id, started_at, finished_at, window_start, window_end, days, network, "
        "network_sha256, status, leaks, new_alarms, continuing, closed, reopened, unchecked, readings_rows, "
        "out_dir, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, started_at.isoformat(), finished_at.isoformat(), window.start.isoformat(), window.end.isoformat(),
         int(days), str(network), network_sha256, status, leaks, counts["new"], counts["continuing"],
         counts["closed"], counts["reopened"], counts["unchecked"],
         int((report.get("data") or {}).get("readings_rows", 0) or 0), out_dir, json.dumps(report, default=str)])


def _next_id(store: Store, table: str, column: str) -> int:
    return int(store.con.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}").fetchall()[0][0])


def _write_alarms(store: Store, run_id: int, now: pd.Timestamp, leaks: pd.DataFrame, matched: pd.DataFrame,
                  alarms: pd.DataFrame, unseen: pd.Series) -> pd.DataFrame:
    """Insert new alarms, update continuing and closed ones, append the history; return the states."""
    rows = []
    next_alarm = _next_id(store, "alarms", "alarm_id")
    first_seen = {int(a): int(r) for a, r in zip(alarms["alarm_id"], alarms.get("first_seen_run", []))}
    for i, leak in leaks.iterrows():
        state = matched.at[i, "state"]
        if state == "new":
            alarm_id, next_alarm = next_alarm, next_alarm + 1
            first_seen[alarm_id] = run_id
            _insert_alarm(store, alarm_id, leak, run_id, now)
            note = None
        else:
            alarm_id = int(matched.at[i, "alarm_id"])
            old = float(alarms.loc[alarms["alarm_id"].astype(int) == alarm_id, "flow_lps"].iat[0])
            note = _update_alarm(store, alarm_id, state, leak, old, run_id, now)
        _history(store, alarm_id, run_id, state, leak, note)
        rows.append({"alarm_id": alarm_id, "state": state, "dma": leak["dma"], "onset": leak["onset"],
                     "flow_lps": float(leak["flow_lps"]), "first_seen_run": first_seen[alarm_id],
                     "leak_id": leak["leak_id"], "note": note})
    by_id = alarms.set_index(alarms["alarm_id"].astype(int)) if len(alarms) else alarms
    for alarm_id, state in unseen.items():
        alarm = by_id.loc[alarm_id]
        if state == "closed":
            note = STEP_GONE
            _close(store, int(alarm_id), run_id, now, STEP_GONE)
        else:
            note = "onset before the window: its step cannot be seen; kept open"
        _history(store, int(alarm_id), run_id, state, None, note)
        rows.append({"alarm_id": int(alarm_id), "state": state, "dma": alarm["dma"], "onset": alarm["onset"],
                     "flow_lps": float(alarm["flow_lps"]), "first_seen_run": first_seen.get(int(alarm_id)),
                     "leak_id": pd.NA, "note": note})
    return pd.DataFrame(rows, columns=["alarm_id", "state", "dma", "onset", "flow_lps", "first_seen_run",
                                       "leak_id", "note"])


def _insert_alarm(store: Store, alarm_id: int, leak: pd.Series, run_id: int, now: pd.Timestamp) -> None:
    store.con.execute("INSERT INTO alarms (alarm_id, dma, onset, flow_lps, first_seen_run, last_seen_run, "
                      "first_seen_at, last_seen_at, status, top_link_id, top_p) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
                      [alarm_id, leak["dma"], leak["onset"].isoformat(), float(leak["flow_lps"]), run_id, run_id,
                       now.isoformat(), now.isoformat(), leak["top_link_id"], _num(leak["top_p"])])


def _update_alarm(store: Store, alarm_id: int, state: str, leak: pd.Series, old_flow: float, run_id: int,
                  now: pd.Timestamp) -> str | None:
    """A known leak seen again: update a continuing alarm, close one whose flow fell, reopen one; return the note."""
    flow = float(leak["flow_lps"])
    if state == "stays closed":
        return f"already closed: the stopped leak's smaller step ({flow:.2f} L/s) is still in the window"
    if state == "reopened":
        store.con.execute("UPDATE alarms SET status = 'open', closed_at = NULL, closed_run = NULL, "
                          "closed_reason = NULL WHERE alarm_id = ?", [alarm_id])
    if state == "closed":
        note = (f"flow fell from {old_flow:.2f} to {float(leak['flow_lps']):.2f} L/s: the leak stopped inside "
                "the window (repair?)")
        store.con.execute("UPDATE alarms SET last_seen_run = ?, last_seen_at = ? WHERE alarm_id = ?",
                          [run_id, now.isoformat(), alarm_id])
        _close(store, alarm_id, run_id, now, note)
        return note
    store.con.execute(
        "UPDATE alarms SET onset = ?, flow_lps = ?, last_seen_run = ?, last_seen_at = ?, top_link_id = ?, top_p = ?, "
        "dma = CASE WHEN dma = ? THEN ? ELSE dma END WHERE alarm_id = ?",
        [leak["onset"].isoformat(), float(leak["flow_lps"]), run_id, now.isoformat(), leak["top_link_id"],
         _num(leak["top_p"]), NETWORK, leak["dma"], alarm_id])
    if state == "reopened":
        return f"reopened: the step is back at {flow:.2f} L/s (the repair did not hold?)"
    grew = flow - old_flow > max(settings.ALARM_FLOW_TOLERANCE * old_flow, settings.ALARM_FLOW_TOLERANCE_LPS)
    return f"flow grew from {old_flow:.2f} to {flow:.2f} L/s" if grew else None


def _close(store: Store, alarm_id: int, run_id: int, now: pd.Timestamp, reason: str) -> None:
    store.con.execute("UPDATE alarms SET status = 'closed', closed_at = ?, closed_run = ?, closed_reason = ? "
                      "WHERE alarm_id = ?", [now.isoformat(), run_id, reason, alarm_id])


def _history(store: Store, alarm_id: int, run_id: int, state: str, leak: pd.Series | None, note: str | None) -> None:
    """One ``alarm_history`` row; ``leak`` None for an alarm the run did not see."""
    seen = [None] * 6 if leak is None else [
        leak["onset"].isoformat(), float(leak["flow_lps"]), _num(leak["t_stat"]), leak["top_link_id"],
        _num(leak["top_p"]), _num(leak["top_p_within_300m"])]
    store.con.execute("INSERT INTO alarm_history (alarm_id, run_id, state, onset, flow_lps, t_stat, top_link_id, "
                      "top_p, top_p_within_300m, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      [alarm_id, run_id, state, *seen, note])


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
        store.con.execute("INSERT INTO candidates BY NAME SELECT * FROM _run_candidates")
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
        ``runs_seen`` (runs that detected its step). Empty when no run was recorded.
    """
    if not store.has_table("alarms"):
        return pd.DataFrame()
    where = "" if include_closed else "WHERE a.status = 'open'"
    return store.query(
        "SELECT a.*, (SELECT count(*) FROM alarm_history h WHERE h.alarm_id = a.alarm_id "
        "AND h.flow_lps IS NOT NULL) AS runs_seen "
        f"FROM alarms a {where} ORDER BY a.status DESC, a.onset DESC, a.alarm_id")


def alarm_history(store: Store, alarm_ids: list[int] | None = None) -> pd.DataFrame:
    """The history rows of alarms (all, or ``alarm_ids``), with their run's window, oldest run first."""
    if not store.has_table("alarm_history"):
        return pd.DataFrame()
    df = store.query("SELECT h.*, r.started_at, r.window_start, r.window_end FROM alarm_history h "
                   "LEFT JOIN runs r USING (run_id) ORDER BY h.alarm_id, h.run_id")
    return df if alarm_ids is None else df[df["alarm_id"].isin(alarm_ids)].reset_index(drop=True)


def alarm_candidates(store: Store, alarm_id: int, *, top: int = 10) -> pd.DataFrame:
    """The best ``top`` candidates of the last run that saw an alarm (``run_id``, ``rank``, ``link_id``, ``score``...)."""
    if not store.has_table("candidates"):
        return pd.DataFrame()
    return store.query(
        'SELECT * FROM candidates WHERE alarm_id = ? AND run_id = (SELECT max(run_id) FROM candidates '
        'WHERE alarm_id = ?) ORDER BY "rank" LIMIT ?', [int(alarm_id), int(alarm_id), int(top)])


def require_runs(store: Store) -> None:
    """Raise when the store holds no alarm tables (a store no run was recorded in, opened read-only)."""
    if not store.has_table("alarms"):
        raise InputError("the store holds no runs yet", path=store.path,
                         fix="run `twin localise --store DB --network ...` first")
