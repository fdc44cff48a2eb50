"""CLI commands of the leak-localisation stage: ``twin localise`` and ``twin bench localise``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from twin import settings
from twin.cli.options import (METERS_CRS_HELP, SCHEDULER_HELP, WORKERS_HELP, GisReading,
                               gis_reading_options)
from twin.cli.progress import StageProgress
from twin.errors import InputError, TwinError, require_file

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

bench_app = typer.Typer(
    name="bench",
    help="Evaluation harnesses on synthetic scenarios with a known truth.",
    no_args_is_help=True,
)


@gis_reading_options
def localise_cmd(
    network: Path = typer.Option(..., "--network", help="The utility's network: EPANET .inp (or GIS file)."),
    crs: str = typer.Option(..., "--crs", help="CRS of the network's coordinates, e.g. EPSG:32650."),
    gis: GisReading = GisReading(),
    meters: Optional[Path] = typer.Option(None, "--meters", help="meters.csv / .parquet (data contract)."),
    readings: Optional[Path] = typer.Option(None, "--readings", help="readings.csv / .parquet (data contract)."),
    out: Path = typer.Option(..., "--out", help="Output folder: candidates.csv, report.json, map.html "
                             "(and plan/ from the store)."),
    meters_crs: str = typer.Option(settings.MAP_CRS, "--meters-crs", help=METERS_CRS_HELP),
    store: Optional[Path] = typer.Option(None, "--store", help="With --meters/--readings: DuckDB store to ingest "
                                         "into (default: temporary). Alone: run from this store's readings "
                                         "(filled by twin ingest) and keep the run and its alarms there."),
    until: Optional[str] = typer.Option(None, "--until", help="From the store: last local day of the window "
                                        "(YYYY-MM-DD; default the day of the latest reading)."),
    start: Optional[str] = typer.Option(None, "--from", help="From the store: run every night from this local day "
                                        "to --until (a backfill), each into OUT/YYYY-MM-DD."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP + " With --from."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=SCHEDULER_HELP + " With --from."),
    days: Optional[int] = typer.Option(None, "--days", min=1, help="From the store: local days in the window "
                                       f"(default {settings.RUN_DAYS}; longer when an open alarm needs it)."),
    top: int = typer.Option(5, "--top", min=0, help="From the store: work orders for the top candidates (0: none)."),
    basemap: str = typer.Option("osm", "--basemap", help="Crew map tiles: osm, amap or none."),
    no_map: bool = typer.Option(False, "--no-map", help="Do not write map.html."),
    calibrate: bool = typer.Option(settings.CALIBRATE_MODEL, "--calibrate/--no-calibrate",
                                   help="Calibrate roughness per pipe group and demand per DMA on the leak-free days "
                                        "(applied only when it predicts held-out days better)."),
) -> None:
    """Detect a leak in a week of readings and rank the pipes where it most likely is.

    Two ways: on files of the data contract (--meters and --readings), or from
    a store filled day by day by `twin ingest` (--store alone), the nightly
    job: it reads the window up to --until, and remembers its alarms (`twin
    alarms`), so that a leak seen before is reported as continuing. With
    --from, every night from --from to --until (a backfill), the nights'
    work as Dask tasks on this machine's cores or a --scheduler's cluster.
    """
    from twin.pipeline import localise_files, localise_store  # deferred, see twin.cli
    from twin.store import check_store_path
    if store is not None:
        check_store_path(store)
    if basemap not in ("osm", "amap", "none"):
        raise InputError(f"unknown basemap {basemap!r}", element="--basemap", fix="use osm, amap or none")
    from_store = meters is None and readings is None
    _check_mode(from_store, store=store, meters=meters, readings=readings, until=until, days=days)
    if start is not None or workers is not None or scheduler is not None:
        _backfill(network, crs=crs, store=store, out=out, start=start, until=until, days=days, top=top,
                  no_map=no_map, basemap=basemap, workers=workers, scheduler=scheduler, gis=gis, from_store=from_store,
                  calibrate=calibrate)
        return
    with StageProgress() as bar:
        if from_store:
            result = localise_store(network, crs=crs, store_path=store, out_dir=out, until=until,
                                    days=days if days is not None else settings.RUN_DAYS, top=top,
                                    write_map=not no_map, basemap=basemap, progress=bar.update,
                                    gis_options=gis.options_for(network), calibrate=calibrate)
            result["morning_report"] = _morning_report(store, out, run=result["alarms"], network=result["network"])
        else:
            result = localise_files(network, crs=crs, meters_path=meters, readings_path=readings, out_dir=out,
                                    meters_crs=meters_crs, store_path=store, write_map=not no_map,
                                    basemap=basemap, progress=bar.update, gis_options=gis.options_for(network),
                                    calibrate=calibrate)
    _echo_result(result)


def _backfill(network: Path, *, crs: str, store: Optional[Path], out: Path, start: Optional[str],
              until: Optional[str], days: Optional[int], top: int, no_map: bool, basemap: str,
              workers: Optional[int], scheduler: Optional[str], gis: GisReading, from_store: bool,
              calibrate: bool = settings.CALIBRATE_MODEL) -> None:
    """``twin localise --store DB --from D1 [--until D2]``: every night of the period, one line each."""
    from twin.pipeline import localise_backfill  # deferred, see twin.cli
    if not from_store or start is None:
        raise InputError("--from, --workers and --scheduler run the nights of a backfill from the store",
                         element="--from",
                         fix="give --store DB --from YYYY-MM-DD (without --meters/--readings), or drop them")
    with StageProgress() as bar:
        rows = localise_backfill(network, crs=crs, store_path=store, out_dir=out, start=start, until=until,
                                 days=days if days is not None else settings.RUN_DAYS, top=top, write_map=not no_map,
                                 basemap=basemap, progress=bar.update, gis_options=gis.options_for(network),
                                 workers=workers, scheduler=scheduler, calibrate=calibrate)
    net = gis.read(network, crs=crs) if rows else None  # once for every night's report
    for row in rows:
        _morning_report(store, row["out"], run=row, network=net)
        head = f"{row['day']}: run #{row['run_id']}, "
        if row["error"]:
            typer.echo(head + f"FAILED ({row['error']})", err=True)
            continue
        found = f"leak {row['leak_flow_lps']:.2f} L/s" if row["detected"] else "no leak"
        alarms = "; ".join(f"#{a.alarm_id} {a.dma} {a.state}" for a in row["alarms"].itertuples(index=False))
        typer.echo(head + found + (f"; alarms {alarms}" if alarms else ""))
    typer.echo(f"{len(rows)} nights in {out} (twin alarms --store {store} lists the alarms)")


def _morning_report(store: Path, out: Path, *, run: object, network: object = None) -> Optional[Path]:
    """Write the night's report.html (twin.report) beside its outputs; a failure only warns: the run is kept."""
    from twin.report import write_report  # deferred, see twin.cli
    run_id = run.get("run_id") if isinstance(run, dict) else getattr(run, "run_id", None)
    try:
        return write_report(store, out, run_id=run_id, network=network)
    except TwinError as exc:
        log.warning("no morning report: %s", exc)
        return None


