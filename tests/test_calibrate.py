"""Model calibration (twin.calibrate): roughness per pipe group and demand per DMA on leak-free snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import wntr_network
from twin.calibrate import (FitData, _Problem, calibrate_model, measurement_noise, pipe_groups,
                            scale_demands)
from twin.hydraulics import SnapshotSolver
from twin.network import read_network

NOISE_M = 0.01
DAYS, PER_DAY = 3, 8


@pytest.fixture(scope="module")
def net1():
    """EPANET's Net1 (9 junctions, 12 pipes, a pump, a tank)."""
    return read_network(wntr_network("Net1"), crs="EPSG:32650")


def _week(net, truth_multiplier: float, *, seed: int = 1, dma: bool = False,
          truth_north: float = 1.0) -> tuple[FitData, list]:
    """Leak-free snapshots of Net1 whose pipes are ``truth_multiplier`` times as smooth as the file says.

    Demands follow a daily cycle (x0.5-1.6) that differs a little from day to
    day; every junction carries a logger (5 of them head, noise 1 cm), the
    pump and the tank's pipe a flow meter. With ``dma``, junctions 1x form
    DMA "north" and the others "south"; the truth's north uses
    ``truth_north`` times its share of the same total.
    """
    rng = np.random.default_rng(seed)
    wn = net.wn
    with SnapshotSolver(wn) as solver:
        junctions = solver.junctions
        base = solver.base_demands
    p_sensors = ["10", "12", "21", "23", "32"]
    flow_links = ["9", "110"]
    n = DAYS * PER_DAY
    hour = np.tile(np.arange(PER_DAY) * 24 / PER_DAY, DAYS)
    cycle = 1.05 + 0.55 * np.sin(2 * np.pi * (hour - 6) / 24) + rng.normal(0, 0.05, n)
    demands = base[None, :] * cycle[:, None]
    boundary = [{"tank_levels": {"2": 30.0 + 5.0 * np.sin(k)}, "link_status": {}} for k in range(n)]
    node_dma = np.array([0 if j.startswith("1") else 1 for j in junctions]) if dma else np.full(len(junctions), -1)
    true_demands = scale_demands(demands, np.where(node_dma == 0, truth_north, 1.0), np.ones(len(junctions), bool))
    with SnapshotSolver(wn) as true_solver:
        true_solver.set_roughness({p: truth_multiplier * wn.get_link(p).roughness for p in wn.pipe_name_list})
        obs = []
        for k in range(n):
            snap = true_solver.solve(true_demands[k], heads_of=p_sensors, flows_of=flow_links, **boundary[k])
            obs.append(np.concatenate([snap.heads.to_numpy() + rng.normal(0, NOISE_M, len(p_sensors)),
                                       snap.flows.to_numpy() * (1 + rng.normal(0, 0.002, len(flow_links)))]))
    data = FitData(demands, boundary, np.array(obs), np.repeat(np.arange(DAYS), PER_DAY),
                   (hour // 8).astype(int), p_sensors, flow_links,
                   np.r_[np.full(len(p_sensors), NOISE_M), np.full(len(flow_links), 1e-4)],
                   node_dma, np.ones(len(junctions), dtype=bool), ["north", "south"] if dma else [])
    return data, junctions


def test_recovers_a_known_roughness_multiplier(net1):
    data, _ = _week(net1, 0.8)
    groups = pipe_groups(net1)
    assert len(groups.names) == 1  # 12 pipes: the small diameter classes merge into one group
    with SnapshotSolver(net1.wn) as solver:
        before = dict(zip(groups.pipes, [solver.wn.get_link(p).roughness for p in groups.pipes]))
        cal = calibrate_model(solver, data, groups)
        after = {p: solver.wn.get_link(p).roughness for p in groups.pipes}
    assert after == before  # the solver is left as it came
    assert cal.applied, cal.reason
    g = cal.report["groups"][0]
    assert g["multiplier"] == pytest.approx(0.8, abs=0.02)
    assert g["sd"] < 0.05
    chi2 = cal.report["misfit_reduced_chi2"]
    assert chi2["in_sample"]["after"] < 3.0 < chi2["in_sample"]["before"]
    assert chi2["held_out"]["after"] < chi2["held_out"]["before"]
    assert cal.roughness[groups.pipes[0]] == pytest.approx(0.8 * before[groups.pipes[0]], rel=0.03)


def test_recovers_a_dma_demand_share(net1):
    # the north uses 25 % more than its meters' share of the supply: demand moves from the south
    data, _ = _week(net1, 1.0, dma=True, truth_north=1.25)
    with SnapshotSolver(net1.wn) as solver:
        cal = calibrate_model(solver, data, None)
    assert cal.applied, cal.reason
    north, south = (d["multiplier"] for d in cal.report["dma_demand"])
    assert north / south == pytest.approx(1.25, abs=0.05)
    # the total of the adjustable junctions stays the supply's
    scaled = scale_demands(data.demands, cal.node_multiplier, cal.adjustable)
    np.testing.assert_allclose(scaled.sum(axis=1), data.demands.sum(axis=1))


def test_refuses_when_there_is_nothing_to_gain(net1):
    data, _ = _week(net1, 1.0, seed=7)
    with SnapshotSolver(net1.wn) as solver:
        cal = calibrate_model(solver, data, pipe_groups(net1))
    assert not cal.applied
    assert cal.report["decision"] == "refused"
    assert "refused" in cal.reason
    assert cal.roughness == {} and np.all(cal.node_multiplier == 1.0)


def test_refuses_with_one_day(net1):
    data, _ = _week(net1, 0.8)
    keep = data.day == 0
    one = FitData(data.demands[keep], [b for b, k in zip(data.boundary, keep) if k], data.observed[keep],
                  data.day[keep], data.block[keep], data.p_sensors, data.flow_links, data.noise, data.dma,
                  data.adjustable)
    with SnapshotSolver(net1.wn) as solver:
        cal = calibrate_model(solver, one, pipe_groups(net1))
    assert not cal.applied and "two leak-free days" in cal.reason


def test_jacobian_agrees_with_finite_differences(net1):
    data, _ = _week(net1, 1.0, dma=True)
    groups = pipe_groups(net1, min_pipes=1, min_share=0.0)
    assert len(groups.names) >= 3
    rows = np.array([2, 5])
    with SnapshotSolver(net1.wn) as solver:
        prob = _Problem(solver, data, groups)
        data.block[:] = np.arange(len(data.block))  # linearise at each snapshot itself
        prob.responses(rows, np.zeros(prob.n_params))
        theta = np.zeros(prob.n_params)
        res, flows, dem = prob.solve(theta, rows)
        J = prob.jacobian(theta, rows, flows, dem)
        h = 1e-4
        for p in range(prob.n_params):
            up, down = theta.copy(), theta.copy()
            up[p], down[p] = h, -h
            fd = -(prob.solve(up, rows)[0] - prob.solve(down, rows)[0]) / (2 * h)  # residual = obs - model
            scale = np.abs(fd).max()
            assert scale > 0
            np.testing.assert_allclose(J[:, :, p], fd, atol=0.02 * scale + 1e-9)


def test_scale_demands_keeps_the_adjustable_total():
    d = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    adj = np.array([True, True, True, False])
    out = scale_demands(d, np.array([2.0, 1.0, 1.0, 5.0]), adj)
    np.testing.assert_allclose(out[:, :3].sum(axis=1), d[:, :3].sum(axis=1))
    np.testing.assert_allclose(out[:, 3], d[:, 3])
    assert out[0, 0] / out[0, 1] == pytest.approx(1.0)  # node 0 doubled against node 1


def test_measurement_noise_ignores_the_daily_cycle():
    import pandas as pd
    rng = np.random.default_rng(3)
    t = np.arange(672)
    y = 30 + 5 * np.sin(2 * np.pi * t / 96) + rng.normal(0, 0.05, len(t))
    sd = measurement_noise(pd.DataFrame({"a": y}), floor=0.001)
    assert sd[0] == pytest.approx(0.05, rel=0.15)
