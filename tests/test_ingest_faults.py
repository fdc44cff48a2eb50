"""Faults during an ingest (issue 12): one transaction, nothing half written.

An ingest stores the meter registry, its join and refused rows, the readings,
the quarantined rows and the ingest record together or not at all: an
exception, or the process being killed, at any later step leaves the store as
it was, and running the same ingest again stores every row exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import twin.errors
import twin.store
from tests.test_store import METERS, NOW, PLANTED, _expected, _write
from twin.store import Store

TABLES = ("meters", "meter_quarantine", "readings", "quarantine", "ingests")


def _snapshot(db: Path) -> dict[str, object]:
    """Row counts of every ingest table (None: the table does not exist)."""
    with Store(db, read_only=True) as store:
        return {t: len(store.table(t)) if store.has_table(t) else None for t in TABLES}


def _first_half(tmp_path):
    """A store holding one earlier ingest (the first half of the planted rows, its registry)."""
    m, r = _write(tmp_path, PLANTED[:8], name="first.csv")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        store.ingest(m, r, now=NOW)
    return db


class Boom(RuntimeError):
    pass


def _raise(*args, **kwargs):
    raise Boom("injected fault")


@pytest.mark.parametrize("step", ["_record_ingest", "_write_classified", "classify"])
def test_a_failing_step_leaves_the_store_as_it_was_and_a_rerun_stores_everything_once(tmp_path, monkeypatch, step):
    db = _first_half(tmp_path)
    before = _snapshot(db)
    m = tmp_path / "meters2.csv"
    m.write_text(METERS + "C3,customer,117.032,28.242,,\n")  # the registry changes too
    _, r = _write(tmp_path)
    with monkeypatch.context() as mp:
        mp.setattr(twin.store if step == "classify" else Store, step, _raise)
        with Store(db) as store, pytest.raises(Boom):
            store.ingest(m, r, now=NOW)
    assert _snapshot(db) == before
    with Store(db, read_only=True) as store:
        assert "C3" not in store.meter_table().index  # the registry was not written either
    with Store(db) as store:
        s = store.ingest(m, r, now=NOW)
        ok, exp = _expected()
        assert s.adds_up and s.duplicates_skipped == 8
        assert len(store.readings()) == ok and s.accepted == ok - 6  # of the 8 first rows 6 were accepted, 2 quarantined
        assert store.quarantine()["reason"].value_counts().to_dict() == exp
        assert "C3" in store.meter_table().index and len(store.ingests()) == 2


def test_registry_is_not_written_when_the_readings_file_cannot_be_read(tmp_path):
    m, _ = _write(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("meter,when\nC1,2026\n")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        with pytest.raises(twin.errors.ReadingsError):
            store.ingest(m, bad, now=NOW)
        assert not store.has_table("meters") or store.meter_table().empty
        assert store.ingests().empty


KILLER = """
import os, signal, sys
import twin.errors
import twin.store
from twin.store import Store

def die(self, *a, **k):  # the readings and quarantine rows are written, the record is next
    os.kill(os.getpid(), signal.SIGKILL)

Store._record_ingest = die
with Store(sys.argv[1]) as store:
    store.ingest(sys.argv[2], sys.argv[3], now=sys.argv[4])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_ingest_leaves_nothing_behind(tmp_path):
    db = _first_half(tmp_path)
    before = _snapshot(db)
    m, r = _write(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(Path(twin.store.__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLER), str(db), str(m), str(r), NOW],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    assert _snapshot(db) == before
    with Store(db) as store:
        s = store.ingest(m, r, now=NOW)
        assert s.adds_up and len(store.readings()) == _expected()[0]


# --------------------------------------------------------------------------- rows the CSV sniffer never saw


def _big_csv(path: Path, n: int, *, tail: list[str] = (), newline_at_end: bool = True) -> list[str]:
    """A readings CSV of ``n`` good flow rows (past DuckDB's sniffer sample) then ``tail``."""
    t0 = pd.Timestamp("2025-06-01T00:00:00+08:00")
    lines = ["meter_id,timestamp,value"]
    lines += [f"F1,{(t0 + pd.Timedelta(minutes=15 * i)).isoformat()},{i % 97}.5" for i in range(n)]
    lines += list(tail)
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))
    return lines


def test_an_extra_field_after_the_sniffer_sample_is_quarantined_as_malformed(tmp_path):
    m, _ = _write(tmp_path)
    r = tmp_path / "r.csv"
    _big_csv(r, 25_000, tail=["F1,2026-03-05T00:00:00+08:00,3.5,surplus", "F1,2026-03-05T00:15:00+08:00,1.5"])
    with Store() as store:
        s = store.ingest(m, r, now=NOW)
        assert s.quarantined == {"malformed_row": 1} and s.accepted == 25_001 and s.adds_up
        assert store.quarantine()["source_row"].tolist() == [25_001]


def test_a_cut_last_row_is_quarantined_and_the_full_file_later_stores_the_right_value(tmp_path):
    m, _ = _write(tmp_path)
    r = tmp_path / "r.csv"
    good = ["F1,2026-03-05T00:00:00+08:00,123.456"]
    _big_csv(r, 100, tail=[good[0][:-3]], newline_at_end=False)  # the copy stopped in the value
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        s = store.ingest(m, r, now=NOW)
        assert s.quarantined == {"truncated_row": 1} and s.accepted == 100
        _big_csv(r, 100, tail=good)  # the whole file arrives
        s = store.ingest(None, r, now=NOW)
        assert (s.accepted, s.duplicates_skipped, s.quarantined) == (1, 100, {})
        assert store.readings(start="2026-03-05T00:00:00+08:00", end="2026-03-05T00:00:01+08:00")["value"].tolist() == [123.456]


