"""twin.gis through read_network: messy utility GIS layers, snapping, columns, units, valves, errors."""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import wntr

from twin.errors import CRSError, NetworkError
from twin.network import read_network, validate_network, write_network

DATA = Path(__file__).parent / "data" / "network"
# L-Town's local metres placed in Yingtan (CGCS2000 GK CM 117E).
OFFSET = np.array([503_000.0, 3_124_000.0])

COLUMNS = {
    "link_id": "PIPE_ID", "diameter": "DN", "material": "MAT", "install_year": "YEAR", "zone": "DMA",
    "length": "LEN", "node_id": "NODE_ID", "elevation": "ELEV", "node_type": "KIND",
}


@pytest.fixture(scope="module")
def ltown_net():
    from tests.conftest import SHARED_NETWORKS

    path = SHARED_NETWORKS / "L-TOWN.inp"
    if not path.exists():
        pytest.skip("L-Town not available")
    return read_network(path, crs="EPSG:32650")


def _messy_layers(net, *, seed: int = 3, jitter_m: float = 0.2):
    """L-Town as a utility keeps it: odd column names, mm diameters, jittered ends, reversed and
    multi-part lines, text dates, missing lengths, no topology columns. The pump and the PRVs are
    rows of the same layer with a ``link_type`` (without them the pipes fall into parts)."""
    rng = np.random.default_rng(seed)
    links = net.links
    n = len(links)
    coords, idx = shapely.get_coordinates(links.geometry.to_numpy(), return_index=True)
    coords = coords + OFFSET
    counts = np.bincount(idx, minlength=n)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    last = first + counts - 1
    ends = np.concatenate([first, last])
    angle = rng.uniform(0, 2 * np.pi, ends.size)
    radius = rng.uniform(0, jitter_m, ends.size)
    coords[ends] += np.column_stack([np.cos(angle), np.sin(angle)]) * radius[:, None]
    lines = shapely.linestrings(coords, indices=idx)
    reverse = rng.random(n) < 0.3
    lines[reverse] = shapely.reverse(lines[reverse])
    # a few straight pipes stored as two-part MultiLineStrings that touch in the middle
    for i in np.flatnonzero((rng.random(n) < 0.05) & (counts == 2)):
        a, b = np.asarray(lines[i].coords)
        mid = tuple((a + b) / 2)
        lines[i] = shapely.MultiLineString([[tuple(a), mid], [mid, tuple(b)]])
    years = rng.integers(1975, 2024, n).astype(object)
    as_text = rng.random(n) < 0.2
    years[as_text] = [f"{y}-06-15" for y in years[as_text]]
    length = links["length_m"].to_numpy().astype(object)
    length[rng.random(n) < 0.1] = None
    zone = np.where(links.geometry.centroid.x.to_numpy() < 1000, "DMA-West", "DMA-East")
    curve = [json.dumps(net.wn.get_curve(net.wn.get_link(lid).pump_curve_name).points)
             if t == "pump" else None for lid, t in zip(links.index, links["link_type"])]
    pipe_gdf = gpd.GeoDataFrame(
        {
            "PIPE_ID": links.index.to_numpy(),
            "link_type": links["link_type"].to_numpy(),
            "DN": np.round(links["diameter_m"].to_numpy() * 1000),
            "MAT": rng.choice(["DI", "PE", "PVC", "CI"], n),
            "YEAR": years.astype(str),
            "DMA": zone,
            "LEN": length,
            "valve_type": links["valve_type"].to_numpy(dtype=object, na_value=None),
            "setting": links["setting"].to_numpy(),
            "pump_curve": curve,
        },
        geometry=lines,
        crs="EPSG:4548",
    )
    nodes = net.nodes
    node_gdf = gpd.GeoDataFrame(
        {
            "NODE_ID": nodes.index.to_numpy(),
            "KIND": nodes["node_type"].str.upper().to_numpy(),
            "ELEV": nodes["elevation_m"].to_numpy(),
            "base_demand_m3s": nodes["base_demand_m3s"].to_numpy(),
        },
        geometry=gpd.points_from_xy(nodes.geometry.x + OFFSET[0], nodes.geometry.y + OFFSET[1]),
        crs="EPSG:4548",
    )
    for key in ("init_level", "min_level", "max_level", "diameter"):
        node_gdf[f"{'tank_' if key == 'diameter' else ''}{key}_m"] = [
            getattr(net.wn.get_node(nid), key) if t == "tank" else np.nan
            for nid, t in zip(nodes.index, nodes["node_type"])]
    return pipe_gdf, node_gdf


