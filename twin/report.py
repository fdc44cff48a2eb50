"""The morning report: one self-contained HTML page per night, built from the store.

For one run of the nightly job (:func:`twin.pipeline.localise_store`, kept in
the store by :mod:`twin.alarms`) the page shows:

- a plain-language header: districts watched, open leaks and their total
  flow, what changed since the previous run (new, closed, grown);
- the open alarms (and those closed that night): district, onset, flow,
  state that night, the top candidate pipe with its probability, and
  relative links to the run's crew map, work orders and work-order sheets;
- per district a small chart of the daily inflow against the metered
  consumption over the last :data:`PLOT_DAYS` days (mean L/s per local day,
  :func:`twin.balance.water_balance`), the detected step marked at its onset;
- the NRW trend of every district over the last :data:`TREND_DAYS` days as
  sparklines (complete days only, balance flags marked).

The page needs nothing at run time: the charts are inline SVG drawn here,
the style sheet is inline and there is no script (the crew map carries its
own Leaflet, :func:`twin.maps.offline_html`). Every name taken from data
(district, pipe, note) is HTML-escaped.
"""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import InputError, TwinError
from twin.store import Store

log = logging.getLogger(__name__)

#: File name of the page in a night's output folder.
REPORT_NAME = "report.html"
#: Local days of inflow and consumption drawn per district.
PLOT_DAYS = 14
#: Local days of the NRW trend.
TREND_DAYS = 42
#: Most districts drawn with an inflow chart (alarms and flagged districts first).
MAX_PLOTS = 24
#: ``alarm_history.state`` values after which an alarm is open.
OPEN_STATES = ("new", "continuing", "reopened", "unchecked")
_M3_PER_DAY_PER_LPS = 86.4


def _e(value: Any) -> str:
    """``value`` as escaped HTML text or attribute value ('' for missing)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)


def _local(ts: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC time as local text ('' when missing)."""
    return "" if ts is None or pd.isna(ts) else pd.Timestamp(ts).tz_convert(settings.TIMEZONE).strftime(fmt)


def _night_of(window_end: Any) -> date:
    """The last local day of a run's window (its end is the following local midnight or earlier)."""
    return (pd.Timestamp(window_end).tz_convert(settings.TIMEZONE) - pd.Timedelta(seconds=1)).date()


# ------------------------------------------------------------------ what the store says about a night


def select_run(store: Store, night: Any = None, *, run_id: int | None = None) -> pd.Series:
    """The run a report is about: run ``run_id``, the latest run of local day ``night``, or the latest run.

    Parameters
    ----------
    store : Store
        A store the nightly job recorded runs in.
    night : date or str, optional
        Local day (``YYYY-MM-DD``) the run's window ends on.
    run_id : int, optional
        A run's number instead.

    Returns
    -------
    Series
        A row of the ``runs`` table plus ``night`` (a ``datetime.date``).

    Raises
    ------
    InputError
        No run recorded, ``night`` not a date, or no run of that night.
    """
    if not store.has_table("runs") or not store.query("SELECT count(*) AS n FROM runs")["n"].iat[0]:
        raise InputError("the store holds no runs yet", path=store.path,
                         fix="run `twin localise --store DB --network ...` first")
    runs = store.query("SELECT * FROM runs ORDER BY run_id")
    runs["night"] = [_night_of(t) for t in runs["window_end"]]
    if run_id is not None:
        chosen = runs[runs["run_id"] == int(run_id)]
        if chosen.empty:
            raise InputError(f"the store has no run #{run_id}", path=store.path, fix="run `twin alarms --store DB`")
        return chosen.iloc[0]
    if night is None:
        return runs.iloc[-1]
    try:
        day = night if isinstance(night, date) else date.fromisoformat(str(night))
    except ValueError:
        raise InputError(f"{night!r} is not a date", element="--night",
                         fix="give a local day as YYYY-MM-DD, e.g. --night 2026-03-08") from None
    of_day = runs[runs["night"] == day]
    if of_day.empty:
        raise InputError(f"no run of the night of {day}", path=store.path, element="--night",
                         fix=f"the runs cover {runs['night'].min()} to {runs['night'].max()}; pick one of those days")
    return of_day.iloc[-1]