def test_every_row_quarantined_is_exit_2_naming_the_file_and_the_likely_cause(tmp_path, twin_cli, capsys):
    m, _ = _write(tmp_path)
    r = tmp_path / "r.csv"
    r.write_text("meter_id,timestamp,value\nF1,2026-03-02 08:00:00,1.5\nF1,2026-03-02 08:15:00,1.7\n")
    db = tmp_path / "s.duckdb"
    assert twin_cli("ingest", "--meters", m, "--readings", r, "--store", db, "--now", NOW) == 2
    out = capsys.readouterr()
    assert "r.csv" in out.err and "every row" in out.err and "offset" in out.err and "Traceback" not in out.err
    with Store(db, read_only=True) as store:  # nothing lost: the rows are kept with their reason
        assert store.quarantine()["reason"].tolist() == ["timestamp_without_offset"] * 2


# --------------------------------------------------------------------------- files DuckDB cannot read (item 10)


def _ingest_exit(twin_cli, capsys, tmp_path, readings):
    m, _ = _write(tmp_path)
    db = tmp_path / "s.duckdb"
    code = twin_cli("-q", "ingest", "--meters", m, "--readings", readings, "--store", db, "--now", NOW)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    with Store(db, read_only=True) as store:  # nothing half written
        assert store.reading_count() == 0 and store.ingests().empty
    return code, err


@pytest.mark.parametrize("damage", ["cut", "not_parquet"])
def test_a_cut_or_foreign_parquet_file_is_one_line_and_exit_2(tmp_path, twin_cli, capsys, damage):
    whole = tmp_path / "whole.parquet"
    pd.DataFrame({"meter_id": ["F1"] * 500, "timestamp": ["2026-03-02T00:00:00+08:00"] * 500,
                  "value": [1.5] * 500}).to_parquet(whole)
    bad = tmp_path / "r.parquet"
    data = whole.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "cut" else b"meter_id,timestamp,value\nF1,x,1\n")
    code, err = _ingest_exit(twin_cli, capsys, tmp_path, bad)
    assert code == 2 and "r.parquet" in err and "Parquet" in err


def test_a_latin1_byte_deep_in_a_csv_names_the_line_and_utf8(tmp_path, twin_cli, capsys):
    r = tmp_path / "r.csv"
    lines = _big_csv(r, 50_000)
    lines[50_000] = "F1,2026-03-05T00:00:00+08:00,1.5,caf\xe9"  # line 50,001 of the file
    r.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    code, err = _ingest_exit(twin_cli, capsys, tmp_path, r)
    assert code == 2 and "line 50001" in err and "UTF-8" in err


def test_a_line_break_inside_a_quoted_field_past_the_sniffer_is_one_line_and_exit_2(tmp_path, twin_cli, capsys):
    r = tmp_path / "r.csv"
    lines = _big_csv(r, 30_000)
    lines[1] = lines[1].replace("F1", '"F1"')  # quotes in the sniffer's sample
    lines[25_000] = 'F1,"2026-03-05T00:00:00\n+08:00",1.5'
    r.write_text("\n".join(lines) + "\n")
    code, err = _ingest_exit(twin_cli, capsys, tmp_path, r)
    assert code == 2 and "r.csv" in err and ("line break" in err or "line 25" in err)


def test_a_stray_quote_past_the_first_rows_is_named_and_swallows_nothing(tmp_path):
    """Quotes are RFC 4180 wherever they first appear: a quote never closed is refused, naming its row."""
    m, _ = _write(tmp_path)
    r = tmp_path / "r.csv"
    lines = _big_csv(r, 25_500)
    lines[25_000] = '"F1,2026-03-05T00:00:00+08:00,1.5'
    r.write_text("\n".join(lines) + "\n")
    with Store() as store:
        with pytest.raises(twin.errors.ReadingsError, match="row 25000: .*quote") as exc:
            store.ingest(m, r, now=NOW)
        assert "r.csv" in str(exc.value) and "\n" not in str(exc.value)
        assert store.reading_count() == 0 and store.ingests().empty  # nothing half stored


def test_quoted_ids_past_the_first_rows_keep_their_commas_and_quotes(tmp_path):
    """A quoted field first seen after DuckDB's sniffer sample is still one field (RFC 4180)."""
    m = tmp_path / "m.csv"
    m.write_text(METERS + '"F,2 ""north""",flow,117.03,28.24,,L1\n')
    r = tmp_path / "r.csv"
    lines = _big_csv(r, 25_000)
    lines.append('"F,2 ""north""",2026-03-05T00:00:00+08:00,1.5')
    r.write_text("\n".join(lines) + "\n")
    with Store() as store:
        s = store.ingest(m, r, now=NOW)
        assert s.quarantined == {} and s.accepted == 25_001
        assert 'F,2 "north"' in set(store.readings()["meter_id"])


def test_synth_readings_into_an_existing_file_is_exit_2(tmp_path, twin_cli, capsys):
    out = tmp_path / "week"
    out.write_text("not a folder")
    assert twin_cli("synth", "readings", "--network", tmp_path / "none.inp", "--out", out) == 2
    err = capsys.readouterr().err
    assert "week" in err and "folder" in err and "Traceback" not in err
    assert twin_cli("synth", "city", "--out", out) == 2
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("option", ["--start", "--end"])
def test_balance_with_an_invalid_date_is_exit_2_with_the_format(tmp_path, twin_cli, capsys, option):
    db = tmp_path / "s.duckdb"
    Store(db).close()
    assert twin_cli("balance", "--network", tmp_path / "n.inp", "--store", db, "--out", tmp_path / "b",
                    option, "2026-13-45") == 2
    err = capsys.readouterr().err
    assert option in err and "YYYY-MM-DD" in err and "Traceback" not in err
