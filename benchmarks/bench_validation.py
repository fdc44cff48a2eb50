"""The localisation job on a folder of contract weeks, scored against their truth.

Usage::

    python benchmarks/bench_validation.py ../shared/validation [--crs EPSG:32650] [--json OUT.json]

A thin wrapper of :func:`twin.bench.run_weeks` (the same as
``twin bench localise --weeks DIR``): every sub-folder holding
``network.inp``, ``meters.csv``, ``readings.csv``/``.parquet`` and
``truth.json`` is one week; the job runs as ``twin localise`` does and the
figures are printed per network (sub-folders such as ``ideal/`` apart),
misses included, with the reliability table of the scores.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from twin.bench import WEEKS_CRS, format_report, run_weeks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--crs", default=WEEKS_CRS)
    ap.add_argument("--json", type=Path, default=None, help="write the per-week rows here")
    ap.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                    help="model calibration on the leak-free days (twin.calibrate; default on)")
    ap.add_argument("--likelihood", choices=("allowance", "fixed"), default="allowance",
                    help="the localisation's likelihood (twin.localise.localise; docs/localise.md, root cause 8)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("wntr").setLevel(logging.ERROR)  # EPANET's per-snapshot warnings
    res = run_weeks(args.root, crs=args.crs, localise_options={"calibrate": args.calibrate,
                                                                        "likelihood": args.likelihood})
    print(format_report(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res.scenarios.to_dict("records"), indent=1, default=str))


if __name__ == "__main__":
    main()
