"""Valve segments and repair work orders on hand-made networks with known answers."""

from __future__ import annotations

import json
from collections.abc import Callable

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import wntr

from tests.conftest import wntr_network
from twin.errors import InputError, SimulationError, UnknownElementError
from twin.network import Network, read_network, tables_from_wn
from twin.repair import ORDER_COLUMNS, ClosureSimulator, plan_repairs, write_plan
from twin.valves import generate_valves, valve_layer, valve_segments, valves_from_frame

CRS = "EPSG:32650"
X0, Y0 = 500_000.0, 3_120_000.0


def toy_network(rename: Callable[[str], str] = str) -> Network:
    """A reservoir feeding a loop with two branches (coordinates in UTM 50N, m).

    ``rename`` maps the IDs below to the ones used (for hostile-ID tests).

    ::

        R --p0-- J1 --p1-- J2 --p2-- J3 --p3-- J4
                 |         |         |
                 p6        p4        p5
                 |         |         |
                 J6 -------+--p7---- J7       J5 (end of p4)

    p6: J1-J6, p7: J6-J7, p5: J7-J3, p4: J2-J5 (a dead end).
    """
    n = rename
    wn = wntr.network.WaterNetworkModel()
    wn.add_reservoir(n("R"), base_head=80.0, coordinates=(X0 - 200, Y0))
    xy = {"J1": (0, 0), "J2": (200, 0), "J3": (400, 0), "J4": (600, 0), "J5": (200, 200),
          "J6": (0, -200), "J7": (400, -200)}
    for name, (x, y) in xy.items():
        wn.add_junction(n(name), base_demand=0.002, elevation=10.0, coordinates=(X0 + x, Y0 + y))
    pipes = {"p0": ("R", "J1"), "p1": ("J1", "J2"), "p2": ("J2", "J3"), "p3": ("J3", "J4"),
             "p4": ("J2", "J5"), "p5": ("J7", "J3"), "p6": ("J1", "J6"), "p7": ("J6", "J7")}
    for name, (a, b) in pipes.items():  # the loop p5-p6-p7 is thin: closing p1/p2 costs pressure
        wn.add_pipe(n(name), n(a), n(b), length=200.0,
                    diameter=0.08 if name in ("p5", "p6", "p7") else 0.15, roughness=100.0)
    crs = __import__("pyproj").CRS(CRS)
    nodes, links = tables_from_wn(wn, crs)
    valves = gpd.GeoDataFrame(
        {"link_id": [], "node_id": []}, geometry=gpd.GeoSeries([], crs=crs), crs=crs
    )
    valves.index.name = "valve_id"
    return Network(wn=wn, crs=crs, nodes=nodes, links=links, valves=valves, source="toy")


#: Valves: Va on p1 next to J1, Vb on p2 next to J3, Vc on p4 next to J2,
#: Vd on p5 next to J3, Ve on p3 next to J3, Vf on p6 next to J1.
TOY_VALVES = [("Va", "p1", "J1"), ("Vb", "p2", "J3"), ("Vc", "p4", "J2"), ("Vd", "p5", "J3"),
              ("Ve", "p3", "J3"), ("Vf", "p6", "J1")]


def toy_valves(net: Network, rename: Callable[[str], str] = str) -> gpd.GeoDataFrame:
    frame = gpd.GeoDataFrame(
        {"valve_id": [rename(v[0]) for v in TOY_VALVES], "link_id": [rename(v[1]) for v in TOY_VALVES],
         "node_id": [rename(v[2]) for v in TOY_VALVES]},
        geometry=gpd.GeoSeries([None] * 6, crs=CRS),  # no survey: placed 2 m from the node
    )
    return valves_from_frame(frame, net)


def candidates(links: list[str], flows: list[float] | None = None) -> pd.DataFrame:
    n = len(links)
    return pd.DataFrame({
        "rank": np.arange(1, n + 1), "link_id": links,
        "score": np.linspace(0.5, 0.1, n), "leak_flow_lps": flows or [2.0] * n,
    })


