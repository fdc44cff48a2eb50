"""CLI commands of the store stage: ``twin ingest``, ``twin balance``, ``twin alarms``, ``twin meters join``."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twin import settings
from twin.cli.options import METERS_CRS_HELP, GisReading, gis_reading_options
from twin.cli.progress import StageProgress
from twin.errors import InputError, require_file

if TYPE_CHECKING:
    from twin.network import Network

log = logging.getLogger(__name__)

meters_app = typer.Typer(name="meters", help="Meter registry: check it and join meters to the network.", no_args_is_help=True)

_NET_HELP = "Network: EPANET .inp or GIS file (.gpkg, .geojson, .shp)."
_CRS_HELP = "CRS of the network file's coordinates, e.g. EPSG:4548 or EPSG:32650."
_MCRS_HELP = METERS_CRS_HELP


def _network(path: Optional[Path], crs: Optional[str], gis: GisReading) -> Network | None:
    return None if path is None else gis.read(path, crs=crs)


def _console() -> Console:
    return Console(highlight=False)


@gis_reading_options
def ingest(
    meters: Optional[Path] = typer.Option(None, "--meters", help="Meter registry (.csv/.parquet); optional after the first ingest."),
    readings: Optional[Path] = typer.Option(None, "--readings", help="Readings in long format (.csv/.parquet)."),
    store: Path = typer.Option(..., "--store", help="DuckDB file (created when missing)."),
    meters_crs: str = typer.Option(settings.MAP_CRS, "--meters-crs", help=_MCRS_HELP),
    network: Optional[Path] = typer.Option(None, "--network", help=_NET_HELP + " Checks the registry and stores the join."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    gis: GisReading = GisReading(),
    max_distance: float = typer.Option(settings.SNAP_DISTANCE_M, "--max-distance", help="Join distance, metres."),
    now: Optional[str] = typer.Option(None, "--now", help="'Now' for the future-timestamp check (ISO with offset)."),
    memory_limit: str = typer.Option("1GB", "--memory-limit", help="DuckDB memory limit."),
) -> None:
    """Load meters and readings into the store; every row accepted or quarantined with a reason."""
    from twin.store import Store, check_store_path, refuse_all_quarantined  # deferred, see twin.cli
    check_store_path(store)
    if meters is None and readings is None:
        raise InputError("nothing to ingest", fix="give --meters and/or --readings")
    net = _network(network, crs, gis)
    con = _console()
    with Store(store, memory_limit=memory_limit) as st:
        with StageProgress() as bar:
            s = st.ingest(meters, readings, meters_crs=meters_crs, network=net, now=now,
                          max_distance_m=max_distance, progress=bar.update)
    t = Table(title=escape(f"ingest #{s.ingest_id} into {store}"), show_header=True)
    t.add_column("readings")
    t.add_column("rows", justify="right")
    t.add_row("rows in", f"{s.rows_in:,}")
    t.add_row("accepted", f"{s.accepted:,}")
    if s.resets:
        t.add_row("  of which register resets", f"{s.resets:,}")
    for reason, n in s.quarantined.items():
        t.add_row(f"quarantined: {reason}", f"{n:,}")
    t.add_row("already stored (skipped)", f"{s.duplicates_skipped:,}")
    t.add_row("adds up", "yes" if s.adds_up else "NO")
    con.print(t)
    if meters is not None:
        m = Table(title="meter registry", show_header=True)
        m.add_column("meters")
        m.add_column("rows", justify="right")
        m.add_row("rows in", f"{s.meters_in:,}")
        m.add_row("usable", f"{s.meters_accepted:,}")
        for reason, n in s.meters_rejected.items():
            m.add_row(f"rejected: {reason}", f"{n:,}")
        if s.joined is not None:
            m.add_row(f"joined within {max_distance:g} m", f"{s.joined:,}")
            m.add_row("unmatched", f"{s.unmatched:,}")
        con.print(m)
    if readings is not None:
        refuse_all_quarantined(s, readings)


@gis_reading_options
def balance(
    network: Path = typer.Option(..., "--network", help=_NET_HELP),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    gis: GisReading = GisReading(),
    store: Path = typer.Option(..., "--store", help="DuckDB file filled by `twin ingest`."),
    out: Path = typer.Option(..., "--out", help="Output folder: balance.csv/.parquet, balance_zones.csv/.json."),
    start: Optional[str] = typer.Option(None, "--start", help="First local date (YYYY-MM-DD)."),
    end: Optional[str] = typer.Option(None, "--end", help="Last local date (YYYY-MM-DD)."),
    max_rows: int = typer.Option(60, "--max-rows", help="Longer tables are shown per DMA plus the flagged days."),
) -> None:
    """Water balance per DMA and local day: SIV, consumption, NRW, minimum night flow, flags."""
    from twin.balance import FALSE_ALARM_RATE, water_balance, write_balance  # deferred, see twin.cli
    from twin.store import Store, check_store_path
    for option, day in (("--start", start), ("--end", end)):
        _check_date(option, day)
    check_store_path(store)
    require_file(store, what="store")
    net = _network(network, crs, gis)
    with Store(store) as st:
        b = water_balance(net, st, start=start, end=end)
        out.mkdir(parents=True, exist_ok=True)
        st.write_table("balance", b)
    zones = write_balance(b, out)
    con = _console()
    con.print(_balance_table(b, max_rows=max_rows))
    n = b["dma"].nunique()
    con.print(f"flags: a step in NRW or night leakage that stays, z > {b.attrs.get('flag_z', float('nan')):.2f} "
              f"(a leak-free run of these {n} zones flags nothing with probability {100 * (1 - FALSE_ALARM_RATE):g} %)")
    _print_transmission(con, zones)
    con.print(escape(f"wrote {out / 'balance.csv'}, {out / 'balance.parquet'}, {out / 'balance_zones.csv'} and "
                     f"{out / 'balance_zones.json'}; table 'balance' in {store}"))


def _print_transmission(con: Console, zones: pd.DataFrame) -> None:
    """The transmission zones' components (m³/day) and what their NRW figure means."""
    tz = zones.loc[zones["role"].eq("transmission")]
    if tz.empty:
        return
    t = Table(title="transmission zones (mean complete day): input = in - out, NRW = input - metered")
    for c in ("zone", "in m³", "out m³", "input m³ ± 1σ", "metered m³", "NRW m³ (%)", "km", "NRW m³/km"):
        t.add_column(c, justify="left" if c == "zone" else "right", no_wrap=True)
    for r in tz.itertuples(index=False):
        pct = "" if pd.isna(r.nrw_pct) else f" ({r.nrw_pct:.0f}%)"
        t.add_row(escape(str(r.dma)), f"{r.inflow_in_m3:,.0f}", f"{r.inflow_out_m3:,.0f}",
                  f"{r.siv_m3:,.0f} ± {r.siv_sd_m3:,.0f}", f"{r.consumption_m3:,.0f}", f"{r.nrw_m3:,.0f}{pct}",
                  f"{r.mains_km:.1f}", f"{r.nrw_m3_per_km:.1f}")
    con.print(t)
    for r in tz.itertuples(index=False):
        con.print(escape(r.explanation))


