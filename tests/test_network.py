"""twin.network: .inp import, CRS handling, tables, graph, round trips through GIS layers."""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import shapely
import wntr

from tests.conftest import wntr_network
from twin.crs import transform_xy
from twin.errors import CRSError, MissingFileError, NetworkError
from twin.network import Network, graph_from_network, read_network, validate_network, write_network

DATA = Path(__file__).parent / "data" / "network"
FT = 0.3048
INCH = 0.0254


def _sim_pressure(wn) -> pd.Series:
    """Pressure head (m) at t=0 of a copy of ``wn``, EPANET in a temporary directory."""
    wn = copy.deepcopy(wn)
    wn.options.time.duration = 0
    with tempfile.TemporaryDirectory() as tmp:
        res = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "run"))
    return res.node["pressure"].iloc[0]


# --------------------------------------------------------------------------- .inp import


def test_net1_in_gpm_and_feet_is_read_in_si():
    net = read_network(wntr_network("Net1"), crs="EPSG:32650")
    assert isinstance(net, Network)
    assert net.crs.to_epsg() == 32650
    pipe = net.links.loc["10"]
    assert pipe["link_type"] == "pipe"
    assert pipe["length_m"] == pytest.approx(10530 * FT)
    assert pipe["diameter_m"] == pytest.approx(18 * INCH)
    assert pipe["roughness"] == pytest.approx(100)
    assert (pipe["start_node"], pipe["end_node"]) == ("10", "11")
    j = net.nodes.loc["11"]
    assert j["node_type"] == "junction"
    assert j["elevation_m"] == pytest.approx(710 * FT)
    assert j["base_demand_m3s"] == pytest.approx(150 * 6.30901964e-5, rel=1e-6)  # 150 gpm
    assert net.nodes.loc["9", "node_type"] == "reservoir"
    assert net.nodes.loc["2", "node_type"] == "tank"
    assert net.links.loc["9", "link_type"] == "pump"
    assert net.valves.empty and list(net.valves.columns[:2]) == ["link_id", "node_id"]


@pytest.mark.parametrize("name", ["Net1", "Net3", "ky4", "ky10"])
def test_bundled_networks_import_with_the_contract_columns(name):
    wn = wntr.network.WaterNetworkModel(str(wntr_network(name)))
    net = read_network(wntr_network(name), crs="EPSG:4548")
    assert net.nodes.index.name == "node_id" and net.links.index.name == "link_id"
    assert len(net.nodes) == wn.num_nodes and len(net.links) == wn.num_links
    assert (net.nodes["node_type"] == "junction").sum() == wn.num_junctions
    assert (net.links["link_type"] == "pipe").sum() == wn.num_pipes
    for col in ["node_type", "elevation_m", "base_demand_m3s", "zone"]:
        assert col in net.nodes.columns
    for col in ["link_type", "start_node", "end_node", "length_m", "diameter_m", "roughness", "material",
                "install_year", "zone", "status"]:
        assert col in net.links.columns
    assert net.nodes.crs.equals(net.crs) and net.links.crs.equals(net.crs)
    assert set(net.links.geometry.geom_type) == {"LineString"}
    # every line starts on its start node and ends on its end node
    first = shapely.get_coordinates(shapely.get_point(net.links.geometry.to_numpy(), 0))
    last = shapely.get_coordinates(shapely.get_point(net.links.geometry.to_numpy(), -1))
    xy = net.nodes.geometry.get_coordinates()
    assert np.allclose(first, xy.loc[net.links["start_node"]].to_numpy())
    assert np.allclose(last, xy.loc[net.links["end_node"]].to_numpy())
    assert net.links["length_m"].sum() == pytest.approx(sum(p.length for _, p in wn.pipes()))