def _pressure(wn):
    wn = copy.deepcopy(wn)
    wn.options.time.duration = 0
    with tempfile.TemporaryDirectory() as tmp:
        res = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "run"))
    return res.node["pressure"].iloc[0]


def test_messy_utility_geopackage_imports_with_the_original_topology(ltown_net, tmp_path):
    pipe_gdf, node_gdf = _messy_layers(ltown_net)
    gpkg = tmp_path / "utility.gpkg"
    pipe_gdf.to_file(gpkg, layer="Water_Mains_2024", engine="pyogrio")
    node_gdf.to_file(gpkg, layer="nodes", engine="pyogrio")
    net = read_network(gpkg, columns=COLUMNS)
    assert net.crs.to_epsg() == 4548
    assert len(net.pipes) == len(ltown_net.pipes)
    # the node layer's IDs are reused (ends matched to nodes), so topology is comparable pipe by pipe
    orig = ltown_net.pipes
    got = net.pipes.loc[orig.index]
    same = {frozenset(p) for p in zip(orig["start_node"], orig["end_node"])}
    back = {frozenset(p) for p in zip(got["start_node"], got["end_node"])}
    assert back == same
    assert np.allclose(got["diameter_m"], orig["diameter_m"], atol=5e-4)  # DN in mm, rounded
    # missing lengths come from the geometry, present ones are kept
    assert got["length_m"].sum() == pytest.approx(orig["length_m"].sum(), rel=0.01)
    assert got["install_year"].between(1975, 2023).all()
    assert set(got["material"]) <= {"DI", "PE", "PVC", "CI"}
    assert set(got["zone"]) == {"DMA-West", "DMA-East"}
    assert (net.nodes["node_type"] == "reservoir").sum() == 2 and (net.nodes["node_type"] == "tank").sum() == 1
    assert np.allclose(net.nodes.loc[ltown_net.nodes.index, "elevation_m"], ltown_net.nodes["elevation_m"])
    assert net.links.loc["PUMP_1", "link_type"] == "pump" and net.links.loc["PRV-1", "valve_type"] == "PRV"
    # geometry snapped: every line starts on its start node
    first = shapely.get_coordinates(shapely.get_point(net.links.geometry.to_numpy(), 0))
    assert np.allclose(first, net.nodes.geometry.get_coordinates().loc[net.links["start_node"]].to_numpy())
    findings = validate_network(net)
    assert "no_source" not in set(findings["code"])


def test_imported_gis_model_runs_hydraulics(ltown_net, tmp_path):
    pipe_gdf, node_gdf = _messy_layers(ltown_net)
    gpkg = tmp_path / "utility.gpkg"
    pipe_gdf.to_file(gpkg, layer="pipes", engine="pyogrio")
    node_gdf.to_file(gpkg, layer="nodes", engine="pyogrio")
    net = read_network(gpkg, columns=COLUMNS)
    # same steady state as EPANET on the original file at t=0, up to the rounded DN and roughness
    # (L-Town's C of 140/120 versus the layers' default 100 where the GIS has none)
    p = _pressure(net.wn)
    junctions = net.nodes.index[net.nodes["node_type"] == "junction"]
    assert np.isfinite(p[junctions]).all()
    assert float(p[junctions].min()) > 0
    # written as .inp it loads in WNTR with the same pipes
    write_network(net, tmp_path / "utility.inp")
    wn = wntr.network.WaterNetworkModel(str(tmp_path / "utility.inp"))
    assert wn.num_pipes == len(net.pipes)


def test_pipes_without_node_layer_get_snapped_nodes_and_warnings(ltown_net, tmp_path):
    pipe_gdf, _ = _messy_layers(ltown_net)
    path = tmp_path / "mains.geojson"
    pipe_gdf.to_file(path, driver="GeoJSON", engine="pyogrio")
    net = read_network(path, columns=COLUMNS)
    assert len(net.nodes) == len(ltown_net.nodes)
    assert net.nodes.index[0].startswith("J")
    codes = set(validate_network(net)["code"])
    assert {"no_source", "no_elevation"} <= codes


