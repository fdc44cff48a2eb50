"""The leak-localisation harness on L-Town and the Yingtan small network.

Usage::

    python benchmarks/bench_localise.py [--scenarios N] [--leak-free M] [--seed S] [--yingtan PATH]
                                        [--generator twin|epyt-flow]

Generates N leak scenarios and M leak-free weeks per network with
``twin.synth.synth_readings``, runs the job and the classic method on each and
prints the figures of ``twin.bench.format_summary`` plus the run time of the
whole job (files to map) on one L-Town week. The Yingtan small network is
built with ``twin synth city --size small`` into a temporary folder unless
``--yingtan`` names an existing ``yingtan-small.inp``. ``--generator
epyt-flow`` makes the weeks with EPyT-Flow instead (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from twin.bench import GENERATORS, format_report, run_bench

ROOT = Path(__file__).resolve().parents[1]
LTOWN = ROOT.parent / "shared" / "networks" / "L-TOWN.inp"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=10)
    ap.add_argument("--leak-free", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--yingtan", type=Path, default=None)
    ap.add_argument("--skip-yingtan", action="store_true")
    ap.add_argument("--generator", choices=GENERATORS, default="twin")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        # one whole job, files to map
        from twin.pipeline import localise_files
        from twin.synth import synth_readings

        files = synth_readings(LTOWN, crs="EPSG:32650", days=7, leak="random", seed=args.seed, out_dir=Path(tmp) / "w")
        t0 = time.perf_counter()
        res = localise_files(LTOWN, crs="EPSG:32650", meters_path=files["meters"], readings_path=files["readings"],
                             out_dir=Path(tmp) / "out")
        print(f"L-Town week, files to map: {time.perf_counter() - t0:.1f} s "
              f"(stages: {res['report_dict']['timings_s']})")
        runs = [(LTOWN, "EPSG:32650")]
        if not args.skip_yingtan:
            yt = args.yingtan
            if yt is None:
                from twin.synth import synth_city

                yt = synth_city(size="small", seed=2026, out_dir=Path(tmp) / "yt")["inp"]
            runs.append((Path(yt), "EPSG:4548"))
        for net, crs in runs:
            t0 = time.perf_counter()
            r = run_bench(net, crs=crs, scenarios=args.scenarios, leak_free=args.leak_free, seed=args.seed,
                          generator=args.generator, classic=args.generator == "twin")
            print(format_report(r))
            print(f"({time.perf_counter() - t0:.0f} s for the whole harness)\n")


if __name__ == "__main__":
    main()