def _check_date(option: str, value: Optional[str]) -> None:
    """Raise naming ``option`` when ``value`` is given and not a date YYYY-MM-DD."""
    if value is None:
        return
    try:
        date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{value!r} is not a date", element=option,
                         fix=f"give the local date as YYYY-MM-DD, e.g. {option} 2026-03-02") from None


def _balance_table(b: pd.DataFrame, *, max_rows: int) -> Table:
    """The balance as a rich table: every day, or per DMA plus the flagged days when long."""
    if len(b) <= max_rows:
        t = Table(title=f"water balance per DMA and local day ({settings.TIMEZONE})")
        for c, j in (("DMA", "left"), ("date", "left"), ("SIV m³", "right"), ("metered m³", "right"),
                     ("NRW m³", "right"), ("NRW %", "right"), ("MNF L/s", "right"), ("night use L/s", "right"),
                     ("flag", "left")):
            t.add_column(c, justify=j, no_wrap=c in ("DMA", "date"))  # type: ignore[arg-type]
        for r in b.itertuples(index=False):
            style = "bold red" if "jump" in r.flag else None
            t.add_row(escape(str(r.dma)), str(r.date), f"{r.siv_m3:,.1f}", f"{r.consumption_m3:,.1f}", f"{r.nrw_m3:,.1f}",
                      f"{r.nrw_pct:.1f}", f"{r.mnf_lps:.2f}", f"{r.night_consumption_lps:.2f}", r.flag, style=style)
        return t
    t = Table(title=f"water balance per DMA, {b['date'].nunique()} local days ({settings.TIMEZONE}); "
                    "full table in balance.csv")
    for c, j in (("DMA", "left"), ("SIV m³/day", "right"), ("NRW %", "right"), ("MNF L/s", "right"),
                 ("night leakage L/s", "right"), ("flagged days", "left")):
        t.add_column(c, justify=j, no_wrap=c == "DMA")  # type: ignore[arg-type]
    for dma, g in b.groupby("dma", sort=True):
        flagged = g.loc[g["flag"].str.contains("jump"), ["date", "flag"]]
        text = ""
        if len(flagged):
            kinds = sorted({k.replace("_jump", "") for f in flagged["flag"] for k in f.split(",") if k.endswith("_jump")})
            days = sorted(str(d) for d in flagged["date"])
            span = days[0] if len(days) == 1 else f"{days[0]}..{days[-1][5:]}"
            text = f"{span} ({len(days)} d: {', '.join(kinds)})"
        siv = g["siv_m3"].sum()
        t.add_row(escape(str(dma)), f"{g['siv_m3'].mean():,.0f}",
                  f"{100 * g['nrw_m3'].sum() / siv:.1f}" if siv > 0 and g["meters"].max() > 0 else "-",
                  f"{g['mnf_lps'].mean():.2f}", f"{g['night_leakage_lps'].mean():.2f}", text,
                  style="bold red" if text else None)
    return t