def night_alarms(store: Store, run_id: int) -> pd.DataFrame:
    """The alarms as they stood after run ``run_id``: the open ones and those that run closed.

    Returns
    -------
    DataFrame
        One row per alarm: ``alarm_id``, ``dma``, ``state`` (that run's state,
        ``'not checked'`` when the run did not touch it), ``open`` (bool),
        ``onset`` (UTC) and ``flow_lps`` (L/s) of its latest sighting up to
        the run, ``seen_run`` (that sighting's run), ``first_seen_run``,
        ``top_link_id``, ``top_p``, ``top_p_within_300m`` and ``note``.
        Open alarms first, largest flow first.
    """
    cols = ["alarm_id", "dma", "state", "open", "onset", "flow_lps", "seen_run", "first_seen_run", "top_link_id",
            "top_p", "top_p_within_300m", "note"]
    if not store.has_table("alarm_history"):
        return pd.DataFrame(columns=cols)
    hist = store.query("SELECT h.*, a.dma, a.first_seen_run FROM alarm_history h JOIN alarms a USING (alarm_id) "
                       "WHERE h.run_id <= ? ORDER BY h.alarm_id, h.run_id", [int(run_id)])
    rows = []
    for alarm_id, h in hist.groupby("alarm_id", sort=True):
        last, seen = h.iloc[-1], h[h["flow_lps"].notna()]
        state = str(last["state"]) if int(last["run_id"]) == int(run_id) else "not checked"
        is_open = str(last["state"]) in OPEN_STATES
        if not is_open and state != "closed" or seen.empty:
            continue
        s = seen.iloc[-1]
        rows.append({"alarm_id": int(alarm_id), "dma": last["dma"], "state": state, "open": is_open,
                     "onset": s["onset"], "flow_lps": float(s["flow_lps"]), "seen_run": int(s["run_id"]),
                     "first_seen_run": int(last["first_seen_run"]), "top_link_id": s["top_link_id"],
                     "top_p": s["top_p"], "top_p_within_300m": s["top_p_within_300m"], "note": last["note"]})
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        out["onset"] = pd.to_datetime(out["onset"], utc=True)
        out = out.sort_values(["open", "flow_lps"], ascending=[False, False]).reset_index(drop=True)
    return out


def report_balance(network: Any, store: Store, night: date, *, days: int = TREND_DAYS) -> pd.DataFrame:
    """The water balance of the ``days`` local days up to ``night`` (:func:`twin.balance.water_balance`)."""
    from twin.balance import water_balance  # deferred: only with a network

    first, last = store.time_range() or (None, None)
    if first is None:
        return pd.DataFrame()
    start = max(night - timedelta(days=days - 1), first.tz_convert(settings.TIMEZONE).date())
    return water_balance(network, store, start=str(start), end=str(night))


# ------------------------------------------------------------------ links to the night's files


@dataclass(frozen=True)
class _Links:
    """Where the report is written and where each run put its outputs."""

    here: Path
    out_dirs: dict[int, str]

    def to(self, run_id: int, rel: str) -> str | None:
        """Relative URL from the report to ``rel`` in run ``run_id``'s folder; None when the file is missing."""
        base = self.out_dirs.get(int(run_id))
        if not base:
            return None
        target = Path(base) / rel
        if not target.is_file():
            return None
        return Path(os.path.relpath(target.resolve(), self.here.resolve())).as_posix()


