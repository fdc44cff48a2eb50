"""Hydraulics: EPANET runs, snapshots and the analytic leak sensitivities."""

from __future__ import annotations

import numpy as np
import pytest
import wntr

from tests.conftest import wntr_network
from twin.errors import SimulationError
from twin.hydraulics import EpanetSession, SnapshotSolver, sensitivities, simulate


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


# --------------------------------------------------------------------------- the EPANET session


def _watch(directory, seen: set, stop) -> None:
    import os

    while not stop.is_set():
        seen.update(os.listdir(directory))


def test_bulk_demands_equal_per_node_setting_and_only_changes_are_sent():
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    rng = np.random.default_rng(3)
    with EpanetSession.snapshots(wn) as bulk, EpanetSession.snapshots(wn) as one_by_one:
        d = np.array([wn.get_node(j).base_demand for j in bulk.junctions]) * rng.uniform(0.5, 1.5, len(bulk.junctions))
        # first call: every junction whose demand differs from the model's (at the patterns' start)
        assert bulk.set_demands(d) == int(np.sum(d != bulk.snapshot_demands)) > 0
        for name, value in zip(one_by_one.junctions, d):
            one_by_one.set_demands([value], [name])
        bulk.solve()
        one_by_one.solve()
        np.testing.assert_array_equal(bulk.node_values("head"), one_by_one.node_values("head"))
        d2 = d.copy()
        d2[[3, 7]] += 0.002  # m³/s
        assert bulk.set_demands(d2) == 2  # only the changed values cross the toolkit
        assert bulk.set_demands(d2) == 0
        bulk.solve()
        assert not np.array_equal(bulk.node_values("head"), one_by_one.node_values("head"))


def test_snapshot_session_leaves_the_model_and_working_directory_alone(tmp_path, monkeypatch):
    import threading

    monkeypatch.chdir(tmp_path)
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    controls = len(wn.control_name_list)
    seen: set = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(tmp_path, seen, stop))
    watcher.start()
    try:
        with SnapshotSolver(wn) as solver:
            level = {"2": wn.get_node("2").init_level}
            snap = solver.solve(tank_levels=level, link_status={"122": False})
            again = solver.solve(tank_levels=level)
    finally:
        stop.set()
        watcher.join()
    assert seen == set()
    assert len(wn.control_name_list) == controls
    # a closed link is closed for that snapshot only
    assert abs(snap.flows["122"]) < 1e-9 and abs(again.flows["122"]) > 1e-4


def test_closure_session_closes_links_and_dries_nodes_for_one_solve_only():
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    with EpanetSession.closures(wn, time_s=8 * 3600) as session:
        session.solve()
        base_demand = session.node_values("demand")
        base_p = session.node_values("pressure")
        session.set_link_status({"110": False})  # the tank's only pipe
        session.set_demands([0.0], ["32"])
        session.solve()
        closed_demand = session.node_values("demand")
        session.reset_link_status(["110"])
        session.reset_demands(["32"])
        session.solve()
        # the same state again (to EPANET's accuracy: a solve starts from the last flows)
        np.testing.assert_allclose(session.node_values("demand"), base_demand, atol=1e-6)
        np.testing.assert_allclose(session.node_values("pressure"), base_p, atol=1e-3)
        i32 = session.node_index["32"] - 1
        assert base_demand[i32] > 0 and closed_demand[i32] == pytest.approx(0.0, abs=1e-12)
    # pattern at 08:00 applied to the frozen demands
    j = wn.get_node("32")
    expected = sum(ts.at(8 * 3600) for ts in j.demand_timeseries_list)
    assert base_demand[i32] == pytest.approx(expected, rel=1e-4)  # as written to the file


def test_period_run_equals_wntr_epanet_simulator(tmp_path, monkeypatch):
    import tempfile
    from pathlib import Path

    from twin.scratch import epanet_scratch

    monkeypatch.chdir(tmp_path)
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    wn.options.time.duration = 24 * 3600
    ours = EpanetSession.period(wn).run_period()
    with tempfile.TemporaryDirectory() as tmp, epanet_scratch(tmp):
        ref = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "ref"))
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_allclose(ours.node["pressure"].to_numpy(), ref.node["pressure"].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.link["flowrate"].to_numpy(), ref.link["flowrate"].to_numpy(), atol=1e-9)


def test_a_session_refuses_what_its_configuration_does_not_do():
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    session = EpanetSession.period(wn)
    with pytest.raises(RuntimeError):
        session.set_demands(np.zeros(len(session.junctions)))
    session.close()
    with EpanetSession.snapshots(wn) as snap, pytest.raises(RuntimeError):
        snap.run_period()
    with pytest.raises(ValueError):
        EpanetSession(wn, mode="transient")