def test_explicit_start_end_columns_without_node_layer(tmp_path):
    x0, y0 = 503_000.0, 3_124_000.0
    gdf = gpd.GeoDataFrame(
        {"id": ["A", "B", "C"], "from_node": ["n1", "n2", "n2"], "to_node": ["n2", "n3", "n4"],
         "diameter": [0.2, 0.15, 0.1]},
        geometry=[shapely.LineString([(x0, y0), (x0 + 50, y0)]),
                  shapely.LineString([(x0 + 50, y0), (x0 + 50, y0 + 40), (x0 + 90, y0 + 40)]),
                  shapely.LineString([(x0 + 50.3, y0), (x0 + 50, y0 - 60)])],
        crs="EPSG:4548",
    )
    path = tmp_path / "topo.gpkg"
    gdf.to_file(path, layer="pipes", engine="pyogrio")
    net = read_network(path)
    assert list(net.links["start_node"]) == ["n1", "n2", "n2"]
    assert net.links.loc["B", "length_m"] == pytest.approx(80.0)  # geometry length, through the vertex
    assert net.links.loc["A", "diameter_m"] == pytest.approx(0.2)  # metres detected
    assert len(net.links.loc["B", "geometry"].coords) == 3
    # an end 3 m from where its node is elsewhere is refused
    gdf.loc[2, "geometry"] = shapely.LineString([(x0 + 53, y0), (x0 + 50, y0 - 60)])
    gdf.to_file(tmp_path / "bad.gpkg", layer="pipes", engine="pyogrio")
    with pytest.raises(NetworkError, match=r"node n2 are up to 3.00 m apart.*--snap-tolerance"):
        read_network(tmp_path / "bad.gpkg")
    assert len(read_network(tmp_path / "bad.gpkg", snap_tolerance_m=5).nodes) == 4


def test_isolation_valves_are_put_on_their_pipes(ltown_net, tmp_path):
    net0 = ltown_net
    pipes = net0.pipes.iloc[:20]
    pts = shapely.line_interpolate_point(pipes.geometry.to_numpy(), 0.1, normalized=True)
    pts = shapely.transform(pts, lambda xy: xy + 0.8)  # drawn a little off the pipe
    valves = gpd.GeoDataFrame({"valve_id": [f"V{i}" for i in range(20)]}, geometry=pts, crs="EPSG:32650")
    write_network(net0, tmp_path / "lt.gpkg")
    valves.to_file(tmp_path / "lt.gpkg", layer="valves", engine="pyogrio")
    net = read_network(tmp_path / "lt.gpkg")
    assert len(net.valves) == 20 and net.valves.index.name == "valve_id"
    assert (net.valves["link_id"].to_numpy() == pipes.index.to_numpy()).all()
    assert (net.valves["node_id"].to_numpy() == pipes["start_node"].to_numpy()).all()
    # and they survive a GeoPackage round trip
    write_network(net, tmp_path / "again.gpkg")
    again = read_network(tmp_path / "again.gpkg")
    assert again.valves["link_id"].tolist() == net.valves["link_id"].tolist()


def test_diameter_units_from_column_name_or_values(tmp_path):
    x0, y0 = 503_000.0, 3_124_000.0
    geoms = [shapely.LineString([(x0, y0), (x0 + 50, y0)]), shapely.LineString([(x0 + 50, y0), (x0 + 90, y0)])]
    for col, values, expected in [("diameter_mm", [0.2, 150], [0.0002, 0.15]), ("diam", [200, 150], [0.2, 0.15]),
                                  ("diam", [0.2, 0.15], [0.2, 0.15])]:
        path = tmp_path / f"{col}{values[0]}.gpkg"
        gpd.GeoDataFrame({col: values}, geometry=geoms, crs="EPSG:4548").to_file(path, layer="pipes")
        net = read_network(path)
        assert np.allclose(net.links["diameter_m"], expected)
    net = read_network(path, columns={"diameter": "diam"}, diameter_unit="mm")
    assert np.allclose(net.links["diameter_m"], [0.0002, 0.00015])