def _orders(links: _Links, run_id: int) -> pd.DataFrame:
    """The work orders a run wrote (``order_id``, ``link_id``), empty when none."""
    base = links.out_dirs.get(int(run_id))
    path = Path(base) / "plan" / "work_orders.csv" if base else None
    if path is None or not path.is_file():
        return pd.DataFrame(columns=["order_id", "link_id"])
    try:
        return pd.read_csv(path, usecols=["order_id", "link_id"], dtype=str)
    except (ValueError, OSError) as exc:
        log.warning("report: cannot read %s (%s); no work-order links", path, exc)
        return pd.DataFrame(columns=["order_id", "link_id"])


def _alarm_links(store: Store, links: _Links, alarm: pd.Series) -> str:
    """The crew map, work orders and sheets of the run that last saw an alarm, as HTML links."""
    run_id = int(alarm["seen_run"])
    parts = []
    if (url := links.to(run_id, "map.html")) is not None:
        parts.append(f'<a href="{_e(url)}">map</a>')
    if (url := links.to(run_id, "candidates.csv")) is not None:
        parts.append(f'<a href="{_e(url)}">candidates</a>')
    if (url := links.to(run_id, "plan/work_orders.csv")) is not None:
        parts.append(f'<a href="{_e(url)}">work orders</a>')
    orders = _orders(links, run_id)
    if len(orders) and store.has_table("candidates"):
        mine = set(store.query("SELECT link_id FROM candidates WHERE run_id = ? AND alarm_id = ?",
                               [run_id, int(alarm["alarm_id"])])["link_id"].astype(str))
        for o in orders.itertuples(index=False):
            if str(o.link_id) in mine and (url := links.to(run_id, f"plan/sheets/{o.order_id}.html")) is not None:
                parts.append(f'<a href="{_e(url)}">{_e(o.order_id)}</a>')
    return " · ".join(parts) if parts else '<span class="muted">no files</span>'


# ------------------------------------------------------------------ inline SVG charts