def toy_join(net: Network, per_link: dict[str, int]) -> pd.DataFrame:
    rows = []
    for link, k in per_link.items():
        for i in range(k):
            rows.append({"meter_id": f"C-{link}-{i}", "link_id": link, "position": (i + 0.5) / k,
                         "matched": True})
    rows.append({"meter_id": "C-far", "link_id": pd.NA, "position": np.nan, "matched": False})
    return pd.DataFrame(rows).set_index("meter_id")


# --------------------------------------------------------------------------- valves


def test_segments_of_toy_network_have_the_known_boundary():
    net = toy_network()
    segs = valve_segments(net, toy_valves(net))
    s = segs.link_segment["p1"]
    assert segs.link_segment["p2"] == s
    assert segs.node_segment["J2"] == s
    assert set(segs.link_segment.index[segs.link_segment == s]) == {"p1", "p2"}
    assert set(segs.boundary(s)) == {"Va", "Vb", "Vc"}


def test_inoperable_valve_grows_the_segment_to_the_next_valves():
    net = toy_network()
    segs = valve_segments(net, toy_valves(net), inoperable=["Vb"])
    s = segs.link_segment["p1"]
    assert set(segs.link_segment.index[segs.link_segment == s]) == {"p1", "p2"}
    assert set(segs.node_segment.index[segs.node_segment == s]) == {"J2", "J3"}
    assert set(segs.boundary(s)) == {"Va", "Vc", "Vd", "Ve"}


def test_unknown_inoperable_valve_is_named():
    net = toy_network()
    with pytest.raises(UnknownElementError, match="V99"):
        valve_segments(net, toy_valves(net), inoperable=["V99"])


def test_segments_equal_wntr_valve_segments_on_net3():
    net = read_network(wntr_network("Net3"), crs=CRS)
    vl = generate_valves(net, seed=3)
    segs = valve_segments(net, vl)
    layer = pd.DataFrame({"link": vl["link_id"].to_numpy(), "node": vl["node_id"].to_numpy()})
    node_seg, link_seg, _ = wntr.metrics.valve_segments(net.wn.to_graph(), layer)
    ours = pd.concat([segs.node_segment.add_prefix("n:"), segs.link_segment.add_prefix("l:")])
    theirs = pd.concat([node_seg.add_prefix("n:"), link_seg.add_prefix("l:")]).reindex(ours.index)
    assert theirs.notna().all()
    table = pd.crosstab(ours, theirs)
    # the same partition: every segment of ours maps to exactly one of WNTR's and back
    assert (table.gt(0).sum(axis=1) == 1).all() and (table.gt(0).sum(axis=0) == 1).all()


def test_generated_valves_are_n_minus_1_and_reproducible():
    net = read_network(wntr_network("Net3"), crs=CRS)
    a = generate_valves(net, seed=7)
    b = generate_valves(net, seed=7)
    c = generate_valves(net, seed=8)
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")),
                                  pd.DataFrame(b.drop(columns="geometry")))
    assert not a[["link_id", "node_id"]].equals(c[["link_id", "node_id"]])
    pipes = net.pipes
    degree = pd.concat([pipes["start_node"], pipes["end_node"]]).value_counts()
    per_node = a["node_id"].value_counts().reindex(degree.index, fill_value=0)
    assert (per_node == degree - 1).all()
    # every valve point lies on its pipe, near the named node
    import shapely

    on_pipe = shapely.distance(net.links.loc[a["link_id"]].geometry.values, a.geometry.values)
    assert (on_pipe < 1e-6).all()
    to_node = shapely.distance(net.nodes.loc[a["node_id"]].geometry.values, a.geometry.values)
    assert (to_node <= 2.0 + 1e-6).all()