def test_link_vertices_become_line_geometry():
    wn = wntr.network.WaterNetworkModel(str(wntr_network("ky4")))
    net = read_network(wntr_network("ky4"), crs="EPSG:32650")
    with_vertices = [(name, link.vertices) for name, link in wn.links() if len(link.vertices) >= 2]
    assert len(with_vertices) > 100
    for name, vertices in with_vertices[:50]:
        coords = np.asarray(net.links.loc[name, "geometry"].coords)
        assert len(coords) == len(vertices) + 2
        assert np.allclose(coords[1:-1], np.asarray(vertices))


def test_l_town_in_local_metres_warns_but_imports(ltown_inp):
    net = read_network(ltown_inp, crs="EPSG:32650")
    s = net.summary()
    assert (s["junctions"], s["pipes"], s["reservoirs"], s["tanks"], s["pumps"], s["valves"]) == (782, 905, 2, 1, 1, 3)
    assert s["pipe_length_km"] == pytest.approx(43.16, abs=0.01)
    findings = validate_network(net)
    assert (findings["level"] == "error").sum() == 0
    assert "outside_crs_area" in set(findings["code"])


def test_geographic_coordinates_are_projected_to_the_default_crs(tmp_path):
    # Net3's layout scaled into lon/lat degrees around Yingtan.
    src = read_network(wntr_network("Net3"), crs="EPSG:4548")
    lon, lat = transform_xy(src.nodes.geometry.x * 20 + 500_000, src.nodes.geometry.y * 20 + 3_120_000,
                            from_crs="EPSG:4548", to_crs="EPSG:4326")
    wn = src.wn
    for nid, x, y in zip(src.nodes.index, lon, lat):
        wn.get_node(nid).coordinates = (float(x), float(y))
    inp = tmp_path / "net3_lonlat.inp"
    wntr.network.io.write_inpfile(wn, str(inp))
    net = read_network(inp, crs="EPSG:4326")
    assert net.crs.to_epsg() == 4548  # settings.DEFAULT_CRS
    x_expected = src.nodes.geometry.x * 20 + 500_000
    assert np.allclose(net.nodes.geometry.x.to_numpy(), x_expected.to_numpy(), atol=0.01)
    assert validate_network(net).query("code == 'outside_crs_area'").empty
    utm = read_network(inp, crs="EPSG:4326", to_crs="EPSG:32650")
    assert utm.crs.to_epsg() == 32650


def test_lon_lat_declared_as_metres_is_refused(tmp_path):
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net1")))
    for _, node in wn.nodes():
        x, y = node.coordinates
        node.coordinates = (117.0 + x / 10_000, 28.2 + y / 10_000)
    inp = tmp_path / "lonlat.inp"
    wntr.network.io.write_inpfile(wn, str(inp))
    with pytest.raises(CRSError, match=r"lon/lat degrees.*EPSG:4548.*Fix: pass --crs EPSG:4326"):
        read_network(inp, crs="EPSG:4548")
    assert read_network(inp, crs="EPSG:4326").crs.to_epsg() == 4548


def test_zones_come_from_epanet_tags(tmp_path):
    text = wntr_network("Net1").read_text()
    tags = "[TAGS]\n NODE 10 DMA-North\n NODE 11 DMA-North\n NODE 12 DMA-South\n LINK 10 DMA-North\n"
    inp = tmp_path / "tagged.inp"
    inp.write_text(text.replace("[TAGS]\n", tags, 1))
    net = read_network(inp, crs="EPSG:32650")
    assert net.nodes.loc["10", "zone"] == "DMA-North" and net.nodes.loc["12", "zone"] == "DMA-South"
    assert pd.isna(net.nodes.loc["13", "zone"])
    assert net.links.loc["10", "zone"] == "DMA-North"
    assert net.summary()["zones"] == ["DMA-North", "DMA-South"]
    # zones survive .inp -> gpkg -> .inp
    write_network(net, tmp_path / "tagged.gpkg")
    back = read_network(tmp_path / "tagged.gpkg")
    write_network(back, tmp_path / "again.inp")
    again = read_network(tmp_path / "again.inp", crs="EPSG:32650")
    assert again.nodes.loc["12", "zone"] == "DMA-South" and again.links.loc["10", "zone"] == "DMA-North"