def test_web_map_coordinates_in_gcj02(tmp_path):
    from twin.crs import transform_xy

    x0, y0 = 503_000.0, 3_124_000.0
    xy = np.array([[x0, y0], [x0 + 100, y0], [x0 + 100, y0 + 100]])
    lon, lat = transform_xy(xy[:, 0], xy[:, 1], from_crs="EPSG:4548", to_crs="GCJ02")
    gdf = gpd.GeoDataFrame({"diameter_mm": [100, 100]},
                           geometry=[shapely.LineString([(lon[0], lat[0]), (lon[1], lat[1])]),
                                     shapely.LineString([(lon[1], lat[1]), (lon[2], lat[2])])], crs="EPSG:4326")
    path = tmp_path / "amap.geojson"
    gdf.to_file(path, driver="GeoJSON")
    net = read_network(path, crs="GCJ02", to_crs="EPSG:4548")
    got = net.nodes.geometry.get_coordinates().to_numpy()
    d = np.min(np.hypot(got[:, None, 0] - xy[None, :, 0], got[:, None, 1] - xy[None, :, 1]), axis=1)
    assert d.max() < 0.05
    assert net.links["length_m"].sum() == pytest.approx(200.0, abs=0.1)


# --------------------------------------------------------------------------- malformed GIS input