def alarms(
    store: Path = typer.Option(..., "--store", help="DuckDB file the nightly job (twin localise --store) ran on."),
    all_: bool = typer.Option(False, "--all", help="Also list the closed alarms."),
    alarm: Optional[int] = typer.Option(None, "--alarm", help="Only this alarm: its whole history and the "
                                        "candidates of the last run that saw it."),
) -> None:
    """List the leak alarms the nightly job keeps: open ones (--all: closed ones too), each with its history."""
    from twin.alarms import alarm_candidates, alarm_history, alarm_table, require_runs  # deferred, see twin.cli
    from twin.store import Store, check_store_path
    check_store_path(store)
    require_file(store, what="store")
    with Store(store, read_only=True) as st:
        require_runs(st)
        table = alarm_table(st, include_closed=all_ or alarm is not None)
        if alarm is not None:
            table = table[table["alarm_id"] == alarm]
            if table.empty:
                raise InputError(f"the store has no alarm #{alarm}", path=store,
                                 fix="run `twin alarms --store DB --all` to see the alarm numbers")
        history = alarm_history(st, [int(a) for a in table["alarm_id"]])
        runs = st.query("SELECT run_id, started_at, status FROM runs ORDER BY run_id")
        cands = None if alarm is None else alarm_candidates(st, alarm, top=10)
    con = _console()
    when = ""
    if len(runs):
        last = runs.iloc[-1]
        when = f"; last run #{last['run_id']} {_local(last['started_at'])}: {last['status']}"
    con.print(f"{len(runs)} run(s) recorded in {store}{when} (times local, {settings.TIMEZONE})", markup=False)
    if table.empty:
        con.print("no open alarm" + ("" if all_ else " (--all lists the closed ones)"))
        return
    con.print(_alarms_table(table))
    con.print(_history_table(history))
    if cands is not None and len(cands):
        con.print(_candidates_table(cands, alarm))


def report(
    store: Path = typer.Option(..., "--store", help="DuckDB file the nightly job (twin localise --store) ran on."),
    out: Path = typer.Option(..., "--out", help="Output folder: report.html (links to the runs' files are relative)."),
    night: Optional[str] = typer.Option(None, "--night", help="Local day of the run (YYYY-MM-DD; default the "
                                        "latest run's)."),
    network: Optional[Path] = typer.Option(None, "--network", help=_NET_HELP + " Default: the run's own."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP + " With --network."),
) -> None:
    """Write the morning report of a night: open alarms, inflow against consumption per district, NRW trend."""
    from twin.report import write_report  # deferred, see twin.cli
    if network is not None and crs is None:
        raise InputError("--network needs --crs", element="--crs", fix="e.g. --crs EPSG:4548")
    net = None
    if network is not None:
        from twin.network import read_network  # deferred, see twin.cli
        net = read_network(require_file(network, what="network"), crs=crs)
    path = write_report(store, out, night=night, network=net)
    typer.echo(f"report: {path}")


def _candidates_table(cands: pd.DataFrame, alarm: int) -> Table:
    """The ranked pipes of an alarm's last sighting."""
    t = Table(title=f"alarm #{alarm}: candidates of run {int(cands['run_id'].iat[0])}")
    for c in ("rank", "pipe", "p", "p within 300 m", "leak L/s", "zone"):
        t.add_column(c, justify="left" if c in ("pipe", "zone") else "right", overflow="fold")
    for c in cands.itertuples(index=False):
        t.add_row(str(c.rank), escape(str(c.link_id)), f"{c.score:.3f}", "" if pd.isna(c.p_within_300m) else f"{c.p_within_300m:.2f}",
                  "" if pd.isna(c.leak_flow_lps) else f"{c.leak_flow_lps:.2f}", "" if pd.isna(c.zone) else escape(str(c.zone)))
    return t