def test_the_callers_model_is_not_mutated(tmp_path):
    net = read_network(wntr_network("Net1"), crs="EPSG:4548", to_crs="EPSG:32650")
    before = net.wn.get_node("10").coordinates
    write_network(net, tmp_path / "out.inp", to_crs="EPSG:4548")
    assert net.wn.get_node("10").coordinates == before


# --------------------------------------------------------------------------- malformed .inp


@pytest.mark.parametrize(
    "fixture, pattern",
    [
        ("truncated.inp", r"line 34 in \[PIPES\].*truncated"),
        ("unknown_section.inp", r"line 26: unknown section '\[PIPEZ\]'"),
        ("non_numeric.inp", r"line 28 in \[PIPES\]: '10,53O' is not a number"),
        ("empty.inp", r"the file is empty"),
    ],
)
def test_malformed_inp_names_file_line_and_fix(fixture, pattern):
    with pytest.raises(NetworkError, match=pattern) as info:
        read_network(DATA / fixture, crs="EPSG:32650")
    msg = str(info.value)
    assert fixture in msg and "Fix:" in msg and "\n" not in msg


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        read_network(tmp_path / "nope.inp", crs="EPSG:32650")
    odd = tmp_path / "net.txt"
    odd.write_text("x")
    with pytest.raises(NetworkError, match="unknown network file type"):
        read_network(odd)


def test_inp_without_crs_says_how_to_name_it():
    with pytest.raises(CRSError, match="--crs EPSG:32650"):
        read_network(wntr_network("Net1"))


def test_epanet_errors_are_translated_with_the_line(tmp_path):
    text = wntr_network("Net1").read_text()
    inp = tmp_path / "badref.inp"
    inp.write_text(text.replace(" 10              \t10              \t11   ", " 10              \t10              \tXX   ", 1))
    with pytest.raises(NetworkError, match=r"badref.inp: line \d+ in \[PIPES\]"):
        read_network(inp, crs="EPSG:32650")
    bad_valve = tmp_path / "badvalve.inp"
    bad_valve.write_text(text.replace("[VALVES]\n", "[VALVES]\n V1 10 11 12 XYZ 0 0\n", 1))
    with pytest.raises(NetworkError, match=r"line \d+ in \[VALVES\]"):
        read_network(bad_valve, crs="EPSG:32650")


def test_truncated_file_cut_before_coordinates(tmp_path):
    lines = wntr_network("Net1").read_text().splitlines()
    cut = tmp_path / "cut.inp"
    cut.write_text("\n".join(lines[: lines.index("[COORDINATES]")]) + "\n")
    with pytest.raises(NetworkError, match=r"cut.inp: the file stops at line \d+.*truncated; missing \[COORDINATES\]"):
        read_network(cut, crs="EPSG:32650")


# --------------------------------------------------------------------------- truncated files and coordinates (issue 12, item 11)


@pytest.mark.parametrize("keep", [300, 500.5])  # whole lines, or cut inside a line
def test_truncated_inp_names_the_file_and_what_is_missing(ltown_inp, tmp_path, keep):
    lines = _ltown_lines(ltown_inp)
    start = lines.index("[PIPES]")
    cut = tmp_path / "cut.inp"
    text = "\n".join(lines[: start + int(keep)])
    cut.write_text(text + ("\n" + lines[start + int(keep)][:40] if keep % 1 else "\n"))
    with pytest.raises(NetworkError) as info:
        read_network(cut, crs="EPSG:32650")
    msg = str(info.value)
    assert "factor" not in msg and msg.startswith(str(cut)) and "Fix:" in msg
    if keep % 1:  # the last line lacks fields: that line is named
        assert f"line {start + int(keep) + 1} in [PIPES]" in msg and "(the file looks truncated)" in msg
    else:
        assert "inside [PIPES], without an [END] line: it looks truncated" in msg
        assert "missing [OPTIONS] (flow units), [COORDINATES] (node positions)" in msg


