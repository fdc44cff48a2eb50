"""DMAs: from zones, inferred behind metered inlets, inlet signs and inflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin.dma import assign_dmas, dma_inlets, dma_net_inflow, storage_outflow, system_input, unmetered_boundaries
from twin.errors import InputError, UnknownElementError
from twin.network import read_network

X0, Y0 = 503000.0, 3125000.0

# R -> PIN -> A - B - C  (west area) ; C -> PX (metered, points east->west!) ; D - E (east area)
# E -> PV (closed) -> F ; F isolated behind the closed pipe. T: a tank on B.
BASE = f"""[JUNCTIONS]
 A 10 0.001
 B 10 0.001
 C 10 0.001
 D 10 0.001
 E 10 0.001
 F 10 0.001

[RESERVOIRS]
 R 60

[TANKS]
 T 20 3 0 6 10 0

[PIPES]
 PIN R A 100 200 100 0 Open
 P1  A B 100 150 100 0 Open
 P2  B C 100 150 100 0 Open
 PX  D C 100 150 100 0 Open
 P3  D E 100 150 100 0 Open
 PV  E F 100 150 100 0 Closed
 PT  B T 50 150 100 0 Open

[COORDINATES]
 R {X0 - 100} {Y0}
 A {X0} {Y0}
 B {X0 + 100} {Y0}
 C {X0 + 200} {Y0}
 D {X0 + 300} {Y0}
 E {X0 + 400} {Y0}
 F {X0 + 500} {Y0}
 T {X0 + 100} {Y0 + 50}

[OPTIONS]
 Units LPS
"""


@pytest.fixture
def net(tmp_path):
    p = tmp_path / "dma.inp"
    p.write_text(BASE + "\n[END]\n")
    return read_network(p, crs="EPSG:4548")


@pytest.fixture
def zoned(tmp_path):
    tags = "[TAGS]\n" + "".join(f" NODE {n} {z}\n" for n, z in
                                [("A", "West"), ("B", "West"), ("C", "West"), ("T", "West"),
                                 ("D", "East"), ("E", "East"), ("R", "West")])
    p = tmp_path / "zoned.inp"
    p.write_text(BASE + tags + "\n[END]\n")
    return read_network(p, crs="EPSG:4548")


def test_inferred_dmas_behind_metered_inlets(net):
    a = assign_dmas(net, inlet_links=["PX", "PIN"])
    assert a.attrs["method"] == "inlets"
    # PIN is the smaller inlet ID: the west part is DMA01, the east part DMA02
    assert a[["A", "B", "C", "T"]].tolist() == ["DMA01"] * 4
    assert a[["D", "E"]].tolist() == ["DMA02"] * 2
    assert pd.isna(a["R"])  # the source side
    assert pd.isna(a["F"])  # cut off by a closed pipe
    inl = dma_inlets(net, a, ["PIN", "PX"]).set_index(["dma", "link_id"])["sign"]
    assert inl[("DMA01", "PIN")] == 1  # R -> A enters DMA01
    assert inl[("DMA01", "PX")] == 1  # D -> C: positive flow enters the west
    assert inl[("DMA02", "PX")] == -1  # ... and leaves the east
    assert len(inl) == 3


def test_zones_win_and_reservoirs_are_never_inside(zoned):
    a = assign_dmas(zoned, inlet_links=["PIN"])
    assert a.attrs["method"] == "zones"
    assert a["A"] == "West" and a["D"] == "East" and pd.isna(a["R"]) and pd.isna(a["F"])
    inl = dma_inlets(zoned, a, ["PIN", "PX"])
    assert set(map(tuple, inl[["dma", "link_id", "sign"]].to_numpy().tolist())) == {
        ("West", "PIN", 1), ("West", "PX", 1), ("East", "PX", -1)
    }
    # PX unmetered: the boundary is reported; the closed pipe PV is not a boundary
    un = unmetered_boundaries(zoned, a, ["PIN"])
    assert un["link_id"].tolist() == ["PX"]


def test_errors_name_the_problem(net):
    with pytest.raises(InputError, match="no zones and no metered inlet"):
        assign_dmas(net)
    with pytest.raises(UnknownElementError, match="NOPE"):
        assign_dmas(net, inlet_links=["NOPE"])


def test_net_inflow_signs_and_missing_samples(net):
    idx = pd.date_range("2026-03-02", periods=3, freq="15min", tz="UTC")
    flow = pd.DataFrame({"PIN": [0.010, 0.011, 0.012], "PX": [0.002, np.nan, 0.003]}, index=idx)  # m³/s
    level = pd.DataFrame({"T": [3.0, 3.0, 3.0]}, index=idx)
    q = dma_net_inflow(net, flow, level)
    assert list(q.inlet.columns) == ["DMA01", "DMA02"]
    # PX points D -> C: positive flow leaves DMA02 (D, E) into DMA01 (A, B, C)
    assert q.net["DMA01"].iat[0] == pytest.approx(0.012) and q.net["DMA02"].iat[0] == pytest.approx(-0.002)
    assert np.isnan(q.net["DMA01"].iat[1])  # an inlet without a reading: unknown
    assert q.incomplete() == [] and q.unlogged == []
    # without the tank's level logger the west balance is incomplete
    bare = dma_net_inflow(net, flow, pd.DataFrame(index=idx))
    assert bare.unlogged == ["DMA01"] and bare.incomplete() == ["DMA01"]


def test_tank_filling_is_taken_from_the_inflow(net):
    idx = pd.date_range("2026-03-02", periods=40, freq="15min", tz="UTC")
    flow = pd.DataFrame({"PIN": 0.010, "PX": 0.0}, index=idx)
    level = pd.DataFrame({"T": 3.0 + 0.01 * np.arange(40)}, index=idx)  # rising 1 cm per 15 min
    area = np.pi * 10.0 ** 2 / 4.0
    filling = 0.01 * area / 900.0
    draw = storage_outflow(level["T"], 10.0)
    np.testing.assert_allclose(draw.iloc[:-1], -filling)
    assert np.isnan(draw.iat[-1])  # the last step has no "next" level
    q = dma_net_inflow(net, flow, level)
    # mass balance: what enters the DMA minus what the tank takes
    np.testing.assert_allclose(q.net["DMA01"].iloc[:-1], 0.010 - filling)
    supply, notes = system_input(net, flow, level)
    np.testing.assert_allclose(supply.iloc[:-1], 0.010 - filling)
    assert any("level logger" in n for n in notes)
    none, notes = system_input(net, flow, pd.DataFrame(index=idx))
    assert none is None and any("T is not metered" in n for n in notes)


def test_noisy_tank_level_is_smoothed():
    idx = pd.date_range("2026-03-02", periods=96, freq="15min", tz="UTC")
    noise = np.random.default_rng(1).normal(0.0, 0.01, 96)
    level = pd.Series(3.0 + noise, index=idx)
    raw = storage_outflow(level, 10.0, smooth=1)
    smooth = storage_outflow(level, 10.0)
    assert smooth.iloc[10:-10].std() < 0.5 * raw.iloc[10:-10].std()
