"""Benchmark of the synth stage: the Yingtan ``city`` size and a week of readings.

Prints wall times and peak memory (resident set size of this process, which
includes EPANET running in-process through WNTR's toolkit binding):

1. ``synth_city(size="city")``: 20,000+ pipes, 130,000 customers;
2. ``synth_readings`` for a week on it: 130,000 customer meters (~1.8 M
   register readings), pressure loggers and flow meters every 15 minutes,
   written as ``readings.csv``.

Target (issue 3): step 2 in under 3 minutes on 2 cores, peak memory under
4 GiB.

Usage::

    python benchmarks/bench_synth.py [--size city|small] [--days 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="city", choices=["small", "city"])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--keep", type=Path, default=None, help="write the files here instead of a temporary folder")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("wntr", "pyogrio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from twin.synth import synth_city, synth_readings

    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        out = args.keep or Path(tmp)
        t0 = time.perf_counter()
        net = synth_city(size=args.size, seed=args.seed, out_dir=out / "network")
        t1 = time.perf_counter()
        rss_city = _peak_rss_gib()
        paths = synth_readings(net["inp"], crs="EPSG:4548", days=args.days, leak="random", seed=args.seed,
                               out_dir=out / "week")
        t2 = time.perf_counter()
        truth = json.loads(paths["truth"].read_text())
        size_mb = paths["readings"].stat().st_size / 1e6
        print(f"synth_city({args.size!r}):        {t1 - t0:7.1f} s   (peak RSS so far {rss_city:.2f} GiB)")
        print(f"synth_readings({args.days} days):     {t2 - t1:7.1f} s   "
              f"{truth['customers']['count']:,} customers, {truth['pressure_loggers']} pressure loggers, "
              f"{truth['flow_meters']} flow meters")
        print(f"readings rows:               {truth['readings_rows']:,}  ({size_mb:.0f} MB CSV)")
        print(f"peak RSS (whole run):        {_peak_rss_gib():7.2f} GiB")
        print(f"NRW before leak:             {truth['nrw_pct_before_leak']:.1f} %   "
              f"system input {truth['system_input_m3_per_day']:,.0f} m3/day; "
              f"leak {truth['leak']['flow_lps']:.1f} L/s on {truth['leak']['link_id']}")


if __name__ == "__main__":
    main()