def _check_mode(from_store: bool, *, store: Optional[Path], meters: Optional[Path], readings: Optional[Path],
                until: Optional[str], days: Optional[int]) -> None:
    """Refuse a mix of the files mode and the store mode's options, naming what to give."""
    if from_store and store is None:
        raise InputError("nothing to localise on", element="--store",
                         fix="give --meters and --readings (files), or --store DB (a run from the store)")
    if not from_store and (meters is None or readings is None):
        missing = "--readings" if readings is None else "--meters"
        raise InputError(f"{missing} is missing", element=missing,
                         fix="give both --meters and --readings, or neither with --store DB to run from the store")
    if not from_store and (until is not None or days is not None):
        raise InputError("--until and --days choose a window of the store", element="--until/--days",
                         fix="leave out --meters and --readings to run from --store, or drop --until/--days")


def _echo_result(result: dict) -> None:
    """Print the job's finding, its alarms (from the store), warnings and output paths."""
    report = result["report_dict"]
    if report.get("leaks"):  # several leaks, district by district
        cand = result["result"].candidates
        for leak in report["leaks"]:
            typer.echo(f"leak {leak['leak_id']} in {leak['dma'] or 'the network (no metered district)'}: "
                       f"{leak['leak_flow_lps']:.2f} L/s since {leak['onset']}")
            _echo_top(cand[cand["leak_id"] == leak["leak_id"]].head(3))
    elif report.get("detected"):
        typer.echo(f"leak detected: {report['leak_flow_lps']:.2f} L/s since {report['onset']}")
        _echo_top(result["result"].candidates.head(3))
    else:
        typer.echo("no leak detected")
    run = result.get("alarms")
    if run is not None:
        window = result["window"]
        typer.echo(f"run #{run.run_id}, window {window.start.tz_convert(settings.TIMEZONE):%Y-%m-%d %H:%M} to "
                   f"{window.end.tz_convert(settings.TIMEZONE):%Y-%m-%d %H:%M} (local)")
        for a in run.states.itertuples(index=False):
            onset = a.onset.tz_convert(settings.TIMEZONE).strftime("%Y-%m-%d %H:%M")
            typer.echo(f"  alarm #{a.alarm_id} {a.dma}: {a.state.upper()}, {a.flow_lps:.2f} L/s since {onset}"
                       + (f" ({a.note})" if isinstance(a.note, str) and a.note else ""))
    if report.get("degraded"):
        typer.echo("result DEGRADED: read the warnings before acting on it", err=True)
    for w in report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    for key in ("candidates", "report", "map", "plan", "morning_report"):
        if result.get(key) is not None:
            typer.echo(f"{key}: {result[key]}")