def _xy(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _step_points(x0: np.ndarray, x1: np.ndarray, y: np.ndarray) -> list[list[tuple[float, float]]]:
    """Runs of horizontal segments ``[x0, x1]`` at ``y``, broken at missing values."""
    runs: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    for a, b, v in zip(x0, x1, y):
        if not np.isfinite(v):
            if cur:
                runs.append(cur)
            cur = []
            continue
        cur += [(a, v), (b, v)]
    if cur:
        runs.append(cur)
    return runs


def balance_svg(days: pd.DataFrame, steps: pd.DataFrame, *, title: str, width: int = 340,
                height: int = 170) -> str:
    """A district's daily inflow against its metered consumption, with detected steps marked.

    Parameters
    ----------
    days : DataFrame
        The district's rows of :func:`twin.balance.water_balance` (``date``,
        ``siv_m3``, ``consumption_m3``, ``flag``), oldest first.
    steps : DataFrame
        Its alarms: ``onset`` (UTC), ``flow_lps`` (L/s), ``alarm_id``, ``open``.
    title : str
        Accessible title (escaped here).
    width, height : int
        Pixels.

    Returns
    -------
    str
        An ``<svg>`` element: inflow and consumption as mean L/s per local day
        (partial days lighter), the gap between them (NRW) shaded, each step a
        red line at its onset labelled with its flow.
    """
    left, right, top, bottom = 34, 8, 16, 20
    pw, ph = width - left - right, height - top - bottom
    d0 = pd.Timestamp(days["date"].iloc[0]).tz_localize(settings.TIMEZONE)
    n = (pd.Timestamp(days["date"].iloc[-1]) - pd.Timestamp(days["date"].iloc[0])).days + 1
    off = np.array([(pd.Timestamp(d) - pd.Timestamp(days["date"].iloc[0])).days for d in days["date"]], float)
    inflow = days["siv_m3"].to_numpy(float) / _M3_PER_DAY_PER_LPS
    used = days["consumption_m3"].to_numpy(float) / _M3_PER_DAY_PER_LPS
    finite = np.concatenate([inflow[np.isfinite(inflow)], used[np.isfinite(used)], [0.0]])
    ymax = float(finite.max()) * 1.12 or 1.0
    ymin = min(0.0, float(finite.min()))

    def px(day_offset: np.ndarray | float) -> np.ndarray | float:
        return left + pw * np.asarray(day_offset, float) / n

    def py(v: np.ndarray | float) -> np.ndarray | float:
        return top + ph * (1 - (np.asarray(v, float) - ymin) / (ymax - ymin))

    x0, x1 = px(off), px(off + 1)
    partial = days["flag"].astype(str).str.contains("partial").to_numpy()
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>{_e(title)}</title>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>']
    for a, b, i, u, part in zip(x0, x1, inflow, used, partial):  # the NRW gap, day by day
        if np.isfinite(i) and np.isfinite(u):
            y_hi, y_lo = py(max(i, u)), py(min(i, u))
            out.append(f'<rect x="{a:.1f}" y="{y_hi:.1f}" width="{b - a:.1f}" height="{y_lo - y_hi:.1f}" '
                       f'class="gap{" partial" if part else ""}"/>')
    for series, cls in ((used, "used"), (inflow, "inflow")):
        for pts in _step_points(x0, x1, py(series)):
            out.append(f'<polyline points="{_xy(pts)}" class="{cls}"/>')
    for s in steps.itertuples(index=False):
        at = (pd.Timestamp(s.onset).tz_convert(settings.TIMEZONE) - d0) / pd.Timedelta(days=1)
        if 0 <= at <= n:
            x = float(px(at))
            anchor = "end" if x > left + 0.6 * pw else "start"
            dx = -3 if anchor == "end" else 3
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" class="step"/>'
                       f'<text x="{x + dx:.1f}" y="{top + 10}" text-anchor="{anchor}" class="steplabel">'
                       f'#{int(s.alarm_id)} +{s.flow_lps:.2f} L/s</text>')
    for v in (ymin, (ymin + ymax) / 2, ymin + (ymax - ymin) * 0.95):
        out.append(f'<text x="{left - 3}" y="{py(v) + 3:.1f}" text-anchor="end" class="tick">{v:.1f}</text>')
    out.append(f'<text x="{left - 3}" y="{top - 5}" text-anchor="end" class="tick">L/s</text>')
    for i in sorted({0, n - 1}):
        day = (pd.Timestamp(days["date"].iloc[0]) + pd.Timedelta(days=i)).strftime("%d %b")
        anchor = "start" if i == 0 else "end"
        x = left if i == 0 else left + pw
        out.append(f'<text x="{x}" y="{height - 5}" text-anchor="{anchor}" class="tick">{day}</text>')
    out.append("</svg>")
    return "".join(out)


