"""Synthetic readings: the data contract, physics, determinism and bad arguments."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import wntr_network
from twin.errors import InputError, MissingFileError, NetworkError, UnknownElementError
from twin.synth import synth_readings

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00$")


@pytest.fixture(scope="module")
def ltown_week(tmp_path_factory, request):
    """Three days on L-Town with a random leak (about 2 s)."""
    from conftest import SHARED_NETWORKS

    path = SHARED_NETWORKS / "L-TOWN.inp"
    if not path.exists():
        pytest.skip("L-Town not available")
    out = tmp_path_factory.mktemp("ltown")
    paths = synth_readings(path, crs="EPSG:32650", days=3, leak="random", seed=7, out_dir=out)
    meters = pd.read_csv(paths["meters"], dtype={"meter_id": str, "node_id": str, "link_id": str})
    readings = pd.read_csv(paths["readings"], dtype={"meter_id": str})
    truth = json.loads(paths["truth"].read_text())
    import wntr

    wn = wntr.network.WaterNetworkModel(str(path))
    return {"paths": paths, "meters": meters, "readings": readings, "truth": truth, "wn": wn}


def test_meters_follow_the_contract(ltown_week):
    m, wn = ltown_week["meters"], ltown_week["wn"]
    assert list(m.columns[:6]) == ["meter_id", "kind", "lon", "lat", "node_id", "link_id"]
    assert m.meter_id.is_unique
    assert set(m.kind) == {"customer", "pressure", "flow"}
    cust, prs, flw = (m[m.kind == k] for k in ("customer", "pressure", "flow"))
    assert cust.node_id.isna().all() and cust.link_id.isna().all()
    assert prs.node_id.isin(wn.node_name_list).all() and prs.link_id.isna().all()
    assert flw.link_id.isin(wn.link_name_list).all() and flw.node_id.isna().all()
    # ~4 % of junctions plus every tank; every pump, valve, source outlet and tank feed
    assert 0.03 * wn.num_junctions <= len(prs) - wn.num_tanks <= 0.05 * wn.num_junctions
    assert set(wn.tank_name_list) <= set(prs.node_id)
    assert {"PUMP_1", "PRV-1", "PRV-2", "PRV-3"} <= set(flw.link_id)
    assert m.lon.between(-180, 180).all() and m.lat.between(-90, 90).all()
    # residential customers use 0.3-1.5 m3/day: thousands of meters for L-Town's ~4,200 m3/day
    assert 3000 < len(cust) < 15000


def test_customer_locations_are_5_to_40_m_off_a_pipe(ltown_week):
    import pyproj
    import shapely

    m, wn = ltown_week["meters"], ltown_week["wn"]
    cust = m[m.kind == "customer"]
    x, y = pyproj.Transformer.from_crs(4326, 32650, always_xy=True).transform(cust.lon, cust.lat)
    lines = [shapely.LineString([wn.get_node(p.start_node_name).coordinates, wn.get_node(p.end_node_name).coordinates])
             for _, p in wn.pipes()]
    tree = shapely.STRtree(lines)
    _, dist = tree.query_nearest(shapely.points(x, y), return_distance=True, all_matches=False)
    assert np.quantile(dist, 0.95) <= 40.5
    assert np.median(dist) > 5.0


def test_readings_follow_the_contract(ltown_week):
    r, m = ltown_week["readings"], ltown_week["meters"]
    assert list(r.columns) == ["meter_id", "timestamp", "value"]
    assert r.meter_id.isin(m.meter_id).all()
    assert r.timestamp.str.match(ISO).all()
    ts = pd.to_datetime(r.timestamp)
    assert str(ts.dt.tz) in ("UTC+08:00", "pytz.FixedOffset(480)")
    kind = r.meter_id.map(m.set_index("meter_id").kind)
    # messy: some rows out of time order (late arrivals) and some exact duplicates
    assert (ts.diff().dt.total_seconds() < -3600).sum() > 10
    assert r[kind == "customer"].duplicated().sum() > 0
    # customers about twice a day, with ~1 % missing
    per_day = r[kind == "customer"].drop_duplicates().groupby("meter_id").size().mean() / 3
    assert 1.9 <= per_day <= 2.0
    # loggers on the 15-minute grid
    t_log = ts[kind != "customer"]
    assert ((t_log.dt.minute % 15 == 0) & (t_log.dt.second == 0)).all()
    counts = r[kind == "pressure"].groupby("meter_id").size()
    assert counts.between(0.99 * 288, 288).all()


def test_customer_registers_are_cumulative_and_irregular(ltown_week):
    r, m = ltown_week["readings"], ltown_week["meters"]
    c = r[r.meter_id.isin(m.meter_id[m.kind == "customer"])].copy()
    c["ts"] = pd.to_datetime(c.timestamp)
    c = c.drop_duplicates().sort_values(["meter_id", "ts"])
    step = c.groupby("meter_id").value.diff().dropna()
    assert (step >= 0).all()  # m3, never decreasing
    assert c.value.min() >= 0
    # NB-IoT times: spread over the clock, not on a grid
    assert c.ts.dt.hour.nunique() == 24
    assert (c.ts.dt.second != 0).mean() > 0.9


def test_pressures_positive_and_noise_small(ltown_week):
    r, m = ltown_week["readings"], ltown_week["meters"]
    p = r[r.meter_id.isin(m.meter_id[m.kind == "pressure"])]
    assert (p.value > 0).all()
    assert p.value.max() < 150


def _siv_from_flow_meters(readings, meters, wn):
    """System input volume (m3 per 15-min slot summed) from source and tank flow meters."""
    f = readings[readings.meter_id.isin(meters.meter_id[meters.kind == "flow"])]
    f = f.drop_duplicates(["meter_id", "timestamp"])
    link = f.meter_id.map(meters.set_index("meter_id").link_id)
    sign = np.zeros(len(f))
    for i, lid in enumerate(link):
        lk = wn.get_link(lid)
        s, e = wn.get_node(lk.start_node_name), wn.get_node(lk.end_node_name)
        if s.node_type == "Reservoir":
            sign[i] = 1.0  # out of the source
        elif e.node_type == "Reservoir":
            sign[i] = -1.0
        elif e.node_type == "Tank":
            sign[i] = -1.0  # into storage: not delivered
        elif s.node_type == "Tank":
            sign[i] = 1.0
    return float((f.value.to_numpy() * sign).sum() / 1000.0 * 900.0)


def test_mass_balance_from_the_readings(ltown_week):
    """Source inflow = customer use + background leakage + leak (+ storage), within noise."""
    r, m, t, wn = ltown_week["readings"], ltown_week["meters"], ltown_week["truth"], ltown_week["wn"]
    siv = _siv_from_flow_meters(r, m, wn)
    days = t["per_day"]
    inflow = sum(d["system_input_m3"] - d["tank_filling_m3"] for d in days)
    use = sum(d["consumption_m3"] + d["background_leakage_m3"] + d["leak_m3"] for d in days)
    assert inflow == pytest.approx(use, rel=0.005)  # EPANET's own balance
    assert siv == pytest.approx(use, rel=0.02)  # what the flow meters see (0.5 % noise, missing rows)

    # customer registers: the billed volume over what each meter covered
    c = r[r.meter_id.isin(m.meter_id[m.kind == "customer"])].copy()
    c["s"] = (pd.to_datetime(c.timestamp) - pd.Timestamp("2026-03-02T00:00:00+08:00")).dt.total_seconds()
    g = c.groupby("meter_id").agg(v0=("value", "min"), v1=("value", "max"), t0=("s", "min"), t1=("s", "max"))
    billed_rate = (g.v1 - g.v0).sum() / (g.t1 - g.t0).mean()
    true_rate = t["customers"]["registered_m3"] / (3 * 86400)
    assert billed_rate == pytest.approx(true_rate, rel=0.05)
    ur = t["customers"]["under_registration_mean"]
    assert 0.02 <= ur <= 0.05
    assert t["customers"]["registered_m3"] == pytest.approx(t["consumption_m3"] * (1 - ur), rel=0.01)


def test_truth_describes_the_leak_and_nrw(ltown_week):
    t, wn = ltown_week["truth"], ltown_week["wn"]
    assert {"leak", "seed", "days", "crs", "start", "nrw_pct_before_leak", "system_input_m3_per_day"} <= set(t)
    assert t["seed"] == 7 and t["days"] == 3 and t["crs"] == "EPSG:32650"
    assert 9.5 <= t["nrw_pct_before_leak"] <= 12.5
    leak = t["leak"]
    assert leak["link_id"] in wn.pipe_name_list
    assert 0 < leak["position"] < 1
    p = wn.get_link(leak["link_id"])
    assert (leak["node_start"], leak["node_end"]) == (p.start_node_name, p.end_node_name)
    onset = pd.Timestamp(leak["onset"])
    assert onset >= pd.Timestamp("2026-03-04T00:00:00+08:00")
    assert ISO.match(leak["onset"])
    demand_lps = t["consumption_m3"] / (3 * 86400) * 1000
    assert 0.008 * demand_lps <= leak["flow_lps"] <= 0.07 * demand_lps
    # no leak before onset, leak volume after it
    before = [d for d in t["per_day"] if pd.Timestamp(d["date"] + "T23:59:59+08:00") < onset]
    # (a closed EPANET link still passes ~1e-8 m3/s: a few litres a day)
    assert before and all(d["leak_m3"] < 0.01 for d in before)
    assert t["leak_m3"] > 0


def test_named_leak_with_given_flow(tmp_path):
    net = wntr_network("Net1")
    paths = synth_readings(net, crs="EPSG:32650", days=3, leak="12", leak_flow_lps=5.0, seed=1, out_dir=tmp_path)
    t = json.loads(paths["truth"].read_text())
    assert t["leak"]["link_id"] == "12"
    assert t["leak"]["flow_lps"] == pytest.approx(5.0, rel=0.15)


def test_no_leak(tmp_path):
    paths = synth_readings(wntr_network("Net1"), crs="EPSG:32650", days=2, leak="none", seed=1, out_dir=tmp_path)
    t = json.loads(paths["truth"].read_text())
    assert t["leak"] is None and t["leak_m3"] == 0


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    net = wntr_network("Net1")
    a = synth_readings(net, crs="EPSG:32650", days=3, seed=11, out_dir=tmp_path / "a")
    b = synth_readings(net, crs="EPSG:32650", days=3, seed=11, out_dir=tmp_path / "b")
    c = synth_readings(net, crs="EPSG:32650", days=3, seed=12, out_dir=tmp_path / "c")
    for k in ("meters", "readings", "truth"):
        assert a[k].read_bytes() == b[k].read_bytes(), k
    assert a["readings"].read_bytes() != c["readings"].read_bytes()


def test_parquet_readings(tmp_path):
    paths = synth_readings(wntr_network("Net1"), crs="EPSG:32650", days=1, leak="none", seed=1, out_dir=tmp_path,
                           readings_format="parquet")
    r = pd.read_parquet(paths["readings"])
    assert list(r.columns) == ["meter_id", "timestamp", "value"]
    assert r.timestamp.str.match(ISO).all()


def test_ky10_runs(tmp_path):
    """Any .inp: ky10 (US units, many tanks and pumps)."""
    paths = synth_readings(wntr_network("ky10"), crs="EPSG:3089", days=3, seed=2, out_dir=tmp_path)
    t = json.loads(paths["truth"].read_text())
    m = pd.read_csv(paths["meters"])
    assert (m.kind == "pressure").sum() >= 13  # every tank has a level logger
    assert t["leak"]["flow_lps"] > 0


def test_bad_arguments(tmp_path):
    net = wntr_network("Net1")
    with pytest.raises(UnknownElementError, match="no-such-pipe"):
        synth_readings(net, crs="EPSG:32650", days=3, leak="no-such-pipe", out_dir=tmp_path)
    with pytest.raises(InputError, match="is a pump, not a pipe"):
        synth_readings(net, crs="EPSG:32650", days=3, leak="9", out_dir=tmp_path)
    with pytest.raises(InputError, match="positive"):
        synth_readings(net, crs="EPSG:32650", days=-1, out_dir=tmp_path)
    with pytest.raises(InputError, match="positive"):
        synth_readings(net, crs="EPSG:32650", days=0, out_dir=tmp_path)
    with pytest.raises(InputError, match="second day"):
        synth_readings(net, crs="EPSG:32650", days=2, leak="random", out_dir=tmp_path)
    with pytest.raises(MissingFileError):
        synth_readings(tmp_path / "nope.inp", crs="EPSG:32650", out_dir=tmp_path)
    with pytest.raises(InputError, match="not projected"):
        synth_readings(net, crs="EPSG:4326", out_dir=tmp_path)
    bad = tmp_path / "bad.inp"
    bad.write_text("[JUNCTIONS]\n J1 abc\n[END]\n")
    with pytest.raises(NetworkError, match="bad.inp"):
        synth_readings(bad, crs="EPSG:32650", out_dir=tmp_path)


def test_cli_errors_exit_two_in_one_line(twin_cli, tmp_path, capsys):
    net = wntr_network("Net1")
    assert twin_cli("synth", "readings", "--network", net, "--crs", "EPSG:32650", "--leak", "P999",
                    "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "P999" in err and "Traceback" not in err
    assert twin_cli("synth", "readings", "--network", net, "--crs", "EPSG:32650", "--days", "-2",
                    "--out", tmp_path) == 2
    assert twin_cli("synth", "readings", "--network", tmp_path / "missing.inp", "--crs", "EPSG:32650",
                    "--out", tmp_path) == 2
    assert "missing.inp" in capsys.readouterr().err


def test_cli_writes_the_files(twin_cli, tmp_path):
    rc = twin_cli("synth", "readings", "--network", wntr_network("Net1"), "--crs", "EPSG:32650", "--days", "3",
                  "--leak", "random", "--seed", "4", "--out", tmp_path)
    assert rc == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"meters.csv", "readings.csv", "truth.json"}


def test_shift_to_yingtan_keeps_network_and_meters_consistent(tmp_path):
    """L-Town in local metres, moved into Yingtan: meters join back onto the written network.inp."""
    import pyproj
    import wntr

    from conftest import SHARED_NETWORKS

    path = SHARED_NETWORKS / "L-TOWN.inp"
    if not path.exists():
        pytest.skip("L-Town not available")
    paths = synth_readings(path, crs="EPSG:32650", days=1, leak="none", seed=3, out_dir=tmp_path,
                           shift_to_yingtan=True)
    m = pd.read_csv(paths["meters"], dtype={"node_id": str})
    assert m.lon.between(116.98, 117.10).all() and m.lat.between(28.20, 28.30).all()
    wn = wntr.network.WaterNetworkModel(str(paths["network"]))
    prs = m[m.kind == "pressure"]
    x, y = pyproj.Transformer.from_crs(4326, 32650, always_xy=True).transform(prs.lon, prs.lat)
    xy = np.array([wn.get_node(n).coordinates for n in prs.node_id])
    assert np.abs(xy - np.column_stack([x, y])).max() < 0.05
    t = json.loads(paths["truth"].read_text())
    assert t["shift_crs_units"] is not None and t["leak"] is None


@pytest.mark.slow
def test_city_week(tmp_path):
    """The city size: 130,000 meters, ~1.8 M register readings plus loggers (about 2 minutes)."""
    from twin.synth import synth_city

    net = synth_city(size="city", seed=2026, out_dir=tmp_path / "net")
    paths = synth_readings(net["inp"], crs="EPSG:4548", days=7, seed=2026, out_dir=tmp_path / "week")
    t = json.loads(paths["truth"].read_text())
    assert t["customers"]["count"] == 130_000
    assert t["readings_rows"] > 1_800_000
    assert 9.5 <= t["nrw_pct_before_leak"] <= 12.5
