"""Chains the stages for the command line: files in, files out, no logic of its own."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import InputError, require_file

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


def logger_residuals(result: Any) -> pd.DataFrame | None:
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
    **options
        Passed to :func:`twin.localise.localise`.

    Returns
    -------
    dict
        ``candidates``, ``report``, ``map`` (paths), ``report_dict``, ``result``
        (the :class:`~twin.localise.Localisation`) and the ``network``,
        ``meters`` and ``join`` the job used.
    """
    from twin.localise import localise
    from twin.measure import measurements_from_store
    from twin.network import read_network
    from twin.store import Store

    t0 = time.perf_counter()
    network_path = require_file(network_path, what="network")
    meters_path = require_file(meters_path, what="meters")
    readings_path = require_file(readings_path, what="readings")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the output path is a file", path=out, fix="give a folder for --out")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    network = read_network(network_path, crs=crs)
    timings["network_s"] = time.perf_counter() - t0
    tmp = tempfile.TemporaryDirectory(prefix="twin-store-") if store_path is None else None
    db = Path(tmp.name) / "store.duckdb" if tmp is not None else Path(store_path)
    try:
        t1 = time.perf_counter()
        with Store(db) as store:
            summary = store.ingest(meters_path, readings_path, meters_crs=meters_crs, network=network,
                                   progress=progress)
            meters = store.meters()
            join = store.join()
            quarantine = store.quarantine()
            measurements = measurements_from_store(store, network, meters=meters)
        timings["ingest_s"] = time.perf_counter() - t1
    finally:
        if tmp is not None:
            tmp.cleanup()
    if join is None or join.empty:
        raise InputError("no customer meter could be joined to the network", path=meters_path,
                         fix="check --crs of the network and --meters-crs of the registry")
    t2 = time.perf_counter()
    result = localise(network, meters=meters, join=join, measurements=measurements, progress=progress, **options)
    timings["localise_s"] = time.perf_counter() - t2
    report = dict(result.report)
    reasons = (quarantine["reason"].value_counts().to_dict() if len(quarantine) and "reason" in quarantine
               else {})
    report["ingest"] = {
        **summary.as_dict(),
        "quarantined_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "customer_meters_joined": int(join["matched"].sum()),
        "customer_meters_unmatched": int((~join["matched"].astype(bool)).sum()),
    }
    report["inputs"] = {"network": str(network_path), "crs": str(crs), "meters": str(meters_path),
                        "readings": str(readings_path), "meters_crs": str(meters_crs)}
    paths = {"candidates": out / "candidates.csv", "report": out / "report.json"}
    # lon/lat to 1e-7 degrees (about 1 cm): the crew navigates to them; the rest to 6 digits
    table = result.candidates.copy()
    for col in ("lon", "lat"):
        if col in table:
            table[col] = table[col].map(lambda v: f"{v:.7f}" if pd.notna(v) else "")
    table.to_csv(paths["candidates"], index=False, float_format="%.6g")
    if write_map:
        t3 = time.perf_counter()
        from twin.maps import crew_map, save_map

        res_map = logger_residuals(result)
        m = crew_map(network, candidates=result.candidates if len(result.candidates) else None,
                     join=join, meters=meters, residuals=res_map, basemap=basemap,
                     title="Leak candidates" if report.get("detected") else "No leak detected")
        paths["map"] = save_map(m, out / "map.html")
        timings["map_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    report["timings_s"] = {**report.get("timings_s", {}), **{k: round(v, 3) for k, v in timings.items()}}
    paths["report"].write_text(json.dumps(report, indent=2, default=_json_default), encoding="utf-8")
    log.info("localise_files: %s in %.1f s; wrote %s", "leak detected" if report.get("detected") else "no leak",
             timings["total_s"], ", ".join(p.name for p in paths.values()))
    return {**paths, "report_dict": report, "result": result, "network": network, "meters": meters,
            "join": join}
