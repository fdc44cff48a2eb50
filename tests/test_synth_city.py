"""The Yingtan reference city: layout, attributes, customers, hydraulics, determinism."""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely

from twin.synth.city import synth_city

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    import wntr

    out = tmp_path_factory.mktemp("city")
    paths = synth_city(size="small", seed=2026, out_dir=out)
    layers = {name: gpd.read_file(paths["gpkg"], layer=name)
              for name in ("pipes", "nodes", "valves", "customers", "dmas", "river")}
    wn = wntr.network.WaterNetworkModel(str(paths["inp"]))
    return {"paths": paths, "wn": wn, **layers}


def _same_inp_line(made: str, committed: str) -> bool:
    """Two .inp lines alike: the same words, numbers equal to 1e-12 (summation order moves the last digit)."""
    a, b = made.split(), committed.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            if not np.isclose(float(x), float(y), rtol=1e-12, atol=0.0):
                return False
        except ValueError:
            return False
    return True


def test_committed_small_network_is_reproducible(small):
    """networks/yingtan-small.inp is what `twin synth city --size small --seed 2026` makes.

    Line by line, numbers to 1e-12: numpy and pandas releases may sum a
    junction's customer demands in another order (the 17th digit of 33 base
    demands moved with numpy 2.4 / pandas 3.1), which is not a different city.
    """
    made = small["paths"]["inp"].read_text().splitlines()
    committed = (ROOT / "networks" / "yingtan-small.inp").read_text().splitlines()
    assert len(made) == len(committed)
    differ = [i for i, (x, y) in enumerate(zip(made, committed)) if x != y and not _same_inp_line(x, y)]
    assert not differ, f"line {differ[0] + 1}: {made[differ[0]]!r} != {committed[differ[0]]!r}"


def test_located_in_yingtan_in_epsg_4548(small):
    for name in ("pipes", "nodes", "valves", "customers", "dmas", "river"):
        assert small[name].crs.to_epsg() == 4548, name
    wn = small["wn"]
    xy = np.array([n.coordinates for _, n in wn.nodes()])
    lon, lat = pyproj.Transformer.from_crs(4548, 4326, always_xy=True).transform(xy[:, 0], xy[:, 1])
    assert (lon > 116.98).all() and (lon < 117.10).all()
    assert (lat > 28.20).all() and (lat < 28.30).all()


def test_size_and_elements(small):
    wn, pipes = small["wn"], small["pipes"]
    assert 800 <= wn.num_pipes <= 1300
    assert len(small["customers"]) == 10_000
    assert set(small["customers"].customer_class) == {"residential", "commercial", "industrial"}
    assert wn.num_reservoirs >= 1 and wn.num_tanks >= 1
    pumps = wn.pump_name_list
    assert any("PLANT" in p for p in pumps) and any("BOOSTER" in p for p in pumps)  # plant + high zone
    assert any(wn.get_link(v).valve_type == "PRV" for v in wn.valve_name_list)
    assert len(small["dmas"]) >= 8
    assert small["dmas"].pumped.any() and small["dmas"].pressure_managed.any()
    # the GIS pipes layer carries the pumps and valves too, as link_type rows
    assert set(pipes.link_type) == {"pipe", "pump", "valve"}


def test_attributes_are_realistic(small):
    p = small["pipes"][small["pipes"].link_type == "pipe"]
    assert p.dn_mm.min() >= 100 and p.dn_mm.max() <= 800
    assert p.dn_mm.nunique() >= 5
    assert set(p.material) <= {"PE", "PVC", "DI", "STEEL", "CI"} and p.material.nunique() >= 4
    assert p.install_year.between(1970, 2026).all()
    assert p.roughness.between(70, 150).all()
    # old cast iron is rougher than new PE
    assert p[p.material == "CI"].roughness.mean() < p[p.material == "PE"].roughness.mean()
    # trunk mains are bigger than distribution mains
    assert p[p.zone == "TRUNK"].dn_mm.median() > p[p.zone.str.startswith("DMA")].dn_mm.median()
    j = small["nodes"][small["nodes"].node_type == "junction"]
    assert j.elevation_m.between(30, 80).all()
    assert j.elevation_m.max() - j.elevation_m.min() > 25
    assert (j.zone != "").all()