def test_inp_without_options_says_the_units_are_unknown(tmp_path):
    inp = tmp_path / "noopt.inp"
    inp.write_text("[JUNCTIONS]\n J1 10\n[RESERVOIRS]\n R1 50\n[PIPES]\n P1 J1 R1 100 100 100\n"
                   "[COORDINATES]\n J1 0 0\n R1 100 0\n[END]\n")
    with pytest.raises(NetworkError, match=r"noopt.inp: the file has no \[OPTIONS\] section.*Fix: add an \[OPTIONS\]"):
        read_network(inp, crs="EPSG:32650")


@pytest.mark.parametrize("value", ["1e30", "inf", "-inf", "nan"])
def test_unusable_node_coordinates_are_an_error_naming_the_node(ltown_inp, tmp_path, value, twin_cli, capsys):
    lines = _ltown_lines(ltown_inp)
    at = next(i for i in range(lines.index("[COORDINATES]"), len(lines)) if lines[i].split()[:1] == ["n5"])
    lines[at] = f" n5 {value} 1233.34"
    bad = tmp_path / "bad_xy.inp"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(NetworkError, match=rf"bad_xy.inp: line {at + 1} in \[COORDINATES\]: node n5: .*Fix:"):
        read_network(bad, crs="EPSG:32650")
    assert twin_cli("network", "check", bad, "--crs", "EPSG:32650") == 2
    assert "node n5" in " ".join(capsys.readouterr().err.split())


# --------------------------------------------------------------------------- round trips


def _roundtrip(inp: Path, tmp_path: Path, ext: str = ".gpkg") -> tuple[Network, Network, Network]:
    a = read_network(inp, crs="EPSG:32650")
    write_network(a, tmp_path / f"net{ext}")
    b = read_network(tmp_path / f"net{ext}")
    write_network(b, tmp_path / "back.inp")
    c = read_network(tmp_path / "back.inp", crs="EPSG:32650")
    return a, b, c


def _assert_same_network(a: Network, c: Network) -> None:
    pa, pc = a.pipes, c.pipes
    assert len(pa) == len(pc)
    assert pc["length_m"].sum() == pytest.approx(pa["length_m"].sum(), rel=1e-3)
    assert set(pa.index) == set(pc.index)
    pc = pc.loc[pa.index]
    assert (pa["start_node"] == pc["start_node"]).all() and (pa["end_node"] == pc["end_node"]).all()
    assert np.allclose(pa["diameter_m"], pc["diameter_m"], rtol=1e-6)
    assert np.allclose(pa["roughness"], pc["roughness"], rtol=1e-6)
    assert (a.nodes["node_type"].sort_index() == c.nodes["node_type"].sort_index()).all()
    assert np.allclose(a.nodes.loc[c.nodes.index, "elevation_m"], c.nodes["elevation_m"], atol=1e-6)
    # vertices kept
    assert np.allclose(shapely.get_num_points(pa.geometry.to_numpy()), shapely.get_num_points(pc.geometry.to_numpy()))
    assert pa.geometry.length.sum() == pytest.approx(pc.geometry.length.sum(), rel=1e-6)


@pytest.mark.parametrize("name", ["Net1", "Net3", "ky4", "ky10", "Net6"])
def test_bundled_networks_round_trip_through_geopackage(name, tmp_path):
    a, b, c = _roundtrip(wntr_network(name), tmp_path)
    _assert_same_network(a, c)
    assert len(b.links) == len(a.links)
    assert (b.links["link_type"].value_counts().sort_index() == a.links["link_type"].value_counts().sort_index()).all()