def test_gis_valve_layer_is_snapped_to_pipe_and_nearer_node(tmp_path):
    net = toy_network()
    pts = gpd.GeoDataFrame({"valve_id": ["G1", "G2"]},
                           geometry=gpd.GeoSeries.from_xy([X0 + 190, X0 + 3], [Y0 + 1, Y0 - 150], crs=CRS))
    path = tmp_path / "valves.gpkg"
    pts.to_crs("EPSG:4326").to_file(path)
    vl = valve_layer(net, valves=path)
    assert vl.loc["G1", "link_id"] == "p1" and vl.loc["G1", "node_id"] == "J2"
    assert vl.loc["G2", "link_id"] == "p6" and vl.loc["G2", "node_id"] == "J6"
    far = gpd.GeoDataFrame({"valve_id": ["G3"]}, geometry=gpd.GeoSeries.from_xy([X0 + 100], [Y0 + 90], crs=CRS))
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(InputError, match="farther than"):
        valve_layer(net, valves=tmp_path / "far.gpkg")


def test_valves_layer_is_found_in_a_network_geopackage(tmp_path):
    # A utility's network GeoPackage holds pipes, nodes and valves: the valves layer is used,
    # whatever layer comes first in the file.
    net = toy_network()
    path = tmp_path / "network.gpkg"
    net.links[["geometry"]].to_file(path, layer="pipes")
    pts = gpd.GeoDataFrame({"valve_id": ["G1"]},
                           geometry=gpd.GeoSeries.from_xy([X0 + 190], [Y0 + 1], crs=CRS))
    pts.to_file(path, layer="valves")
    vl = valve_layer(net, valves=path)
    assert list(vl.index) == ["G1"]
    assert vl.loc["G1", "link_id"] == "p1"


def test_a_line_layer_given_as_valves_is_refused_with_the_fix(tmp_path):
    net = toy_network()
    path = tmp_path / "pipes.gpkg"
    net.links[["geometry"]].to_file(path, layer="pipes")
    with pytest.raises(InputError, match="not points"):
        valve_layer(net, valves=path)


# --------------------------------------------------------------------------- work orders


def test_work_order_isolates_p1_with_known_valves_and_customers():
    net = toy_network()
    join = toy_join(net, {"p1": 3, "p2": 2, "p4": 4, "p3": 5, "p7": 1})
    orders = plan_repairs(net, candidates=candidates(["p1"], [2.5]), join=join, valves=toy_valves(net))
    assert list(orders.columns[:-1]) == ORDER_COLUMNS
    o = orders.iloc[0]
    assert set(o["valves_to_close"].split(";")) == {"Va", "Vb", "Vc"}
    assert set(o["isolated_links"].split(";")) == {"p1", "p2"}
    assert o["cut_off_links"] == "p4"  # J5 hangs on J2 only
    # customers affected == the meters joined to isolated or cut-off pipes
    expected = set(join.index[join["link_id"].isin(["p1", "p2", "p4"])])
    assert set(o["customer_ids"].split(";")) == expected
    assert o["customers_affected"] == len(expected) == 9
    assert o["water_lost_m3_per_day"] == pytest.approx(2.5 * 86.4)
    # J2 and J5 lose their demand (2 x 2 L/s); the loop keeps J3, J4 supplied
    assert o["demand_not_served_lps"] == pytest.approx(4.0, rel=1e-3)
    assert o["max_pressure_drop_m"] > 0.01
    assert o["shortfall_elsewhere_lps"] == pytest.approx(0.0, abs=1e-3)
    assert orders.geometry.iloc[0].length == pytest.approx(400.0)


def test_inoperable_valve_in_plan_uses_next_valves_and_reports_it():
    net = toy_network()
    join = toy_join(net, {"p1": 1, "p2": 1, "p3": 2})
    orders = plan_repairs(net, candidates=candidates(["p1"]), join=join, valves=toy_valves(net),
                          inoperable_valves=["Vb"])
    o = orders.iloc[0]
    assert set(o["valves_to_close"].split(";")) == {"Va", "Vc", "Vd", "Ve"}
    assert o["inoperable_nearby"] == "Vb"
    # J3 is now isolated too, but J4 (behind Ve) is cut off from every source
    assert set(o["cut_off_links"].split(";")) == {"p3", "p4"}
    assert o["customers_affected"] == 4