def test_street_grid_is_not_a_lattice(small):
    p = small["pipes"][small["pipes"].link_type == "pipe"]
    g = p.geometry.to_numpy()
    ang = np.degrees(np.arctan2(shapely.get_y(shapely.get_point(g, -1)) - shapely.get_y(shapely.get_point(g, 0)),
                                shapely.get_x(shapely.get_point(g, -1)) - shapely.get_x(shapely.get_point(g, 0)))) % 90
    off = np.minimum(ang, 90 - ang)
    assert np.mean(off > 3) > 0.3  # many streets are not axis-aligned
    assert p.length_m.std() / p.length_m.mean() > 0.1
    deg = pd.concat([p.start_node, p.end_node]).value_counts()
    assert (deg == 1).sum() > 20 and (deg >= 3).sum() > 100  # dead ends and crossings


def test_river_crossed_only_at_bridges(small):
    river = small["river"].geometry.iloc[0]
    p = small["pipes"]
    crossing = p[p.intersects(river)]
    assert 1 <= len(crossing) <= 3
    assert (crossing.zone == "TRUNK").all()
    assert (~small["nodes"].within(river)).all()


def test_dmas_have_one_or_two_metered_inlets(small):
    wn = small["wn"]
    zone = {n: wn.get_node(n).tag or "" for n in wn.node_name_list}
    counts: dict[str, int] = {}
    for name, link in wn.links():
        if link.link_type == "Pipe" and str(link.initial_status) == "Closed":
            continue
        a, b = zone[link.start_node_name], zone[link.end_node_name]
        if a != b:
            for z in (a, b):
                if z.startswith("DMA"):
                    counts[z] = counts.get(z, 0) + 1
    dmas = set(small["dmas"].dma)
    assert set(counts) == dmas
    assert all(1 <= c <= 2 for c in counts.values()), counts
    # closed boundary valves separate the DMAs from the trunk
    closed = [l for _, l in wn.pipes() if str(l.initial_status) == "Closed"]
    assert len(closed) > len(dmas)


def test_customers_sit_5_to_40_m_off_their_pipe_and_make_the_demand(small):
    c, p, wn = small["customers"], small["pipes"].set_index("link_id"), small["wn"]
    d = c.geometry.distance(gpd.GeoSeries(p.geometry.reindex(c.link_id).to_numpy(), crs=c.crs), align=False)
    assert d.between(4.9, 40.1).all()
    assert c.meter_id.is_unique
    assert c.base_demand_m3_per_day.gt(0).all()
    res = c[c.customer_class == "residential"].base_demand_m3_per_day
    assert res.between(0.3, 1.5).all()
    assert c[c.customer_class == "industrial"].base_demand_m3_per_day.median() > 5 * res.median()
    node_q = sum(ts.base_value for _, j in wn.junctions() for ts in j.demand_timeseries_list)
    assert node_q * 86400 == pytest.approx(c.base_demand_m3_per_day.sum(), rel=1e-3)


def test_valve_layer_is_strategic_n_minus_1(small):
    v, p = small["valves"], small["pipes"].set_index("link_id")
    assert v.valve_id.is_unique
    assert v.link_id.isin(p.index).all()
    ends = (p.start_node.reindex(v.link_id).to_numpy() == v.node_id.to_numpy()) | (
        p.end_node.reindex(v.link_id).to_numpy() == v.node_id.to_numpy())
    assert ends.all()
    assert 0.8 * len(p) < len(v) < 2 * len(p)


def test_hydraulically_sound(small):
    import wntr

    wn = small["wn"]
    wn.options.time.duration = 86400
    with tempfile.TemporaryDirectory() as tmp:
        res = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "t"), convergence_error=True)
    served = [n for n, j in wn.junctions() if j.demand_timeseries_list and
              sum(t.base_value for t in j.demand_timeseries_list) > 0]
    p = res.node["pressure"][served]
    peak = p.loc[8 * 3600]
    assert peak.min() >= 15
    assert peak.quantile(0.99) <= 60.5
    assert p.min().min() > 10
    tank = res.node["pressure"][wn.tank_name_list[0]]
    assert tank.min() > 0.5 and tank.max() < 8.5


def test_readings_on_the_city_use_its_customers(small, tmp_path):
    import json

    from twin.synth import synth_readings

    paths = synth_readings(small["paths"]["inp"], crs="EPSG:4548", days=3, leak="random", seed=3, out_dir=tmp_path)
    m = pd.read_csv(paths["meters"])
    cust = m[m.kind == "customer"]
    assert set(cust.meter_id) == set(small["customers"].meter_id)
    assert cust.lon.between(116.98, 117.10).all() and cust.lat.between(28.20, 28.30).all()
    t = json.loads(paths["truth"].read_text())
    assert t["customers"]["source"] == "layer"
    # every DMA inlet, pump and the tank feed are metered; the tank has a level logger
    flow = set(m.link_id.dropna())
    wn = small["wn"]
    assert set(wn.pump_name_list) <= flow and set(wn.valve_name_list) <= flow
    assert set(wn.tank_name_list) <= set(m.node_id.dropna())
    assert 9.5 <= t["nrw_pct_before_leak"] <= 12.5


