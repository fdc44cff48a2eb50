"""Synthetic readings: the data contract, physics, determinism and bad arguments."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, wntr_network
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


# ----------------------------------------------------------------------------
# several leaks (issue 11): districts, growth, the truth's records
# ----------------------------------------------------------------------------

YINGTAN_SMALL = ROOT / "networks" / "yingtan-small.inp"


def _true_week(net, crs, *, days=3, seed=5, leak="random", leaks=None, districts="any", growth="abrupt",
               flow_lps=None):
    """The truth's simulation as synth_readings runs it: (model, leak records, hydraulics, balance)."""
    from twin.synth import readings as R
    from twin.synth.leaks import check_leaks

    geo, wn = R._geo(crs), R._load_wn(net)
    spec = check_leaks(wn, leak, leaks, districts=districts, growth=growth, flow_lps=flow_lps, separation_m=500.0,
                       days=days, network_path=net)
    _, _, records, hyd, balance, _ = R._true_week(
        wn, geo, R.gpkg_beside(net), spec=spec, days=days, start_ts=R._start_time(None), target_nrw_pct=(10.5, 11.5),
        rng=np.random.default_rng(seed), network_path=net)
    return wn, records, hyd, balance


def _check_flows_follow_records(wn, records, hyd):
    """Each leak's simulated flow: nil before its onset, its record's mean after, C r(t) sqrt(p) throughout."""
    t = hyd.t_index
    for r in records:
        q = hyd.demand[r["leak_node"]].to_numpy()
        (link,) = wn.get_links_for_node(r["leak_node"])
        split = wn.get_link(link).start_node_name
        full = r["emitter_coefficient"] * np.sqrt(np.clip(hyd.pressure[split].to_numpy(), 0, None))
        on = t >= r["onset_s"]
        assert np.abs(q[~on]).max() < 1e-6  # m3/s: a closed link passes ~1e-8
        assert q[on].mean() * 1000 == pytest.approx(r["flow_lps"], rel=1e-3)
        assert r["volume_m3"] == pytest.approx(q.sum() * 900, rel=1e-3)
        # the emitter coefficient's share r(t): 1 at once (abrupt) or rising linearly over the ramp (growing)
        n = int(round(r["ramp_h"] * 4))
        k = (t[on] - r["onset_s"]) // 900
        share = np.where(k < n, (k + 0.5) / max(n, 1), 1.0)
        # within 3 %, or 2 % of the full size (EPANET's convergence test is relative to the whole network's flow)
        assert q[on] == pytest.approx(share * full[on], rel=0.03, abs=2e-5 * r["target_flow_lps"]), r["link_id"]
        if r["kind"] == "abrupt":
            assert n == 0
            assert r["flow_lps"] == pytest.approx(r["target_flow_lps"], rel=0.1)
        else:
            assert 6 <= r["ramp_h"] <= 48
            # grows step by step while ramping (the first step's few mL/s are at EPANET's accuracy)
            assert np.all(np.diff(q[on][1: min(n, len(k))]) > 0)


@pytest.fixture(scope="module")
def yingtan_four(tmp_path_factory):
    """Four leaks in different DMAs of yingtan-small, abrupt and growing, 3 days (about 2 s)."""
    out = tmp_path_factory.mktemp("four")
    paths = synth_readings(YINGTAN_SMALL, crs="EPSG:4548", days=3, seed=5, leaks=4, leak_districts="different",
                           leak_growth="mixed", out_dir=out)
    wn, records, hyd, _ = _true_week(YINGTAN_SMALL, "EPSG:4548", seed=5, leaks=4, districts="different",
                                     growth="mixed")
    return {"paths": paths, "truth": json.loads(paths["truth"].read_text()), "wn": wn, "records": records, "hyd": hyd}


def _pipe_gaps(net, crs, link_ids):
    """Pipe distance (m) between the middles of every pair of ``link_ids``, read with twin's own network reader."""
    from twin.graph import middle_distances
    from twin.network import read_network

    network = read_network(net, crs=crs)
    pipes = network.links.index[network.links.link_type == "pipe"]
    d = middle_distances(network, link_ids)[:, pipes.get_indexer(link_ids)]
    return d[np.triu_indices(len(link_ids), 1)]