def test_snapshot_demands_are_not_scaled_by_the_default_pattern():
    # ky4 and Net3 have a pattern "1", EPANET's default: a snapshot demand without an
    # explicit pattern was multiplied by its first value (x0.33 on ky4, x1.34 on Net3)
    for name in ("ky4", "Net3"):
        wn = wntr.network.WaterNetworkModel(str(wntr_network(name)))
        with SnapshotSolver(wn) as solver:
            asked = solver.base_demands * 1.7
            solver.solve(asked)
            got = solver.session.node_values("demand", solver.junctions)
        np.testing.assert_allclose(got, asked, atol=1e-9)


def test_snapshot_reproduces_the_extended_period_run_net3():
    # one EPS step (demands, tank levels, link states of the step) solved as a snapshot
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    res = simulate(wn, duration_s=4 * 3600, hydraulic_step_s=3600, report_step_s=3600)
    t = 3 * 3600
    demand = res.node["demand"].loc[t]
    flows = res.link["flowrate"].loc[t]
    status = {k: abs(flows[k]) > 1e-6 for k in wn.pump_name_list + ["330"]}
    levels = {tk: float(res.node["pressure"].loc[t, tk]) for tk in wn.tank_name_list}
    with SnapshotSolver(wn) as solver:
        snap = solver.solve(demand.reindex(solver.junctions).to_numpy(float), tank_levels=levels,
                            link_status=status)
    err = (snap.heads - res.node["head"].loc[t]).reindex(wn.junction_name_list).abs()
    assert err.max() < 0.01  # m


def _analytic_vs_fd(wn, levels, status, sensors, links, nodes, step=1e-3):
    """(analytic with the file's statuses, analytic with the snapshot's, finite differences)."""
    with SnapshotSolver(wn) as solver:
        base = solver.solve(tank_levels=levels, link_status=status)
        out = []
        for st in (None, base.status):
            sens = sensitivities(solver.wn, base.heads, base.flows, pressure_nodes=sensors, flow_links=links,
                                 status=st)
            out.append(np.concatenate([sens.pressure[nodes].to_numpy(), sens.flow[nodes].to_numpy()]))
        fd = []
        for n in nodes:
            d = solver.base_demands.copy()
            d[solver.junctions.index(n)] += step
            snap = solver.solve(d, tank_levels=levels, link_status=status)
            fd.append(np.concatenate([(snap.heads[sensors] - base.heads[sensors]).to_numpy(),
                                      (snap.flows[links] - base.flows[links]).to_numpy()]) / step)
    return out[0], out[1], np.array(fd).T, base


def test_linearisation_takes_the_statuses_of_the_solved_snapshot_net3():
    # Net3's bypass 330 is Closed in the .inp; its controls open it: linearise it open
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    levels = {t: wn.get_node(t).init_level for t in wn.tank_name_list}
    file_st, snap_st, fd, base = _analytic_vs_fd(wn, levels, {"330": True, "335": False}, ["15", "123", "203"],
                                                 ["330", "20", "40", "10"], ["153", "185", "211", "247"])
    assert bool(base.status["330"]) and not bool(base.status["335"])
    np.testing.assert_allclose(snap_st, fd, atol=0.02 * np.abs(fd).max())
    assert np.abs(file_st[3] - fd[3]).max() > 0.03  # the file's status misses the bypass' share


def test_linearisation_takes_the_statuses_of_the_solved_snapshot_ky4():
    # full tanks T-1 and T-2 with their inlets closed: zero flow is not a huge conductance
    wn = wntr.network.WaterNetworkModel(str(wntr_network("ky4")))
    levels = {t: wn.get_node(t).max_level for t in ("T-1", "T-2")}
    levels.update({t: wn.get_node(t).init_level for t in ("T-3", "T-4")})
    inlets = {"P-539": False, "P-36": False, "P-541": False}
    sensors = list(wn.junction_name_list[::60])
    links = ["P-539", "P-36", "P-541", "P-540", "P-538", "~@Pump-2"]
    file_st, snap_st, fd, base = _analytic_vs_fd(wn, levels, inlets, sensors, links, wn.junction_name_list[5::120])
    assert not base.status[list(inlets)].any()
    assert np.corrcoef(snap_st.ravel(), fd.ravel())[0, 1] > 0.999
    assert np.corrcoef(file_st.ravel(), fd.ravel())[0, 1] < 0.9


def test_negative_pressures_are_counted_not_failed():
    # EPANET's warning 6: a junction above the hydraulic grade line is solved (ky10's own
    # run has negative pressures at every step); a snapshot is not lost for it
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    wn.get_node("32").elevation += 100.0
    with SnapshotSolver(wn) as solver:
        snap = solver.solve()
        assert solver.n_negative_pressure == 1
    assert snap.pressure(solver.wn)["32"] < 0


