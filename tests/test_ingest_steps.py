"""The ingest side's steps fit together: one classifier, the rejected meters, the
counts, the join's empty cases, logger placement, and errors that carry data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import twin.store
from tests.test_meters import INP, X0, Y0
from tests.test_store import METERS, NOW, PLANTED
from twin.crs import transform_xy
from twin.errors import MeterError, ReadingsError, TwinError
from twin.meters import join_meters, meters_from_frame, read_meters, validate_meters
from twin.network import read_network
from twin.readings import read_readings, validate_readings
from twin.store import Store


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "hand.inp"
    path.write_text(INP)
    return read_network(path, crs="EPSG:4548")


def _files(tmp_path, rows=PLANTED):
    m = tmp_path / "meters.csv"
    m.write_text(METERS)
    r = tmp_path / "readings.csv"
    pd.DataFrame([row[:3] for row in rows], columns=["meter_id", "timestamp", "value"]).to_csv(r, index=False)
    return m, r


# --------------------------------------------------------------------------- one classifier


def test_in_memory_and_store_ingest_give_every_row_the_same_verdict(tmp_path):
    m, r = _files(tmp_path)
    good, rejected = validate_meters(read_meters(m))
    raw = pd.concat(list(read_readings(r)), ignore_index=True)
    acc, qua = validate_readings(raw, good, rejected_meters=rejected, now=NOW)
    with Store() as store:
        summary = store.ingest(m, r, now=NOW)
        stored_q = store.quarantine()
        stored_r = store.readings()
    mem = dict(zip(qua["source_row"], qua["reason"]))
    disk = dict(zip(stored_q["source_row"], stored_q["reason"]))
    assert mem == disk
    assert mem == {i: row[3] for i, row in enumerate(PLANTED, start=1) if row[3] not in ("ok", "reset")}
    assert len(acc) == len(stored_r) == summary.accepted
    assert (acc["flag"] == "reset").sum() == summary.resets == 1
    pd.testing.assert_series_equal(
        acc.sort_values(["meter_id", "timestamp"])["value"].reset_index(drop=True),
        stored_r.sort_values(["meter_id", "timestamp"])["value"].reset_index(drop=True),
    )


def test_rejected_meters_come_from_this_ingest_or_from_the_store(tmp_path):
    m, r = _files(tmp_path, [("BAD", "2026-03-07T12:00:00+08:00", "5", "rejected_meter")])
    with Store() as store:  # registry and readings in one ingest
        assert store.ingest(m, r, now=NOW).quarantined == {"rejected_meter": 1}
    with Store() as store:  # registry first, readings in a later ingest
        meters = store.ingest_meters(m)
        assert meters.meters_rejected == {"unknown kind": 1}
        assert store.ingest(None, r, now=NOW).quarantined == {"rejected_meter": 1}


def test_ingest_reports_progress_in_phase_order(tmp_path):
    m, r = _files(tmp_path)
    calls = []
    with Store() as store:
        store.ingest(m, r, now=NOW, progress=lambda *a: calls.append(a))
    assert calls == [
        ("staging", 0, 1), ("staging", 1, 1), ("checking", 1, 1), ("writing", 0, 1), ("writing", 1, 1)
    ]


def test_counts_that_do_not_add_up_raise_with_the_summary_as_data(tmp_path, monkeypatch):
    """An ingest that lost a row is a bug: it says so and hands over the counts."""
    classify = twin.store.classify

    def losing_one_row(con, **kw):
        table = classify(con, **kw)
        con.execute(f"DELETE FROM {table} WHERE source_row = 1")
        return table

    monkeypatch.setattr(twin.store, "classify", losing_one_row)
    m, r = _files(tmp_path)
    with Store() as store, pytest.raises(TwinError, match="do not add up") as exc:
        store.ingest(m, r, now=NOW)
    data = exc.value.data
    assert data["rows_in"] == len(PLANTED) and data["adds_up"] is False
    assert data["accepted"] + data["quarantined_total"] + data["duplicates_skipped"] == len(PLANTED) - 1


# --------------------------------------------------------------------------- errors carry data


def test_missing_columns_are_named_in_the_error_data(tmp_path):
    bad = tmp_path / "meters.csv"
    bad.write_text("meter_id,kind,x,y\nM1,customer,117,28\n")
    with pytest.raises(MeterError) as exc:
        read_meters(bad)
    assert exc.value.data == {"missing_columns": ["lon", "lat"], "columns": ["meter_id", "kind", "x", "y"]}
    frame = meters_from_frame(pd.DataFrame({"meter_id": ["M1"], "kind": ["customer"], "lon": [117.0], "lat": [28.0]}))
    with pytest.raises(MeterError) as exc:
        validate_meters(frame.drop(columns=["node_id", "link_id"]))
    assert exc.value.data["missing_columns"] == ["node_id", "link_id"]

    readings = tmp_path / "r.csv"
    readings.write_text("meter_id,time,value\nM1,2026-03-02T08:00:00+08:00,1\n")
    with pytest.raises(ReadingsError) as exc:
        list(read_readings(readings))
    assert exc.value.data == {"missing_columns": ["timestamp"], "columns": ["meter_id", "time", "value"]}
    with pytest.raises(ReadingsError) as exc:
        validate_readings(pd.DataFrame({"meter_id": ["M1"], "value": ["1"]}), frame)
    assert exc.value.data["missing_columns"] == ["timestamp"]
    m, _ = _files(tmp_path)
    with Store() as store, pytest.raises(ReadingsError) as exc:
        store.ingest(m, readings, now=NOW)
    assert exc.value.data["missing_columns"] == ["timestamp"]


# --------------------------------------------------------------------------- meters


def _lonlat(x, y):
    return transform_xy(np.array([x], float), np.array([y], float), from_crs="EPSG:4548", to_crs="EPSG:4326")


def test_loggers_without_coordinates_sit_on_their_node_or_link(net):
    lon, lat = _lonlat(X0 + 30, Y0 - 4)
    reg = pd.DataFrame(
        {
            "meter_id": ["c", "p", "f"],
            "kind": ["customer", "pressure", "flow"],
            "lon": [lon[0], "", ""],
            "lat": [lat[0], "", ""],
            "node_id": ["", "B", ""],
            "link_id": ["", "", "P1"],
        }
    )
    good, rejected = validate_meters(meters_from_frame(reg), net)
    assert rejected.empty
    for mid, (x, y) in {"p": (X0 + 100, Y0), "f": (X0 + 50, Y0)}.items():  # node B; middle of P1 (A-B)
        want_lon, want_lat = _lonlat(x, y)
        assert good.loc[mid, "lon"] == pytest.approx(want_lon[0], abs=1e-7)
        assert good.loc[mid, "lat"] == pytest.approx(want_lat[0], abs=1e-7)
        assert good.loc[mid, "geometry"].x == pytest.approx(want_lon[0], abs=1e-7)
    # without a network there is nowhere to put them: they keep no coordinates
    alone, _ = validate_meters(meters_from_frame(reg))
    assert alone.loc[["p", "f"], "lon"].isna().all()


def test_join_without_pipes_or_customers_has_the_usual_columns(net):
    lon, lat = _lonlat(X0 + 30, Y0 - 4)
    meters = meters_from_frame(
        pd.DataFrame({"meter_id": ["c1", "c2"], "kind": ["customer"] * 2, "lon": [lon[0], ""], "lat": [lat[0], ""]})
    )
    usual = join_meters(meters, net)
    assert usual["matched"].tolist() == [True, False]  # c2 has no coordinates
    assert pd.isna(usual.loc["c2", "distance_m"]) and pd.isna(usual.loc["c2", "nearest_link_id"])
    no_pipes = dataclasses.replace(net, links=net.links.iloc[0:0])
    empty = join_meters(meters, no_pipes)
    assert list(empty.index) == ["c1", "c2"] and not empty["matched"].any()
    assert empty["link_id"].isna().all() and empty["distance_m"].isna().all()
    pd.testing.assert_series_equal(empty.dtypes, usual.dtypes)
    none = join_meters(meters.iloc[0:0], net)
    assert none.empty and list(none.columns) == list(usual.columns)
    pd.testing.assert_series_equal(none.dtypes, usual.dtypes)