def test_four_leaks_in_different_districts(yingtan_four):
    t, wn = yingtan_four["truth"], yingtan_four["wn"]
    leaks = t["leaks"]
    assert len(leaks) == 4
    ids = [r["link_id"] for r in leaks]
    assert len(set(ids)) == 4
    # each in its own DMA, the zone of the leak point's nearer end node
    assert len({r["dma"] for r in leaks}) == 4 and None not in {r["dma"] for r in leaks}
    for r in leaks:
        near = r["node_start"] if r["position"] < 0.5 else r["node_end"]
        assert wn.get_node(near).tag == r["dma"]
    assert (_pipe_gaps(YINGTAN_SMALL, "EPSG:4548", ids) > 500).all()
    # own onsets after day 2 and before the end of the last day; both kinds with "mixed"
    onsets = [pd.Timestamp(r["onset"]) for r in leaks]
    assert all(pd.Timestamp("2026-03-04T00:00:00+08:00") < o < pd.Timestamp("2026-03-05T00:00:00+08:00")
               for o in onsets)
    assert len({r["onset_s"] for r in leaks}) == 4
    assert {r["kind"] for r in leaks} == {"abrupt", "growing"}


def test_truth_lists_every_leak_and_sums_them(yingtan_four):
    t = yingtan_four["truth"]
    leaks = t["leaks"]
    assert t["leak"] == max(leaks, key=lambda r: r["flow_lps"])
    assert "largest" in t["leak_note"] and t["leak"]["link_id"] in t["leak_note"]
    total = sum(r["volume_m3"] for r in leaks)
    assert t["leak_m3"] == pytest.approx(total, abs=0.01)
    assert sum(d["leak_m3"] for d in t["per_day"]) == pytest.approx(total, abs=0.01)
    # sizes: 1-6 % of a district's inflow each, all together a plausible share of the system input
    siv_lps = t["system_input_m3_per_day"] / 86.4
    assert sum(r["target_flow_lps"] for r in leaks) <= 0.10 * siv_lps
    assert all(r["target_flow_lps"] >= 0.01 * 0.01 * siv_lps for r in leaks)
    # nothing leaks (beyond the background) before the first onset
    first = min(pd.Timestamp(r["onset"]) for r in leaks)
    assert t["nrw_pct_before_leak"] == pytest.approx(11, abs=1.5)
    # (a closed EPANET link still passes ~1e-8 m3/s: a few litres a day per leak)
    before = [d for d in t["per_day"] if pd.Timestamp(d["date"] + "T23:59:59+08:00") < first]
    assert before and all(d["leak_m3"] < 0.005 * len(leaks) for d in before)


def test_each_leak_flows_as_its_record_says(yingtan_four):
    """The truth simulation behind the files: the records written are those of the simulated leaks."""
    records, t = yingtan_four["records"], yingtan_four["truth"]
    assert records == t["leaks"]
    _check_flows_follow_records(yingtan_four["wn"], records, yingtan_four["hyd"])


def test_several_leaks_same_seed_same_bytes(yingtan_four, tmp_path):
    again = synth_readings(YINGTAN_SMALL, crs="EPSG:4548", days=3, seed=5, leaks=4, leak_districts="different",
                           leak_growth="mixed", out_dir=tmp_path)
    for k in ("meters", "readings", "truth"):
        assert again[k].read_bytes() == yingtan_four["paths"][k].read_bytes(), k


def test_three_growing_leaks_in_one_district():
    wn, records, hyd, balance = _true_week(YINGTAN_SMALL, "EPSG:4548", days=4, seed=8, leaks=3, districts="same",
                                           growth="growing")
    assert len({r["dma"] for r in records}) == 1 and records[0]["dma"] is not None
    assert {r["kind"] for r in records} == {"growing"}
    assert (_pipe_gaps(YINGTAN_SMALL, "EPSG:4548", [r["link_id"] for r in records]) > 500).all()
    _check_flows_follow_records(wn, records, hyd)
    # growing leaks: the mean after the onset below the full size, the end at most the full size
    for r in records:
        assert r["flow_lps"] < r["final_flow_lps"] <= 1.05 * r["target_flow_lps"]