def test_l_town_round_trips_and_still_simulates(ltown_inp, tmp_path):
    a, b, c = _roundtrip(ltown_inp, tmp_path)
    _assert_same_network(a, c)
    # the model built from the layers runs, and with the same steady state (no patterns/controls involved
    # at t=0 beyond the reservoirs' base heads) pressures agree closely
    pa = _sim_pressure(a.wn)
    pb = _sim_pressure(b.wn)
    junctions = a.nodes.index[a.nodes["node_type"] == "junction"]
    assert float((pa[junctions] - pb[junctions]).abs().median()) < 1.0
    assert pb[junctions].min() > 0


@pytest.mark.parametrize("ext", [".geojson", ".shp"])
def test_geojson_and_shapefile_round_trip(ext, tmp_path):
    a, b, c = _roundtrip(wntr_network("Net3"), tmp_path, ext)
    _assert_same_network(a, c)
    assert (tmp_path / f"net_nodes{ext}").exists()


def test_write_inp_in_another_crs(tmp_path):
    net = read_network(wntr_network("Net3"), crs="EPSG:4548")
    write_network(net, tmp_path / "lonlat.inp", to_crs="EPSG:4326")
    back = read_network(tmp_path / "lonlat.inp", crs="EPSG:4326", to_crs="EPSG:4548")
    d = back.nodes.geometry.distance(net.nodes.geometry.loc[back.nodes.index])
    assert float(d.max()) < 0.01


def test_write_refuses_unknown_suffix(tmp_path):
    net = read_network(wntr_network("Net1"), crs="EPSG:32650")
    with pytest.raises(NetworkError, match="cannot write"):
        write_network(net, tmp_path / "net.csv")


# --------------------------------------------------------------------------- graph and validation


def test_graph_has_pipe_lengths_for_distances():
    net = read_network(wntr_network("Net1"), crs="EPSG:32650")
    g = graph_from_network(net)
    assert isinstance(g, nx.MultiGraph)
    assert g.number_of_nodes() == len(net.nodes) and g.number_of_edges() == len(net.links)
    d = nx.shortest_path_length(g, "10", "12", weight="length_m")
    assert d == pytest.approx((10530 + 5280) * FT)
    assert g.edges["10", "11", "10"]["link_id"] == "10"
    assert net.to_graph().number_of_edges() == g.number_of_edges()


def test_validation_names_each_broken_element():
    net = read_network(wntr_network("Net3"), crs="EPSG:32650")
    links = net.links.copy()
    nodes = net.nodes.copy()
    pipe_ids = links.index[links["link_type"] == "pipe"]
    links.loc[pipe_ids[0], "length_m"] = -5.0
    links.loc[pipe_ids[1], "diameter_m"] = 0.0
    links = pd.concat([links, links.loc[[pipe_ids[2]]]])  # duplicate ID
    nodes.loc["J-orphan"] = ["junction", np.nan, 0.0, pd.NA, shapely.Point(0, 0)]
    broken = dataclasses.replace(net, links=links, nodes=nodes)
    f = validate_network(broken)
    by_code = f.groupby("code")["element"].apply(set).to_dict()
    assert pipe_ids[0] in by_code["bad_length"]
    assert pipe_ids[1] in by_code["bad_diameter"]
    assert pipe_ids[2] in by_code["duplicate_id"]
    assert "J-orphan" in by_code["orphan_node"]
    assert "J-orphan" in by_code["no_elevation"]
    assert list(f.columns) == ["level", "code", "element", "message"]
    assert (f["level"].iloc[: (f["level"] == "error").sum()] == "error").all()  # errors first


def test_validation_finds_unsupplied_parts_and_length_mismatch(ltown_inp):
    net = read_network(ltown_inp, crs="EPSG:32650")
    assert validate_network(net).query("level == 'error'").empty
    links = net.links.copy()
    # cut pipe p1 off by pointing its neighbours elsewhere is complex; instead drop all links of n1's side
    g = graph_from_network(net)
    edges = list(g.edges("n1", keys=True))
    links = links.drop([k for _, _, k in edges])
    # and make one pipe far longer than drawn
    links.loc["p2", "length_m"] = links.loc["p2", "length_m"] * 10
    f = validate_network(dataclasses.replace(net, links=links))
    assert "n1" in set(f.loc[f["code"] == "orphan_node", "element"])
    assert "p2" in set(f.loc[f["code"] == "length_mismatch", "element"])


