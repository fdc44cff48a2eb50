"""Benchmark: repair plans for the top 10 candidates, on L-Town and on a 20,000-pipe city.

Prints, per network, the time of the valve layer and segments, of a plan
without closure simulations and of a full plan (pressure-driven EPANET
snapshots of every closure), and what the orders hold. Run::

    .venv/bin/python benchmarks/bench_repair.py [--ltown PATH] [--side 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_maps import grid_city  # noqa: E402

from twin.network import read_network  # noqa: E402
from twin.repair import plan_repairs  # noqa: E402
from twin.valves import generate_valves, valve_segments  # noqa: E402

LTOWN = Path(__file__).resolve().parents[2] / "shared" / "networks" / "L-TOWN.inp"


def bench(name: str, net, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pipes = net.pipes.index.to_numpy()
    cands = pd.DataFrame({"rank": np.arange(1, 11), "link_id": rng.choice(pipes, 10, replace=False),
                          "score": np.linspace(0.3, 0.03, 10), "leak_flow_lps": 3.0})
    t = time.perf_counter()
    valves = generate_valves(net, seed=seed)
    segs = valve_segments(net, valves)
    t_seg = time.perf_counter() - t
    t = time.perf_counter()
    plan_repairs(net, candidates=cands, valves=valves, simulate=False)
    t_quick = time.perf_counter() - t
    t = time.perf_counter()
    orders = plan_repairs(net, candidates=cands, valves=valves, simulate=True)
    t_full = time.perf_counter() - t
    print(f"{name}: {len(net.pipes):,} pipes, {len(valves):,} valves (N-1), "
          f"{segs.link_segment.nunique():,} segments in {t_seg:.2f} s")
    print(f"  top 10: {t_quick:.2f} s without simulation, {t_full:.2f} s with PDD closure simulations")
    print(f"  orders: {len(orders)}, valves to close {orders['n_valves'].min()}-{orders['n_valves'].max()}, "
          f"max pressure drop elsewhere {orders['max_pressure_drop_m'].max():.2f} m, "
          f"demand not served up to {orders['demand_not_served_lps'].max():.2f} L/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ltown", type=Path, default=LTOWN)
    ap.add_argument("--side", type=int, default=100)
    args = ap.parse_args(argv)
    if args.ltown.exists():
        bench("L-Town", read_network(args.ltown, crs="EPSG:32650"))
    bench(f"grid city {args.side}x{args.side}", grid_city(args.side))
    return 0


if __name__ == "__main__":
    sys.exit(main())