def test_candidates_in_one_segment_share_one_order_and_priority_follows_loss():
    net = toy_network()
    cands = candidates(["p2", "p3", "p1"], [1.0, 4.0, 1.0])
    orders = plan_repairs(net, candidates=cands, valves=toy_valves(net), simulate=False)
    assert len(orders) == 2  # p1 and p2 are one segment
    merged = orders[orders["candidate_links"].str.contains("p1")].iloc[0]
    assert merged["candidate_links"] == "p2;p1" and merged["rank"] == 1
    assert list(orders["priority"]) == [1, 2]
    assert orders["expected_loss_m3_per_day"].is_monotonic_decreasing


def test_critical_customers_flag_advance_notice():
    net = toy_network()
    join = toy_join(net, {"p1": 2, "p3": 2})
    meters = pd.DataFrame({"customer_class": ["residential", "Hospital", "residential", "school"]},
                          index=["C-p1-0", "C-p1-1", "C-p3-0", "C-p3-1"])
    orders = plan_repairs(net, candidates=candidates(["p1"]), join=join, meters=meters,
                          valves=toy_valves(net), simulate=False)
    o = orders.iloc[0]
    assert o["critical_customer_ids"] == "C-p1-1" and bool(o["advance_notice"])


def test_unknown_candidate_link_is_an_input_error():
    net = toy_network()
    with pytest.raises(UnknownElementError, match="P404"):
        plan_repairs(net, candidates=candidates(["p1", "P404"]), valves=toy_valves(net))


def test_closure_simulation_conserves_mass_and_leaves_model_untouched():
    net = toy_network()
    before = net.wn.get_node("J2").demand_timeseries_list[0].base_value
    model = (net.wn.options.hydraulic.demand_model, net.wn.options.time.duration)
    with ClosureSimulator(net.wn) as sim:
        base = sim.run()
        closed = sim.run(closed_links=["p1", "p2", "p4"], dry_nodes=["J2", "J5"])
    # inflow from the reservoir = delivered demand (7 junctions x 2 L/s in the base case)
    assert base.loc[sim.junction_ids, "demand_lps"].sum() == pytest.approx(14.0, rel=1e-3)
    assert closed.loc[sim.junction_ids, "demand_lps"].sum() == pytest.approx(10.0, rel=1e-3)
    assert (closed.loc[["J3", "J4"], "pressure_m"] < base.loc[["J3", "J4"], "pressure_m"]).all()
    assert net.wn.get_node("J2").demand_timeseries_list[0].base_value == before
    assert (net.wn.options.hydraulic.demand_model, net.wn.options.time.duration) == model


def test_a_closure_model_that_fails_to_open_is_raised_in_the_caller_and_closed(monkeypatch):
    net = toy_network()
    closed = []
    close = ClosureSimulator.close

    def fail(self, **kwargs):
        raise SimulationError("EPANET failed on the closure (test)")

    def track(self):
        closed.append(self.session is not None)
        close(self)

    monkeypatch.setattr(ClosureSimulator, "run", fail)
    monkeypatch.setattr(ClosureSimulator, "close", track)
    with pytest.raises(SimulationError, match="closure"):
        plan_repairs(net, candidates=candidates(["p1"]), valves=toy_valves(net))
    assert closed == [True]  # the project that opened in the worker thread was closed once


def test_write_plan_files(tmp_path):
    net = toy_network()
    join = toy_join(net, {"p1": 2, "p3": 1})
    orders = plan_repairs(net, candidates=candidates(["p1", "p3"]), join=join, valves=toy_valves(net))
    files = write_plan(orders, tmp_path / "plan", net, join=join)
    table = pd.read_csv(files["work_orders"], dtype=str)
    assert {"valves_to_close", "customer_ids", "customers_affected", "priority"} <= set(table.columns)
    assert len(table) == 2
    gj = json.loads(files["geojson"].read_text())
    assert len(gj["features"]) == 2
    lon, lat = gj["features"][0]["geometry"]["coordinates"][0][0]
    assert 116 < lon < 118 and 28 < lat < 29  # EPSG:4326 around UTM 50N's origin used here
    sheet = files[f"sheet:{table.loc[0, 'order_id']}"].read_text()
    assert "<svg" in sheet and "http://" not in sheet.replace("http://www.w3.org/2000/svg", "")
    for v in table.loc[0, "valves_to_close"].split(";"):
        assert v in sheet
    valves = json.loads(files["valves"].read_text())
    closed_by = {f["properties"]["valve_id"]: f["properties"]["closed_by"] for f in valves["features"]}
    assert closed_by["Va"] != ""


