"""Readings: raw chunked reading and the in-memory classifier."""

from __future__ import annotations

import pandas as pd
import pytest

from twin.errors import ReadingsError
from twin.readings import REASONS, read_readings, validate_readings

METERS = pd.DataFrame({"meter_id": ["C1", "P1", "F1"], "kind": ["customer", "pressure", "flow"]})


def test_read_readings_chunks_keep_raw_strings_and_rows(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("meter_id,timestamp,value\nC1,2026-03-02T08:00:00+08:00,001.50\nC1,,\nF1,x,-2\n")
    chunks = list(read_readings(path, chunk_rows=2))
    assert [len(c) for c in chunks] == [2, 1]
    df = pd.concat(chunks, ignore_index=True)
    assert df["value"].tolist()[0] == "001.50"  # as read, not parsed
    assert df["source_row"].tolist() == [1, 2, 3]
    bad = tmp_path / "bad.csv"
    bad.write_text("meter,when\nC1,2026\n")
    with pytest.raises(ReadingsError, match="lack the column"):
        list(read_readings(bad))


def test_validate_readings_reasons_and_types():
    raw = pd.DataFrame(
        [
            ("C1", "2026-03-02T08:00:00+08:00", "10.0"),
            ("C1", "2026-03-02T20:00:00+08:00", "10.6"),
            ("C1", "2026-03-03T08:00:00+08:00", "10.2"),  # misread, series resumes
            ("C1", "2026-03-03T20:00:00+08:00", "11.0"),
            ("C1", "2026-03-04T08:00:00+08:00", "0.4"),  # replaced meter
            ("C1", "2026-03-04T20:00:00+08:00", "0.9"),
            ("C1", "2026-03-04T21:00:00+08:00", "500"),  # +499 m³ in 1 h, and stays: a step
            ("F1", "2026-03-02T08:00:00+08:00", "-3.5"),  # reverse flow is legitimate
            ("P1", "2026-03-02T08:00:00-0100", "20"),
            ("X", "2026-03-02T08:00:00+08:00", "20"),
        ],
        columns=["meter_id", "timestamp", "value"],
    )
    acc, qua = validate_readings(raw, METERS, now="2026-03-10T00:00:00+08:00")
    assert str(acc["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert acc["value"].dtype == "float64"
    assert set(qua["reason"]) <= set(REASONS)
    by_row = dict(zip(qua["source_row"], qua["reason"]))
    assert by_row == {3: "register_backwards", 7: "implausible_jump", 10: "unknown_meter"}
    assert acc.loc[acc.source_row == 5, "flag"].item() == "reset"
    assert acc.loc[acc.source_row == 9, "timestamp"].item() == pd.Timestamp("2026-03-02T09:00Z")
    assert len(acc) + len(qua) == len(raw)


def test_validate_readings_against_stored_and_needs_tz_now():
    stored = pd.DataFrame(
        {"meter_id": ["C1"], "timestamp": [pd.Timestamp("2026-03-02T00:00Z")], "value": [10.0]}
    )
    raw = pd.DataFrame(
        [("C1", "2026-03-02T08:00:00+08:00", "10.0"), ("C1", "2026-03-02T12:00:00Z", "9.99")],
        columns=["meter_id", "timestamp", "value"],
    )
    acc, qua = validate_readings(raw, METERS, stored=stored, now="2026-03-10T00:00Z")
    assert qua["reason"].tolist() == ["skipped", "register_backwards"]
    assert acc.empty
    with pytest.raises(ReadingsError, match="time zone"):
        validate_readings(raw, METERS, now="2026-03-10")


# --------------------------------------------------------------------------- row-level errors (issue 12, item 9)


def test_an_impossible_utc_offset_is_quarantined_and_the_next_reading_kept():
    raw = pd.DataFrame(
        [
            ("C1", "2026-03-02T08:00:00+08:00", "10.0"),
            ("C1", "2026-03-02T20:00:00+25:00", "10.3"),  # no such offset
            ("C1", "2026-03-03T08:00:00+08:00", "10.6"),
            ("C1", "2026-03-03T20:00:00+08:75", "10.9"),  # 75 minutes
            ("C1", "2026-03-04T08:00:00-13:00", "11.2"),  # west of -12:00
            ("C1", "2026-03-04T20:00:00+14:00", "11.5"),  # Kiribati: real
            ("P1", "2026-03-02T08:00:00+0545", "30"),  # Nepal: real
        ],
        columns=["meter_id", "timestamp", "value"],
    )
    acc, qua = validate_readings(raw, METERS, now="2026-03-10T00:00:00+08:00")
    assert dict(zip(qua["source_row"], qua["reason"])) == {
        2: "invalid_utc_offset", 4: "invalid_utc_offset", 5: "invalid_utc_offset"}
    assert sorted(acc["source_row"]) == [1, 3, 6, 7]
    assert len(acc) + len(qua) == len(raw)


def test_flows_beyond_the_largest_trunk_main_are_quarantined():
    from twin import settings

    big = settings.MAX_FLOW_LPS
    raw = pd.DataFrame(
        [
            ("F1", "2026-03-02T08:00:00+08:00", "1e12"),
            ("F1", "2026-03-02T08:15:00+08:00", str(-2 * big)),
            ("F1", "2026-03-02T08:30:00+08:00", str(0.9 * big)),
            ("F1", "2026-03-02T08:45:00+08:00", "12.5"),
        ],
        columns=["meter_id", "timestamp", "value"],
    )
    acc, qua = validate_readings(raw, METERS, now="2026-03-10T00:00:00+08:00")
    assert qua["reason"].tolist() == ["implausible_flow", "implausible_flow"]
    assert acc["value"].tolist() == [0.9 * big, 12.5]
    acc, qua = validate_readings(raw, METERS, now="2026-03-10T00:00:00+08:00", max_flow_lps=100.0)
    assert acc["value"].tolist() == [12.5]  # the bound is an argument
    assert 1_000 <= big <= 20_000  # sized for a city trunk main (L/s)


def test_read_readings_refuses_foreign_bytes_and_files_in_one_line(tmp_path):
    latin = tmp_path / "r.csv"
    latin.write_bytes("meter_id,timestamp,value\nC1,2026-03-02T08:00:00+08:00,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ReadingsError, match="r.csv: the file is not UTF-8.*Fix: re-encode"):
        list(read_readings(latin))
    fake = tmp_path / "r.parquet"
    fake.write_text("meter_id,timestamp,value\n")
    with pytest.raises(ReadingsError, match="r.parquet: cannot read the readings Parquet file"):
        list(read_readings(fake))
