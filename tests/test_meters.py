"""Meter registry: reading (WGS84, GCJ-02, BD-09), validation, join to pipes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin.crs import transform_xy, wgs84_to_bd09, wgs84_to_gcj02
from twin.errors import MeterError, MissingFileError
from twin.meters import join_meters, meters_from_frame, node_weights, read_meters, validate_meters
from twin.network import read_network

X0, Y0 = 503000.0, 3125000.0  # Yingtan, EPSG:4548 (CGCS2000 GK CM 117E)

# Two parallel pipes 20 m apart (P1 along y=0, P2 along y=20), a cross pipe
# P3 at x=100 and a far pipe P4; pipe IDs chosen so that string order != file order.
INP = f"""[TITLE]
hand-made test network

[JUNCTIONS]
;ID  Elev  Demand
 A   10    0
 B   10    0
 C   10    0
 D   10    0
 E   10    0

[RESERVOIRS]
 R   60

[PIPES]
;ID  N1  N2  Length  Diam  Rough  Minor  Status
 P1  A   B   100     150   100    0      Open
 P2  C   D   100     150   100    0      Open
 P3  B   D   20      150   100    0      Open
 P4  R   A   500     300   100    0      Open
 P0  D   E   300     150   100    0      Open

[COORDINATES]
 A  {X0}        {Y0}
 B  {X0 + 100}  {Y0}
 C  {X0}        {Y0 + 20}
 D  {X0 + 100}  {Y0 + 20}
 E  {X0 + 400}  {Y0 + 20}
 R  {X0 - 500}  {Y0}

[OPTIONS]
 Units  LPS

