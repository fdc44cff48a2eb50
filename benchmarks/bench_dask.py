"""Benchmark of the scale-out on Dask (twin.scale). Prints numbers, asserts nothing.

    python benchmarks/bench_dask.py                          # 6 harness weeks, a 30-night backfill, 1 vs 2 workers
    python benchmarks/bench_dask.py --scenarios 4 --nights 10 --workers 4

On the bundled Yingtan test network (1,010 pipes, 10,000 customers):

- the harness: ``--scenarios`` leak weeks of ``twin bench localise`` (``--days``
  days each, the classic method included) in this process, then as Dask
  tasks on a LocalCluster of ``--workers`` processes; the speed-up over one
  worker, with and without the seconds the cluster takes to start;
- the backfill: a history of ``--nights + --days - 1`` days with one leak
  (:func:`twin.synth.synth_readings`) ingested into a store, then
  ``twin localise --store --from --until`` over ``--nights`` nights with
  one worker (in this process) and with ``--workers``; the time per night,
  the rounds of planning and whether both recorded the same alarms.

Everything is generated in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
NET = ROOT / "networks" / "yingtan-small.inp"
CRS = "EPSG:4548"


def bench_harness(scenarios: int, days: int, workers: int, seed: int) -> None:
    """Time the harness's scenarios in this process and on a local cluster."""
    from twin.bench import run_bench
    from twin.scale import dask_client

    opts = {"crs": CRS, "scenarios": scenarios, "seed": seed, "days": days}
    t = time.perf_counter()
    serial = run_bench(NET, workers=1, **opts)
    t_serial = time.perf_counter() - t
    t = time.perf_counter()
    with dask_client(workers=workers) as client:
        t_start = time.perf_counter() - t
        t1 = time.perf_counter()
        spread = run_bench(NET, client=client, **opts)
        t_tasks = time.perf_counter() - t1
    t_total = time.perf_counter() - t
    same = _same_rows(serial.scenarios, spread.scenarios)
    print(f"harness: {scenarios} weeks of {days} days on {NET.name}")
    print(f"  1 worker (this process): {t_serial:.1f} s ({t_serial / scenarios:.1f} s per week)")
    print(f"  {workers} workers: {t_total:.1f} s with the cluster's start and close, {t_tasks:.1f} s of tasks "
          f"(start {t_start:.1f} s)")
    print(f"  speed-up: {t_serial / t_total:.2f}x overall, {t_serial / t_tasks:.2f}x on the tasks; "
          f"same rows as serial: {same}")
    print(f"  median time of a week's generation + job: {_week_s(serial.scenarios):.1f} s in this process, "
          f"{_week_s(spread.scenarios):.1f} s on a worker (longer when the workers wait for a busy core)")
    print(f"  load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _week_s(rows: pd.DataFrame) -> float:
    """Median seconds a week took (generation and job), from the rows' timings."""
    cols = [c for c in ("synth_s", "twin_s") if c in rows]
    return float(rows[cols].sum(axis=1).median())


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cols = [c for c in a.columns if not c.endswith("_s")]
    try:
        pd.testing.assert_frame_equal(a[cols], b[cols])
    except AssertionError:
        return False
    return True


def make_history(tmp: Path, days: int, seed: int) -> Path:
    """A store holding ``days`` days of readings with one leak."""
    from twin.network import read_network
    from twin.store import Store
    from twin.synth import synth_readings

    t = time.perf_counter()
    files = synth_readings(NET, crs=CRS, days=days, leak="random", seed=seed, out_dir=tmp / "history",
                           readings_format="parquet")
    db = tmp / "history.duckdb"
    with Store(db) as store:
        store.ingest(files["meters"], files["readings"], network=read_network(NET, crs=CRS))
    leak = json.loads(Path(files["truth"]).read_text())["leak"]
    print(f"history: {days} days generated and ingested in {time.perf_counter() - t:.1f} s; the leak: "
          f"{leak['flow_lps']:.2f} L/s on pipe {leak['link_id']} from {leak['onset']}")
    return db


def run_backfill(db: Path, out: Path, *, start, until, days: int, workers: int) -> tuple[float, list[dict]]:
    """One backfill; its time (s) and rows."""
    from twin.pipeline import localise_backfill

    t = time.perf_counter()
    rows = localise_backfill(NET, crs=CRS, store_path=db, out_dir=out, start=start, until=until, days=days,
                             top=0, write_map=False, workers=workers)
    return time.perf_counter() - t, rows


def main() -> None:
    """Parse the options, run both parts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=int, default=6, help="harness weeks")
    parser.add_argument("--days", type=int, default=7, help="days per week and per night's window")
    parser.add_argument("--nights", type=int, default=30, help="nights of the backfill (0: skip)")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers to compare with one")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each figure as soon as it is measured
    if args.scenarios:
        bench_harness(args.scenarios, args.days, args.workers, args.seed)
    if args.nights:
        with tempfile.TemporaryDirectory(prefix="twin-bench-dask-") as tmp:
            bench_backfill(Path(tmp), args.nights, args.days, args.workers, args.seed)


def bench_backfill(tmp: Path, nights: int, days: int, workers: int, seed: int) -> None:
    """Time a backfill of ``nights`` nights with one worker and with ``workers``; compare their alarms."""
    from twin import settings
    from twin.alarms import alarm_history, alarm_table
    from twin.store import Store

    db = make_history(tmp, nights + days - 1, seed)
    copy = Path(shutil.copy(db, tmp / "copy.duckdb"))
    with Store(db, read_only=True) as store:
        first = store.time_range()[0].tz_convert(settings.TIMEZONE)
    start = (first.normalize() + pd.Timedelta(days=days - 1)).date()
    until = start + pd.Timedelta(days=nights - 1)
    print(f"backfill: {nights} nights from {start} to {until}, {days}-day windows")
    results = {}
    for label, path, n in (("1 worker (this process)", db, 1), (f"{workers} workers", copy, workers)):
        t, rows = run_backfill(path, tmp / f"out-{n}", start=start, until=until, days=days, workers=n)
        results[n] = path
        leaks = sum(r["detected"] for r in rows)
        print(f"  {label}: {t:.1f} s for {len(rows)} nights ({t / len(rows):.2f} s per night), "
              f"{leaks} nights with a leak, {rows[0]['rounds']} rounds of planning")
    tables = []
    for path in results.values():
        with Store(path, read_only=True) as store:
            tables.append((alarm_table(store, include_closed=True)[["alarm_id", "dma", "onset", "flow_lps", "status"]],
                           alarm_history(store)[["alarm_id", "run_id", "state"]]))
    same = all(a.equals(b) for a, b in zip(*tables))
    print(f"  same alarms and history: {same}; alarms: "
          + "; ".join(f"#{r.alarm_id} {r.dma} {r.status} {r.flow_lps:.2f} L/s" for r in tables[0][0].itertuples()))


if __name__ == "__main__":
    main()