def test_validation_flags_schematic_coordinates():
    f = validate_network(read_network(wntr_network("Net1"), crs="EPSG:32650"))
    assert "schematic_coordinates" in set(f["code"])


def test_import_logs_one_info_line(caplog):
    with caplog.at_level(logging.INFO, logger="twin.network"):
        read_network(wntr_network("Net1"), crs="EPSG:32650")
    lines = [r for r in caplog.records if r.name == "twin.network" and r.levelno == logging.INFO]
    assert len(lines) == 1 and "9 junctions" in lines[0].getMessage()


def test_metres_declared_as_degrees_is_refused(ltown_inp):
    with pytest.raises(CRSError, match=r"not lon/lat degrees.*EPSG:4326 is geographic.*--crs EPSG:4548"):
        read_network(ltown_inp, crs="EPSG:4326")


def test_inp_in_gcj02_web_map_coordinates(tmp_path):
    # a network digitised on Amap: node lon/lat in GCJ-02
    src = read_network(wntr_network("Net3"), crs="EPSG:4548")
    x = src.nodes.geometry.x.to_numpy() * 20 + 500_000
    y = src.nodes.geometry.y.to_numpy() * 20 + 3_120_000
    glon, glat = transform_xy(x, y, from_crs="EPSG:4548", to_crs="GCJ02")
    wn = copy.deepcopy(src.wn)
    for nid, a, b in zip(src.nodes.index, glon, glat):
        wn.get_node(nid).coordinates = (float(a), float(b))
    inp = tmp_path / "amap.inp"
    wntr.network.io.write_inpfile(wn, str(inp))
    net = read_network(inp, crs="GCJ-02")
    assert net.crs.to_epsg() == 4548
    # WNTR writes coordinates with 9 decimals (~0.1 mm in degrees)
    assert np.allclose(net.nodes.geometry.x.to_numpy(), x, atol=0.01)
    assert np.allclose(net.nodes.geometry.y.to_numpy(), y, atol=0.01)


def test_chinese_windows_encodings_and_bom(tmp_path):
    text = wntr_network("Net1").read_text().replace("[JUNCTIONS]\n", "[JUNCTIONS]\n;鹰潭市 供水管网 节点\n", 1)
    gbk = tmp_path / "gbk.inp"
    gbk.write_bytes(text.encode("gb18030"))
    bom = tmp_path / "bom.inp"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    for path in (gbk, bom):
        net = read_network(path, crs="EPSG:32650")
        assert len(net.pipes) == 12 and net.source == str(path)
    binary = tmp_path / "binary.inp"
    binary.write_bytes(b"\x00\x01\x02EPANET" * 10)
    with pytest.raises(NetworkError, match="binary"):
        read_network(binary, crs="EPSG:32650")


# --------------------------------------------------------------------------- duplicate IDs (issue 12, item 5)


def _ltown_lines(ltown_inp: Path) -> list[str]:
    return ltown_inp.read_text().splitlines()


def _insert_after(lines: list[str], header: str, new: str) -> tuple[list[str], int]:
    """``lines`` with ``new`` inserted as the first data line after ``header``; and its 1-based line number."""
    at = lines.index(header) + 2  # after the header and its ';ID ...' comment line
    return lines[:at] + [new] + lines[at:], at + 1


