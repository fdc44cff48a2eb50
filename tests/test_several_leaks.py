"""Several leaks at once (issue 11): each district's leak reported once, with its own candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from twin.alarms import leaks_from_report
from twin.dma import assign_dmas
from twin.network import read_network
from twin.synth import synth_readings

YINGTAN = Path(__file__).resolve().parents[1] / "networks" / "yingtan-small.inp"


@pytest.fixture(scope="module")
def two_leaks(tmp_path_factory):
    """A Yingtan small week with two 3 L/s bursts in two DMAs, localised files to outputs by the CLI."""
    from twin.cli import main

    tmp = tmp_path_factory.mktemp("two")
    files = synth_readings(YINGTAN, crs="EPSG:4548", days=7, leaks=2, leak_districts="different",
                           leak_flow_lps=3.0, seed=1, out_dir=tmp / "week", readings_format="parquet")
    out = tmp / "out"
    rc = main(["localise", "--network", str(YINGTAN), "--crs", "EPSG:4548", "--meters", str(files["meters"]),
              "--readings", str(files["readings"]), "--out", str(out), "--no-map"])
    assert rc == 0
    truth = json.loads(Path(files["truth"]).read_text(encoding="utf-8"))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    candidates = pd.read_csv(out / "candidates.csv", dtype={"link_id": str})
    return truth, report, candidates


def test_both_districts_are_reported_each_once(two_leaks):
    truth, report, candidates = two_leaks
    assert report["detected"] is True
    dmas = [leak["dma"] for leak in report["leaks"]]
    assert sorted(dmas) == sorted(t["dma"] for t in truth["leaks"])
    assert len(set(dmas)) == len(dmas)  # no leak twice
    for leak, true in zip(sorted(report["leaks"], key=lambda x: x["dma"]), sorted(truth["leaks"], key=lambda x: x["dma"])):
        assert abs(pd.Timestamp(leak["onset"]) - pd.Timestamp(true["onset"])) <= pd.Timedelta(hours=1)
        assert leak["leak_flow_lps"] == pytest.approx(true["flow_lps"], rel=0.25)


def test_each_leak_ranks_its_district_and_its_neighbours(two_leaks):
    truth, report, candidates = two_leaks
    network = read_network(YINGTAN, crs="EPSG:4548")
    dma_of = assign_dmas(network)
    assert set(candidates["leak_id"]) == {leak["leak_id"] for leak in report["leaks"]}
    for leak in report["leaks"]:
        own = candidates[candidates["leak_id"] == leak["leak_id"]]
        assert own["rank"].tolist() == list(range(1, len(own) + 1))
        assert own["score"].sum() == pytest.approx(1.0, abs=1e-6)
        # the top candidate lies in the leak's DMA
        top = network.links.loc[own["link_id"].iat[0]]
        assert leak["dma"] in {dma_of[top["start_node"]], dma_of[top["end_node"]]}
        true = next(t for t in truth["leaks"] if t["dma"] == leak["dma"])
        assert true["link_id"] in set(own["link_id"])  # the leaking pipe is among the leak's candidates


def test_the_alarms_read_one_leak_per_district(two_leaks):
    truth, report, candidates = two_leaks
    leaks = leaks_from_report(report, candidates)
    assert len(leaks) == 2 and leaks["dma"].is_unique
    for _, leak in leaks.iterrows():
        own = candidates[candidates["leak_id"] == leak["leak_id"]]
        assert leak["top_link_id"] == own["link_id"].iat[0]


def test_a_leak_free_week_reports_no_leak_in_any_district(tmp_path):
    from twin.bench import _load
    from twin.localise import localise
    from twin.meters import join_meters

    files = synth_readings(YINGTAN, crs="EPSG:4548", days=7, leak="none", seed=5, out_dir=tmp_path)
    network = read_network(YINGTAN, crs="EPSG:4548")
    meters, readings = _load(files)
    loc = localise(network, meters=meters, join=join_meters(meters, network), readings=readings)
    assert loc.report["detected"] is False
    assert "leaks" not in loc.report and loc.candidates.empty
    assert leaks_from_report(loc.report, loc.candidates).empty


def test_two_leaks_in_one_balance_are_fitted_jointly_and_one_leak_stays_one():
    """Two steps a day and a half apart: the single step takes their sum; backfitting separates them."""
    import numpy as np

    from tests.test_detect import STEP, _week
    from twin.detect import detect_leak
    from twin.localise import _two_steps

    supply, metered, window, slot, night, day = _week(leak_lps=1.5, onset_day=2.4, seed=5)
    second = 1.5e-3 * (np.arange(len(supply)) >= int(3.9 * STEP))
    inner = (window > window.min()) & (window < window.max())

    def test(inflow):
        return detect_leak(inflow, metered, window, slot, night, day, use=inner)

    both = supply + second
    single = test(both)
    assert single.detected
    pair = _two_steps(test, both, single, supply.index)
    assert pair is not None and pair[0].detected and pair[1].detected
    onsets = sorted(d.onset for d in pair)
    for found, true_day in zip(onsets, (2.4, 3.9)):
        assert abs(found - supply.index[int(true_day * STEP)]) <= pd.Timedelta(hours=2)
    assert sum(d.leak_m3s for d in pair) * 1000 == pytest.approx(3.0, rel=0.15)
    # a balance with one step: no second leak passes
    one = test(supply)
    pair = _two_steps(test, supply, one, supply.index)
    assert pair is None or not pair[1].detected