def _echo_top(top: pd.DataFrame) -> None:
    """Print the best candidates, one line each."""
    for _, row in top.iterrows():
        typer.echo(f"  #{row['rank']}: pipe {row['link_id']}  p={row['score']:.3f}  "
                   f"p(within 300 m)={row['p_within_300m']:.2f}  ({row['lat']:.6f}, {row['lon']:.6f})")


@bench_app.command("localise")
def bench_localise(
    network: Optional[Path] = typer.Option(None, "--network", help="EPANET .inp of the network (with --generator)."),
    crs: Optional[str] = typer.Option(None, "--crs", help="CRS of its coordinates, e.g. EPSG:32650 "
                                      "(default for --weeks: EPSG:32650)."),
    weeks: Optional[Path] = typer.Option(None, "--weeks", help="Run on every contract week below this folder "
                                         "(network.inp, meters.csv, readings.csv/.parquet, truth.json) instead."),
    generator: str = typer.Option("twin", "--generator", help="Source of the weeks: twin (twin synth readings) or "
                                  "epyt-flow (EPyT-Flow, needs the bench extra)."),
    scenarios: int = typer.Option(10, "--scenarios", min=0, help="Leak scenarios."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    leak_free: int = typer.Option(0, "--leak-free", min=0, help="Leak-free weeks (false alarms)."),
    days: int = typer.Option(7, "--days", min=3, help="Days per scenario."),
    classic: bool = typer.Option(True, "--classic/--no-classic", help="Also run the classic method (twin generator)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write per-week results (CSV) and summaries (JSON) here."),
    calibrate: bool = typer.Option(settings.CALIBRATE_MODEL, "--calibrate/--no-calibrate",
                                   help="Calibrate roughness per pipe group and demand per DMA on the leak-free days "
                                        "(applied only when it predicts held-out days better)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
) -> None:
    """Run the job on weeks with a known truth and print the figures per generator and network.

    Either generate weeks on --network with --generator twin or epyt-flow, or
    run on a folder of contract weeks with --weeks (such as
    ../shared/validation). Misses count in every figure.
    """
    from twin.bench import GENERATORS, WEEKS_CRS, format_report, run_bench, run_weeks  # deferred, see twin.cli
    from twin.pipeline import output_folder
    if generator not in GENERATORS:
        raise InputError(f"unknown generator {generator!r}", element="--generator",
                         fix=f"use one of {', '.join(GENERATORS)}")
    if out is not None:  # before hours of scenarios, not after
        output_folder(out)
    with StageProgress() as bar:
        if weeks is not None:
            res = run_weeks(weeks, crs=crs or WEEKS_CRS, progress=bar.update,
                            localise_options={"calibrate": calibrate}, workers=workers, scheduler=scheduler)
        else:
            if network is None or crs is None:
                raise InputError("give --network and --crs to generate weeks, or --weeks DIR",
                                 element="--network", fix="e.g. --network net.inp --crs EPSG:32650")
            if not network.exists():
                require_file(network, what="network")
            res = run_bench(network, crs=crs, scenarios=scenarios, leak_free=leak_free, seed=seed, days=days,
                            classic=classic and generator == "twin", generator=generator, progress=bar.update,
                            localise_options={"calibrate": calibrate}, workers=workers, scheduler=scheduler)
    typer.echo(format_report(res))
    if out is not None:
        res.scenarios.to_csv(out / "scenarios.csv", index=False)
        doc = {"summary": res.summary, "groups": res.groups}
        (out / "summary.json").write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        typer.echo(f"results: {out / 'scenarios.csv'}, {out / 'summary.json'}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the twin app."""
    app.command("localise")(localise_cmd)
    app.add_typer(bench_app, name="bench")