def test_bad_size(twin_cli, tmp_path, capsys):
    assert twin_cli("synth", "city", "--size", "huge", "--out", tmp_path) == 2
    assert "huge" in capsys.readouterr().err


@pytest.mark.slow
def test_city_size(tmp_path):
    """The city size: 20,000+ pipes, 130,000 customers, sound at the peak hour (about 1-2 minutes)."""
    import wntr

    paths = synth_city(size="city", seed=2026, out_dir=tmp_path)
    pipes = gpd.read_file(paths["gpkg"], layer="pipes")
    customers = gpd.read_file(paths["gpkg"], layer="customers", columns=["meter_id"])
    assert (pipes.link_type == "pipe").sum() >= 20_000
    assert len(customers) == 130_000
    wn = wntr.network.WaterNetworkModel(str(paths["inp"]))
    wn.options.time.duration = 12 * 3600
    with tempfile.TemporaryDirectory() as tmp:
        res = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "t"), convergence_error=True)
    served = [n for n, j in wn.junctions() if sum(t.base_value for t in j.demand_timeseries_list) > 0]
    peak = res.node["pressure"].loc[8 * 3600, served]
    assert peak.min() >= 15 and peak.quantile(0.99) <= 60.5


def test_customers_without_pipe_ids_are_snapped(small, tmp_path):
    """A customers layer with only points (no link_id/position) is snapped to the nearest pipe."""
    import json

    from twin.synth import synth_readings

    cust = small["customers"].drop(columns=["link_id", "position"]).iloc[:2000]
    paths = synth_readings(small["paths"]["inp"], crs="EPSG:4548", days=1, leak="none", seed=1,
                           out_dir=tmp_path, customers=cust)
    t = json.loads(paths["truth"].read_text())
    assert t["customers"]["count"] == 2000
    # the nominal use of those 2,000 customers is what the truth consumes, within the day's variation
    nominal = cust.base_demand_m3_per_day.sum()
    assert t["consumption_m3"] == pytest.approx(nominal, rel=0.1)


def test_bad_customers_layer(small, tmp_path):
    from twin.errors import InputError
    from twin.synth import synth_readings

    cust = small["customers"].copy()
    cust.loc[cust.index[5], "customer_class"] = "hotel"
    with pytest.raises(InputError, match="row 6.*hotel"):
        synth_readings(small["paths"]["inp"], crs="EPSG:4548", days=1, leak="none", out_dir=tmp_path, customers=cust)
    cust = small["customers"].drop(columns=["base_demand_m3_per_day"])
    with pytest.raises(InputError, match="base_demand_m3_per_day"):
        synth_readings(small["paths"]["inp"], crs="EPSG:4548", days=1, leak="none", out_dir=tmp_path, customers=cust)


def test_meters_in_gcj02(small, tmp_path):
    """A registry digitised on Amap: GCJ-02 lon/lat, about 500 m off WGS84 in Yingtan, and invertible."""
    from twin.crs import gcj02_to_wgs84
    from twin.synth import synth_readings

    a = synth_readings(small["paths"]["inp"], crs="EPSG:4548", days=1, leak="none", seed=1, out_dir=tmp_path / "w")
    b = synth_readings(small["paths"]["inp"], crs="EPSG:4548", days=1, leak="none", seed=1, out_dir=tmp_path / "g",
                       meters_crs="GCJ02")
    w, g = pd.read_csv(a["meters"]), pd.read_csv(b["meters"])
    shift_m = np.hypot((g.lon - w.lon) * 98_000, (g.lat - w.lat) * 111_000)
    assert shift_m.between(200, 1000).all()
    lon, lat = gcj02_to_wgs84(g.lon.to_numpy(), g.lat.to_numpy())
    assert np.abs(lon - w.lon).max() < 2e-5 and np.abs(lat - w.lat).max() < 2e-5


def test_cli_city_writes_the_files(twin_cli, tmp_path, capsys):
    assert twin_cli("synth", "city", "--size", "small", "--seed", "7", "--out", tmp_path) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"yingtan-small.inp", "yingtan-small.gpkg"}
    assert "yingtan-small.inp" in capsys.readouterr().out
