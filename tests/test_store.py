"""The DuckDB store: ingest loses nothing, re-ingest adds nothing, queries in UTC."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from twin.errors import InputError, ReadingsError
from twin.store import Store

NOW = "2026-03-10T00:00:00+08:00"

METERS = """meter_id,kind,lon,lat,node_id,link_id
C1,customer,117.03,28.24,,
C2,customer,117.031,28.241,,
P1,pressure,117.03,28.24,J1,
F1,flow,117.03,28.24,,L1
BAD,valve,117.03,28.24,,
"""

# Each planted row says which reason it must get (or "ok" / "reset").
PLANTED = [
    ("C1", "2026-03-02T08:00:00+08:00", "100.000", "ok"),
    ("C1", "2026-03-02T20:10:00+08:00", "100.400", "ok"),
    ("C1", "2026-03-03T08:05:00+08:00", "100.100", "register_backwards"),
    ("C1", "2026-03-03T19:55:00+08:00", "100.900", "ok"),
    ("C1", "2026-03-04T08:00:00+08:00", "9100.900", "implausible_jump"),
    ("C1", "2026-03-04T20:00:00+08:00", "101.500", "ok"),
    ("C1", "2026-03-05T08:00:00+08:00", "0.200", "reset"),
    ("C1", "2026-03-05T20:00:00+08:00", "0.700", "ok"),
    ("C1", "2026-03-05T20:00:00+08:00", "0.700", "duplicate"),
    ("C1", "2026-03-05T20:00:00+08:00", "0.750", "duplicate"),
    ("C1", "2026-03-06T08:00:00", "1.0", "timestamp_without_offset"),
    ("C1", "06/03/2026 20:00", "1.1", "unparseable_timestamp"),
    ("C1", "", "1.1", "unparseable_timestamp"),
    ("C1", "2026-03-07T08:00:00+08:00", "", "missing_value"),
    ("C1", "2026-03-07T09:00:00+08:00", "NA", "missing_value"),
    ("C1", "2026-03-07T10:00:00+08:00", "12,5", "non_numeric_value"),
    ("C1", "2026-03-07T11:00:00+08:00", "nan", "non_numeric_value"),
    ("C1", "2026-03-07T12:00:00+08:00", "-3", "negative_value"),
    ("C1", "2027-03-07T12:00:00+08:00", "5", "future_timestamp"),
    ("C9", "2026-03-07T12:00:00+08:00", "5", "unknown_meter"),
    ("", "2026-03-07T12:00:00+08:00", "5", "unknown_meter"),
    ("BAD", "2026-03-07T12:00:00+08:00", "5", "rejected_meter"),
    ("C2", "2026-03-02T09:00:00Z", "5.0", "ok"),
    ("C2", "2026-03-02 21:00:00 +08:00", "5.2", "ok"),
    ("P1", "2026-03-02T00:00:00+08:00", "31.2", "ok"),
    ("P1", "2026-03-02T00:15:03+08:00", "31.1", "ok"),
    ("P1", "2026-03-02T00:30:00+08:00", "95.0", "implausible_jump"),
    ("P1", "2026-03-02T00:45:00+08:00", "31.0", "ok"),
    ("P1", "2026-03-02T01:15:00+08:00", "-0.5", "negative_value"),
    ("F1", "2026-03-02T00:00:00+08:00", "-4.5", "ok"),
    ("F1", "2026-03-02T00:15:00+08:00", "12.25", "ok"),
]


def _write(tmp_path, rows=PLANTED, name="readings.csv"):
    m = tmp_path / "meters.csv"
    m.write_text(METERS)
    r = tmp_path / name
    df = pd.DataFrame([row[:3] for row in rows], columns=["meter_id", "timestamp", "value"])
    df.to_csv(r, index=False)
    return m, r


def _expected(rows=PLANTED):
    exp = pd.Series([row[3] for row in rows]).replace({"reset": "ok"}).value_counts().to_dict()
    ok = exp.pop("ok")
    return ok, exp


def test_ingest_every_planted_row_accounted_for(tmp_path):
    m, r = _write(tmp_path)
    with Store(tmp_path / "t.duckdb") as store:
        s = store.ingest(m, r, now=NOW)
        ok, exp = _expected()
        assert s.rows_in == len(PLANTED)
        assert s.accepted == ok
        assert s.quarantined == exp
        assert s.duplicates_skipped == 0
        assert s.adds_up
        assert s.resets == 1
        assert s.meters_rejected == {"unknown kind": 1}
        # each planted row got its own reason, at its own source row
        q = store.quarantine().set_index("source_row")
        for i, row in enumerate(PLANTED, start=1):
            if row[3] in ("ok", "reset"):
                assert i not in q.index, (i, row)
            else:
                assert q.loc[i, "reason"] == row[3], (i, row)
                got = q.loc[i, "meter_id"]
                assert ("" if pd.isna(got) else got) == row[0]
        rd = store.readings()
        assert len(rd) == ok
        assert str(rd["timestamp"].dtype) == "datetime64[ns, UTC]"
        c2 = rd[rd.meter_id == "C2"]
        assert list(c2["timestamp"]) == [pd.Timestamp("2026-03-02T09:00Z"), pd.Timestamp("2026-03-02T13:00Z")]
        assert rd.loc[(rd.meter_id == "C1") & (rd.value == 0.2), "flag"].iloc[0] == "reset"


def test_reingest_adds_nothing_and_new_rows_are_checked_against_the_store(tmp_path):
    m, r = _write(tmp_path)
    db = tmp_path / "t.duckdb"
    with Store(db) as store:
        first = store.ingest(m, r, now=NOW)
        n_read = store.con.execute("SELECT count(*) FROM readings").fetchall()[0][0]
        n_quar = store.con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
    with Store(db) as store:  # reopened from disk
        again = store.ingest(m, r, now=NOW)
        assert again.accepted == 0 and again.quarantined == {}
        assert again.duplicates_skipped == again.rows_in == first.rows_in
        assert store.con.execute("SELECT count(*) FROM readings").fetchall()[0][0] == n_read
        assert store.con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == n_quar
        # a later file: one new reading, one conflicting with a stored one,
        # one going backwards against the stored register
        more = [
            ("C1", "2026-03-06T08:00:00+08:00", "1.400", "ok"),
            ("C2", "2026-03-02T13:00:00+00:00", "6.0", "duplicate"),  # same instant as stored 5.0
            ("C2", "2026-03-03T08:00:00+08:00", "0.1", "reset"),  # far below stored 5.2: replaced
        ]
        _, r2 = _write(tmp_path, more, name="more.csv")
        s = store.ingest(None, r2, now=NOW)
        assert (s.accepted, s.quarantined, s.resets) == (2, {"duplicate": 1}, 1)
        assert len(store.ingests()) == 3


def test_parquet_ingest_with_real_timestamp_types(tmp_path):
    m, _ = _write(tmp_path)
    df = pd.DataFrame(
        {
            "meter_id": ["F1", "F1", "F1"],
            "timestamp": pd.to_datetime(["2026-03-02T00:00:00+08:00", "2026-03-02T00:15:00+08:00", "2026-03-02T00:30:00+08:00"]),
            "value": [1.5, np.nan, 2.5],
        }
    )
    p = tmp_path / "r.parquet"
    df.to_parquet(p)
    naive = df.assign(timestamp=df["timestamp"].dt.tz_localize(None))
    pn = tmp_path / "naive.parquet"
    naive.to_parquet(pn)
    with Store() as store:
        s = store.ingest(m, p, now=NOW)
        assert (s.accepted, s.quarantined) == (2, {"missing_value": 1})
        s2 = store.ingest(None, pn, now=NOW)
        assert s2.quarantined == {"timestamp_without_offset": 3}  # time is checked before value
        got = store.readings(kind="flow")
        assert list(got["timestamp"]) == [pd.Timestamp("2026-03-01T16:00Z"), pd.Timestamp("2026-03-01T16:30Z")]


def test_series_on_a_regular_grid_in_utc(tmp_path):
    m, r = _write(tmp_path)
    with Store() as store:
        # a machine in another time zone must not change anything
        store.con.execute("SET TimeZone = 'America/New_York'")
        store.ingest(m, r, now=NOW)
        p = store.series("pressure")
        assert list(p.columns) == ["P1"]
        assert p.index.tz is not None and str(p.index.dtype) == "datetime64[ns, UTC]"
        assert p.index[0] == pd.Timestamp("2026-03-01T16:00Z")
        assert (np.diff(p.index.asi8) == 900 * 10**9).all()
        assert p["P1"].iloc[1] == pytest.approx(31.1)  # 15 min 3 s late still counts
        assert np.isnan(store.series("pressure", max_gap=0)["P1"].iloc[2])  # spike quarantined
        # the one gap rule: a one-sample hole between two readings is interpolated
        assert p["P1"].iloc[2] == pytest.approx((p["P1"].iloc[1] + p["P1"].iloc[3]) / 2)
        f = store.series("flow", start="2026-03-02T00:10:00+08:00")
        assert f["F1"].tolist() == [12.25]
        sub = store.readings(kind="customer", meter_ids=["C2"], end="2026-03-02T12:00:00Z")
        assert sub["value"].tolist() == [5.0]


def test_gap_rule_fills_short_gaps_only():
    from twin.store import fill_gaps, grid_series

    t = pd.date_range("2026-03-02", periods=12, freq="15min", tz="UTC")
    keep = [0, 2, 6, 7, 9, 11]  # gaps of 1, 3, 1 and 1 samples
    readings = pd.DataFrame({"meter_id": "P1", "timestamp": t[keep] + pd.Timedelta(seconds=4),
                             "value": [float(k) for k in keep]})
    s = grid_series(readings, max_gap=2)["P1"]
    assert s.index.equals(t.rename("timestamp"))  # readings a few seconds late go to their grid instant
    assert s.iloc[1] == pytest.approx(1.0) and s.iloc[8] == pytest.approx(8.0) and s.iloc[10] == pytest.approx(10.0)
    assert s.iloc[3:6].isna().all()  # a gap longer than max_gap stays whole
    assert grid_series(readings, max_gap=0)["P1"].isna().sum() == 6
    # duplicates on one instant are averaged; a frame without timestamps' offsets is read as ISO 8601
    dup = pd.DataFrame({"meter_id": ["F", "F"], "timestamp": ["2026-03-02T08:00:00+08:00", "2026-03-02T08:00:05+08:00"],
                        "value": [1.0, 3.0]})
    assert grid_series(dup)["F"].tolist() == [2.0]
    assert fill_gaps(pd.DataFrame({"x": [1.0, np.nan, 3.0]}), max_gap=1)["x"].tolist() == [1.0, 2.0, 3.0]


def test_bad_inputs_raise_clear_errors(tmp_path):
    m, _ = _write(tmp_path)
    r = tmp_path / "r.csv"
    r.write_text("meter,ts,v\nC1,2026-03-02T08:00:00+08:00,1\n")
    with Store() as store:
        with pytest.raises(InputError, match="no meter registry"):
            store.ingest(None, r)
        with pytest.raises(ReadingsError, match=r"r.csv: readings lack the column\(s\) meter_id, timestamp, value"):
            store.ingest(m, r)
        with pytest.raises(InputError, match="time zone"):
            store.readings(start="2026-03-02")
    with pytest.raises(InputError, match="folder does not exist"):
        Store(tmp_path / "nope" / "t.duckdb")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with Store() as store, pytest.raises(ReadingsError, match="empty.csv: the readings file is empty"):
        store.ingest(m, empty)


def test_read_only_reader_sees_the_data(tmp_path):
    m, r = _write(tmp_path)
    db = tmp_path / "t.duckdb"
    with Store(db) as store:
        store.ingest(m, r, now=NOW)
    with Store(db, read_only=True) as a, Store(db, read_only=True) as b:
        assert len(a.readings()) == len(b.readings()) > 0
        with pytest.raises(InputError, match="read-only"):
            a.ingest(m, r)
    assert isinstance(duckdb.__version__, str)


def test_grouped_sequence_checks_give_the_same_result(tmp_path, monkeypatch):
    """Large files run the window checks per group of meters: same outcome."""
    import twin.store

    m, r = _write(tmp_path)
    with Store() as one:
        a = one.ingest(m, r, now=NOW)
        qa = one.quarantine()[["source_row", "reason"]]
    monkeypatch.setattr(twin.store, "ROWS_PER_GROUP", 4)  # 31 rows -> 8 groups
    calls = []
    with Store() as many:
        b = many.ingest(m, r, now=NOW, progress=lambda phase, done, total: calls.append((phase, done, total)))
        qb = many.quarantine()[["source_row", "reason"]]
        assert many.ingest(m, r, now=NOW).duplicates_skipped == len(PLANTED)
        assert len(many.table("meter_quarantine")) == 1  # not added again
    assert (a.accepted, a.quarantined, a.resets) == (b.accepted, b.quarantined, b.resets)
    pd.testing.assert_frame_equal(qa, qb)
    assert ("checking", 8, 8) in calls


# --------------------------------------------------------------------------- the store's own path (issue 12)


@pytest.mark.parametrize("name", ["out.csv", "out.parquet", "week.json", "store"])
def test_a_store_path_that_is_not_a_duckdb_file_is_refused(tmp_path, name, twin_cli, capsys):
    """DuckDB opens an existing CSV in memory and would lose the ingest: refused, naming the fix."""
    m, r = _write(tmp_path)
    existing = tmp_path / name
    existing.write_text("a,b\n1,2\n")
    for path in (existing, tmp_path / f"new-{name}"):
        with pytest.raises(InputError, match=r"\.duckdb"):
            Store(path)
        assert twin_cli("ingest", "--meters", m, "--readings", r, "--store", path, "--now", NOW) == 2
        err = capsys.readouterr().err
        assert str(path.name) in err and ".duckdb" in err and "Traceback" not in err
        assert twin_cli("balance", "--network", m, "--store", path, "--out", tmp_path / "b") == 2
        assert ".duckdb" in capsys.readouterr().err
        assert twin_cli("localise", "--network", m, "--crs", "EPSG:4548", "--meters", m, "--readings", r,
                        "--out", tmp_path / "loc", "--store", path) == 2
        assert ".duckdb" in capsys.readouterr().err
    assert existing.read_text() == "a,b\n1,2\n"
    assert not (tmp_path / f"new-{name}").exists()


def test_a_path_duckdb_opens_in_memory_is_refused():
    with pytest.raises(InputError, match="in-memory"):
        Store(":memory:week.duckdb")


def test_a_bad_memory_limit_is_refused_without_leaving_a_store(tmp_path, twin_cli, capsys):
    m, r = _write(tmp_path)
    db = tmp_path / "s.duckdb"
    assert twin_cli("ingest", "--meters", m, "--store", db, "--memory-limit", "lots") == 2
    err = capsys.readouterr().err
    assert "--memory-limit" in err and "1GB" in err and "Traceback" not in err
    assert not db.exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_readings_paths_are_literal_never_glob_patterns(tmp_path, fmt, twin_cli, capsys):
    """`readings[1].csv` reads exactly that file; `week*.csv` is a missing file unless it exists literally."""
    m, _ = _write(tmp_path)

    def put(rows, name):
        df = pd.DataFrame([row[:3] for row in rows], columns=["meter_id", "timestamp", "value"])
        path = tmp_path / name
        df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)
        return path

    literal = put(PLANTED[:2], f"readings[1].{fmt}")
    put(PLANTED[:5], f"readings1.{fmt}")  # what the pattern [1] matches
    put(PLANTED[24:26], f"weekA.{fmt}")
    put(PLANTED[29:31], f"weekB.{fmt}")
    with Store() as store:
        assert store.ingest(m, literal, now=NOW).rows_in == 2
        with pytest.raises(FileNotFoundError, match=r"week\*"):
            store.ingest(None, tmp_path / f"week*.{fmt}", now=NOW)
        assert store.reading_count() == 2
        star = put(PLANTED[24:25], f"week*.{fmt}")  # a file literally named so
        assert store.ingest(None, star, now=NOW).rows_in == 1
    db = tmp_path / "s.duckdb"
    assert twin_cli("ingest", "--meters", m, "--readings", tmp_path / f"week?.{fmt}", "--store", db) == 2
    assert f"week?.{fmt}" in capsys.readouterr().err