@pytest.mark.parametrize(
    "fixture, error, pattern",
    [
        ("gis_null_geometry.geojson", NetworkError, r"row 3: 1 pipes have no geometry.*P3.*Fix:"),
        ("gis_degrees_as_metres.geojson", CRSError, r"lon/lat degrees.*EPSG:4548 is in metres.*--crs EPSG:4326"),
    ],
)
def test_malformed_gis_layers_are_refused_with_the_fix(fixture, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        read_network(DATA / fixture)
    assert fixture in str(info.value)


def test_ends_apart_import_with_a_report_of_the_parts(caplog):
    """Snapping guesses: parts are imported and reported (count, pipes, length, narrowest gap), not refused."""
    with caplog.at_level(logging.WARNING, logger="twin.gis"):
        net = read_network(DATA / "gis_ends_apart.geojson")
    assert len(net.pipes) == 4
    assert ("gis_ends_apart.geojson: the snapped network falls into 2 parts, by length: 2 pipes / 0.24 km (e.g. P3); "
            "2 pipes / 0.18 km (e.g. P1); the narrowest gap is 3.10 m, at an end of pipe P3") in caplog.text
    assert "--valves-layer" in caplog.text and "--snap-tolerance" in caplog.text
    assert {"disconnected", "no_source"} <= set(validate_network(net)["code"])


def test_ends_apart_imports_with_a_wider_tolerance_or_explicitly_disconnected():
    assert len(read_network(DATA / "gis_ends_apart.geojson", snap_tolerance_m=4).nodes) == 5
    net = read_network(DATA / "gis_ends_apart.geojson", allow_disconnected=True)
    assert "disconnected" in set(validate_network(net)["code"])


def test_bad_columns_and_values_name_the_column(tmp_path):
    x0, y0 = 503_000.0, 3_124_000.0
    geoms = [shapely.LineString([(x0, y0), (x0 + 50, y0)]), shapely.LineString([(x0 + 50, y0), (x0 + 90, y0)])]
    path = tmp_path / "p.gpkg"
    gpd.GeoDataFrame({"pipe_id": ["a", "b"], "dn": ["200", "15O"]}, geometry=geoms, crs=4548).to_file(path, layer="pipes")
    with pytest.raises(NetworkError, match=r"row 2: b: column 'dn' of the pipes layer holds 1 non-numeric"):
        read_network(path)
    with pytest.raises(NetworkError, match=r"no column 'DIAMETRE'"):
        read_network(path, columns={"diameter": "DIAMETRE"})
    dup = tmp_path / "dup.gpkg"
    gpd.GeoDataFrame({"pipe_id": ["a", "a"]}, geometry=geoms, crs=4548).to_file(dup, layer="pipes")
    with pytest.raises(NetworkError, match=r"duplicate pipe IDs.*'a'"):
        read_network(dup)
    nodiam = tmp_path / "nodiam.gpkg"
    gpd.GeoDataFrame({"pipe_id": ["a", "b"]}, geometry=geoms, crs=4548).to_file(nodiam, layer="pipes")
    with pytest.raises(NetworkError, match=r"no diameter column.*--column diameter=NAME"):
        read_network(nodiam)
    assert np.allclose(read_network(nodiam, default_diameter_m=0.1).links["diameter_m"], 0.1)
    nocrs = tmp_path / "nocrs.shp"
    with pytest.warns(UserWarning):
        gpd.GeoDataFrame({"pipe_id": ["a", "b"], "dn": [100, 100]}, geometry=geoms).to_file(nocrs)
    with pytest.raises(CRSError, match=r"no coordinate reference system.*--crs"):
        read_network(nocrs)
    assert len(read_network(nocrs, crs="EPSG:4548").links) == 2


def test_not_a_geopackage(tmp_path):
    bad = tmp_path / "broken.gpkg"
    bad.write_bytes(b"this is not sqlite")
    with pytest.raises(NetworkError, match="broken.gpkg"):
        read_network(bad)


def test_lines_ending_on_another_line_are_split_there(tmp_path):
    # digitised service branches that stop on the main instead of at a vertex of it
    x0, y0 = 503_000.0, 3_124_000.0
    gdf = gpd.GeoDataFrame(
        {"id": ["main", "branch", "b2", "main-2"], "dn": [300, 100, 100, 300], "length": [210.0, None, None, 40.0]},
        geometry=[shapely.LineString([(x0, y0), (x0 + 200, y0)]),
                  shapely.LineString([(x0 + 80, y0 + 0.3), (x0 + 80, y0 + 50)]),
                  shapely.LineString([(x0 + 150, y0 - 40), (x0 + 150, y0 - 0.2)]),
                  shapely.LineString([(x0 + 200, y0), (x0 + 240, y0)])],
        crs="EPSG:4548",
    )
    path = tmp_path / "tees.gpkg"
    gdf.to_file(path, layer="pipes")
    net = read_network(path)
    assert len(net.pipes) == 6
    assert {"main", "main-2", "main-3", "main-2x"} <= set(net.pipes.index)  # "main-2" was taken
    pieces = net.pipes.loc[["main", "main-2x", "main-3"]]
    assert pieces["length_m"].sum() == pytest.approx(210.0)  # stated length shared by drawn length
    assert pieces["length_m"].tolist() == pytest.approx([84.0, 73.5, 52.5], abs=0.2)
    tee = net.pipes.loc["branch", "start_node"]
    assert tee in {net.pipes.loc["main", "end_node"]} and net.pipes.loc["main-2x", "start_node"] == tee
    assert "disconnected" not in set(validate_network(net)["code"])
    assert "disconnected" in set(validate_network(read_network(path, split_at_tees=False))["code"])


def test_elevations_from_3d_lines_or_pipe_end_columns(tmp_path):
    x0, y0 = 503_000.0, 3_124_000.0
    lines3d = [shapely.LineString([(x0, y0, 41.0), (x0 + 50, y0, 43.0)]),
               shapely.LineString([(x0 + 50, y0, 45.0), (x0 + 50, y0 + 40, 47.0)])]
    path = tmp_path / "z.gpkg"
    gpd.GeoDataFrame({"dn": [100, 100]}, geometry=lines3d, crs="EPSG:4548").to_file(path, layer="pipes")
    net = read_network(path)
    by_xy = net.nodes.set_index(net.nodes.geometry.x.round(1))["elevation_m"]
    assert by_xy[x0] == pytest.approx(41.0)
    assert sorted(net.nodes["elevation_m"]) == pytest.approx([41.0, 44.0, 47.0])  # shared node: mean of 43 and 45
    assert net.links.geometry.iloc[0].has_z is False
    assert "no_elevation" not in set(validate_network(net)["code"])
    flat = [shapely.force_2d(g) for g in lines3d]
    path2 = tmp_path / "cols.gpkg"
    gpd.GeoDataFrame({"dn": [100, 100], "US_ELEV": [10.0, 12.0], "DS_ELEV": [12.0, 14.0]}, geometry=flat,
                     crs="EPSG:4548").to_file(path2, layer="pipes")
    assert sorted(read_network(path2).nodes["elevation_m"]) == pytest.approx([10.0, 12.0, 14.0])


def test_node_layer_points_away_from_pipe_ends(tmp_path):
    x0, y0 = 503_000.0, 3_124_000.0
    pipes = gpd.GeoDataFrame({"dn": [200, 150]}, geometry=[shapely.LineString([(x0, y0), (x0 + 50, y0)]),
                                                           shapely.LineString([(x0 + 50, y0), (x0 + 90, y0)])],
                             crs="EPSG:4548")
    nodes = gpd.GeoDataFrame({"node_id": ["R1", "H7"], "node_type": ["reservoir", "junction"], "elevation": [60, 40]},
                             geometry=[shapely.Point(x0, y0), shapely.Point(x0 + 20, y0 + 3)], crs="EPSG:4548")
    path = tmp_path / "n.gpkg"
    pipes.to_file(path, layer="pipes")
    nodes.to_file(path, layer="nodes")
    net = read_network(path)  # the hydrant H7 is not on a pipe end: dropped with a warning
    assert "H7" not in net.nodes.index and net.nodes.loc["R1", "node_type"] == "reservoir"
    nodes.loc[0, "geometry"] = shapely.Point(x0 - 2.5, y0)
    nodes.to_file(path, layer="nodes")
    with pytest.raises(NetworkError, match=r"reservoir R1 of the node layer is 2.50 m from the nearest pipe end"):
        read_network(path)


def test_gis_reader_does_not_import_the_inp_reader():
    """twin.gis and twin.network both stand on twin.model; neither imports the other's module."""
    import subprocess
    import sys

    code = "import sys, twin.gis; print('twin.network' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_network_is_the_model_dataclass():
    from twin import model, network

    assert network.Network is model.Network


# --------------------------------------------------------------------------- a layer as utilities keep it (issue 12, item 13)


STUBS = ["p10", "p200", "p400", "p600"]  # each gets a 0.3 m stub cut off its start, as a feature of its own


def _raw_lonlat_layers(net, tmp_path: Path, *, seed: int = 13) -> tuple[Path, Path]:
    """L-Town's pipes as raw lon/lat lines, and its pump and PRVs as points.

    Pipes only (the pump and the valves are not in the line layer), no node
    IDs, no lengths; every line end moved by up to 0.15 m, so the ends of one
    node lie within 0.3 m of each other; four 0.3 m stubs. The points stand at
    the middle of each device's link, with the attributes a GIS keeps.
    """
    rng = np.random.default_rng(seed)
    pipes = net.pipes
    coords, idx = shapely.get_coordinates(pipes.geometry.to_numpy(), return_index=True)
    counts = np.bincount(idx, minlength=len(pipes))
    ends = np.concatenate([np.cumsum(counts) - counts, np.cumsum(counts) - 1])
    angle, radius = rng.uniform(0, 2 * np.pi, ends.size), 0.15 * np.sqrt(rng.uniform(0, 1, ends.size))
    coords[ends] += np.column_stack([np.cos(angle), np.sin(angle)]) * radius[:, None]
    lines = dict(zip(pipes.index, shapely.linestrings(coords, indices=idx)))
    for pid in STUBS:
        line = lines.pop(pid)
        lines[f"{pid}-stub"] = shapely.ops.substring(line, 0, 0.3)
        lines[pid] = shapely.ops.substring(line, 0.3, line.length)
    ids = list(lines)
    dn = np.round(pipes["diameter_m"].reindex([i.removesuffix("-stub") for i in ids]).to_numpy() * 1000)
    raw = gpd.GeoDataFrame({"pipe_id": ids, "DN": dn}, geometry=list(lines.values()), crs="EPSG:32650")
    raw_path = tmp_path / "ltown_raw.geojson"
    raw.to_crs("EPSG:4326").to_file(raw_path, driver="GeoJSON", engine="pyogrio")
    dev = net.links[net.links["link_type"] != "pipe"]
    a = net.nodes.geometry.loc[dev["start_node"]].get_coordinates().to_numpy()
    b = net.nodes.geometry.loc[dev["end_node"]].get_coordinates().to_numpy()
    curve = json.dumps(net.wn.get_curve(net.wn.get_link("PUMP_1").pump_curve_name).points)
    points = gpd.GeoDataFrame(
        {"valve_id": dev.index, "link_type": dev["link_type"].to_numpy(),
         "valve_type": dev["valve_type"].to_numpy(dtype=object, na_value=None),
         "setting": dev["setting"].to_numpy(), "DN": np.round(dev["diameter_m"].to_numpy() * 1000),
         "pump_curve": [curve if t == "pump" else None for t in dev["link_type"]],
         "bearing_deg": np.degrees(np.arctan2(b[:, 0] - a[:, 0], b[:, 1] - a[:, 1])) % 360},
        geometry=gpd.points_from_xy(*((a + b) / 2).T), crs="EPSG:32650")
    points_path = tmp_path / "ltown_devices.geojson"
    points.to_crs("EPSG:4326").to_file(points_path, driver="GeoJSON", engine="pyogrio")
    return raw_path, points_path


def test_raw_lonlat_pipe_layer_imports_with_warnings_and_joins_through_devices(ltown_net, tmp_path, caplog):
    raw, devices = _raw_lonlat_layers(ltown_net, tmp_path)
    with caplog.at_level(logging.WARNING, logger="twin.gis"):
        net = read_network(raw, to_crs="EPSG:32650")
    warned = " ".join(caplog.text.split())
    # the stubs are merged into their nodes and listed; every node of L-Town is found
    assert "4 pipes shorter than 1 m merged into their node" in warned
    assert all(f"{pid}-stub (0.3" in warned for pid in STUBS)
    assert len(net.pipes) == len(ltown_net.pipes) and len(net.nodes) == len(ltown_net.nodes)
    assert net.pipes["length_m"].sum() == pytest.approx(ltown_net.pipes.geometry.length.sum(), abs=3.0)
    # the pump and the three PRVs were the joints: five parts, reported with their pipes and lengths
    assert "the snapped network falls into 5 parts, by length:" in warned and "--valves-layer" in warned
    assert {"disconnected", "no_source"} <= set(validate_network(net)["code"])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="twin.gis"):
        joined = read_network(raw, to_crs="EPSG:32650", valves_layer=str(devices))
    assert "falls into" not in caplog.text
    assert "disconnected" not in set(validate_network(joined)["code"])
    dev = joined.links.loc[["PUMP_1", "PRV-1", "PRV-2", "PRV-3"]]
    assert dev["link_type"].tolist() == ["pump", "valve", "valve", "valve"]
    assert dev["valve_type"].tolist()[1:] == ["PRV"] * 3 and dev["setting"].tolist()[1:] == [40.0, 50.0, 35.0]
    assert joined.valves.empty  # the points became links, not isolation valves
    # each device joins the nodes where L-Town has it, in its direction (from the bearing)
    xy = joined.nodes.geometry
    true = ltown_net.nodes.geometry
    for lid, row in dev.iterrows():
        orig = ltown_net.links.loc[lid]
        assert xy[row["start_node"]].distance(true[orig["start_node"]]) < 0.3
        assert xy[row["end_node"]].distance(true[orig["end_node"]]) < 0.3
    pump = joined.wn.get_link("PUMP_1")
    assert joined.wn.get_curve(pump.pump_curve_name).points == ltown_net.wn.get_curve("1").points


