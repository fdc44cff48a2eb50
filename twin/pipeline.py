"""Chains the stages for the command line: files in, files out, no logic of its own.

:func:`localise_files` is the leak-localisation job on files of the data
contract (``twin localise``); :func:`localise_store` is the same job on a window of
the store's readings, the nightly run that remembers its alarms
(``twin localise --store``); :func:`run_demo` is the morning's work end to end
(``twin demo``): that job, the water balance, work orders for the top
candidates, the crew map and, when the truth is known, the score.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import settings
from twin.alarms import Window, open_alarms, record_failed_run, record_run, window_for_alarms
from twin.balance import water_balance, write_balance
from twin.bench import score_ranking
from twin.cache import file_sha256
from twin.errors import InputError, TwinError, require_file
from twin.graph import pipe_distances
from twin.localise import Localisation, localise
from twin.maps import crew_map, save_map
from twin.measure import Measurements, measurements_from_store
from twin.meters import join_meters, join_warnings
from twin.network import Network, read_network
from twin.validate import require_supplied_demands
from twin.repair import plan_repairs, write_plan
from twin.scale import dask_client, map_tasks, share, use_cluster
from twin.store import Store, refuse_all_quarantined

log = logging.getLogger(__name__)

#: Nights a backfill computes ahead per Dask worker before recording them (:func:`localise_backfill`).
BACKFILL_AHEAD = 4


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (pd.Timestamp,)):
        return obj.isoformat()
    if obj is pd.NA:
        return None
    return str(obj)


def logger_residuals(result: Localisation) -> pd.DataFrame | None:
    """The pressure loggers' residual changes of a localisation, as the crew map takes them.

    Returns
    -------
    DataFrame or None
        Index ``meter_id``; ``residual_change_m`` (m), ``sigma_m`` (m), ``z``.
        None when the job computed no residuals.
    """
    res = result.residuals
    if not len(res):
        return None
    table = res[res["kind"] == "pressure"].set_index("meter_id")[["delta", "sigma", "z"]]
    return table.rename(columns={"delta": "residual_change_m", "sigma": "sigma_m"})


def localise_files(
    network_path: str | Path,
    *,
    crs: Any,
    meters_path: str | Path,
    readings_path: str | Path,
    out_dir: str | Path,
    meters_crs: Any = settings.MAP_CRS,
    store_path: str | Path | None = None,
    write_map: bool = True,
    basemap: str = "osm",
    progress: Callable[[str, int, int], None] | None = None,
    gis_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the leak-localisation job on files of the data contract.

    Parameters
    ----------
    network_path : str or Path
        EPANET ``.inp`` (or GIS network) of the utility.
    crs : any pyproj input
        CRS of the network file's coordinates.
    meters_path, readings_path : str or Path
        ``meters.csv``/``.parquet`` and ``readings.csv``/``.parquet``
        (``../shared/DESIGN.md``).
    out_dir : str or Path
        Output folder (created): ``candidates.csv``, ``report.json``,
        ``map.html``.
    meters_crs : any pyproj input or "GCJ02" / "BD09"
        CRS of the registry's lon/lat.
    store_path : str or Path, optional
        DuckDB store to ingest into (default: a temporary one, removed).
    write_map : bool
        Write ``map.html``.
    basemap : {"osm", "amap", "none"}
        Tiles of the crew map.
    progress : callable, optional
        ``progress(stage, done, total)``, for the CLI's progress bar.
    gis_options : mapping, optional
        Options of a GIS network file, passed to
        :func:`twin.network.read_network` (``columns``, ``snap_tolerance_m``...).
    **options
        Passed to :func:`twin.localise.localise`.

    Returns
    -------
    dict
        ``candidates``, ``report``, ``map`` (paths), ``report_dict``, ``result``
        (the :class:`~twin.localise.Localisation`) and the ``network``,
        ``meters`` and ``join`` the job used.
    """
    t0 = time.perf_counter()
    network_path = require_file(network_path, what="network")
    meters_path = require_file(meters_path, what="meters")
    readings_path = require_file(readings_path, what="readings")
    out = output_folder(out_dir)
    timings: dict[str, float] = {}
    network = read_network(network_path, crs=crs, **dict(gis_options or {}))
    require_supplied_demands(network)  # a cut-off demand junction would fail in EPANET, unnamed, much later
    timings["network_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    staged = _ingest_files(network, meters_path, readings_path, meters_crs=meters_crs, store_path=store_path,
                           progress=progress)
    timings["ingest_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    result = localise(network, meters=staged.meters, join=staged.join, measurements=staged.measurements,
                      progress=progress, **options)
    timings["localise_s"] = time.perf_counter() - t2
    report = _job_report(result, staged, network)
    report["ingest"] = _ingest_report(staged)
    report["inputs"] = {"network": str(network_path), "crs": str(crs), "meters": str(meters_path),
                        "readings": str(readings_path), "meters_crs": str(meters_crs)}
    paths = _write_outputs(network, result, staged, out, write_map=write_map, basemap=basemap, timings=timings)
    _finish_report(report, paths["report"], timings, t0)
    log.info("localise_files: %s in %.1f s; wrote %s", "leak detected" if report.get("detected") else "no leak",
             timings["total_s"], ", ".join(p.name for p in paths.values()))
    return {**paths, "report_dict": report, "result": result, "network": network, "meters": staged.meters,
            "join": staged.join}


