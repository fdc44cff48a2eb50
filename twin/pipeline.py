"""Chains the stages for the command line: files in, files out, no logic of its own.

:func:`localise_files` is the leak-localisation job on files of the data
contract (``twin localise``); :func:`run_demo` is the morning's work end to end
(``twin demo``): that job, the water balance, work orders for the top
candidates, the crew map and, when the truth is known, the score.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import settings
from twin.balance import water_balance
from twin.bench import score_ranking
from twin.errors import InputError, require_file
from twin.graph import pipe_distances
from twin.localise import Localisation, localise
from twin.maps import crew_map, save_map
from twin.measure import Measurements, measurements_from_store
from twin.meters import join_warnings
from twin.network import Network, read_network
from twin.validate import require_supplied_demands
from twin.repair import plan_repairs, write_plan
from twin.store import Store, refuse_all_quarantined

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
    report = dict(result.report)
    join_notes = join_warnings(staged.join, network, meters=staged.meters)
    report["warnings"] = [*report.get("warnings", []), *join_notes]
    report["degraded"] = bool(report.get("degraded")) or bool(join_notes) or any(
        str(w).startswith("degraded") for w in report["warnings"])
    report["ingest"] = _ingest_report(staged)
    report["inputs"] = {"network": str(network_path), "crs": str(crs), "meters": str(meters_path),
                        "readings": str(readings_path), "meters_crs": str(meters_crs)}
    paths = {"candidates": _write_candidates(result.candidates, out / "candidates.csv"),
             "report": out / "report.json"}
    if write_map:
        t3 = time.perf_counter()
        paths["map"] = _write_job_map(network, result, staged, out / "map.html", basemap=basemap)
        timings["map_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    report["timings_s"] = {**report.get("timings_s", {}), **{k: round(v, 3) for k, v in timings.items()}}
    paths["report"].write_text(json.dumps(report, indent=2, default=_json_default), encoding="utf-8")
    log.info("localise_files: %s in %.1f s; wrote %s", "leak detected" if report.get("detected") else "no leak",
             timings["total_s"], ", ".join(p.name for p in paths.values()))
    return {**paths, "report_dict": report, "result": result, "network": network, "meters": staged.meters,
            "join": staged.join}


@dataclass
class _Staged:
    """What the job reads from the store after ingesting the files."""

    summary: Any  # twin.store.IngestSummary
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


def _write_job_map(network: Network, result: Localisation, staged: _Staged, path: Path, *, basemap: str) -> Path:
    """The crew map of one localisation: candidates, meters and the loggers' residual changes."""
    m = crew_map(network, candidates=result.candidates if len(result.candidates) else None,
                 join=staged.join, meters=staged.meters, residuals=logger_residuals(result), basemap=basemap,
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
