"""Measurements: one path from a store or a readings frame to the job's SI series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin.crs import transform_xy
from twin.measure import measurements_from_readings, measurements_from_store
from twin.network import read_network
from twin.store import Store

X0, Y0 = 503000.0, 3125000.0
NOW = "2026-04-01T00:00:00+08:00"

INP = f"""[JUNCTIONS]
 A 10 0.001
 B 10 0.001
 C 10 0.001

[RESERVOIRS]
 R 60

[TANKS]
 T 20 3 0 6 10 0

[PIPES]
 PIN R A 100 200 100 0 Open
 P1  A B 100 150 100 0 Open
 P2  B C 100 150 100 0 Open
 PT  B T 50 150 100 0 Open

[COORDINATES]
 R {X0 - 100} {Y0}
 A {X0} {Y0}
 B {X0 + 100} {Y0}
 C {X0 + 200} {Y0}
 T {X0 + 100} {Y0 + 50}

[OPTIONS]
 Units LPS

[END]
"""


@pytest.fixture
def files(tmp_path):
    """A day of readings: two flow meters on PIN, a logger with a gap, a stuck one, a silent one, a tank."""
    net_path = tmp_path / "net.inp"
    net_path.write_text(INP)
    lon, lat = transform_xy([X0 + 50, X0 + 150], [Y0 + 5, Y0 + 5], from_crs="EPSG:4548", to_crs="EPSG:4326")
    ids = ["C1", "F1", "F2", "PB", "PC", "PA", "PT", "PX"]
    meters = pd.DataFrame({
        "meter_id": ids,
        "kind": ["customer", "flow", "flow", "pressure", "pressure", "pressure", "pressure", "pressure"],
        "lon": [lon[0]] * 4 + [lon[1]] * 4, "lat": [lat[0]] * 4 + [lat[1]] * 4,
        "node_id": ["", "", "", "B", "C", "A", "T", "NOPE"],
        "link_id": ["", "PIN", "PIN", "", "", "", "", ""],
    })
    grid = pd.date_range("2026-03-02T00:00+08:00", periods=96, freq="15min")
    iso = [t.isoformat() for t in grid]
    rows = [("F1", t, "10.0") for t in iso] + [("F2", t, "12.0") for t in iso]
    rows += [("PB", t, f"{40.0 + 0.1 * k:.2f}") for k, t in enumerate(iso) if k not in (10, 11)]
    rows += [("PC", t, "35.0") for t in iso]  # stuck
    rows += [("PA", t, "41.0") for t in iso[:20]]  # silent most of the day
    rows += [("PT", t, f"{3.0 + 0.01 * k:.2f}") for k, t in enumerate(iso)]
    rows += [("PX", t, "30.0") for t in iso]
    rows += [("C1", iso[0], "100.0"), ("C1", iso[-1], "105.0")]
    m_path, r_path = tmp_path / "meters.csv", tmp_path / "readings.csv"
    meters.to_csv(m_path, index=False)
    pd.DataFrame(rows, columns=["meter_id", "timestamp", "value"]).to_csv(r_path, index=False)
    return net_path, m_path, r_path


def test_store_and_frame_give_the_same_measurements(files):
    net_path, m_path, r_path = files
    net = read_network(net_path, crs="EPSG:4548")
    with Store() as st:
        st.ingest(m_path, r_path, network=net, now=NOW)
        from_store = measurements_from_store(st, net)
        meters = st.meter_table()
        stored = st.readings()
    readings = pd.read_csv(r_path, dtype={"meter_id": str, "timestamp": str})
    from_frame = measurements_from_readings(readings[readings["meter_id"].isin(stored["meter_id"])], meters, net)
    for a, b in ((from_store.pressure, from_frame.pressure), (from_store.flow, from_frame.flow)):
        pd.testing.assert_frame_equal(a, b, check_names=False, check_freq=False)
    assert from_store.rows == len(stored)
    m = from_store
    # SI per element: two meters on one link averaged, L/s -> m³/s
    assert list(m.flow.columns) == ["PIN"]
    np.testing.assert_allclose(m.flow["PIN"], 0.011)
    # the store's gap rule: a two-sample gap is interpolated
    assert m.pressure["B"].notna().all()
    assert m.pressure["B"].iat[10] == pytest.approx(41.0)
    assert set(m.pressure.columns) == {"B", "T"}
    reasons = dict(zip(m.rejected["meter_id"], m.rejected["reason"]))
    assert reasons["PA"].startswith("silent") and "PX" not in reasons  # the store refused PX's registry row
    # a stuck logger: the store may quarantine its rows (then silent), else the screen sets it aside
    assert reasons["PC"].startswith(("stuck", "silent"))
    # a frame with a registry the store never checked: the screen names the problem
    registry = pd.read_csv(m_path, dtype=str).set_index("meter_id")
    raw = measurements_from_readings(readings, registry, net)
    assert dict(zip(raw.rejected["meter_id"], raw.rejected["reason"]))["PX"] == "not in the network"
    assert list(m.customer["meter_id"].unique()) == ["C1"] and len(m.grid) == 96