def _job_report(result: Localisation, staged: "_Staged", network: Network) -> dict[str, Any]:
    """The localisation's report with the join's warnings added and ``degraded`` set from all warnings."""
    report = dict(result.report)
    join_notes = join_warnings(staged.join, network, meters=staged.meters)
    report["warnings"] = [*report.get("warnings", []), *join_notes]
    report["degraded"] = bool(report.get("degraded")) or bool(join_notes) or any(
        str(w).startswith("degraded") for w in report["warnings"])
    return report


def _write_outputs(network: Network, result: Localisation, staged: "_Staged", out: Path, *, write_map: bool,
                   basemap: str, timings: dict[str, float], plan: gpd.GeoDataFrame | None = None) -> dict[str, Path]:
    """Write ``candidates.csv`` and (``write_map``) ``map.html``; return the paths, ``report`` included."""
    paths = {"candidates": _write_candidates(result.candidates, out / "candidates.csv"),
             "report": out / "report.json"}
    if write_map:
        t3 = time.perf_counter()
        paths["map"] = _write_job_map(network, result, staged, out / "map.html", basemap=basemap, plan=plan)
        timings["map_s"] = time.perf_counter() - t3
    return paths


def _finish_report(report: dict[str, Any], path: Path, timings: dict[str, float], t0: float) -> None:
    """Add the stage timings (seconds) to the report and write it as JSON."""
    timings["total_s"] = time.perf_counter() - t0
    report["timings_s"] = {**report.get("timings_s", {}), **{k: round(v, 3) for k, v in timings.items()}}
    path.write_text(json.dumps(report, indent=2, default=_json_default), encoding="utf-8")


