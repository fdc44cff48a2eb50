"""The classic leak localisation an engineer would script with WNTR.

For every candidate node, simulate the network with the estimated leak at
that node (one hydraulic solve per candidate) and correlate the simulated
pressure change at the loggers with the measured change of the pressure
residuals; a pipe scores the better of its two end nodes. It is the baseline
the twin's analytic-signature likelihood (:mod:`twin.localise`) is measured
against in :mod:`twin.bench`, fed with the same residual changes and the same
operating point so that only the method differs.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from twin.errors import InputError, SimulationError
from twin.hydraulics import SnapshotSolver
from twin.network import Network

log = logging.getLogger(__name__)


def classic_localise(network: Network, internals: dict) -> tuple[pd.DataFrame, dict]:
    """Rank pipes by correlation of residual change with simulated leak signatures.

    Parameters
    ----------
    network : twin.network.Network
    internals : dict
        :attr:`twin.localise.Localisation.internals` of a run that detected a
        leak: ``delta`` (residual change per sensor), ``kinds``,
        ``p_sensors``, ``demands`` (m³/s per junction), ``tank_levels``,
        ``link_status`` and ``leak_m3s``.

    Returns
    -------
    candidates : DataFrame
        ``rank``, ``link_id``, ``score`` (correlation of the better end node).
    info : dict
        ``simulations`` and ``seconds``.
    """
    if not internals:
        raise InputError("the classic method needs a run that detected a leak",
                         fix="run twin.localise.localise first and pass its internals")
    t0 = time.perf_counter()
    wn = network.wn
    kinds = np.asarray(internals["kinds"])
    delta = np.asarray(internals["delta"])[kinds == "pressure"]
    sensors = list(internals["p_sensors"])
    leak = max(float(internals["leak_m3s"]), 1e-4)
    n_sim = 0
    with SnapshotSolver(wn) as solver:
        d0 = np.asarray(internals["demands"], float)
        kw = {"tank_levels": internals["tank_levels"], "link_status": internals["link_status"]}
        base = solver.solve(d0, **kw)
        h0 = base.heads[sensors].to_numpy()
        corr = np.full(len(solver.junctions), -np.inf)
        dc = delta - delta.mean()
        for k, _node in enumerate(solver.junctions):
            d = d0.copy()
            d[k] += leak
            try:
                snap = solver.solve(d, heads_of=sensors, flows_of=[], **kw)  # read only what is scored
            except SimulationError:
                continue
            n_sim += 1
            sig = snap.heads[sensors].to_numpy() - h0
            sc = sig - sig.mean()
            den = np.sqrt((sc ** 2).sum() * (dc ** 2).sum())
            corr[k] = float((sc * dc).sum() / den) if den > 0 else 0.0
        node_score = pd.Series(corr, index=solver.junctions)
    pipes = network.links[network.links["link_type"] == "pipe"]
    s = pipes["start_node"].map(node_score).fillna(-np.inf).to_numpy()
    e = pipes["end_node"].map(node_score).fillna(-np.inf).to_numpy()
    score = np.maximum(s, e)
    cand = (pd.DataFrame({"link_id": pipes.index.astype(str), "score": score,
                          "length_m": pipes["length_m"].to_numpy(float)})
            .sort_values("score", ascending=False, kind="stable").reset_index(drop=True))
    cand.insert(0, "rank", np.arange(1, len(cand) + 1))
    seconds = time.perf_counter() - t0
    log.info("classic: %d leak simulations in %.1f s", n_sim, seconds)
    return cand, {"simulations": n_sim, "seconds": round(seconds, 3)}