def _model_state(wn) -> dict:
    """What a job could change in a model: roughness, statuses, demands, patterns, controls, options."""
    return {
        "roughness": [wn.get_link(p).roughness for p in wn.pipe_name_list],
        "status": [str(wn.get_link(n).initial_status) for n in wn.link_name_list],
        "demands": [[(d.base_value, d.pattern_name) for d in wn.get_node(j).demand_timeseries_list]
                    for j in wn.junction_name_list],
        "patterns": {n: list(wn.get_pattern(n).multipliers) for n in wn.pattern_name_list},
        "controls": list(wn.control_name_list),
        "times": (wn.options.time.duration, wn.options.time.hydraulic_timestep, wn.options.time.report_timestep,
                  wn.options.time.pattern_start),
        "hydraulic": (wn.options.hydraulic.pattern, wn.options.hydraulic.accuracy, wn.options.hydraulic.trials,
                      wn.options.hydraulic.demand_multiplier),
        "heads": [wn.get_node(r).base_head for r in wn.reservoir_name_list],
    }


def test_a_snapshot_solver_neither_copies_nor_changes_the_model():
    # ky4 has demand patterns, pump controls and EPANET's default pattern "1"
    wn = wntr.network.WaterNetworkModel(str(wntr_network("ky4")))
    before = _model_state(wn)
    pipes = wn.pipe_name_list[:3]
    with SnapshotSolver(wn) as solver:
        assert solver.wn is wn
        first = solver.solve()
        solver.set_roughness({p: 77.0 for p in pipes})
        changed = solver.solve()
        # the solver sees the new roughness, the caller's model keeps its own
        assert [solver.wn.get_link(p).roughness for p in pipes] == [77.0] * 3
        assert solver.wn.get_link(wn.pipe_name_list[5]) is wn.get_link(wn.pipe_name_list[5])
        assert solver.wn.junction_name_list == wn.junction_name_list
    assert not np.allclose(first.heads.to_numpy(), changed.heads.to_numpy())
    assert _model_state(wn) == before


def test_a_linear_model_of_the_changed_roughness_is_the_one_of_a_changed_copy():
    import copy

    from twin.hydraulics import LinearModel

    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    new = {p: 95.0 for p in wn.pipe_name_list[::7]}
    changed = copy.deepcopy(wn)
    for p, c in new.items():
        changed.get_link(p).roughness = c
    with SnapshotSolver(wn) as solver, SnapshotSolver(changed) as reference:
        solver.set_roughness(new)
        a, b = solver.solve(), reference.solve()
        np.testing.assert_allclose(a.heads.to_numpy(), b.heads.to_numpy(), atol=1e-6)
        lin_a = LinearModel(solver.wn, a.heads, a.flows, status=a.status)
        lin_b = LinearModel(changed, b.heads, b.flows, status=b.status)
        np.testing.assert_allclose(lin_a.links["c"].to_numpy(), lin_b.links["c"].to_numpy(), rtol=1e-6)


def test_simulate_with_other_times_leaves_the_model_alone():
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    before = _model_state(wn)
    results = simulate(wn, duration_s=3 * 3600, hydraulic_step_s=1800, report_step_s=1800)
    assert results.node["head"].index.max() == 3 * 3600
    assert len(results.node["head"]) == 7
    assert _model_state(wn) == before


def test_demands_scaled_per_district_cost_one_call_per_district_and_solve_the_same(monkeypatch):
    import twin.hydraulics as hydraulics

    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    rng = np.random.default_rng(5)
    n = len(wn.junction_name_list)
    district = rng.integers(0, 4, n)  # four districts
    rates = rng.uniform(0.0, 2e-3, (2, n))  # two windows of metered rates, m³/s
    rates[:, ::9] = 0.0  # some junctions without customers
    steps = [(w, rng.uniform(0.6, 1.4, 4)) for w in (0, 0, 0, 0, 1, 1, 1)]

    def run() -> tuple[list[np.ndarray], list[int]]:
        heads, calls = [], []
        with EpanetSession.snapshots(wn) as session:
            for w, factor in steps:
                calls.append(session.set_demands(rates[w] * factor[district]))
                session.solve()
                heads.append(session.node_values("head"))
                applied = session.node_values("demand", session.junctions)
                np.testing.assert_allclose(applied, rates[w] * factor[district], rtol=1e-9, atol=1e-12)
        return heads, calls

    grouped, grouped_calls = run()
    monkeypatch.setattr(hydraulics, "GROUP_MIN", 10**9)  # never grouped: one call per changed junction
    single, single_calls = run()
    # the demands agree to 1e-12 (relative); EPANET's iterations (accuracy 1e-5) then agree to micrometres
    np.testing.assert_allclose(np.array(grouped), np.array(single), rtol=0, atol=1e-6)
    # after the first two snapshots a step costs one call per district, a new window no more than before
    assert grouped_calls[2:4] == [4, 4]
    assert grouped_calls[5:] == [4, 4]
    assert sum(grouped_calls[2:]) < sum(single_calls[2:]) / 4