[END]
"""


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "hand.inp"
    path.write_text(INP)
    return read_network(path, crs="EPSG:4548")


def _lonlat(xy):
    x = np.array([p[0] for p in xy], dtype=float)
    y = np.array([p[1] for p in xy], dtype=float)
    return transform_xy(x, y, from_crs="EPSG:4548", to_crs="EPSG:4326")


def _registry(rows):
    """rows: (meter_id, kind, x, y, node_id, link_id) in EPSG:4548 metres."""
    lon, lat = _lonlat([(r[2], r[3]) for r in rows])
    return pd.DataFrame(
        {
            "meter_id": [r[0] for r in rows],
            "kind": [r[1] for r in rows],
            "lon": lon,
            "lat": lat,
            "node_id": [r[4] for r in rows],
            "link_id": [r[5] for r in rows],
        }
    )


def test_join_hand_made_cases(net):
    reg = _registry(
        [
            ("beside", "customer", X0 + 30, Y0 - 4, "", ""),  # 4 m south of P1, 30 % along
            ("at_node", "customer", X0 + 100, Y0 + 20, "", ""),  # on node D: P2, P3, P0 meet
            ("between", "customer", X0 + 50, Y0 + 10, "", ""),  # 10 m from P1 and from P2
            ("beyond", "customer", X0 + 250, Y0 + 90, "", ""),  # 70 m from P0
            ("logger", "pressure", X0, Y0, "A", ""),
        ]
    )
    meters = meters_from_frame(reg)
    join = join_meters(meters, net, max_distance_m=50)
    assert list(join.index) == ["beside", "at_node", "between", "beyond"]  # customers only
    b = join.loc["beside"]
    assert b["link_id"] == "P1" and b["matched"]
    assert b["start_node"] == "A" and b["end_node"] == "B"
    assert b["position"] == pytest.approx(0.30, abs=1e-3)
    assert b["distance_m"] == pytest.approx(4.0, abs=0.01)
    n = join.loc["at_node"]
    assert n["link_id"] == "P0"  # tie among P0, P2, P3 at 0 m: smallest ID
    assert n["distance_m"] == pytest.approx(0.0, abs=0.01)
    assert n["position"] == pytest.approx(0.0, abs=1e-6)  # D is P0's start node
    e = join.loc["between"]
    assert e["link_id"] == "P1" and e["distance_m"] == pytest.approx(10.0, abs=0.01)
    far = join.loc["beyond"]
    assert not far["matched"] and pd.isna(far["link_id"])
    assert far["distance_m"] == pytest.approx(70.0, abs=0.05)
    assert far["nearest_link_id"] == "P0"
    # a larger limit takes it
    assert join_meters(meters, net, max_distance_m=80).loc["beyond", "link_id"] == "P0"


def test_join_tie_break_independent_of_row_order(net):
    reg = _registry([(f"m{i}", "customer", X0 + 5 + i, Y0 + 10, "", "") for i in range(20)])
    a = join_meters(meters_from_frame(reg), net)
    b = join_meters(meters_from_frame(reg.iloc[::-1].reset_index(drop=True)), net)
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
    assert set(a["link_id"]) == {"P1"}


def test_node_weights_split_by_position(net):
    reg = _registry([("m", "customer", X0 + 25, Y0 + 1, "", "")])
    w = node_weights(join_meters(meters_from_frame(reg), net)).set_index("node_id")["weight"]
    assert w["A"] == pytest.approx(0.75, abs=1e-3) and w["B"] == pytest.approx(0.25, abs=1e-3)


@pytest.mark.parametrize("datum,forward", [("GCJ02", wgs84_to_gcj02), ("BD09", wgs84_to_bd09)])
def test_chinese_web_map_input_is_converted(tmp_path, net, datum, forward):
    lon, lat = _lonlat([(X0 + 30, Y0 - 4)])
    wlon, wlat = forward(lon, lat)  # as Amap / Baidu would give them, ~500 m off
    path = tmp_path / "meters.csv"
    path.write_text(f"meter_id,kind,lon,lat,node_id,link_id\nM1,customer,{wlon[0]:.8f},{wlat[0]:.8f},,\n")
    raw = read_meters(path)  # read as if WGS84: lands hundreds of metres away
    assert not join_meters(raw, net).loc["M1", "matched"]
    meters = read_meters(path, crs=datum)
    assert meters.crs.to_epsg() == 4326
    assert meters.loc["M1", "lon"] == pytest.approx(lon[0], abs=2e-6)
    j = join_meters(meters, net).loc["M1"]
    assert j["link_id"] == "P1" and j["distance_m"] == pytest.approx(4.0, abs=0.5)


def test_validate_rejects_every_problem_with_a_reason(net):
    reg = _registry(
        [
            ("ok", "customer", X0 + 30, Y0 - 4, "", ""),
            ("dup", "customer", X0 + 30, Y0 - 4, "", ""),
            ("dup", "customer", X0 + 30, Y0 - 4, "", ""),  # identical repeat: first kept
            ("clash", "customer", X0 + 30, Y0 - 4, "", ""),
            ("clash", "customer", X0 + 60, Y0 - 4, "", ""),  # conflicting: both refused
            ("odd", "valve", X0, Y0, "", ""),
            ("far", "customer", X0 + 50_000, Y0, "", ""),
            ("p_ok", "pressure", X0, Y0, "A", ""),
            ("p_bad", "pressure", X0, Y0, "NOPE", ""),
            ("p_none", "pressure", X0, Y0, "", ""),
            ("f_ok", "flow", X0, Y0, "", "P4"),
            ("f_bad", "flow", X0, Y0, "", "P99"),
        ]
    )
    swapped = reg.iloc[[0]].copy()
    swapped[["lon", "lat"]] = swapped[["lat", "lon"]].to_numpy()
    swapped["meter_id"] = "swap"
    nan_xy = reg.iloc[[0]].copy()
    nan_xy["meter_id"], nan_xy["lon"] = "noxy", "x"
    reg = pd.concat([reg, swapped, nan_xy], ignore_index=True)
    good, rejected = validate_meters(meters_from_frame(reg), net)
    assert sorted(good.index) == ["dup", "f_ok", "ok", "p_ok"]
    assert good.index.is_unique
    reasons = dict(zip(rejected["meter_id"] + "@" + rejected["source_row"].astype(str), rejected["reason"]))
    assert reasons["dup@3"].startswith("duplicate meter_id (repeated")
    assert reasons["clash@4"].startswith("duplicate meter_id with conflicting")
    assert reasons["clash@5"].startswith("duplicate meter_id with conflicting")
    assert "unknown kind 'valve'" in reasons["odd@6"]
    assert reasons["far@7"].startswith("outside the network area")
    assert "unknown node 'NOPE'" in reasons["p_bad@9"]
    assert reasons["p_none@10"] == "pressure logger without node_id"
    assert "unknown link 'P99'" in reasons["f_bad@12"]
    assert reasons["swap@13"].startswith("lon/lat swapped")
    assert reasons["noxy@14"].startswith("missing or non-numeric")
    assert len(good) + len(rejected) == len(reg)


def test_validate_without_network_catches_swapped_by_range():
    reg = pd.DataFrame({"meter_id": ["a", "b"], "kind": ["customer", "customer"], "lon": [117.03, 28.24], "lat": [28.24, 117.03]})
    good, rejected = validate_meters(meters_from_frame(reg))
    assert list(good.index) == ["a"]
    assert rejected["reason"].iloc[0].startswith("lon/lat swapped")


def test_read_meters_errors(tmp_path):
    with pytest.raises(MissingFileError):
        read_meters(tmp_path / "nope.csv")
    bad = tmp_path / "meters.csv"
    bad.write_text("id,kind,x,y\n1,customer,117,28\n")
    with pytest.raises(MeterError, match=r"meters.csv: meter registry lacks the column\(s\) meter_id, lon, lat"):
        read_meters(bad)
    weird = tmp_path / "meters.xlsx"
    weird.write_text("x")
    with pytest.raises(MeterError, match="unsupported"):
        read_meters(weird)


def test_read_meters_parquet_keeps_extra_columns(tmp_path):
    df = pd.DataFrame({"meter_id": ["m1", "m2"], "kind": ["Customer ", "flow"], "lon": [117.03, 117.04],
                       "lat": [28.24, 28.25], "link_id": [None, "P1"], "customer_class": ["domestic", None]})
    path = tmp_path / "meters.parquet"
    df.to_parquet(path)
    m = read_meters(path)
    assert list(m["kind"]) == ["customer", "flow"]
    assert m.loc["m1", "customer_class"] == "domestic"
    assert pd.isna(m.loc["m1", "node_id"]) and m.loc["m2", "link_id"] == "P1"
    assert m.index.name == "meter_id"


def test_cli_meters_join_writes_the_join_and_refuses_bad_input(tmp_path, twin_cli, capsys):
    inp = tmp_path / "hand.inp"
    inp.write_text(INP)
    lon, lat = _lonlat([(X0 + 30, Y0 - 4)])
    glon, glat = wgs84_to_gcj02(lon, lat)
    reg = tmp_path / "meters.csv"
    reg.write_text(
        "meter_id,kind,lon,lat,node_id,link_id\n"
        f"M1,customer,{glon[0]:.8f},{glat[0]:.8f},,\n"
        f"M1,customer,{glon[0] + 0.01:.8f},{glat[0]:.8f},,\n"  # conflicting duplicate
        f"P1,pressure,{glon[0]:.8f},{glat[0]:.8f},A,\n"
    )
    out = tmp_path / "out"
    assert twin_cli("meters", "join", "--network", inp, "--crs", "EPSG:4548", "--meters", reg,
                    "--meters-crs", "GCJ02", "--out", out) == 0
    j = pd.read_csv(out / "join.csv", dtype={"meter_id": str})
    rej = pd.read_csv(out / "rejected_meters.csv")
    assert j.empty  # the only customer had a conflicting duplicate
    assert set(rej["reason"].str[:9]) == {"duplicate"}
    reg.write_text("meter_id,kind,lon,lat,node_id,link_id\n"
                   f"M1,customer,{glon[0]:.8f},{glat[0]:.8f},,\n")
    assert twin_cli("meters", "join", "--network", inp, "--crs", "EPSG:4548", "--meters", reg,
                    "--meters-crs", "GCJ02", "--out", out) == 0
    j = pd.read_csv(out / "join.csv").set_index("meter_id")
    assert j.loc["M1", "link_id"] == "P1" and j.loc["M1", "distance_m"] == pytest.approx(4.0, abs=0.5)
    capsys.readouterr()
    assert twin_cli("meters", "join", "--network", inp, "--crs", "EPSG:4548", "--meters", reg,
                    "--meters-crs", "NOT-A-CRS", "--out", out) == 2
    err = capsys.readouterr().err
    assert "NOT-A-CRS" in err and "Traceback" not in err