# --------------------------------------------------------------------------- CLI


def _write_inp(net: Network, path) -> None:
    wntr.network.write_inpfile(net.wn, str(path), units="LPS")


def test_cli_plan_writes_orders_and_map(tmp_path, twin_cli, capsys):
    net = toy_network()
    inp = tmp_path / "toy.inp"
    _write_inp(net, inp)
    from twin.crs import transform_xy

    x = np.array([X0 + 100, X0 + 300, X0 + 500])
    y = np.array([Y0 + 5, Y0 - 4, Y0 + 3])
    lon, lat = transform_xy(x, y, from_crs=CRS, to_crs="EPSG:4326")
    pd.DataFrame({"meter_id": ["M1", "M2", "M3"], "kind": "customer", "lon": lon, "lat": lat,
                  "node_id": "", "link_id": ""}).to_csv(tmp_path / "meters.csv", index=False)
    candidates(["p1", "p3"]).to_csv(tmp_path / "candidates.csv", index=False)
    rc = twin_cli("plan", "--network", inp, "--crs", CRS, "--meters", tmp_path / "meters.csv",
                  "--candidates", tmp_path / "candidates.csv", "--out", tmp_path / "out", "--top", 2)
    assert rc == 0
    orders = pd.read_csv(tmp_path / "out" / "work_orders.csv", dtype=str)
    assert len(orders) == 2
    # with a generated N-1 layer the exact valves vary; the customers must follow the isolated pipes
    for _, o in orders.iterrows():
        iso = set(o["isolated_links"].split(";")) | set(str(o["cut_off_links"]).split(";"))
        expect = {m for m, p in (("M1", "p1"), ("M2", "p2"), ("M3", "p3")) if p in iso}
        got = set(str(o["customer_ids"]).split(";")) - {"nan"}
        assert got == expect
    assert (tmp_path / "out" / "map.html").exists()
    rc = twin_cli("plan", "--network", inp, "--crs", CRS, "--candidates", tmp_path / "candidates.csv",
                  "--out", tmp_path / "out2", "--inoperable", "V999")
    err = capsys.readouterr().err
    assert rc == 2 and "V999" in err and "Traceback" not in err