def test_cli_network_info_takes_the_valves_layer(ltown_net, tmp_path, twin_cli, capsys):
    raw, devices = _raw_lonlat_layers(ltown_net, tmp_path)
    assert twin_cli("network", "info", raw, "--to-crs", "EPSG:32650", "--valves-layer", devices, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["pumps"], summary["valves"], summary["pipes"]) == (1, 3, 905)
    assert "disconnected" not in {f["code"] for f in summary["findings"]}


def test_isolation_valve_drawn_in_a_gap_joins_the_pipes(tmp_path):
    """A valve point off the pipes, between two line ends 2 m apart, becomes an open TCV; one on a pipe stays
    an isolation valve of that pipe."""
    x0, y0 = 503_000.0, 3_124_000.0
    pipes = gpd.GeoDataFrame({"id": ["A", "B"], "dn": [100, 150]},
                             geometry=[shapely.LineString([(x0, y0), (x0 + 50, y0)]),
                                       shapely.LineString([(x0 + 52, y0), (x0 + 100, y0)])], crs="EPSG:4548")
    pipes.to_file(tmp_path / "gap.gpkg", layer="pipes")
    gpd.GeoDataFrame({"valve_id": ["G1", "G2"]}, geometry=[shapely.Point(x0 + 51, y0 + 0.8),
                                                          shapely.Point(x0 + 20, y0)],
                     crs="EPSG:4548").to_file(tmp_path / "gap.gpkg", layer="valves")
    net = read_network(tmp_path / "gap.gpkg")
    g1 = net.links.loc["G1"]
    assert (g1["link_type"], g1["valve_type"], g1["status"], g1["diameter_m"]) == ("valve", "TCV", "open", 0.15)
    assert {g1["start_node"], g1["end_node"]} == {net.links.loc["A", "end_node"], net.links.loc["B", "start_node"]}
    assert list(net.valves.index) == ["G2"] and net.valves.loc["G2", "link_id"] == "A"
    assert "disconnected" not in set(validate_network(net)["code"])
