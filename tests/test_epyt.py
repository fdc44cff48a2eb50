"""The EPyT-Flow converter (twin.epyt): a short week in the contract, honest about its water.

EPyT-Flow is the ``bench`` extra, which ``python3 run.py test`` installs: these
tests run in the default suite and fail (not skip) when it is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.bench import run_week
from twin.epyt import epyt_week
from twin.network import read_network
from twin.store import Store

DAYS = 4
SEED = 4  # an abrupt leak of 3.0 L/s from hour 61, inside the balance's window
LTOWN = Path(os.environ.get("TWIN_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "networks" / "L-TOWN.inp"


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    """A 4-day EPyT-Flow week on L-Town with one leak (generated once for the module)."""
    if not LTOWN.exists():
        pytest.skip(f"L-Town not found at {LTOWN}; set TWIN_SHARED to the shared folder")
    out = tmp_path_factory.mktemp("epyt") / "week"
    return epyt_week(LTOWN, crs="EPSG:32650", days=DAYS, leak=True, seed=SEED, out_dir=out)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_week_ingests_with_nothing_quarantined(week, tmp_path):
    net = read_network(week["network"], crs="EPSG:32650")
    with Store(tmp_path / "s.duckdb") as store:
        summary = store.ingest(week["meters"], week["readings"], network=net)
        join = store.join()
    # the generator plants gaps only (missing registers and samples), no bad rows
    assert summary.quarantined_total == 0
    assert summary.adds_up
    assert summary.accepted == json.loads(week["truth"].read_text())["readings_rows"]
    customers = pd.read_csv(week["meters"]).query("kind == 'customer'")
    assert len(join) == len(customers)  # every customer lies beside a pipe of the network


def _balance_from_files(week, net, t0: pd.Timestamp, t1: pd.Timestamp) -> tuple[float, float, float]:
    """Supply into the network, tank filling and metered consumption between ``t0`` and ``t1``, from the
    files alone, m³ (registers interpolated at ``t0`` and ``t1`` for every customer read on both sides)."""
    readings = pd.read_csv(week["readings"], dtype={"meter_id": str})
    readings["t"] = pd.to_datetime(readings["timestamp"], format="ISO8601")
    kinds = net.nodes["node_type"]
    inside = readings[(readings["t"] >= t0) & (readings["t"] < t1) & readings["meter_id"].str.startswith("FLW-")]
    volume = inside.groupby("meter_id")["value"].sum() * 900 / 1000.0  # L/s every 15 min -> m³
    supply = tank = 0.0
    for meter, v in volume.items():
        s, e = net.links.loc[meter[4:], ["start_node", "end_node"]]
        supply += v * ((kinds[s] == "reservoir") - (kinds[e] == "reservoir"))
        tank += v * ((kinds[e] == "tank") - (kinds[s] == "tank"))
    metered = 0.0
    regs = readings[readings["meter_id"].str.startswith("C")]
    for _, r in regs.groupby("meter_id"):
        x = (r["t"] - t0).dt.total_seconds().to_numpy()
        span = (t1 - t0).total_seconds()
        if x.min() < 0 and x.max() > span:
            order = np.argsort(x)
            metered += float(np.diff(np.interp([0.0, span], x[order], r["value"].to_numpy()[order]))[0])
    return supply, tank, metered


def test_water_balance_adds_up(week):
    """Over days 2-3: supply minus tank filling minus metered consumption = leak + under-registration."""
    truth = json.loads(week["truth"].read_text())
    net = read_network(week["network"], crs="EPSG:32650")
    start = pd.Timestamp(truth["start"])
    supply, tank, metered = _balance_from_files(week, net, start + pd.Timedelta(days=1), start + pd.Timedelta(days=3))
    days = truth["per_day"][1:3]
    leak = sum(d["leak_m3"] for d in days)
    consumption = sum(d["consumption_m3"] for d in days)
    under = consumption * truth["customers"]["under_registration_mean"]
    assert supply == pytest.approx(sum(d["supply_m3"] for d in days), rel=0.002)
    assert leak > 0.002 * supply
    assert supply - tank - metered == pytest.approx(leak + under, abs=0.006 * supply)
    # the truth's own decomposition: no leak water before the onset, the leak's flow after it
    lk = truth["leak"]
    assert truth["per_day"][0]["leak_m3"] == pytest.approx(0.0, abs=2e-3 * truth["per_day"][0]["supply_m3"])
    residual_m3 = lk["balance_residual_lps"] / 1000.0 * DAYS * 86400
    assert truth["leak_m3"] - residual_m3 == pytest.approx(lk["flow_lps"] / 1000.0 * (DAYS * 86400 - lk["onset_s"]),
                                                           rel=0.01)


def test_same_seed_same_files(week, tmp_path):
    again = epyt_week(LTOWN, crs="EPSG:32650", days=DAYS, leak=True, seed=SEED, out_dir=tmp_path / "again")
    for key in ("meters", "readings", "truth"):
        assert _sha(again[key]) == _sha(week[key]), key


def test_harness_scores_the_week(week, tmp_path):
    row = run_week(week["truth"].parent, crs="EPSG:32650", out_dir=tmp_path / "job")
    truth = json.loads(week["truth"].read_text())["leak"]
    assert "error" not in row
    assert row["quarantined"] == 0
    assert row["leak"] and row["leak_link"] == truth["link_id"]
    assert row["leak_flow_lps"] == truth["flow_lps"]
    # whatever the job found, the row says it honestly: a reported leak has a rank or counts as a miss
    if row["detected"]:
        assert np.isfinite(row["twin_top_distance_m"])
        assert 0.0 <= row["twin_top_score"] <= 1.0


def test_a_network_in_gpm_with_pumps_under_control(tmp_path):
    """Net3 (GPM, simulated in CMH): the pump closed at the start is metered, nothing quarantined."""
    import wntr

    net3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
    week = epyt_week(net3, crs="EPSG:32650", days=3, leak=True, seed=1, out_dir=tmp_path / "w")
    meters = pd.read_csv(week["meters"], dtype=str)
    assert {"FLW-10", "FLW-335"} <= set(meters["meter_id"])  # the pumps from the Lake and the River
    net = read_network(week["network"], crs="EPSG:32650")
    with Store(tmp_path / "s.duckdb") as store:
        summary = store.ingest(week["meters"], week["readings"], network=net)
    assert summary.quarantined_total == 0
    truth = json.loads(week["truth"].read_text())
    assert truth["leak"]["flow_lps"] > 0 and truth["network"] == "Net3.inp"
