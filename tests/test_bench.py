"""The evaluation harness: pipe distances, the figures, and (slow) a real run."""

from __future__ import annotations

import json

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


# ----------------------------------------------------------------------------
# folders of contract weeks, the reliability table, misses
# ----------------------------------------------------------------------------

def _validation_week(name: str):
    from conftest import SHARED_NETWORKS

    week = SHARED_NETWORKS.parent / "validation" / name
    if not week.exists():
        pytest.skip(f"validation week {week} not found; set TWIN_SHARED to the shared folder")
    return week


def test_week_truth_reads_both_formats(tmp_path):
    from twin.bench import week_truth

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "truth.json").write_text(
        '{"network": "L-TOWN", "leak_pipe": "p512", "leak_lps": 2.32, "onset": "2026-03-05T11:30:00+08:00"}')
    assert week_truth(tmp_path / "v") == {"link_id": "p512", "position": 0.5, "flow_lps": 2.32,
                                          "onset": "2026-03-05T11:30:00+08:00"}
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "truth.json").write_text(
        '{"leak": {"link_id": "P7", "position": 0.3, "flow_lps": 1.5, "onset": "2026-03-04T02:00:00+08:00"}}')
    assert week_truth(tmp_path / "s")["position"] == 0.3
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "truth.json").write_text('{"leak": null, "seed": 3}')
    assert week_truth(tmp_path / "f") is None


def test_contract_weeks_finds_complete_folders_only(tmp_path):
    from twin.bench import contract_weeks

    for name, files in {"a/w-1": ("network.inp", "meters.csv", "readings.parquet", "truth.json"),
                        "b": ("network.inp", "meters.csv", "readings.csv", "truth.json"),
                        "c": ("network.inp", "meters.csv", "truth.json")}.items():
        (tmp_path / name).mkdir(parents=True)
        for f in files:
            (tmp_path / name / f).write_text("{}")
    assert [p.relative_to(tmp_path).as_posix() for p in contract_weeks(tmp_path)] == ["a/w-1", "b"]


def test_reliability_table_counts_hits_per_bin_and_misses():
    from twin.bench import reliability

    leak = pd.DataFrame({"detected": [True, True, True, True, False],
                         "twin_top_score": [0.1, 0.9, 0.97, 0.99, np.nan],
                         "twin_hit": [True, True, False, True, False]})
    table = reliability(leak).set_index("bin")
    assert table.loc["<0.2", "weeks"] == 1 and table.loc["<0.2", "within_300m"] == 1
    assert table.loc["0.8-0.95", "share"] == 1.0
    assert table.loc[">=0.95", "weeks"] == 2 and table.loc[">=0.95", "share"] == 0.5
    assert table.loc["no leak reported", "weeks"] == 1
    assert table["weeks"].sum() == len(leak)
    # the claim is the top candidate's probability within 300 m where the table has it
    leak["twin_top_p300"] = [0.96, 0.9, 0.97, np.nan, np.nan]
    table = reliability(leak).set_index("bin")
    assert table.loc["<0.2", "weeks"] == 0 and table.loc[">=0.95", "weeks"] == 3


def test_summary_counts_misses_as_misses():
    df = pd.DataFrame({"leak": [True, True, True], "detected": [True, True, False],
                       "twin_hit": [True, False, False], "twin_rank": [1.0, 3.0, np.nan],
                       "twin_walk_m": [10.0, 300.0, np.nan], "twin_walk_pct": [0.1, 3.0, np.nan],
                       "twin_top_distance_m": [0.0, 500.0, np.nan], "twin_top_score": [0.9, 0.5, np.nan],
                       "twin_zone_has_leak": [True, False, False], "pipe_length_m": 1000.0,
                       "onset_error_min": [0.0, 30.0, np.nan], "flow_error_pct": [5.0, 10.0, np.nan]})
    s = summarise(df, 1000.0)
    assert s["detected"] == 2 and s["twin"]["within_300m"] == 1
    assert s["twin"]["median_rank"] == 3.0  # the miss ranks last, not dropped
    assert s["twin"]["median_walk_pct"] == 3.0
    assert s["onset_within_15min"] == 1 and s["onset_reported"] == 2
    assert s["zone_holds_leak"] == 1


def test_groups_per_generator_and_network():
    from twin.bench import summarise_groups

    df = pd.DataFrame({"generator": ["g1", "g1", "g2"], "network": ["A", "B", "A"], "leak": [False] * 3,
                       "detected": [True, False, False], "pipe_length_m": [100.0, 200.0, 100.0]})
    groups = summarise_groups(df)
    assert [(g["generator"], g["network"], g["false_alarms"]) for g in groups] == \
        [("g1", "A", 1), ("g1", "B", 0), ("g2", "A", 0)]


def test_cli_bench_on_a_folder_of_weeks(twin_cli, capsys, tmp_path):
    import shutil

    week = _validation_week("Net3-401")
    shutil.copytree(week, tmp_path / "weeks" / "Net3-401")
    assert twin_cli("bench", "localise", "--weeks", tmp_path / "weeks", "--out", tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert "[weeks:weeks] network Net3" in out and "reliability of the top candidate's p_within_300m" in out
    rows = pd.read_csv(tmp_path / "out" / "scenarios.csv", dtype={"leak_link": str})
    assert rows.loc[0, "leak_link"] == json.loads((week / "truth.json").read_text())["leak_pipe"]