@pytest.mark.parametrize(
    "header, new, first_section, element",
    [
        ("[PIPES]", " p1  n2  n3  999.0  100.0  120.0  0  Open  ;", "[PIPES]", "p1"),
        ("[JUNCTIONS]", " n5  99.0  0  ;", "[JUNCTIONS]", "n5"),
        ("[TANKS]", " n7  100  2  0  5  10  0  ;", "[JUNCTIONS]", "n7"),  # a tank with a junction's ID
        ("[VALVES]", " p10  n2  n3  200  TCV  0  0  ;", "[PIPES]", "p10"),  # a valve with a pipe's ID
    ],
)
def test_duplicate_ids_in_an_inp_are_refused_with_their_lines(ltown_inp, tmp_path, header, new, first_section,
                                                               element):
    lines, at = _insert_after(_ltown_lines(ltown_inp), header, new)
    first = next(i for i, ln in enumerate(lines, start=1)
                 if ln.split(";")[0].split()[:1] == [element] and i != at)
    dup = tmp_path / "dup.inp"
    dup.write_text("\n".join(lines) + "\n")
    with pytest.raises(NetworkError) as info:
        read_network(dup, crs="EPSG:32650")
    msg = str(info.value)
    assert "dup.inp" in msg and "duplicate ID" in msg and "Fix:" in msg
    lo, hi = sorted((first, at))
    sections = (first_section, header) if first < at else (header, first_section)
    assert f"'{element}' in {sections[0]} line {lo} and {sections[1]} line {hi}" in msg
    assert info.value.data["duplicates"][0]["id"] == element


def test_duplicate_ids_exit_two_at_the_cli(ltown_inp, tmp_path, twin_cli, capsys):
    lines, _ = _insert_after(_ltown_lines(ltown_inp), "[PIPES]", " p1  n2  n3  999.0  100.0  120.0  0  Open  ;")
    dup = tmp_path / "dup.inp"
    dup.write_text("\n".join(lines) + "\n")
    assert twin_cli("network", "check", dup, "--crs", "EPSG:32650") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and "'p1' in [PIPES]" in err and "Traceback" not in err


def test_the_duplicate_scan_is_cheap_on_a_city_sized_file(tmp_path):
    """22,000 pipes (the city's size): the extra scan adds well under a second to the import."""
    import time

    from twin.network import _prescan_inp

    n = 22_000
    lines = ["[JUNCTIONS]"] + [f" J{i} 10" for i in range(n + 1)] + ["[PIPES]"]
    lines += [f" P{i} J{i} J{i + 1} 50 100 120 0 Open" for i in range(n)] + ["[COORDINATES]"]
    lines += [f" J{i} {i}.0 0.0" for i in range(n + 1)] + ["[OPTIONS]", " Units LPS", "[END]"]
    t0 = time.process_time()  # CPU time: other jobs on a busy machine do not count (wall time did: 1.07 s at load 10)
    assert len(_prescan_inp(tmp_path / "city.inp", lines)) == n + 1
    assert time.process_time() - t0 < 1.0


# --------------------------------------------------------------------------- closed links (issue 12, item 11)


def test_closed_pipe_cutting_off_a_demand_junction_is_named(ltown_inp, tmp_path):
    from twin.validate import require_supplied_demands

    lines, _ = _insert_after(_ltown_lines(ltown_inp), "[STATUS]", " p253  Closed")  # n1's only pipe
    lines, _ = _insert_after(lines, "[STATUS]", " p2  Closed")  # inside a loop: cuts nothing off
    closed = tmp_path / "closed.inp"
    closed.write_text("\n".join(lines) + "\n")
    net = read_network(closed, crs="EPSG:32650")
    f = validate_network(net)
    rows = f[f["code"] == "closed_isolation"]
    assert rows["element"].tolist() == ["n1"] and (rows["level"] == "error").all()
    assert "(n1)" in rows["message"].iloc[0] and "closed link(s) p253" in rows["message"].iloc[0]
    with pytest.raises(NetworkError, match=r"closed.inp: n1: closed_isolation: 1 demand junction\(s\) \(n1\).*p253"
                                           r".*Fix: open the link"):
        require_supplied_demands(net)
    require_supplied_demands(read_network(ltown_inp, crs="EPSG:32650"))  # the real L-Town passes
