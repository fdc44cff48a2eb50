"""Daily operation on a week: ingest each day's readings, run the nightly job from the store. Prints numbers.

    python benchmarks/bench_nightly.py                                   # the bundled Yingtan small week
    python benchmarks/bench_nightly.py --network net.inp --crs EPSG:4548 --week DIR --first-night 4

The week's readings (``DIR/meters.csv``, ``DIR/readings.csv`` or
``.parquet``, local days from the first reading) are cut into local days in a
temporary folder. Day 1 brings the registry (joined to the network); every
day then ingests its file and, from ``--first-night`` on, runs
``twin localise --store`` (map and five work orders included) on the last
``--days`` days. Printed per night: rows ingested, seconds for the ingest and
the job, what each alarm became (new, continuing, closed...), and the window.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", type=Path, default=ROOT / "networks" / "yingtan-small.inp")
    ap.add_argument("--crs", default="EPSG:4548")
    ap.add_argument("--week", type=Path, default=ROOT / "data" / "yingtan-small-week")
    ap.add_argument("--first-night", type=int, default=4, help="First day (1-based) after which the job runs.")
    ap.add_argument("--days", type=int, default=7, help="Days in the job's window.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from twin import settings
    from twin.network import read_network
    from twin.pipeline import localise_store
    from twin.store import Store

    readings = next(p for p in (args.week / "readings.parquet", args.week / "readings.csv") if p.exists())
    r = pd.read_parquet(readings) if readings.suffix == ".parquet" else pd.read_csv(readings, dtype=str)
    local = pd.to_datetime(r["timestamp"], utc=True, format="ISO8601").dt.tz_convert(settings.TIMEZONE)
    day = local.dt.normalize()
    now = (local.max() + pd.Timedelta(days=1)).isoformat()
    network = read_network(args.network, crs=args.crs)
    with tempfile.TemporaryDirectory(prefix="twin-nightly-") as tmp:
        db = Path(tmp) / "store.duckdb"
        with Store(db) as st:
            st.ingest_meters(args.week / "meters.csv", network=network)
        for i, d in enumerate(sorted(day.unique()), start=1):
            f = Path(tmp) / f"day{i}.parquet"
            r[day == d].to_parquet(f)
            t0 = time.perf_counter()
            with Store(db) as st:
                summary = st.ingest(None, f, now=now)
            t_ingest = time.perf_counter() - t0
            line = f"{d.date()}: ingest {summary.accepted:,} rows {t_ingest:.1f} s"
            if i >= args.first_night:
                t1 = time.perf_counter()
                res = localise_store(args.network, crs=args.crs, store_path=db, out_dir=Path(tmp) / f"night{i}",
                                     days=args.days)
                states = ", ".join(f"#{a.alarm_id} {a.dma} {a.state} {a.flow_lps:.2f} L/s"
                                   for a in res["alarms"].states.itertuples()) or "no alarm"
                line += (f"; night {time.perf_counter() - t1:.1f} s (ingest + night "
                         f"{time.perf_counter() - t0:.1f} s), window {res['window'].days:.1f} d: {states}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
