"""DMAs: from zones, inferred behind metered inlets, inlet signs and inflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin.dma import assign_dmas, dma_inflow, dma_inlets, unmetered_boundaries
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


def test_dma_inflow_signs_and_missing_samples(net):
    a = assign_dmas(net, inlet_links=["PIN", "PX"])
    inl = dma_inlets(net, a, ["PIN", "PX"])
    idx = pd.date_range("2026-03-02", periods=3, freq="15min", tz="UTC")
    flow = pd.DataFrame({"FLW-PIN": [10.0, 11.0, 12.0], "FLW-PX": [2.0, np.nan, 3.0]}, index=idx)
    meters = pd.DataFrame({"link_id": ["PIN", "PX"]}, index=pd.Index(["FLW-PIN", "FLW-PX"], name="meter_id"))
    q = dma_inflow(flow, inl, meters)
    assert q["DMA01"].tolist()[0] == 12.0 and q["DMA02"].tolist()[0] == -2.0
    assert np.isnan(q["DMA01"].iloc[1])  # an inlet without a reading: unknown
