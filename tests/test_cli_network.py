"""``twin network info`` and ``twin network convert``: output, round trips, exit codes on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import wntr_network
from twin.network import read_network

DATA = Path(__file__).parent / "data" / "network"


def test_help_on_every_command(twin_cli, capsys):
    for args in (["network", "--help"], ["network", "info", "--help"], ["network", "convert", "--help"]):
        assert twin_cli(*args) == 0
        out = capsys.readouterr().out
        assert "Usage" in out
    assert twin_cli("network", "convert", "--help") == 0
    assert "--to-crs" in capsys.readouterr().out


def test_info_prints_counts_length_bbox_and_findings(twin_cli, capsys, ltown_inp):
    assert twin_cli("network", "info", ltown_inp, "--crs", "EPSG:32650") == 0
    out = capsys.readouterr().out
    for text in ("junctions", "782", "905", "reservoirs", "pumps", "43.16 km", "bbox lon", "outside_crs_area",
                 "validation: 0 errors"):
        assert text in out


def test_info_json_is_machine_readable(twin_cli, capsys):
    assert twin_cli("network", "info", wntr_network("Net3"), "--crs", "EPSG:32650", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["junctions"] == 92 and data["pipes"] == 117 and data["pumps"] == 2 and data["tanks"] == 3
    assert data["pipe_length_km"] == pytest.approx(65.749, abs=0.01)
    assert len(data["bbox_lonlat"]) == 4
    assert {f["code"] for f in data["findings"]} >= {"schematic_coordinates"}


@pytest.mark.parametrize("name", ["Net1", "ky10"])
def test_convert_inp_to_gpkg_and_back(twin_cli, capsys, tmp_path, name):
    src = wntr_network(name)
    gpkg = tmp_path / f"{name}.gpkg"
    assert twin_cli("network", "convert", src, gpkg, "--crs", "EPSG:32650") == 0
    assert "wrote" in capsys.readouterr().out
    back = tmp_path / f"{name}.inp"
    assert twin_cli("network", "convert", gpkg, back) == 0
    a = read_network(src, crs="EPSG:32650")
    b = read_network(back, crs="EPSG:32650")
    assert len(a.pipes) == len(b.pipes)
    assert b.pipes["length_m"].sum() == pytest.approx(a.pipes["length_m"].sum(), rel=1e-3)


def test_convert_to_geojson_in_lonlat(twin_cli, capsys, ltown_inp, tmp_path):
    out = tmp_path / "ltown.geojson"
    assert twin_cli("network", "convert", ltown_inp, out, "--crs", "EPSG:32650", "--to-crs", "EPSG:4326") == 0
    assert (tmp_path / "ltown_nodes.geojson").exists()
    data = json.loads(out.read_text())
    lon, lat = data["features"][0]["geometry"]["coordinates"][0]
    assert 112 < lon < 113 and 0 <= lat < 1  # local metres read as UTM 50N sit near the equator
    net = read_network(out)
    assert len(net.pipes) == 905 and net.crs.to_epsg() == 4548
    assert net.pipes["length_m"].sum() == pytest.approx(43163.2, rel=1e-3)


def test_convert_gis_with_column_mapping(twin_cli, capsys, tmp_path):
    import geopandas as gpd
    import shapely

    x0, y0 = 503_000.0, 3_124_000.0
    gdf = gpd.GeoDataFrame(
        {"GUID": ["m1", "m2"], "DN_MM": [200, 150], "DMA_NAME": ["A", "A"]},
        geometry=[shapely.LineString([(x0, y0), (x0 + 50, y0)]), shapely.LineString([(x0 + 50, y0), (x0 + 50, y0 + 30)])],
        crs="EPSG:4548",
    )
    src = tmp_path / "mains.gpkg"
    gdf.to_file(src, layer="mains")
    out = tmp_path / "mains.inp"
    code = twin_cli("network", "convert", src, out, "--column", "link_id=GUID", "--column", "diameter=DN_MM",
                    "--column", "zone=DMA_NAME")
    assert code == 0, capsys.readouterr().err
    net = read_network(out, crs="EPSG:4548")
    assert sorted(net.pipes.index) == ["m1", "m2"]
    assert net.pipes.loc["m1", "diameter_m"] == pytest.approx(0.2)
    assert net.pipes.loc["m2", "zone"] == "A"


BAD_INPUTS = [
    (["truncated.inp", "--crs", "EPSG:32650"], "truncated"),
    (["unknown_section.inp", "--crs", "EPSG:32650"], "unknown section"),
    (["non_numeric.inp", "--crs", "EPSG:32650"], "is not a number"),
    (["empty.inp", "--crs", "EPSG:32650"], "empty"),
    (["does_not_exist.inp", "--crs", "EPSG:32650"], "does not exist"),
    (["gis_null_geometry.geojson"], "no geometry"),
    (["gis_degrees_as_metres.geojson"], "lon/lat degrees"),
    (["gis_null_geometry.geojson", "--crs", "EPSG:999999"], "not a known coordinate reference system"),
    (["gis_null_geometry.geojson", "--column", "diameter"], "KEY=NAME"),
]


@pytest.mark.parametrize("args, expected", BAD_INPUTS, ids=[a[0][0] + "-" + a[1].split()[0] for a in BAD_INPUTS])
@pytest.mark.parametrize("command", ["info", "convert"])
def test_bad_input_exits_two_with_one_readable_line(twin_cli, capsys, tmp_path, command, args, expected):
    path = DATA / args[0]
    extra = [str(tmp_path / "out.gpkg")] if command == "convert" else []
    code = twin_cli("network", command, path, *extra, *args[1:])
    captured = capsys.readouterr()
    assert code == 2
    err = " ".join(captured.err.split())
    assert expected in err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert err.startswith("error:")
    assert "Fix:" in err
    if command == "convert":
        assert not (tmp_path / "out.gpkg").exists()


def test_inp_without_crs_exits_two(twin_cli, capsys, tmp_path):
    assert twin_cli("network", "check", wntr_network("Net1")) == 2
    assert "--crs EPSG:32650" in " ".join(capsys.readouterr().err.split())
    assert twin_cli("network", "convert", wntr_network("Net1"), tmp_path / "n.gpkg") == 2
    assert "--crs EPSG:32650" in " ".join(capsys.readouterr().err.split())


def test_info_on_an_inp_runs_without_crs(twin_cli, capsys):
    """Issue 12, item 11: only the lon/lat box needs the CRS; the rest is printed and the box says so."""
    assert twin_cli("network", "info", wntr_network("ky10")) == 0
    captured = capsys.readouterr()
    out = " ".join(captured.out.split())
    assert "ky10.inp (no CRS)" in out and "1,043" in out and "430.03 km" in out and "needs --crs" in out
    assert "no --crs: the lon/lat bounding box" in " ".join(captured.err.split())
    assert twin_cli("network", "info", wntr_network("ky10"), "--json") == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["crs"] is None and payload["bbox_lonlat"] is None and payload["pipes"] == 1043


def test_check_exits_two_on_validation_errors(twin_cli, capsys, ltown_inp):
    assert twin_cli("network", "check", ltown_inp, "--crs", "EPSG:32650") == 0
    assert "0 errors" in capsys.readouterr().out
    assert twin_cli("network", "check", ltown_inp, "--crs", "EPSG:32650", "--strict") == 2
    assert "outside_crs_area" in " ".join(capsys.readouterr().err.split())
    code = twin_cli("network", "check", DATA / "gis_ends_apart.geojson", "--allow-disconnected")
    captured = capsys.readouterr()
    assert code == 2
    assert "no_source" in captured.out and "disconnected" in captured.out
    assert "validation errors, first: no_source" in " ".join(captured.err.split())


def test_tees_split_unless_asked_not_to(twin_cli, capsys, tmp_path):
    import geopandas as gpd
    import shapely

    x0, y0 = 503_000.0, 3_124_000.0
    gdf = gpd.GeoDataFrame(
        {"id": ["main", "branch"], "dn": [300, 100]},
        geometry=[shapely.LineString([(x0, y0), (x0 + 200, y0)]), shapely.LineString([(x0 + 80, y0), (x0 + 80, y0 + 50)])],
        crs="EPSG:4548",
    )
    src = tmp_path / "tee.gpkg"
    gdf.to_file(src, layer="pipes")
    assert twin_cli("network", "convert", src, tmp_path / "tee.inp") == 0
    assert "3 pipes" in capsys.readouterr().out
    assert twin_cli("network", "convert", src, tmp_path / "tee2.inp", "--no-split-tees") == 0
    assert "falls into 2 parts" in " ".join(capsys.readouterr().err.split())
    assert twin_cli("network", "check", src, "--no-split-tees") == 2  # no source, and the parts are findings
    assert "disconnected" in capsys.readouterr().out


def test_gis_options_on_an_inp_are_ignored_with_a_warning(caplog):
    from twin.cli.options import GisReading
    from twin.errors import InputError

    gis = GisReading(columns=("diameter=DN_MM",), snap_tolerance_m=0.5)
    with caplog.at_level("WARNING", logger="twin.cli.options"):
        assert gis.options_for("net.inp") == {}
    assert "columns, snap_tolerance_m" in caplog.text and "ignored" in caplog.text
    assert gis.options_for("pipes.gpkg") == {"columns": {"diameter": "DN_MM"}, "snap_tolerance_m": 0.5}
    with pytest.raises(InputError, match="KEY=NAME"):
        GisReading(columns=("diameter",)).options_for("net.inp")


def test_closed_pipe_isolating_a_junction_fails_check_and_localise_early(ltown_inp, tmp_path, twin_cli, capsys):
    """Issue 12, item 11: named by `network check`, and the localise job stops before ingesting anything."""
    lines = ltown_inp.read_text().splitlines()
    at = lines.index("[STATUS]") + 1
    closed = tmp_path / "closed.inp"
    closed.write_text("\n".join(lines[:at] + [" p253  Closed"] + lines[at:]) + "\n")
    assert twin_cli("network", "check", closed, "--crs", "EPSG:32650") == 2
    captured = capsys.readouterr()
    assert "closed_isolation" in captured.out and "p253" in " ".join(captured.out.split())
    meters, readings = tmp_path / "meters.csv", tmp_path / "readings.csv"
    meters.write_text("meter_id,kind,lon,lat,node_id,link_id\n")
    readings.write_text("meter_id,timestamp,value\n")
    code = twin_cli("localise", "--network", closed, "--crs", "EPSG:32650", "--meters", meters,
                    "--readings", readings, "--out", tmp_path / "out", "--no-map")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "closed_isolation: 1 demand junction(s) (n1)" in err and "p253" in err
    assert "Traceback" not in err


def test_convert_to_gis_says_what_it_drops(ltown_inp, tmp_path, twin_cli, capsys):
    """Issue 12, item 11: L-Town's 2 controls, 3 patterns and its simulation options are named, with counts."""
    assert twin_cli("network", "convert", ltown_inp, tmp_path / "l.gpkg", "--crs", "EPSG:32650") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "l.gpkg keeps the network's assets only; not written: 2 controls, 3 patterns," in err
    assert "options (keep the .inp for simulations)" in err
    assert twin_cli("network", "convert", tmp_path / "l.gpkg", tmp_path / "l2.gpkg") == 0
    assert "not written" not in capsys.readouterr().err  # a GIS-built network has nothing more to drop
