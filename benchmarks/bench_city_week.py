"""The 130,000-meter city week, files to map: wall time, peak memory and the job's stages.

Usage::

    python benchmarks/bench_city_week.py --dir /tmp/city [--runs 1] [--no-cache-run]

``--dir`` holds ``net/yingtan-city.inp`` and ``week/meters.csv`` +
``week/readings.csv``; they are made when missing (``twin synth city --size
city --seed 2026`` then ``twin synth readings --days 7 --seed 42``, about
2 minutes). Prints:

1. reading the city ``.inp`` from the file and from the network cache
   (``twin.cache``; a private cache folder under ``--dir``);
2. ``twin localise`` on the week (files to map) in a child process: wall
   time, peak RSS (``getrusage`` of the children) and the stages of
   ``report.json``; first with the cache warm, then (``--no-cache-run``) with
   ``TWIN_NO_CACHE=1``.

Targets (issue 11): 60 s and 2 GiB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _twin(*args: str, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-c", "import sys; from twin.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def _make(folder: Path, env: dict[str, str]) -> tuple[Path, Path, Path]:
    inp = folder / "net" / "yingtan-city.inp"
    week = folder / "week"
    if not inp.exists():
        _twin("synth", "city", "--size", "city", "--seed", "2026", "--out", str(inp.parent), env=env)
    if not (week / "readings.csv").exists():
        _twin("synth", "readings", "--network", str(inp), "--days", "7", "--seed", "42", "--out", str(week),
              env=env)
    return inp, week / "meters.csv", week / "readings.csv"


def _read_times(inp: Path, env: dict[str, str]) -> None:
    code = (
        "import time, os, sys; from twin.network import read_network\n"
        "t = time.perf_counter(); read_network(sys.argv[1], crs='EPSG:4548'); print(time.perf_counter() - t)"
    )
    for label, extra in (("file, no cache", {"TWIN_NO_CACHE": "1"}), ("file, filling the cache", {}),
                         ("from the cache", {})):
        out = subprocess.run([sys.executable, "-c", code, str(inp)], env={**env, **extra}, check=True,
                             capture_output=True, text=True).stdout.split()[-1]
        print(f"read_network, {label}: {float(out):.1f} s")


def _job(inp: Path, meters: Path, readings: Path, out: Path, env: dict[str, str], label: str) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    _twin("localise", "--network", str(inp), "--crs", "EPSG:4548", "--meters", str(meters), "--readings",
          str(readings), "--out", str(out), env=env)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    stages = json.loads((out / "report.json").read_text())["timings_s"]
    note = "" if peak > before else " (not above an earlier child's)"
    print(f"twin localise, {label}: {wall:.1f} s wall, peak RSS {peak / 2**20:.2f} GiB{note}")
    print("  stages (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in stages.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-cache-run", action="store_true")
    args = ap.parse_args()
    folder = args.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TWIN_CACHE_DIR": str(folder / "cache")}
    env.pop("TWIN_NO_CACHE", None)
    inp, meters, readings = _make(folder, env)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    _read_times(inp, env)
    for k in range(args.runs):
        _job(inp, meters, readings, folder / f"loc-{k}", env, f"run {k + 1}, cache warm")
    if args.no_cache_run:
        _job(inp, meters, readings, folder / "loc-nocache", {**env, "TWIN_NO_CACHE": "1"}, "TWIN_NO_CACHE=1")


if __name__ == "__main__":
    main()
