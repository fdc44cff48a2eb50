"""The localisation job shares the caller's network: it changes nothing in it and gives the same result twice."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd

from tests.test_hydraulics import _model_state
from twin.localise import localise
from twin.meters import join_meters, read_meters
from twin.network import read_network

ROOT = Path(__file__).resolve().parents[1]
WEEK = ROOT / "data" / "yingtan-small-week"


def test_the_job_twice_on_one_network_gives_the_same_result_and_leaves_it_alone():
    network = read_network(ROOT / "networks" / "yingtan-small.inp", crs="EPSG:4548")
    meters = read_meters(WEEK / "meters.csv")
    readings = pd.read_parquet(WEEK / "readings.parquet")
    join = join_meters(meters, network)
    before = _model_state(network.wn)
    nodes, links = network.nodes.copy(), network.links.copy()
    first = localise(network, meters=meters, join=join, readings=readings)
    assert _model_state(network.wn) == before
    second = localise(network, meters=meters, join=join, readings=readings)
    assert first.report["detected"]
    pd.testing.assert_frame_equal(first.candidates, second.candidates)
    assert first.report.get("leak_flow_lps") == second.report.get("leak_flow_lps")
    assert _model_state(network.wn) == before
    pd.testing.assert_frame_equal(network.nodes, nodes)
    pd.testing.assert_frame_equal(network.links, links)
    pickle.dumps(network)  # still whole: the Dask workers receive it pickled