def localise_store(
    network_path: str | Path,
    *,
    crs: Any,
    store_path: str | Path,
    out_dir: str | Path,
    until: Any = None,
    days: int = settings.RUN_DAYS,
    top: int = 5,
    record: bool = True,
    write_map: bool = True,
    basemap: str = "osm",
    progress: Callable[[str, int, int], None] | None = None,
    gis_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The nightly job: localise on a window of the store's readings and remember its alarms.

    Reads the ``days`` local days up to ``until`` from a store filled by
    ``twin ingest`` (no files, no temporary store) through the measurement
    path of :func:`localise_files`, writes the same outputs plus work orders,
    and records the run, its leaks and candidates in the store
    (:func:`twin.alarms.record_run`): a leak seen on an earlier night is
    reported as continuing, an alarm whose step is gone is closed. With
    ``record``, the window starts earlier when an open alarm's onset needs
    it (:func:`twin.alarms.window_for_alarms`).

    Parameters
    ----------
    network_path : str or Path
        Network file (``.inp`` or GIS).
    crs : any pyproj input
        CRS of the network file's coordinates.
    store_path : str or Path
        DuckDB store holding the registry and the readings.
    out_dir : str or Path
        Output folder (created): ``candidates.csv``, ``report.json``,
        ``map.html``, ``plan/``.
    until : date or str, optional
        Last local day of the window (``YYYY-MM-DD``); default the local day
        of the latest stored reading.
    days : int
        Local days in the window.
    top : int
        Work orders for the ``top`` best candidates when a leak is detected
        (0: none).
    record : bool
        Record the run and its alarms in the store.
    write_map, basemap, progress, gis_options, **options
        As :func:`localise_files`.

    Returns
    -------
    dict
        As :func:`localise_files`, plus ``window`` (:class:`twin.alarms.Window`),
        ``alarms`` (the :class:`twin.alarms.RunRecord`, None without
        ``record``) and ``plan`` (a folder) when work orders were written.
    """
    t0, started = time.perf_counter(), pd.Timestamp.now(tz="UTC")
    network_path = require_file(network_path, what="network")
    store_path = require_file(store_path, what="store")
    out = output_folder(out_dir)
    network = read_network(network_path, crs=crs, **dict(gis_options or {}))
    require_supplied_demands(network)
    timings: dict[str, float] = {"network_s": time.perf_counter() - t0}
    with Store(store_path) as store:
        t1 = time.perf_counter()
        window = run_window(store, until=until, days=days)
        if record:  # see the step of every open alarm, so that a repair is noticed
            window = _within_readings(window_for_alarms(window, open_alarms(store)), store)
        run_info = _run_info(network_path, out, started=started, days=days)
        try:
            staged = _read_store(store, network, window)
            timings["read_s"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            result = localise(network, meters=staged.meters, join=staged.join, measurements=staged.measurements,
                              progress=progress, **options)
        except TwinError as exc:  # bad data tonight: the night is recorded as failed, the alarms stay as they were
            if record:
                record_failed_run(store, window, exc, **run_info)
            raise
        timings["localise_s"] = time.perf_counter() - t2
        night = _finish_night(store, network, result, staged, window, out, record=record, run_info=run_info,
                              inputs={"crs": str(crs), "store": str(store_path)}, top=top, write_map=write_map,
                              basemap=basemap, timings=timings)
    _finish_report(night["report_dict"], night["report"], timings, t0)
    log.info("localise_store: %s, window %s to %s, in %.1f s", "leak detected" if night["report_dict"].get("detected")
             else "no leak", window.start.isoformat(), window.end.isoformat(), timings["total_s"])
    return {**night, "result": result, "network": network, "meters": staged.meters, "join": staged.join,
            "window": window}


def _run_info(network_path: Path, out: Path, *, started: pd.Timestamp, days: int) -> dict[str, Any]:
    """What :func:`twin.alarms.record_run` keeps of a run besides its results."""
    return {"started_at": started, "days": days, "network": str(network_path),
            "network_sha256": file_sha256(network_path), "out_dir": str(out)}


def _finish_night(store: Store, network: Network, result: Localisation, staged: "_Staged", window: Window, out: Path,
                  *, record: bool, run_info: dict[str, Any], inputs: dict[str, Any], top: int, write_map: bool,
                  basemap: str, timings: dict[str, float]) -> dict[str, Any]:
    """The report, work orders and outputs of one night's localisation, and (``record``) its run and alarms.

    Returns
    -------
    dict
        The output paths (``candidates``, ``report``, ``map``, ``plan``),
        ``report_dict`` (to be finished by :func:`_finish_report`) and
        ``alarms`` (the :class:`twin.alarms.RunRecord`, None without ``record``).
    """
    report = _job_report(result, staged, network)
    report["inputs"] = {"network": run_info["network"], **inputs, "window_start": window.start,
                        "window_end": window.end, "days": int(run_info["days"]), "window_days": round(window.days, 3)}
    orders = _work_orders(network, result, staged, out, top=top, timings=timings)
    paths: dict[str, Any] = _write_outputs(network, result, staged, out, write_map=write_map, basemap=basemap,
                                           timings=timings, plan=orders)
    if orders is not None:
        paths["plan"] = out / "plan"
    run = None
    if record:
        run = record_run(store, window, report, result.candidates, **run_info)
        report["run_id"] = run.run_id
        report["alarms"] = run.states.to_dict("records")
    return {**paths, "report_dict": report, "alarms": run}


def localise_backfill(
    network_path: str | Path,
    *,
    crs: Any,
    store_path: str | Path,
    out_dir: str | Path,
    start: Any,
    until: Any = None,
    days: int = settings.RUN_DAYS,
    top: int = 5,
    write_map: bool = True,
    basemap: str = "osm",
    progress: Callable[[str, int, int], None] | None = None,
    gis_options: Mapping[str, Any] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    client: Any = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """The nightly job for every night of a period, as a utility starting with a history runs it once.

    Night ``d`` is the run :func:`localise_store` makes with ``until=d``; the
    runs, alarms and candidates recorded are those of running the nights one
    by one, in order. The nights are not independent (a night's window
    reaches back to the onsets of the alarms still open after the previous
    night, :func:`twin.alarms.window_for_alarms`), so the work is split:

    1. every night's window is planned with the alarms open now;
    2. each window not computed yet is read and localised as one Dask task
       (:mod:`twin.scale`; the parsed network goes to each worker once), the
       next ``BACKFILL_AHEAD`` nights per worker at once, the store opened
       read-only by the workers;
    3. in this process, night after night: the window the night needs given
       the alarms recorded so far; when it was computed, its outputs are
       written and its run and alarms recorded; when not (an alarm opened,
       moved or closed), or all are recorded, back to 1 for the nights left.
       A window that changes costs at most one batch of nights computed
       twice.

    A night whose data the job refuses is recorded as a failed run (the
    alarms stay as they were) and the backfill goes on.

    Parameters
    ----------
    network_path, crs, store_path : as :func:`localise_store`
    out_dir : str or Path
        Output folder: one sub-folder per night, ``YYYY-MM-DD``, with the
        outputs of :func:`localise_store`.
    start, until : date or str
        First and last night (local days, ``YYYY-MM-DD``); ``until`` defaults
        to the day of the latest stored reading.
    days : int
        Local days in each night's window.
    top, write_map, basemap, gis_options, **options
        As :func:`localise_store`.
    progress : callable, optional
        ``progress("nights", done, total)``.
    workers, scheduler, client
        As :func:`twin.bench.run_bench`: Dask tasks on a local cluster of
        ``workers`` processes (None: the machine's cores), on a scheduler, or
        on an open client; ``workers=1`` computes the nights one by one in
        this process.

    Returns
    -------
    list of dict
        One per night, in order: ``day``, ``window``, ``run_id``,
        ``detected``, ``leak_flow_lps``, ``alarms`` (DataFrame of the alarms
        the run touched), ``out`` (its folder), ``error`` (a failed night's
        message, else None) and ``rounds`` (how many times step 2 ran, the
        same on every row: one per batch of nights, plus one for each
        window an alarm moved).
    """
    t0 = time.perf_counter()
    network_path = require_file(network_path, what="network")
    store_path = require_file(store_path, what="store")
    out = output_folder(out_dir)
    nights = backfill_nights(store_path, start=start, until=until, days=days)
    network = read_network(network_path, crs=crs, **dict(gis_options or {}))
    require_supplied_demands(network)
    log.info("backfill: %d nights from %s to %s", len(nights), nights[0][0], nights[-1][0])
    settings_ = {"crs": crs, "days": days, "top": top, "write_map": write_map, "basemap": basemap}
    with _backfill_client(len(nights), workers=workers, scheduler=scheduler, client=client) as cl:
        shared = {"network": share(cl, network) if cl is not None else network}
        rows = _backfill_rounds(nights, network, network_path, store_path, out, cl=cl, shared=shared,
                                settings_=settings_, options=options, progress=progress)
    log.info("backfill: %d nights in %.1f s", len(rows), time.perf_counter() - t0)
    return rows


def backfill_nights(store_path: str | Path, *, start: Any, until: Any = None,
                    days: int = settings.RUN_DAYS) -> list[tuple[date, Window]]:
    """The nights of a backfill and each one's window (:func:`run_window`), checked before any work.

    Raises
    ------
    InputError
        A day is not a date, ``start`` is after ``until``, or a night's
        window holds no readings (the message names the night).
    """
    first = _as_day(start, "--from")
    with Store(store_path, read_only=True) as store:
        stored = store.time_range()
        if stored is None:
            run_window(store)  # raises: the store holds no readings
        last_day = ((stored[1] - pd.Timedelta(microseconds=1)).tz_convert(settings.TIMEZONE).date()  # type: ignore[index]
                    if until is None else _as_day(until, "--until"))
        if first > last_day:
            raise InputError(f"--from {first} is after --until {last_day}", element="--from",
                             fix="give the first night of the period, then --until its last night")
        return [(d.date(), run_window(store, until=d.date(), days=days))
                for d in pd.date_range(first, last_day, freq="D")]


def _as_day(value: Any, option: str) -> date:
    try:
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{value!r} is not a date", element=option,
                         fix=f"give a local day as YYYY-MM-DD, e.g. {option} 2026-03-08") from None


@contextmanager
def _backfill_client(nights: int, *, workers: int | None, scheduler: str | None, client: Any) -> Iterator[Any]:
    """The Dask client of a backfill (None: the nights are computed in this process)."""
    if client is not None:
        yield client
    elif use_cluster(nights, workers=workers, scheduler=scheduler):
        with dask_client(scheduler, workers=workers) as cl:
            yield cl
    else:
        yield None


def _backfill_rounds(nights: list[tuple[date, Window]], network: Network, network_path: Path, store_path: Path,
                     out: Path, *, cl: Any, shared: dict[str, Any], settings_: dict[str, Any], options: dict,
                     progress: Callable[[str, int, int], None] | None) -> list[dict[str, Any]]:
    """Steps 1-3 of :func:`localise_backfill` until every night is recorded."""
    computed: dict[Window, Any] = {}
    rows: list[dict[str, Any]] = []
    rounds = 0
    chunk = BACKFILL_AHEAD * max(1, len(cl.scheduler_info().get("workers", {}))) if cl is not None else 1
    while len(rows) < len(nights):
        ahead = nights[len(rows):len(rows) + chunk]
        todo = [w for w in dict.fromkeys(_planned_windows(store_path, ahead)) if w not in computed]
        rounds += 1
        computed.update(_compute_windows(todo, cl=cl, shared=shared, store_path=store_path, options=options))
        with Store(store_path) as store:
            meters, join = _registry(store, network)
            staged = _Staged(None, meters, join, pd.DataFrame(), None)  # type: ignore[arg-type]
            for day, base in nights[len(rows):]:
                window = _within_readings(window_for_alarms(base, open_alarms(store)), store)
                if window not in computed:
                    break  # the alarms moved this night's window: plan the nights left again
                rows.append(_record_night(store, network, network_path, staged, computed.pop(window), window,
                                          out / day.isoformat(), store_path=store_path, settings_=settings_))
                rows[-1]["day"] = day
                if progress is not None:
                    progress("nights", len(rows), len(nights))
    for row in rows:
        row["rounds"] = rounds
    return rows


def _planned_windows(store_path: Path, nights: list[tuple[date, Window]]) -> list[Window]:
    """The windows of ``nights`` with the alarms open now (step 1 of :func:`localise_backfill`)."""
    with Store(store_path, read_only=True) as store:
        alarms = open_alarms(store) if store.has_table("alarms") else pd.DataFrame()
        return [_within_readings(window_for_alarms(base, alarms), store) for _, base in nights]


def _compute_windows(windows: list[Window], *, cl: Any, shared: dict[str, Any], store_path: Path,
                     options: dict) -> dict[Window, Any]:
    """Read and localise each window: as Dask tasks with a client, else here (step 2 of :func:`localise_backfill`)."""
    if not windows:
        return {}
    if cl is None:
        return {w: _localise_window(w, store_path=store_path, options=options, **shared) for w in windows}
    results = map_tasks(cl, _localise_window, windows, shared={**shared, "store_path": store_path,
                                                                 "options": options},
                        on_error=lambda w, exc: exc, stage="windows")
    return dict(zip(windows, results))


def _localise_window(window: Window, *, network: Network, store_path: Path, options: dict) -> Any:
    """One night's expensive part, a Dask task: read its window from the store (read-only) and localise.

    Returns the :class:`twin.localise.Localisation` (without its internals,
    which only the classic method reads), with ``read_s`` and
    ``localise_s`` in its report's timings; or the :class:`TwinError` the
    night's data raised.
    """
    t0 = time.perf_counter()
    try:
        with Store(store_path, read_only=True) as store:
            staged = _read_store(store, network, window)
        t1 = time.perf_counter()
        result = localise(network, meters=staged.meters, join=staged.join, measurements=staged.measurements,
                          **options)
    except TwinError as exc:
        return exc
    report = dict(result.report)
    report["timings_s"] = {**report.get("timings_s", {}), "read_s": round(t1 - t0, 3),
                           "localise_s": round(time.perf_counter() - t1, 3)}
    return Localisation(result.candidates, report, result.residuals)


def _record_night(store: Store, network: Network, network_path: Path, staged: "_Staged", outcome: Any,
                  window: Window, out: Path, *, store_path: Path, settings_: dict[str, Any]) -> dict[str, Any]:
    """Step 3 of :func:`localise_backfill` for one night: outputs, run and alarms (a failed run on bad data)."""
    t0, started = time.perf_counter(), pd.Timestamp.now(tz="UTC")
    out = output_folder(out)
    run_info = _run_info(network_path, out, started=started, days=settings_["days"])
    row: dict[str, Any] = {"window": window, "out": out, "error": None, "detected": False, "leak_flow_lps": None,
                           "alarms": pd.DataFrame()}
    if isinstance(outcome, TwinError):
        row.update({"run_id": record_failed_run(store, window, outcome, **run_info), "error": str(outcome)})
        return row
    if isinstance(outcome, BaseException):  # a bug or a lost worker, not the night's data
        raise outcome
    timings: dict[str, float] = {}
    night = _finish_night(store, network, outcome, staged, window, out, record=True, run_info=run_info,
                          inputs={"crs": str(settings_["crs"]), "store": str(store_path)}, top=settings_["top"],
                          write_map=settings_["write_map"], basemap=settings_["basemap"], timings=timings)
    _finish_report(night["report_dict"], night["report"], timings, t0)
    report = night["report_dict"]
    row.update({"run_id": report["run_id"], "detected": bool(report.get("detected")),
                "leak_flow_lps": report.get("leak_flow_lps"), "alarms": night["alarms"].states})
    return row


def run_window(store: Store, *, until: Any = None, days: int = settings.RUN_DAYS) -> Window:
    """The readings window of a run from the store: ``days`` whole local days ending with ``until``.

    Parameters
    ----------
    store : Store
    until : date or str, optional
        Last local day (``YYYY-MM-DD``); default the local day of the latest
        stored reading.
    days : int
        Number of local days (at least 1).

    Returns
    -------
    Window
        UTC bounds, local midnights (``settings.TIMEZONE``), narrowed to the
        stored readings (a run cannot see beyond them).

    Raises
    ------
    InputError
        The store holds no readings, or none in the window (the message gives
        the stored period).
    """
    if days < 1:
        raise InputError(f"a run needs at least one day, not {days}", element="--days", fix="give --days 7")
    stored = store.time_range()
    if stored is None:
        raise InputError("the store holds no readings", path=store.path,
                         fix="run `twin ingest --readings FILE --store DB` first")
    tz = settings.TIMEZONE
    try:
        last_day = ((stored[1] - pd.Timedelta(microseconds=1)).tz_convert(tz).date() if until is None
                    else until if isinstance(until, date) else date.fromisoformat(str(until)))
    except ValueError:
        raise InputError(f"{until!r} is not a date", element="--until",
                         fix="give the last local day as YYYY-MM-DD, e.g. --until 2026-03-08") from None
    end = pd.Timestamp(last_day).tz_localize(tz) + pd.Timedelta(days=1)
    window = Window((end - pd.Timedelta(days=days)).tz_convert("UTC"), end.tz_convert("UTC"))
    if store.reading_count(start=window.start, end=window.end) == 0:
        first, last = (t.tz_convert(tz).isoformat() for t in stored)
        raise InputError(f"the store holds no readings from {window.start.tz_convert(tz).isoformat()} to "
                         f"{window.end.tz_convert(tz).isoformat()} (it holds {first} to {last})",
                         path=store.path, fix="give --until a day of that period, or ingest the days first")
    return _within_readings(window, store)


def _within_readings(window: Window, store: Store) -> Window:
    """The part of ``window`` the store holds readings for (what a run can see; alarms are judged on it)."""
    first, last = store.time_range()  # type: ignore[misc]
    return Window(max(window.start, first), min(window.end, last + pd.Timedelta(seconds=1)))


def _read_store(store: Store, network: Network, window: Window) -> "_Staged":
    """The job's inputs from the store: registry, join (computed when the store has none) and the window's measurements."""
    meters, join = _registry(store, network)
    measurements = measurements_from_store(store, network, meters=meters, start=window.start, end=window.end)
    return _Staged(None, meters, join, pd.DataFrame(), measurements)


def _registry(store: Store, network: Network) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The store's meter registry and its join to the network (computed when the store has none)."""
    meters = store.meters()
    join = store.join()
    if join is None or join.empty:
        log.info("the store holds no meter join: joining the registry to the network")
        join = join_meters(meters, network)
    if not join["matched"].any():
        raise InputError("no customer meter of the store could be joined to the network", path=store.path,
                         fix="check --crs of the network (the registry was ingested with its own --meters-crs)")
    return meters, join


def _work_orders(network: Network, result: Localisation, staged: "_Staged", out: Path, *, top: int,
                 timings: dict[str, float]) -> gpd.GeoDataFrame | None:
    """Work orders for the ``top`` candidates of a detected leak (of each, with several), written to ``out/plan``; None otherwise."""
    if top <= 0 or not result.report.get("detected") or not len(result.candidates):
        return None
    t = time.perf_counter()
    plan_dir = out / "plan"
    if plan_dir.is_dir():
        shutil.rmtree(plan_dir)
    cands, top_n = result.candidates, top
    if "leak_id" in cands.columns:  # several leaks: the ``top`` best of each, a pipe once
        cands = cands.sort_values(["rank", "leak_id"], kind="stable").groupby("leak_id", sort=False).head(top)
        cands, top_n = cands.drop_duplicates("link_id").reset_index(drop=True), None
    orders = plan_repairs(network, candidates=cands, join=staged.join, meters=staged.meters, top_n=top_n)
    write_plan(orders, plan_dir, network, join=staged.join, meters=staged.meters)
    timings["plan_s"] = time.perf_counter() - t
    return orders


@dataclass
class _Staged:
    """What the job reads from the store after ingesting the files."""

    summary: Any  # twin.store.IngestSummary; None when read from the store without ingest
    meters: gpd.GeoDataFrame
    join: pd.DataFrame
    quarantine: pd.DataFrame
    measurements: Measurements


def output_folder(out_dir: str | Path, *, option: str = "--out") -> Path:
    """Create the output folder and make sure files can be written in it, before any work is done.

    Parameters
    ----------
    out_dir : str or Path
        The folder (created with its parents when missing).
    option : str
        The command-line option that names it, for the message.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        When the path is a file, or the folder cannot be created or written
        (read-only folder or file system, a file where a parent folder should
        be, no permission). A test write is the only sure check: permission
        bits say nothing of read-only mounts, and root ignores them.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the output path is a file", path=out, fix=f"give a folder for {option}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise InputError(f"cannot write in the output folder ({exc.strerror or exc})", path=out,
                         fix=f"give {option} a folder you can write to, or make this one writable "
                             "(e.g. chmod u+w)") from None
    return out


def _ingest_files(network: Network, meters_path: Path, readings_path: Path, *, meters_crs: Any,
                  store_path: str | Path | None, progress: Callable[[str, int, int], None] | None) -> _Staged:
    """Ingest the contract files into a store (a temporary one by default) and read back the job's inputs."""
    tmp = tempfile.TemporaryDirectory(prefix="twin-store-") if store_path is None else None
    db = Path(tmp.name) / "store.duckdb" if tmp is not None else Path(store_path)
    try:
        with Store(db) as store:
            summary = store.ingest(meters_path, readings_path, meters_crs=meters_crs, network=network,
                                   progress=progress)
            refuse_all_quarantined(summary, readings_path)  # names the file and the likely cause
            meters = store.meters()
            staged = _Staged(summary, meters, store.join(), store.quarantine(),
                             measurements_from_store(store, network, meters=meters))
    finally:
        if tmp is not None:
            tmp.cleanup()
    if staged.join is None or staged.join.empty:
        raise InputError("no customer meter could be joined to the network", path=meters_path,
                         fix="check --crs of the network and --meters-crs of the registry")
    return staged


def _ingest_report(staged: _Staged) -> dict[str, Any]:
    """The ingest part of ``report.json``: the summary, quarantine reasons and the join."""
    q = staged.quarantine
    reasons = q["reason"].value_counts().to_dict() if len(q) and "reason" in q else {}
    join = staged.join
    return {
        **staged.summary.as_dict(),
        "quarantined_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "customer_meters_joined": int(join["matched"].sum()),
        "customer_meters_unmatched": int((~join["matched"].astype(bool)).sum()),
    }


def _write_candidates(candidates: pd.DataFrame, path: Path) -> Path:
    """``candidates.csv``: lon/lat to 1e-7 degrees (about 1 cm, the crew navigates to them), the rest to 6 digits."""
    table = candidates.copy()
    for col in ("lon", "lat"):
        if col in table:
            table[col] = table[col].map(lambda v: f"{v:.7f}" if pd.notna(v) else "")
    table.to_csv(path, index=False, float_format="%.6g")
    return path


def _write_job_map(network: Network, result: Localisation, staged: _Staged, path: Path, *, basemap: str,
                   plan: gpd.GeoDataFrame | None = None) -> Path:
    """The crew map of one localisation: candidates, meters, the loggers' residual changes and any work orders."""
    m = crew_map(network, candidates=result.candidates if len(result.candidates) else None,
                 join=staged.join, meters=staged.meters, residuals=logger_residuals(result), basemap=basemap,
                 plan=plan,
                 title="Leak candidates" if result.report.get("detected") else "No leak detected")
    return save_map(m, path)


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote and found.

    Attributes
    ----------
    paths : dict of str to Path
        ``candidates``, ``report``, ``balance``, ``map`` and, when work orders
        were planned, ``plan`` (a folder).
    report : dict
        The localisation report (``report.json``).
    candidates : pandas.DataFrame
        Ranked leak candidates (empty when no leak was detected).
    balance : pandas.DataFrame
        Water balance per DMA and local day.
    orders : geopandas.GeoDataFrame or None
        Work orders for the top candidates; None when no leak was detected.
    truth : dict or None
        The ``truth.json`` scored against, if any.
    hit : dict or None
        :func:`twin.bench.score_ranking` of the candidates against the true
        leak (``top_distance_m``, ``hit``, ``rank``...), if there is one.
    """

    paths: dict[str, Path]
    report: dict
    candidates: pd.DataFrame
    balance: pd.DataFrame
    orders: gpd.GeoDataFrame | None = None
    truth: dict | None = None
    hit: dict | None = None


def run_demo(
    network_path: str | Path,
    *,
    crs: Any,
    meters_path: str | Path,
    readings_path: str | Path,
    out_dir: str | Path,
    truth_path: str | Path | None = None,
    gis_layers: str | Path | None = None,
    top: int = 5,
    basemap: str = "osm",
    gis_options: Mapping[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """The main job end to end: localise, water balance, work orders, crew map, score.

    Parameters
    ----------
    network_path : str or Path
        Network file (``.inp`` or GIS).
    crs : any pyproj input
        CRS of the network file's coordinates.
    meters_path, readings_path : str or Path
        Files of the data contract (``../shared/DESIGN.md``).
    out_dir : str or Path
        Output folder (created): ``store.duckdb``, ``candidates.csv``,
        ``report.json``, ``balance.csv``/``.parquet``, ``plan/``, ``map.html``.
        A store and plan left by an earlier run are removed first.
    truth_path : str or Path, optional
        ``truth.json`` of a synthetic week, to score the candidates against.
    gis_layers : str or Path, optional
        GeoPackage with the ``valves`` layer for the work orders and the
        ``dmas`` polygons for the map (default: generated valves, DMA outlines
        from the pipes' zones).
    top : int
        Work orders for the ``top`` best candidates.
    basemap : {"osm", "amap", "none"}
        Tiles of the crew map.
    gis_options : mapping, optional
        Options of a GIS network file (see :func:`localise_files`).
    progress : callable, optional
        ``progress(stage, done, total)`` of the localisation job.

    Returns
    -------
    DemoResult
    """
    out = _fresh_output(Path(out_dir))
    store_path = out / "store.duckdb"
    done = localise_files(network_path, crs=crs, meters_path=meters_path, readings_path=readings_path,
                          out_dir=out, store_path=store_path, write_map=False, progress=progress,
                          gis_options=gis_options)
    report, result = done["report_dict"], done["result"]
    net, join, registry = done["network"], done["join"], done["meters"]
    candidates = result.candidates
    paths = {"candidates": done["candidates"], "report": done["report"]}
    balance = _demo_balance(net, join, store_path, out)
    paths["balance"] = out / "balance.csv"
    orders = None
    if report.get("detected") and len(candidates):
        orders = plan_repairs(net, candidates=candidates, join=join, meters=registry, top_n=top,
                              valves=Path(gis_layers) if gis_layers is not None else None)
        write_plan(orders, out / "plan", net, join=join, meters=registry)
        paths["plan"] = out / "plan"
    dmas = gpd.read_file(gis_layers, layer="dmas") if gis_layers is not None else None
    m = crew_map(net, candidates=candidates if len(candidates) else None, join=join, meters=registry,
                 balance=balance, residuals=logger_residuals(result), plan=orders, basemap=basemap,  # type: ignore[arg-type]
                 dmas=dmas, title="Leak candidates" if report.get("detected") else "No leak detected")
    paths["map"] = save_map(m, out / "map.html")
    truth, hit = score_against_truth(net, candidates, truth_path)
    return DemoResult(paths=paths, report=report, candidates=candidates, balance=balance, orders=orders,
                      truth=truth, hit=hit)


def _fresh_output(out: Path) -> Path:
    """Create the demo's output folder (refused, one line, when it is a file or cannot be written);
    remove a store and plan left by an earlier run."""
    out = output_folder(out)
    for stale in (out / "store.duckdb", out / "store.duckdb.wal", out / "plan"):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    return out


def _demo_balance(network: Network, join: pd.DataFrame, store_path: Path, out: Path) -> pd.DataFrame:
    """Water balance of the ingested week: stored as table ``balance`` and written as CSV and Parquet."""
    with Store(store_path) as store:
        balance = water_balance(network, store, join=join)
        store.write_table("balance", balance)
    write_balance(balance, out)
    return balance


def score_against_truth(
    network: Network, candidates: pd.DataFrame, truth_path: str | Path | None
) -> tuple[dict | None, dict | None]:
    """The truth of a synthetic week and how the candidates score against its leak.

    Parameters
    ----------
    network : Network
        The network the candidates rank (pipe lengths in metres).
    candidates : pandas.DataFrame
        Ranked candidates (``rank``, ``link_id``, ``length_m``).
    truth_path : str or Path, optional
        ``truth.json`` of :func:`twin.synth.synth_readings`; a missing file
        gives no truth.

    Returns
    -------
    truth : dict or None
        The parsed ``truth.json``.
    hit : dict or None
        :func:`twin.bench.score_ranking` (pipe distances in metres) when the
        truth has a leak and there are candidates.
    """
    if truth_path is None or not Path(truth_path).exists():
        return None, None
    truth = json.loads(Path(truth_path).read_text(encoding="utf-8"))
    leak = truth.get("leak")
    if not leak or not len(candidates):
        return truth, None
    dist = pipe_distances(network, leak["link_id"], float(leak["position"]), to="middle")
    length = float(network.links.loc[network.links["link_type"] == "pipe", "length_m"].sum())
    return truth, score_ranking(candidates, dist, leak["link_id"], length)
