"""Chains the stages for the command line: files in, files out, no logic of its own.

:func:`localise_files` is the leak-localisation job on files of the data
contract (``twin localise``); :func:`localise_store` is the same job on a window of
the store's readings, the nightly run that remembers its alarms
(``twin localise --store``); :func:`run_demo` is the morning's work end to end
(``twin demo``): that job, the water balance, work orders for the top
candidates, the crew map and, when the truth is known, the score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import settings
from twin.alarms import Window, open_alarms, record_failed_run, record_run, window_for_alarms
from twin.balance import water_balance
from twin.bench import score_ranking
from twin.errors import InputError, TwinError, require_file
from twin.graph import pipe_distances
from twin.localise import Localisation, localise
from twin.maps import crew_map, save_map
from twin.measure import Measurements, measurements_from_store
from twin.meters import join_meters, join_warnings
from twin.network import Network, read_network
from twin.validate import require_supplied_demands
from twin.repair import plan_repairs, write_plan
from twin.store import Store

log = logging.getLogger(__name__)


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
        run_info = {"started_at": started, "days": days, "network": str(network_path),
                    "network_sha256": file_sha256(network_path), "out_dir": str(out)}
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
        report = _job_report(result, staged, network)
        report["inputs"] = {"network": str(network_path), "crs": str(crs), "store": str(store_path),
                            "window_start": window.start, "window_end": window.end, "days": int(days),
                            "window_days": round(window.days, 3)}
        orders = _work_orders(network, result, staged, out, top=top, timings=timings)
        paths = _write_outputs(network, result, staged, out, write_map=write_map, basemap=basemap,
                               timings=timings, plan=orders)
        if orders is not None:
            paths["plan"] = out / "plan"
        run = None
        if record:
            run = record_run(store, window, report, result.candidates, **run_info)
            report["run_id"] = run.run_id
            report["alarms"] = run.states.to_dict("records")
    _finish_report(report, paths["report"], timings, t0)
    log.info("localise_store: %s, window %s to %s, in %.1f s", "leak detected" if report.get("detected") else
             "no leak", window.start.isoformat(), window.end.isoformat(), timings["total_s"])
    return {**paths, "report_dict": report, "result": result, "network": network, "meters": staged.meters,
            "join": staged.join, "window": window, "alarms": run}


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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), to tell later which network a run used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_store(store: Store, network: Network, window: Window) -> "_Staged":
    """The job's inputs from the store: registry, join (computed when the store has none) and the window's measurements."""
    meters = store.meters()
    join = store.join()
    if join is None or join.empty:
        log.info("the store holds no meter join: joining the registry to the network")
        join = join_meters(meters, network)
    if not join["matched"].any():
        raise InputError("no customer meter of the store could be joined to the network", path=store.path,
                         fix="check --crs of the network (the registry was ingested with its own --meters-crs)")
    measurements = measurements_from_store(store, network, meters=meters, start=window.start, end=window.end)
    return _Staged(None, meters, join, pd.DataFrame(), measurements)


def _work_orders(network: Network, result: Localisation, staged: "_Staged", out: Path, *, top: int,
                 timings: dict[str, float]) -> gpd.GeoDataFrame | None:
    """Work orders for the ``top`` candidates of a detected leak, written to ``out/plan``; None otherwise."""
    if top <= 0 or not result.report.get("detected") or not len(result.candidates):
        return None
    t = time.perf_counter()
    plan_dir = out / "plan"
    if plan_dir.is_dir():
        shutil.rmtree(plan_dir)
    orders = plan_repairs(network, candidates=result.candidates, join=staged.join, meters=staged.meters, top_n=top)
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
    """Create the demo's output folder; remove a store and plan left by an earlier run."""
    out.mkdir(parents=True, exist_ok=True)
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
    balance.to_csv(out / "balance.csv", index=False, float_format="%.4f")
    balance.to_parquet(out / "balance.parquet", index=False)
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
