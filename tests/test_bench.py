"""The evaluation harness: pipe distances, the figures, and (slow) a real run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import wntr

from twin.bench import score_ranking, summarise
from twin.graph import pipe_distances
from twin.network import read_network


@pytest.fixture
def line_network(tmp_path):
    """a - b - c - d in a line (100 m pipes), plus a spur b - e of 50 m."""
    wn = wntr.network.WaterNetworkModel()
    wn.add_reservoir("R", base_head=50, coordinates=(-10, 0))
    for name, xy in {"a": (0, 0), "b": (100, 0), "c": (200, 0), "d": (300, 0), "e": (100, 50)}.items():
        wn.add_junction(name, base_demand=0.001, elevation=0, coordinates=xy)
    wn.add_pipe("P0", "R", "a", length=10, diameter=0.2, roughness=100)
    for name, (s, e, length) in {"P1": ("a", "b", 100), "P2": ("b", "c", 100), "P3": ("c", "d", 100),
                                 "P4": ("b", "e", 50)}.items():
        wn.add_pipe(name, s, e, length=length, diameter=0.1, roughness=100)
    path = tmp_path / "line.inp"
    wntr.network.io.write_inpfile(wn, str(path))
    return read_network(path, crs="EPSG:32650")


def test_pipe_distance_follows_the_pipes(line_network):
    d = pipe_distances(line_network, "P2", 0.25)  # 25 m from b towards c
    assert d["P2"] == 0
    assert d["P1"] == pytest.approx(25.0)  # reach b
    assert d["P4"] == pytest.approx(25.0)
    assert d["P3"] == pytest.approx(75.0)  # reach c
    assert d["P0"] == pytest.approx(125.0)  # reach a


def test_score_ranking_walk_and_hit(line_network):
    d = pipe_distances(line_network, "P3", 0.5)
    cand = pd.DataFrame({"rank": [1, 2, 3, 4, 5], "link_id": ["P1", "P4", "P3", "P2", "P0"],
                         "length_m": [100.0, 50.0, 100.0, 100.0, 10.0]})
    s = score_ranking(cand, d, "P3", total_length_m=360.0, radius_m=120)
    assert s["rank"] == 3
    assert s["walk_m"] == pytest.approx(250.0)
    assert s["walk_pct"] == pytest.approx(100 * 250 / 360, rel=1e-3)
    assert s["top_distance_m"] == pytest.approx(150.0)  # P1's nearest point b is 150 m away
    assert s["hit"] is False


def test_summary_counts_false_alarms():
    df = pd.DataFrame({"leak": [True, True, False, False], "detected": [True, True, True, False],
                       "twin_hit": [True, False, np.nan, np.nan], "twin_rank": [1, 9, np.nan, np.nan],
                       "twin_walk_m": [10.0, 300.0, np.nan, np.nan], "twin_walk_pct": [0.1, 3.0, np.nan, np.nan],
                       "twin_top_distance_m": [0.0, 500.0, np.nan, np.nan], "twin_s": [1.0, 2.0, 1.0, 1.0]})
    s = summarise(df, 1000.0)
    assert s["false_alarms"] == 1 and s["leak_free_weeks"] == 2
    assert s["twin"]["within_300m_share"] == 0.5
    assert s["twin"]["median_rank"] == 5.0


@pytest.mark.slow
def test_bench_on_ltown_meets_the_targets(ltown_inp):
    from twin.bench import run_bench

    res = run_bench(ltown_inp, crs="EPSG:32650", scenarios=10, leak_free=5, seed=700)
    s = res.summary
    assert s["errors"] == 0
    assert s["false_alarms"] <= 1
    assert s["twin"]["within_300m_share"] >= 0.7
    assert s["twin"]["within_300m_share"] >= s["classic"]["within_300m_share"]