def sparkline_svg(values: np.ndarray, flagged: np.ndarray, *, title: str, width: int = 180,
                  height: int = 34) -> str:
    """A sparkline of a daily series (missing days as gaps), flagged days as red dots, the last value a dot.

    Parameters
    ----------
    values : ndarray
        One value per day, oldest first (NaN: no value).
    flagged : ndarray of bool
        Days to mark.
    title : str
        Accessible title (escaped here).
    width, height : int
        Pixels.
    """
    v = np.asarray(values, float)
    ok = np.isfinite(v)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img"><title>{_e(title)}</title>']
    if ok.any():
        lo = float(min(0.0, v[ok].min()))  # from zero: a leak's step reads as its share of the district's NRW
        hi = float(v[ok].max()) * 1.15
        hi = hi if hi > lo else lo + 1.0
        out.append(f'<line x1="2" y1="{height - 2}" x2="{width - 2}" y2="{height - 2}" class="base"/>')
        x = 2 + (width - 4) * (np.arange(len(v)) + 0.5) / max(len(v), 1)
        y = 2 + (height - 4) * (1 - (v - lo) / (hi - lo))
        pts: list[tuple[float, float]] = []
        for xi, yi, good in zip(x, y, ok):
            if good:
                pts.append((xi, yi))
            elif pts:
                out.append(f'<polyline points="{_xy(pts)}" class="sparkline"/>')
                pts = []
        if pts:
            out.append(f'<polyline points="{_xy(pts)}" class="sparkline"/>')
        for xi, yi in zip(x[ok & flagged], y[ok & flagged]):
            out.append(f'<circle cx="{xi:.1f}" cy="{yi:.1f}" r="2.5" class="flagdot"/>')
        last = np.flatnonzero(ok)[-1]
        out.append(f'<circle cx="{x[last]:.1f}" cy="{y[last]:.1f}" r="2" class="lastdot"/>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------ the page


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.2em auto; max-width: 1180px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.lead { font-size: 1.1em; } .muted { color: #777; } .failed { color: #b00; font-weight: bold; }
table { border-collapse: collapse; } th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.new td:first-child, tr.reopened td:first-child { border-left: 4px solid #c0392b; }
tr.closed { color: #777; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; } .card { border: 1px solid #ddd; border-radius: 4px; padding: 4px 6px; }
.card h3 { font-size: .95em; margin: 0 0 2px; } .card.alarm { border-color: #c0392b; }
svg .plot { fill: #fafafa; stroke: #ddd; } svg .gap { fill: #f5b041; opacity: .45; } svg .gap.partial { opacity: .18; }
svg .inflow { fill: none; stroke: #1f5fa8; stroke-width: 2; } svg .used { fill: none; stroke: #2e8b57; stroke-width: 2; }
svg .step { stroke: #c0392b; stroke-width: 1.5; stroke-dasharray: 4 3; } svg .steplabel { fill: #c0392b; font-size: 10px; }
svg .tick { fill: #666; font-size: 9px; } svg .sparkline { fill: none; stroke: #555; stroke-width: 1.3; }
svg .flagdot { fill: #c0392b; } svg .base { stroke: #ddd; } svg .lastdot { fill: #1f5fa8; }
.key i { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin: 0 4px 0 10px; }
"""


def _header(run: pd.Series, previous: pd.Series | None, alarms: pd.DataFrame, balance: pd.DataFrame,
            links: _Links) -> str:
    """The title and the plain-language summary of the night."""
    role = balance.get("role", pd.Series("district", index=balance.index))
    districts = sorted(set(balance["dma"][role.eq("district")])) if len(balance) else []
    opened = alarms[alarms["open"]] if len(alarms) else alarms
    total = float(opened["flow_lps"].sum()) if len(opened) else 0.0
    lines = [f"<h1>Morning report, night of {_e(run['night'])}</h1>",
             f'<p class="muted">Run #{int(run["run_id"])}, readings {_e(_local(run["window_start"]))} to '
             f'{_e(_local(run["window_end"]))} (local time, {_e(settings.TIMEZONE)}); made '
             f'{_e(pd.Timestamp.now(tz=settings.TIMEZONE).strftime("%Y-%m-%d %H:%M"))}.</p>']
    if str(run["status"]).startswith("failed"):
        lines.append(f'<p class="failed">The night\'s run failed: {_e(run["status"])}. The alarms below are as '
                     "the last good run left them.</p>")
    watched = f"{len(districts)} districts watched" if districts else "Districts: no water balance available"
    if len(opened):
        where = ", ".join(f"{_e(a.dma)} ({a.flow_lps:.1f} L/s)" for a in opened.itertuples(index=False))
        leaks = (f"<b>{len(opened)} open leak{'s' if len(opened) != 1 else ''}</b>, {total:.1f} L/s in all "
                 f"(about {total * _M3_PER_DAY_PER_LPS:,.0f} m³ a day): {where}")
    else:
        leaks = "<b>no open leak</b>"
    lines.append(f'<p class="lead">{watched}; {leaks}.</p>')
    lines.append(f'<p class="lead">{_changes(run, previous, alarms)}</p>')
    files = [(rel, label) for rel, label in (("map.html", "crew map"), ("candidates.csv", "ranked pipes"),
                                             ("plan/work_orders.csv", "work orders"), ("report.json", "run report"))
             if links.to(int(run["run_id"]), rel) is not None]
    if files:
        lines.append("<p>This night's files: " + " · ".join(
            f'<a href="{_e(links.to(int(run["run_id"]), rel))}">{label}</a>' for rel, label in files) + "</p>")
    return "\n".join(lines)


def _changes(run: pd.Series, previous: pd.Series | None, alarms: pd.DataFrame) -> str:
    """What changed since the previous run, in one sentence."""
    if previous is None:
        return "This is the first run recorded in the store."
    state = alarms["state"].value_counts().to_dict() if len(alarms) else {}
    grew = int(alarms["note"].astype(str).str.startswith("flow grew").sum()) if len(alarms) else 0
    parts = [f"{state.get('new', 0)} new", f"{state.get('closed', 0)} closed"]
    if state.get("reopened"):
        parts.append(f"{state['reopened']} reopened")
    if grew:
        parts.append(f"{grew} growing")
    if state.get("unchecked"):
        parts.append(f"{state['unchecked']} could not be checked (onset outside the window)")
    return (f"Since the night of {_e(previous['night'])} (run #{int(previous['run_id'])}): "
            + ", ".join(parts) + ".")


def _alarm_table(store: Store, alarms: pd.DataFrame, links: _Links) -> str:
    """The open alarms and those closed that night, as an HTML table."""
    if not len(alarms):
        return "<h2>Alarms</h2><p>No open alarm.</p>"
    head = ("<tr><th>#</th><th>district</th><th>tonight</th><th>leak since (local)</th><th>flow L/s</th>"
            "<th>m³/day</th><th>first seen</th><th>most likely pipe</th><th>p</th><th>p within 300 m</th>"
            "<th>files</th><th>note</th></tr>")
    rows = []
    for _, a in alarms.iterrows():
        cls = a["state"] if a["open"] or a["state"] != "closed" else "closed"
        p = "" if pd.isna(a["top_p"]) else f"{float(a['top_p']):.2f}"
        p300 = "" if pd.isna(a["top_p_within_300m"]) else f"{float(a['top_p_within_300m']):.2f}"
        rows.append(
            f'<tr class="{_e(cls)}"><td>{int(a["alarm_id"])}</td><td>{_e(a["dma"])}</td><td>{_e(a["state"])}</td>'
            f'<td>{_e(_local(a["onset"]))}</td><td class="num">{a["flow_lps"]:.2f}</td>'
            f'<td class="num">{a["flow_lps"] * _M3_PER_DAY_PER_LPS:,.0f}</td><td>run #{int(a["first_seen_run"])}</td>'
            f'<td>{_e(a["top_link_id"])}</td><td class="num">{p}</td><td class="num">{p300}</td>'
            f'<td>{_alarm_links(store, links, a)}</td><td>{_e(a["note"])}</td></tr>')
    return f"<h2>Alarms</h2><table>{head}{''.join(rows)}</table>"


def _plot_order(balance: pd.DataFrame, alarms: pd.DataFrame, night: date) -> list[str]:
    """Districts to chart: those with an alarm, then those flagged in the last days, then the rest."""
    recent = balance[pd.to_datetime(balance["date"]) > pd.Timestamp(night - timedelta(days=PLOT_DAYS))]
    names = list(dict.fromkeys(recent["dma"].astype(str)))
    with_alarm = [d for d in dict.fromkeys(alarms["dma"].astype(str)) if d in names] if len(alarms) else []
    flagged = list(dict.fromkeys(recent.loc[recent["flag"].astype(str).str.contains("jump"), "dma"].astype(str)))
    return list(dict.fromkeys(with_alarm + flagged + sorted(names)))


def _district_charts(balance: pd.DataFrame, alarms: pd.DataFrame, night: date) -> str:
    """One card per district: inflow against metered consumption over the last days, steps marked."""
    if not len(balance):
        return ""
    order = _plot_order(balance, alarms, night)
    recent = balance[pd.to_datetime(balance["date"]) > pd.Timestamp(night - timedelta(days=PLOT_DAYS))]
    cards = []
    for dma in order[:MAX_PLOTS]:
        days = recent[recent["dma"].astype(str) == dma].sort_values("date")
        steps = alarms[alarms["dma"].astype(str) == dma] if len(alarms) else alarms
        svg = balance_svg(days, steps, title=f"{dma}: inflow and metered consumption, L/s per day")
        cls = "card alarm" if len(steps) else "card"
        role = "" if days.get("role", pd.Series("district", index=days.index)).eq("district").all() else ' <span class="muted">(transmission)</span>'
        cards.append(f'<div class="{cls}"><h3>{_e(dma)}{role}</h3>{svg}</div>')
    more = (f'<p class="muted">{len(order) - MAX_PLOTS} more districts without alarm or flag are not drawn.</p>'
            if len(order) > MAX_PLOTS else "")
    key = ('<p class="key"><i style="background:#1f5fa8"></i>inflow<i style="background:#2e8b57"></i>metered '
           'consumption<i style="background:#f5b041"></i>the gap: non-revenue water (paler: a partial day)'
           '<i style="background:#c0392b"></i>a detected leak\'s onset and flow. Mean L/s per local day.</p>')
    return f"<h2>Inflow against metered consumption, last {PLOT_DAYS} days</h2>{key}" \
           f'<div class="cards">{"".join(cards)}</div>{more}'


def _trend_table(balance: pd.DataFrame, night: date) -> str:
    """NRW per district and day over the last weeks, as sparklines with the latest figures."""
    if not len(balance):
        return ""
    dates = pd.date_range(night - timedelta(days=TREND_DAYS - 1), night, freq="D").date
    rows = []
    for dma, grp in balance.groupby(balance["dma"].astype(str), sort=True):
        complete = grp[~grp["flag"].astype(str).str.contains("partial")].set_index("date")
        nrw = complete["nrw_m3"].reindex(dates).to_numpy(float) / _M3_PER_DAY_PER_LPS
        flagged = complete["flag"].astype(str).str.contains("jump").reindex(dates, fill_value=False).to_numpy(bool)
        pct = complete["nrw_pct"].reindex(dates).to_numpy(float)
        ok = np.flatnonzero(np.isfinite(nrw))
        last = f"{nrw[ok[-1]]:.2f}" if len(ok) else ""
        last_pct = f"{pct[ok[-1]]:.1f}" if len(ok) and np.isfinite(pct[ok[-1]]) else ""
        week = nrw[ok[-1] - 13:ok[-1] - 6] if len(ok) and ok[-1] >= 13 else np.array([])
        change = f"{nrw[ok[-1]] - np.nanmean(week):+.2f}" if np.isfinite(week).any() else ""
        svg = sparkline_svg(nrw, flagged, title=f"{dma}: NRW, L/s per day, last {TREND_DAYS} days")
        rows.append(f'<tr><td>{_e(dma)}</td><td>{svg}</td><td class="num">{last}</td><td class="num">{last_pct}</td>'
                    f'<td class="num">{change}</td><td class="num">{int(flagged.sum())}</td></tr>')
    head = ("<tr><th>district</th><th>NRW, last weeks</th><th>latest L/s</th><th>latest %</th>"
            "<th>vs the week before, L/s</th><th>days flagged</th></tr>")
    return (f"<h2>Non-revenue water, last {TREND_DAYS // 7} weeks</h2><p class=\"muted\">Complete local days; "
            "red dots: a day the balance flagged as a step up; blue: the latest day.</p>"
            f"<table>{head}{''.join(rows)}</table>")


def build_report(store: Store, *, night: Any = None, run_id: int | None = None, network: Any = None, balance: pd.DataFrame | None = None,
                 out_dir: str | Path = ".") -> str:
    """The morning report of one night as a self-contained HTML page.

    Parameters
    ----------
    store : Store
        A store the nightly job recorded runs in.
    night : date or str, optional
        Local day (``YYYY-MM-DD``); default the latest run's.
    run_id : int, optional
        A run instead of a night.
    network : Network, optional
        For the water balance (default: the run's network file, with the CRS
        recorded in its report, when it can be read; without one the page has
        no charts and says why).
    balance : DataFrame, optional
        A water balance to draw instead of computing one
        (:func:`twin.balance.water_balance` columns).
    out_dir : str or Path
        Folder the page will be written to, for the relative links.

    Returns
    -------
    str
        The HTML document.
    """
    run = select_run(store, night, run_id=run_id)
    runs = store.query("SELECT run_id, window_end, out_dir FROM runs ORDER BY run_id")
    before = runs[runs["run_id"] < int(run["run_id"])]
    previous = None
    if len(before):
        previous = before.iloc[-1].copy()
        previous["night"] = _night_of(previous["window_end"])
    links = _Links(Path(out_dir), {int(r): str(d) for r, d in zip(runs["run_id"], runs["out_dir"]) if isinstance(d, str)})
    alarms = night_alarms(store, int(run["run_id"]))
    note = ""
    if balance is None:
        balance, note = _balance_for(store, run, network)
    body = [_header(run, previous, alarms, balance, links), _alarm_table(store, alarms, links),
            _district_charts(balance, alarms, run["night"]), _trend_table(balance, run["night"])]
    if note:
        body.append(f'<p class="muted">{_e(note)}</p>')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Morning report {_e(run['night'])}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")


def _balance_for(store: Store, run: pd.Series, network: Any) -> tuple[pd.DataFrame, str]:
    """The balance to draw and, when there is none, why."""
    if network is None:
        network, why = _run_network(run)
        if network is None:
            return pd.DataFrame(), why
    try:
        return report_balance(network, store, run["night"]), ""
    except TwinError as exc:
        log.warning("report: no water balance (%s)", exc)
        return pd.DataFrame(), f"No water balance charts: {exc}"


def _run_network(run: pd.Series) -> tuple[Any, str]:
    """The network the run used, read from the path and CRS it recorded; (None, why) when it cannot be."""
    import json

    from twin.network import read_network  # deferred: heavy

    try:
        crs = (json.loads(run["report"] or "{}").get("inputs") or {}).get("crs")
    except ValueError:
        crs = None
    path = Path(str(run["network"]))
    if not crs or not path.is_file():
        return None, (f"No water balance charts: the run's network {path} or its CRS is not available "
                      "(give --network and --crs).")
    try:
        return read_network(path, crs=crs), ""
    except TwinError as exc:
        return None, f"No water balance charts: {exc}"


def write_report(store_path: str | Path, out_dir: str | Path, *, night: Any = None, run_id: int | None = None,
                 network: Any = None,
                 balance: pd.DataFrame | None = None) -> Path:
    """Write ``report.html`` for a night into ``out_dir`` (created), reading the store read-only.

    Parameters
    ----------
    store_path : str or Path
        The DuckDB store.
    out_dir : str or Path
        Output folder.
    night, run_id, network, balance
        As :func:`build_report`.

    Returns
    -------
    Path
        The page written.
    """
    from twin.errors import require_file
    from twin.pipeline import output_folder
    from twin.store import check_store_path

    check_store_path(store_path)
    require_file(store_path, what="store")
    out = output_folder(out_dir)
    with Store(store_path, read_only=True) as store:
        page = build_report(store, night=night, run_id=run_id, network=network, balance=balance, out_dir=out)
    path = out / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    log.info("wrote morning report %s (%.0f kB)", path, path.stat().st_size / 1e3)
    return path
