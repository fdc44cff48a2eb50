"""Hydraulics: EPANET runs, snapshots and the analytic leak sensitivities."""

from __future__ import annotations

import numpy as np
import pytest
import wntr

from tests.conftest import wntr_network
from twin.errors import SimulationError
from twin.hydraulics import SnapshotSolver, sensitivities, simulate


def _fd_check(wn, sensors, links, n_cand=25, step=2e-4, seed=0):
    """Relative errors of analytic against finite-difference sensitivities."""
    rng = np.random.default_rng(seed)
    with SnapshotSolver(wn) as solver:
        base = solver.base_demands * 0.6
        snap = solver.solve(base)
        sens = sensitivities(wn, snap.heads, snap.flows, pressure_nodes=sensors, flow_links=links)
        p_err, f_err = [], []
        for cand in rng.choice(solver.junctions, n_cand, replace=False):
            d = base.copy()
            d[solver.junctions.index(cand)] += step
            leak = solver.solve(d)
            fd = ((leak.heads - snap.heads)[sensors] / step).to_numpy()
            an = sens.pressure[cand].to_numpy()
            big = np.abs(fd) > 0.05 * np.abs(fd).max() if np.abs(fd).max() > 1.0 else np.zeros(len(fd), bool)
            p_err.extend(np.abs(an[big] - fd[big]) / np.abs(fd[big]))
            fdq = ((leak.flows - snap.flows)[links] / step).to_numpy()
            f_err.extend(np.abs(sens.flow[cand].to_numpy() - fdq))
    return np.array(p_err), np.array(f_err), sens


def test_sensitivities_match_finite_differences_on_ltown(ltown_inp):
    wn = wntr.network.WaterNetworkModel(str(ltown_inp))
    rng = np.random.default_rng(1)
    sensors = list(rng.choice(wn.junction_name_list, 30, replace=False))
    links = ["p227", "p235", "PUMP_1"]  # both reservoir outlets and the tank's pump
    p_err, f_err, sens = _fd_check(wn, sensors, links)
    assert len(p_err) > 30
    assert np.median(p_err) < 0.03
    # flow response to a unit leak is a share of it: absolute error of that share
    assert np.median(f_err) < 0.01
    # every unit of leak comes from some source: R1 + R2 + tank outlet shares add up to 1
    assert sens.info["valves_active"] == 3


def test_leak_flow_is_supplied_by_the_sources_net3():
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    sources = []  # every link touching a reservoir or tank, oriented out of it
    for name, link in wn.links():
        for end, sign in ((link.start_node_name, 1.0), (link.end_node_name, -1.0)):
            if wn.get_node(end).node_type in ("Reservoir", "Tank"):
                sources.append((name, sign))
    with SnapshotSolver(wn) as solver:
        snap = solver.solve()
        sens = sensitivities(wn, snap.heads, snap.flows, flow_links=[s for s, _ in sources])
    signs = np.array([sign for _, sign in sources])
    total = (sens.flow.to_numpy() * signs[:, None]).sum(axis=0)
    # mass balance: a unit leak anywhere connected is supplied, in total, by the sources
    connected = np.abs(total) > 0.5
    assert connected.mean() > 0.9
    np.testing.assert_allclose(total[connected], 1.0, atol=1e-6)


def test_pressure_drops_most_at_the_leak_node(ltown_inp):
    wn = wntr.network.WaterNetworkModel(str(ltown_inp))
    nodes = wn.junction_name_list[:200:20]
    with SnapshotSolver(wn) as solver:
        snap = solver.solve()
        sens = sensitivities(wn, snap.heads, snap.flows, pressure_nodes=nodes)
    assert (sens.pressure.to_numpy() <= 1e-9).all()
    for node in nodes:
        row = sens.pressure.loc[node]
        assert row.idxmin() == node or np.isclose(row.min(), row[node], rtol=1e-6)


def test_simulate_runs_in_a_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    res = simulate(wn, duration_s=3600)
    assert res.node["pressure"].shape[0] >= 2
    assert list(tmp_path.iterdir()) == []


def test_impossible_network_raises_simulation_error():
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    for name, link in wn.links():  # cut every supply link: demands cannot be met
        link.initial_status = wntr.network.LinkStatus.Closed
    with pytest.raises(SimulationError):
        with SnapshotSolver(wn) as solver:
            solver.solve()