def test_cli_plan_bad_candidates_exit_2(tmp_path, twin_cli, capsys):
    net = toy_network()
    inp = tmp_path / "toy.inp"
    _write_inp(net, inp)
    (tmp_path / "c.csv").write_text("rank,pipe\n1,p1\n")
    rc = twin_cli("plan", "--network", inp, "--crs", CRS, "--candidates", tmp_path / "c.csv",
                  "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert rc == 2 and "link_id" in err and "c.csv" in err


def test_zone_option_plans_the_candidate_zone():
    net = toy_network()
    cands = candidates(["p3", "p1", "p7", "p5"])
    cands["in_candidate_zone"] = [True, True, False, True]
    orders = plan_repairs(net, candidates=cands, zone=True, valves=toy_valves(net), simulate=False)
    planned = {lk for v in orders["candidate_links"] for lk in v.split(";")}
    assert planned == {"p3", "p1", "p5"}
    with pytest.raises(InputError, match="in_candidate_zone"):
        plan_repairs(net, candidates=candidates(["p1"]), zone=True, valves=toy_valves(net))


def test_plan_files_are_reproducible(tmp_path):
    """Same inputs and seed, same files byte for byte (generated valve layer included)."""
    net = read_network(wntr_network("Net3"), crs=CRS)
    pipes = net.pipes.index[:40:4].tolist()
    outs = []
    for k in range(2):
        orders = plan_repairs(net, candidates=candidates(pipes), seed=11)
        files = write_plan(orders, tmp_path / f"plan{k}", net)
        outs.append({name: p.read_bytes() for name, p in files.items()})
    assert outs[0] == outs[1]
    other = plan_repairs(net, candidates=candidates(pipes), seed=12, simulate=False)
    assert not orders[["valves_to_close"]].equals(other[["valves_to_close"]])


def test_dig_point_is_on_the_pipe_even_from_rounded_coordinates(tmp_path):
    """candidates.csv may carry lon/lat rounded to ~100 m: the dig point is snapped onto the pipe."""
    from twin.crs import transform_xy

    net = toy_network()
    # p3 runs from J3 (X0+400) to J4 (X0+600) at Y0; the estimate is 150 m along it, 60 m off
    lon, lat = transform_xy(np.array([X0 + 550.0]), np.array([Y0 + 60.0]), from_crs=CRS, to_crs="EPSG:4326")
    cands = candidates(["p3"]).assign(lon=lon, lat=lat)
    orders = plan_repairs(net, candidates=cands, valves=toy_valves(net), simulate=False)
    files = write_plan(orders, tmp_path / "plan", net)
    row = pd.read_csv(files["work_orders"]).iloc[0]
    x, y = transform_xy(np.array([row["lon"]]), np.array([row["lat"]]), from_crs="EPSG:4326", to_crs=CRS)
    assert x[0] == pytest.approx(X0 + 550.0, abs=0.05) and y[0] == pytest.approx(Y0, abs=0.05)
    # without coordinates: the middle of the pipe
    mid = plan_repairs(net, candidates=candidates(["p3"]), valves=toy_valves(net), simulate=False)
    x, _ = transform_xy(mid["lon"].to_numpy(), mid["lat"].to_numpy(), from_crs="EPSG:4326", to_crs=CRS)
    assert x[0] == pytest.approx(X0 + 500.0, abs=0.05)


def test_cli_plan_with_gcj02_meters_and_inoperable_valve(tmp_path, twin_cli):
    """Meters in GCJ-02 (Amap coordinates) join to the same pipes once converted."""
    from twin.crs import transform_xy, wgs84_to_gcj02

    net = toy_network()
    inp = tmp_path / "toy.inp"
    _write_inp(net, inp)
    x = np.array([X0 + 100, X0 + 300, X0 + 500, X0 + 200])
    y = np.array([Y0 + 5, Y0 - 4, Y0 + 3, Y0 + 150])
    lon, lat = transform_xy(x, y, from_crs=CRS, to_crs="EPSG:4326")
    glon, glat = wgs84_to_gcj02(lon, lat)  # a ~500 m shift: joined without conversion, all would miss
    pd.DataFrame({"meter_id": ["M1", "M2", "M3", "M5"], "kind": "customer", "lon": glon, "lat": glat,
                  "node_id": "", "link_id": ""}).to_csv(tmp_path / "meters.csv", index=False)
    candidates(["p1"]).to_csv(tmp_path / "candidates.csv", index=False)
    # a GIS valve layer with the toy's valves, one of them seized
    vl = toy_valves(net).reset_index()
    vl.to_crs("EPSG:4326").to_file(tmp_path / "valves.geojson")
    rc = twin_cli("plan", "--network", inp, "--crs", CRS, "--meters", tmp_path / "meters.csv",
                  "--meters-crs", "GCJ02", "--candidates", tmp_path / "candidates.csv",
                  "--valves", tmp_path / "valves.geojson", "--inoperable", "Vb",
                  "--out", tmp_path / "out", "--no-map")
    assert rc == 0
    o = pd.read_csv(tmp_path / "out" / "work_orders.csv", dtype=str).iloc[0]
    assert set(o["valves_to_close"].split(";")) == {"Va", "Vc", "Vd", "Ve"}
    # p1, p2 isolated; p3 (J4 behind Ve) and p4 (J5 behind Vc) cut off: every meter is affected
    assert set(o["customer_ids"].split(";")) == {"M1", "M2", "M3", "M5"}


def test_cli_plan_uses_the_valves_of_the_geopackage_beside_the_inp(tmp_path, twin_cli, capsys):
    """A utility's network.inp with network.gpkg beside it: work orders name the utility's valves."""
    net = toy_network()
    inp = tmp_path / "network.inp"
    _write_inp(net, inp)
    utility = toy_valves(net, lambda v: f"UT-{v}" if v.startswith("V") else v).reset_index()
    utility.to_crs("EPSG:4326").to_file(tmp_path / "network.gpkg", layer="valves")
    net.links[["geometry"]].to_file(tmp_path / "network.gpkg", layer="pipes")
    candidates(["p1"]).to_csv(tmp_path / "candidates.csv", index=False)
    args = ("plan", "--network", inp, "--crs", CRS, "--candidates", tmp_path / "candidates.csv",
            "--no-simulate", "--no-map")
    assert twin_cli(*args, "--out", tmp_path / "beside") == 0
    assert "network.gpkg" in capsys.readouterr().err  # the log line says where the valves come from
    o = pd.read_csv(tmp_path / "beside" / "work_orders.csv", dtype=str).iloc[0]
    assert set(o["valves_to_close"].split(";")) == {"UT-Va", "UT-Vb", "UT-Vc"}
    # an explicit --valves still wins
    toy_valves(net).reset_index().to_crs("EPSG:4326").to_file(tmp_path / "other.geojson")
    assert twin_cli(*args, "--valves", tmp_path / "other.geojson", "--out", tmp_path / "given") == 0
    o = pd.read_csv(tmp_path / "given" / "work_orders.csv", dtype=str).iloc[0]
    assert set(o["valves_to_close"].split(";")) == {"Va", "Vb", "Vc"}


def toy_with_prv_and_pump() -> Network:
    """The toy with a PRV on from J4 and a pump on from J5 (each to a new junction)."""
    net = toy_network()
    wn = net.wn
    wn.add_junction("J8", base_demand=0.001, elevation=10.0, coordinates=(X0 + 800, Y0))
    wn.add_valve("PRV1", "J4", "J8", diameter=0.1, valve_type="PRV", initial_setting=30.0)
    wn.add_junction("J9", base_demand=0.0, elevation=10.0, coordinates=(X0 + 200, Y0 + 400))
    wn.add_pump("PU1", "J5", "J9", pump_type="POWER", pump_parameter=1.0)
    nodes, links = tables_from_wn(wn, net.crs)
    return Network(wn=wn, crs=net.crs, nodes=nodes, links=links, valves=net.valves, source="toy")


def test_pump_and_valve_candidates_are_skipped_with_a_warning_naming_them(caplog):
    net = toy_with_prv_and_pump()
    with caplog.at_level("WARNING", logger="twin.repair"):
        orders = plan_repairs(net, candidates=candidates(["PRV1", "p1", "PU1", "p3"]),
                              valves=toy_valves(net), simulate=False, top_n=2)
    # no "pipe" work order for the PRV or the pump; the top 2 *pipes* are planned
    assert not set(orders["link_id"]) & {"PRV1", "PU1"}
    assert set(orders["link_id"]) == {"p1", "p3"}
    assert "PRV1 (PRV valve, rank 1)" in caplog.text and "PU1 (pump, rank 3)" in caplog.text
    skipped = orders.attrs["skipped_candidates"]
    assert list(skipped["link_id"]) == ["PRV1", "PU1"] and list(skipped["link_type"]) == ["PRV valve", "pump"]


def test_candidates_without_a_pipe_are_refused(tmp_path, twin_cli, capsys):
    net = toy_with_prv_and_pump()
    with pytest.raises(InputError, match=r"no candidate is a pipe: PRV1 \(PRV valve, rank 1\)"):
        plan_repairs(net, candidates=candidates(["PRV1"]), valves=toy_valves(net), simulate=False)
    inp = tmp_path / "toy.inp"
    _write_inp(net, inp)
    candidates(["PRV1", "PU1"]).to_csv(tmp_path / "candidates.csv", index=False)
    rc = twin_cli("plan", "--network", inp, "--crs", CRS, "--candidates", tmp_path / "candidates.csv",
                  "--out", tmp_path / "plan", "--no-simulate", "--no-map")
    err = capsys.readouterr().err
    assert rc == 2 and "PU1 (pump, rank 2)" in err and "Traceback" not in err