def _local(ts: object, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC time as local text ('' when missing)."""
    return "" if ts is None or pd.isna(ts) else pd.Timestamp(ts).tz_convert(settings.TIMEZONE).strftime(fmt)


def _alarms_table(table: pd.DataFrame) -> Table:
    """The alarms as a rich table, open ones in red (the reasons of closing are in the history)."""
    t = Table(title="leak alarms")
    for c, j in (("alarm", "right"), ("DMA", "left"), ("status", "left"), ("onset", "left"), ("L/s", "right"),
                 ("runs", "left"), ("seen", "right"), ("top pipe", "left"), ("p", "right"), ("closed", "left")):
        t.add_column(c, justify=j, overflow="fold")  # type: ignore[arg-type]
    for a in table.itertuples(index=False):
        has_top = isinstance(a.top_link_id, str)
        t.add_row(f"#{a.alarm_id}", escape(str(a.dma)), a.status, _local(a.onset, "%m-%d %H:%M"), f"{a.flow_lps:.2f}",
                  f"{a.first_seen_run}..{a.last_seen_run}", str(a.runs_seen), escape(a.top_link_id) if has_top else "-",
                  f"{a.top_p:.2f}" if has_top and pd.notna(a.top_p) else "",
                  _local(a.closed_at, "%m-%d %H:%M") if a.status == "closed" else "",
                  style="bold red" if a.status == "open" else "dim")
    return t


def _history_table(history: pd.DataFrame) -> Table:
    """Every run's view of the alarms: state, flow, t statistic, top pipe, note."""
    t = Table(title="history: one row per alarm and run (p300: p within 300 m)")
    for c, j in (("alarm", "right"), ("run", "right"), ("window", "left"), ("state", "left"), ("onset", "left"),
                 ("L/s", "right"), ("t", "right"), ("top pipe", "left"), ("p300", "right"), ("note", "left")):
        t.add_column(c, justify=j, overflow="fold")  # type: ignore[arg-type]
    for h in history.itertuples(index=False):
        t.add_row(f"#{h.alarm_id}", str(h.run_id), f"{_local(h.window_start, '%m-%d')}..{_local(h.window_end - pd.Timedelta(seconds=1), '%m-%d')}",
                  h.state, _local(h.onset, "%m-%d %H:%M"), "" if pd.isna(h.flow_lps) else f"{h.flow_lps:.2f}",
                  "" if pd.isna(h.t_stat) else f"{h.t_stat:.1f}", escape(h.top_link_id) if isinstance(h.top_link_id, str) else "",
                  "" if pd.isna(h.top_p_within_300m) else f"{h.top_p_within_300m:.2f}",
                  escape(h.note) if isinstance(h.note, str) else "")
    return t


@meters_app.command("join")
@gis_reading_options
def join(
    network: Path = typer.Option(..., "--network", help=_NET_HELP),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    gis: GisReading = GisReading(),
    meters: Path = typer.Option(..., "--meters", help="Meter registry (.csv/.parquet)."),
    out: Path = typer.Option(..., "--out", help="Output folder: join.csv, rejected_meters.csv."),
    meters_crs: str = typer.Option(settings.MAP_CRS, "--meters-crs", help=_MCRS_HELP),
    max_distance: float = typer.Option(settings.SNAP_DISTANCE_M, "--max-distance", help="Join distance, metres."),
) -> None:
    """Check the registry against the network and snap customer meters to pipes."""
    from twin.meters import join_meters, read_meters, validate_meters  # deferred, see twin.cli
    net = _network(network, crs, gis)
    raw = read_meters(meters, crs=meters_crs)
    good, rejected = validate_meters(raw, net)
    j = join_meters(good, net, max_distance_m=max_distance)
    out.mkdir(parents=True, exist_ok=True)
    j.to_csv(out / "join.csv", float_format="%.6f")
    rejected.to_csv(out / "rejected_meters.csv", index=False)
    con = _console()
    t = Table(title=escape(f"meters joined to {network.name}"))
    t.add_column("")
    t.add_column("meters", justify="right")
    t.add_row("registry rows", f"{len(raw):,}")
    t.add_row("rejected", f"{len(rejected):,}")
    t.add_row("customer meters", f"{len(j):,}")
    t.add_row(f"joined within {max_distance:g} m", f"{int(j['matched'].sum()):,}")
    t.add_row("unmatched", f"{int((~j['matched']).sum()):,}")
    if j["matched"].any():
        t.add_row("median distance, m", f"{j.loc[j['matched'], 'distance_m'].median():.1f}")
    con.print(t)
    if len(rejected):
        r = Table(title="rejected registry rows by reason")
        r.add_column("reason")
        r.add_column("rows", justify="right")
        for reason, n in rejected["reason"].value_counts().head(15).items():
            r.add_row(escape(str(reason)), f"{n:,}")
        con.print(r)
    con.print(escape(f"wrote {out / 'join.csv'} and {out / 'rejected_meters.csv'}"))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the twin app."""
    app.command("ingest")(ingest)
    app.command("balance")(balance)
    app.command("alarms")(alarms)
    app.command("report")(report)
    app.add_typer(meters_app, name="meters")
