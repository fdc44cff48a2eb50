"""Speed of the analytic leak signatures against one simulation per candidate.

Usage::

    python benchmarks/bench_sensitivity.py [NETWORK.inp ...]

For each network (default: L-Town from ../shared/networks), at the base-demand
operating point with loggers on 4 % of the junctions and a flow meter on every
source link, it prints the time to get every logger's sensitivity to a leak at
every junction:

- analytic: one sparse LU factorisation and one transposed solve per sensor
  (``twin.hydraulics.sensitivities``);
- per-candidate snapshots: one EPANET solve per junction through the
  toolkit without rewriting the input file (``SnapshotSolver``), measured on
  a sample of junctions and scaled to all of them;
- per-candidate WNTR runs: ``EpanetSimulator.run_sim`` per junction (what a
  classic script does), measured on a few and scaled.

It also prints the agreement of the analytic and finite-difference
signatures on the sampled junctions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import wntr

from twin.hydraulics import SnapshotSolver, sensitivities, simulate

ROOT = Path(__file__).resolve().parents[1]


def bench(path: Path, sample: int = 40, wntr_runs: int = 3, seed: int = 0) -> None:
    wn = wntr.network.WaterNetworkModel(str(path))
    rng = np.random.default_rng(seed)
    junctions = wn.junction_name_list
    sensors = list(rng.choice(junctions, max(1, round(0.04 * len(junctions))), replace=False))
    sources = [n for n, l in wn.links() if {l.start_node_name, l.end_node_name} & set(wn.reservoir_name_list + wn.tank_name_list)]
    t0 = time.perf_counter()
    solver = SnapshotSolver(wn)
    t_open = time.perf_counter() - t0
    snap = solver.solve()
    t0 = time.perf_counter()
    sens = sensitivities(wn, snap.heads, snap.flows, pressure_nodes=sensors, flow_links=sources)
    t_an = time.perf_counter() - t0
    cands = list(rng.choice(junctions, min(sample, len(junctions)), replace=False))
    step = 1e-4
    errs = []
    t0 = time.perf_counter()
    for c in cands:
        d = solver.base_demands.copy()
        d[solver.junctions.index(c)] += step
        leak = solver.solve(d, heads_of=sensors)
        fd = (leak.heads - snap.heads[sensors]).to_numpy() / step
        an = sens.pressure[c].to_numpy()
        big = np.abs(fd) > max(0.05 * np.abs(fd).max(), 1.0)
        errs.extend(np.abs(an[big] - fd[big]) / np.abs(fd[big]))
    t_snap = (time.perf_counter() - t0) / len(cands) * len(junctions)
    solver.close()
    one = wntr.network.WaterNetworkModel(str(path))
    one.options.time.duration = 0
    t0 = time.perf_counter()
    for c in cands[:wntr_runs]:
        node = one.get_node(c)
        node.add_demand(step, None)
        simulate(one)
        del node.demand_timeseries_list[-1]
    t_wntr = (time.perf_counter() - t0) / wntr_runs * len(junctions)
    print(f"{path.name}: {len(junctions)} junctions, {len(wn.pipe_name_list)} pipes, "
          f"{len(sensors)} loggers + {len(sources)} source flow meters")
    print(f"  analytic signatures (all sensors x all junctions): {t_an:.3f} s "
          f"(+ {t_open:.2f} s to open the EPANET project once)")
    print(f"  one toolkit snapshot per candidate:   {t_snap:8.2f} s  -> speed-up {t_snap / t_an:6.0f}x")
    print(f"  one WNTR run_sim per candidate:       {t_wntr:8.2f} s  -> speed-up {t_wntr / t_an:6.0f}x")
    if errs:
        print(f"  agreement with finite differences: median relative error {100 * np.median(errs):.2f} %, "
              f"90th percentile {100 * np.percentile(errs, 90):.2f} % ({len(errs)} sensor-candidate pairs)")


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or [ROOT.parent / "shared" / "networks" / "L-TOWN.inp"]
    for p in paths:
        bench(p)