def test_named_pipes_growing_in_us_units():
    """Net3 (GPM, feet): the TCV ramp survives the unit conversion; pipes keep the order given."""
    wn, records, hyd, _ = _true_week(wntr_network("Net3"), "EPSG:32650", days=3, seed=2, leak="121, 329",
                                     growth="growing", flow_lps=10.0)
    assert [r["link_id"] for r in records] == ["121", "329"]
    assert all(r["target_flow_lps"] == pytest.approx(10.0) for r in records)
    _check_flows_follow_records(wn, records, hyd)


def test_one_leak_is_drawn_as_before(tmp_path):
    """The bundled week regenerates byte for byte; its one leak is both ``leak`` and ``leaks``."""
    week = ROOT / "data" / "yingtan-small-week"
    old = json.loads((week / "truth.json").read_text())
    paths = synth_readings(YINGTAN_SMALL, crs="EPSG:4548", days=7, leak="random", seed=42, out_dir=tmp_path,
                           readings_format="parquet")
    assert paths["readings"].read_bytes() == (week / "readings.parquet").read_bytes()
    assert paths["meters"].read_bytes() == (week / "meters.csv").read_bytes()
    t = json.loads(paths["truth"].read_text())
    assert {k: t["leak"][k] for k in old["leak"]} == old["leak"]
    assert t["leaks"] == [t["leak"]] and "leak_note" not in t
    assert t["leak"]["kind"] == "abrupt" and t["leak"]["ramp_h"] == 0
    assert t["leak_m3"] == old["leak_m3"]


def test_no_leak_lists_none(tmp_path):
    paths = synth_readings(wntr_network("Net1"), crs="EPSG:32650", days=3, leak="random", leaks=0, seed=1,
                           out_dir=tmp_path)
    t = json.loads(paths["truth"].read_text())
    assert t["leak"] is None and t["leaks"] == [] and t["leak_m3"] == 0


def test_bad_leak_options(tmp_path):
    net = wntr_network("Net1")
    cases = [
        (dict(leak="none", leaks=2), InputError, "contradicts"),
        (dict(leak="12,12"), InputError, "named twice"),
        (dict(leak=["12", "P999"]), UnknownElementError, "P999"),
        (dict(leak="12,random"), InputError, "mixes"),
        (dict(leak="12,22", leaks=3), InputError, "2 pipes named"),
        (dict(leak="12", leak_districts="same"), InputError, "chooses random pipes"),
        (dict(leaks=-1), InputError, "whole number"),
        (dict(leaks=2, leak_growth="slow"), InputError, "abrupt, growing, mixed"),
        (dict(leaks=2, leak_districts="apart"), InputError, "any, different, same"),
        (dict(leaks=2, leak_separation_m=-5.0), InputError, "not a distance"),
        # Net1: one DMA behind its pump, no room for leaks in two
        (dict(leaks=2, leak_districts="different"), InputError, "need 2 DMAs"),
        (dict(leaks=30), InputError, "no room for 30 leaks"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            synth_readings(net, crs="EPSG:32650", days=3, seed=1, out_dir=tmp_path, **kwargs)


def test_cli_several_leaks(twin_cli, tmp_path, capsys):
    net = wntr_network("Net1")
    rc = twin_cli("synth", "readings", "--network", net, "--crs", "EPSG:32650", "--days", "3", "--leak", "12",
                  "--leak", "22,113", "--leak-growth", "growing", "--seed", "4", "--out", tmp_path)
    assert rc == 0
    t = json.loads((tmp_path / "truth.json").read_text())
    assert [r["link_id"] for r in t["leaks"]] == ["12", "22", "113"]
    assert {r["kind"] for r in t["leaks"]} == {"growing"}
    capsys.readouterr()
    assert twin_cli("synth", "readings", "--network", net, "--crs", "EPSG:32650", "--leaks", "2",
                    "--leak-districts", "different", "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "need 2 DMAs" in err and "--leak-districts" in err and "Traceback" not in err
