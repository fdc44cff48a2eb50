"""The nightly job from the store: runs, alarms and their history (twin.alarms, twin localise --store)."""

from __future__ import annotations

import json
import shutil

import duckdb
import pandas as pd
import pytest

from twin import settings
from twin.alarms import (Window, alarm_history, alarm_table, known_alarms, leaks_from_report, match_alarms,
                         record_run, window_for_alarms)
from twin.errors import InputError
from twin.store import _SCHEMA, Store

from conftest import DATA, NETWORKS

WEEK = DATA / "yingtan-small-week"
NET = NETWORKS / "yingtan-small.inp"
NOW = "2026-03-20T00:00:00+08:00"
#: The bundled week's leak: DMA07, 3.14 L/s from 2026-03-04 01:18 local.
CUT = pd.Timestamp("2026-03-06T00:00:00+08:00")  # first part: 2 March to 5 March; repair at the cut


def _t(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


WEEK_WINDOW = Window(_t("2026-03-02T00:00+08:00"), _t("2026-03-09T00:00+08:00"))


def _leaks(*rows) -> pd.DataFrame:
    """Leaks as :func:`leaks_from_report` gives them: (dma, onset, flow_lps)."""
    return pd.DataFrame([{"leak_id": i + 1, "dma": d, "onset": _t(o), "flow_lps": f, "t_stat": 9.0,
                          "top_link_id": "P1", "top_p": 0.5, "top_p_within_300m": 0.8}
                         for i, (d, o, f) in enumerate(rows)])


def _alarms(*rows) -> pd.DataFrame:
    """Known alarms: (alarm_id, dma, onset, flow_lps[, status])."""
    return pd.DataFrame([{"alarm_id": r[0], "dma": r[1], "onset": _t(r[2]), "flow_lps": r[3],
                          "status": r[4] if len(r) > 4 else "open"} for r in rows])


# ------------------------------------------------------------------ the matching rule


@pytest.mark.parametrize("dma, onset, flow, state", [
    ("DMA07", "2026-03-04T03:00+08:00", 3.0, "continuing"),   # onset 1.7 h later, flow -6 %
    ("DMA07", "2026-03-04T01:18+08:00", 5.0, "continuing"),   # grew: still the same leak
    ("network", "2026-03-04T01:18+08:00", 3.1, "continuing"),  # not placed in a DMA tonight
    ("DMA07", "2026-03-04T01:18+08:00", 1.9, "closed"),       # fell by 40 %: stopped inside the window
    ("DMA07", "2026-03-04T01:18+08:00", 2.7, "continuing"),   # within 30 %
    ("DMA08", "2026-03-04T01:18+08:00", 3.1, "new"),          # another district
    ("DMA07", "2026-03-04T09:30+08:00", 3.1, "new"),          # onset 8 h later: another leak
])
def test_match_rule(dma, onset, flow, state):
    matched, unseen = match_alarms(_leaks((dma, onset, flow)), _alarms((1, "DMA07", "2026-03-04T01:18+08:00", 3.14)),
                                   WEEK_WINDOW)
    assert matched["state"].tolist() == [state]
    assert (matched["alarm_id"].isna().tolist() == [True]) == (state == "new")
    # an alarm no leak matched, whose onset the week covers, is closed
    assert unseen.to_dict() == ({1: "closed"} if state == "new" else {})


def test_match_small_leaks_use_the_absolute_flow_tolerance():
    """0.4 against 0.8 L/s is within 0.5 L/s: continuing; 0.2 against 0.8 is not."""
    alarm = _alarms((1, "DMA01", "2026-03-04T00:00+08:00", 0.8))
    assert match_alarms(_leaks(("DMA01", "2026-03-04T00:00+08:00", 0.4)), alarm, WEEK_WINDOW)[0]["state"][0] == "continuing"
    assert match_alarms(_leaks(("DMA01", "2026-03-04T00:00+08:00", 0.2)), alarm, WEEK_WINDOW)[0]["state"][0] == "closed"


def test_match_one_to_one_closest_first_and_unchecked_outside_the_window():
    alarms = _alarms((1, "DMA07", "2026-03-04T01:00+08:00", 3.0), (2, "DMA07", "2026-03-04T04:00+08:00", 3.0),
                     (3, "DMA02", "2026-02-20T00:00+08:00", 5.0),   # onset before the window: cannot be seen
                     (4, "DMA03", "2026-03-08T12:00+08:00", 2.0))   # onset in the last 24 h: cannot be seen yet
    leaks = _leaks(("DMA07", "2026-03-04T04:15+08:00", 3.1), ("DMA07", "2026-03-04T01:15+08:00", 3.1))
    matched, unseen = match_alarms(leaks, alarms, WEEK_WINDOW)
    assert matched["alarm_id"].tolist() == [2, 1] and matched["state"].tolist() == ["continuing"] * 2
    assert unseen.to_dict() == {3: "unchecked", 4: "unchecked"}


def test_closed_alarm_seen_again_stays_closed_or_reopens():
    closed = _alarms((1, "DMA07", "2026-03-04T01:18+08:00", 3.14, "closed"))
    smaller = match_alarms(_leaks(("DMA07", "2026-03-04T00:00+08:00", 1.95)), closed, WEEK_WINDOW)[0]
    back = match_alarms(_leaks(("DMA07", "2026-03-04T00:00+08:00", 3.0)), closed, WEEK_WINDOW)[0]
    assert smaller["state"].tolist() == ["stays closed"] and back["state"].tolist() == ["reopened"]
    # an open alarm is preferred to a closed one of the same leak
    both = pd.concat([closed, _alarms((2, "DMA07", "2026-03-04T01:18+08:00", 3.14))], ignore_index=True)
    assert match_alarms(_leaks(("DMA07", "2026-03-04T01:30+08:00", 3.0)), both, WEEK_WINDOW)[0]["alarm_id"].tolist() == [2]


def test_leaks_from_report_single_and_listed():
    cand = pd.DataFrame({"rank": [2, 1], "link_id": ["P2", "P1"], "score": [0.2, 0.6], "p_within_300m": [0.4, 0.9]})
    one = leaks_from_report({"detected": True, "onset": "2026-03-04T01:30:00+08:00", "leak_flow_lps": 3.05,
                             "leak_dma": "DMA07", "detection": {"t_night": 18.2}}, cand)
    assert one[["dma", "flow_lps", "t_stat", "top_link_id", "top_p"]].iloc[0].tolist() == ["DMA07", 3.05, 18.2, "P1", 0.6]
    assert one["onset"].iat[0] == _t("2026-03-04T01:30+08:00")
    assert leaks_from_report({"detected": False}).empty
    listed = leaks_from_report({"detected": True, "leaks": [
        {"leak_id": 1, "dma": "DMA07", "onset": "2026-03-04T01:30:00+08:00", "leak_flow_lps": 3.0},
        {"leak_id": 2, "dma": None, "onset": "2026-03-05T10:00:00+08:00", "leak_flow_lps": 1.0}]},
        cand.assign(leak_id=[2, 1]))
    assert listed["dma"].tolist() == ["DMA07", "network"] and listed["top_link_id"].tolist() == ["P1", "P2"]


def test_window_for_alarms_reaches_back_to_see_open_steps_within_the_lookback():
    night = Window(_t("2026-03-09T00:00+08:00"), _t("2026-03-16T00:00+08:00"))
    alarms = _alarms((1, "DMA07", "2026-03-04T01:18+08:00", 3.1))
    wide = window_for_alarms(night, alarms)
    assert wide.start == _t("2026-03-02T00:00+08:00") and wide.end == night.end and wide.covers(alarms["onset"][0])
    assert window_for_alarms(night, alarms, max_days=10).start == _t("2026-03-06T00:00+08:00")
    assert window_for_alarms(night, alarms.iloc[:0]) == night


# ------------------------------------------------------------------ the store's tables


def _report(onset: str | None, flow: float = 3.1) -> dict:
    if onset is None:
        return {"detected": False}
    return {"detected": True, "onset": onset, "leak_flow_lps": flow, "leak_dma": "DMA07", "detection": {"t_night": 12.0}}


def _record(store: Store, report: dict, window: Window = WEEK_WINDOW):
    cand = pd.DataFrame({"rank": [1, 2], "link_id": ["P00424", "P00927"], "score": [0.06, 0.05],
                         "p_within_300m": [0.42, 0.41], "leak_flow_lps": [3.0, 3.0], "zone": ["DMA07"] * 2})
    return record_run(store, window, report, cand if report.get("detected") else cand.iloc[:0],
                      started_at=pd.Timestamp.now(tz="UTC"), days=7, network="net.inp")


def test_record_runs_new_continuing_step_gone_and_history(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        first = _record(st, _report("2026-03-04T01:30:00+08:00", 3.27))
        second = _record(st, _report("2026-03-04T01:15:00+08:00", 3.05))
        third = _record(st, _report(None))  # the week covers the onset and no step is left
        fourth = _record(st, _report(None))  # nothing open any more
        smaller = _record(st, _report("2026-03-04T00:00:00+08:00", 1.9))  # a repaired leak's step: not new
        back = _record(st, _report("2026-03-04T02:00:00+08:00", 3.2))  # the repair did not hold
        table, history = alarm_table(st, include_closed=True), alarm_history(st)
        runs, cands = st.table("runs"), st.table("candidates")
    assert (first.run_id, second.run_id, third.run_id) == (1, 2, 3)
    assert first.states["state"].tolist() == ["new"] and second.states["state"].tolist() == ["continuing"]
    assert third.states["state"].tolist() == ["closed"] and fourth.states.empty
    assert smaller.states["state"].tolist() == ["stays closed"] and back.states["state"].tolist() == ["reopened"]
    assert back.states["alarm_id"].tolist() == [1]
    assert table[["alarm_id", "status", "first_seen_run", "last_seen_run", "runs_seen"]].iloc[0].tolist() == \
        [1, "open", 1, 6, 4]
    assert table["flow_lps"].iat[0] == pytest.approx(3.2) and pd.isna(table["closed_reason"].iat[0])
    assert history["state"].tolist() == ["new", "continuing", "closed", "stays closed", "reopened"]
    assert history["note"].iat[2] == "step gone (repair?)" and "did not hold" in history["note"].iat[4]
    assert history["t_stat"].iloc[:2].tolist() == [12.0, 12.0] and pd.isna(history["flow_lps"].iat[2])
    assert runs[["new_alarms", "continuing", "closed", "reopened", "leaks"]].values.tolist() == \
        [[1, 0, 0, 0, 1], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 1]]
    assert cands.groupby("run_id")["alarm_id"].agg(list).to_dict() == {r: [1, 1] for r in (1, 2, 5, 6)}
    assert json.loads(runs["report"].iat[0])["leak_dma"] == "DMA07"


def test_record_run_is_one_transaction(tmp_path, monkeypatch):
    import twin.alarms as alarms

    with Store(tmp_path / "s.duckdb") as st:
        _record(st, _report("2026-03-04T01:30:00+08:00"))
        monkeypatch.setattr(alarms, "_write_candidates", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            _record(st, _report("2026-03-04T01:30:00+08:00"))
        assert len(st.table("runs")) == 1 and len(st.table("alarm_history")) == 1
        assert known_alarms(st)["last_seen_run"].tolist() == [1]


def test_failed_run_is_recorded_and_leaves_the_alarms(tmp_path, twin_cli, capsys, monkeypatch):
    from twin.alarms import record_failed_run
    from twin.errors import ReadingsError

    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        _record(st, _report("2026-03-04T01:30:00+08:00"))
        run_id = record_failed_run(st, WEEK_WINDOW, ReadingsError("no customer meter has readings", fix="ingest"),
                                   started_at=pd.Timestamp.now(tz="UTC"), days=7, network="net.inp")
        runs = st.table("runs")
        assert run_id == 2 and runs["status"].iat[1].startswith("failed: no customer meter has readings")
        assert known_alarms(st)[["alarm_id", "last_seen_run"]].values.tolist() == [[1, 1]]
        assert len(st.table("alarm_history")) == 1
    monkeypatch.setenv("COLUMNS", "200")
    assert twin_cli("alarms", "--store", db) == 0
    assert "last run #2" in capsys.readouterr().out


def test_store_written_before_the_run_tables_gains_them(tmp_path, twin_cli, capsys):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(_SCHEMA)
    con.execute("INSERT INTO readings VALUES ('P1', TIMESTAMPTZ '2026-03-02 00:00:00+00', 31.2, 'pressure', NULL, 1)")
    con.close()
    assert twin_cli("alarms", "--store", db) == 2  # read-only: nothing recorded yet, said plainly
    assert "holds no runs yet" in capsys.readouterr().err
    with Store(db) as st:
        assert st.has_table("alarms") and st.has_table("runs") and st.reading_count() == 1
        assert known_alarms(st).empty
    assert twin_cli("alarms", "--store", db) == 0
    assert "no open alarm" in capsys.readouterr().out


def test_alarms_and_localise_refuse_bad_stores_and_mixed_modes(tmp_path, twin_cli, capsys):
    assert twin_cli("alarms", "--store", tmp_path / "missing.duckdb") == 2
    assert twin_cli("alarms", "--store", WEEK / "readings.parquet") == 2
    (tmp_path / "junk.duckdb").write_text("not a database")
    assert twin_cli("alarms", "--store", tmp_path / "junk.duckdb") == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "must be a DuckDB database file" in err and "cannot open the store" in err
    base = ["localise", "--network", NET, "--crs", "EPSG:4548", "--out", tmp_path / "o"]
    assert twin_cli(*base) == 2
    assert twin_cli(*base, "--meters", WEEK / "meters.csv") == 2
    assert twin_cli(*base, "--meters", WEEK / "meters.csv", "--readings", WEEK / "readings.parquet",
                    "--until", "2026-03-08") == 2
    err = capsys.readouterr().err
    assert "--store DB" in err and "--readings is missing" in err and "choose a window of the store" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ the nightly job on the bundled week


def _ingest(db, readings, meters=None, network=None):
    with Store(db) as st:
        st.ingest(meters, readings, network=network, now=NOW)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Two stores filled day by day: the leak continues in one, is repaired at the cut in the other.

    The repaired days come from the same week generated without the leak
    (same seed: the same customers, registers and loggers, without the leak).
    """
    from twin.cli import main
    from twin.network import read_network
    from twin.pipeline import localise_store
    from twin.synth import synth_readings

    tmp = tmp_path_factory.mktemp("nights")
    free = synth_readings(NET, crs="EPSG:4548", days=7, leak="none", seed=42, out_dir=tmp / "free",
                          readings_format="parquet")
    parts = {}
    for name, path in (("leak", WEEK / "readings.parquet"), ("free", free["readings"])):
        r = pd.read_parquet(path)
        ts = pd.to_datetime(r["timestamp"], utc=True, format="ISO8601")
        r[ts < CUT].to_parquet(tmp / f"{name}-1.parquet")
        r[ts >= CUT].to_parquet(tmp / f"{name}-2.parquet")
        parts[name] = (tmp / f"{name}-1.parquet", tmp / f"{name}-2.parquet")
    db, fixed = tmp / "yt.duckdb", tmp / "fixed.duckdb"
    net = read_network(NET, crs="EPSG:4548")
    _ingest(db, parts["leak"][0], WEEK / "meters.csv", net)
    opts = {"crs": "EPSG:4548", "write_map": False, "top": 0}
    out = {"first": localise_store(NET, store_path=db, out_dir=tmp / "n1", until="2026-03-05", days=4, **opts)}
    shutil.copy(db, fixed)  # the same first night; then the leak is repaired at the cut
    _ingest(db, parts["leak"][1])
    out["second_status"] = main(["localise", "--network", str(NET), "--crs", "EPSG:4548", "--store", str(db),
                                 "--out", str(tmp / "n2"), "--top", "1"])
    out["second"] = json.loads((tmp / "n2" / "report.json").read_text())
    _ingest(fixed, parts["free"][1])
    out["repaired"] = localise_store(NET, store_path=fixed, out_dir=tmp / "r2", **opts)
    return {"tmp": tmp, "db": db, "fixed": fixed, **out}


def test_first_night_opens_an_alarm_in_the_leak_district(nights):
    first = nights["first"]
    window = first["window"]  # the four days asked for, to the last reading stored
    assert window.start == _t("2026-03-02T00:00+08:00")
    assert _t("2026-03-05T23:00+08:00") < window.end <= _t("2026-03-06T00:00+08:00")
    states = first["alarms"].states
    assert states[["alarm_id", "state", "dma"]].values.tolist() == [[1, "new", "DMA07"]]
    truth = json.loads((WEEK / "truth.json").read_text())["leak"]
    assert abs(states["onset"].iat[0] - _t(truth["onset"])) < pd.Timedelta(hours=2)
    assert states["flow_lps"].iat[0] == pytest.approx(truth["flow_lps"], rel=0.15)
    assert first["report_dict"]["inputs"]["store"] == str(nights["db"]) and first["report_dict"]["run_id"] == 1


def test_next_night_reports_the_leak_as_continuing_with_the_usual_outputs(nights, twin_cli, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert nights["second_status"] == 0
    report, n2 = nights["second"], nights["tmp"] / "n2"
    assert report["run_id"] == 2 and report["inputs"]["window_days"] == 7
    assert [(a["alarm_id"], a["state"]) for a in report["alarms"]] == [(1, "continuing")]
    for f in ("candidates.csv", "report.json", "map.html", "plan/work_orders.csv"):
        assert (n2 / f).is_file(), f
    assert pd.read_csv(n2 / "plan" / "work_orders.csv")["link_id"].iat[0] == \
        pd.read_csv(n2 / "candidates.csv")["link_id"].iat[0]
    assert twin_cli("alarms", "--store", nights["db"]) == 0
    out = capsys.readouterr().out
    assert "#1" in out and "DMA07" in out and "open" in out and "continuing" in out and "new" in out
    assert twin_cli("alarms", "--store", nights["db"], "--alarm", 1) == 0
    top = pd.read_csv(n2 / "candidates.csv")["link_id"].iat[0]
    assert "candidates of run 2" in (out := capsys.readouterr().out) and top in out
    assert twin_cli("alarms", "--store", nights["db"], "--alarm", 7) == 2
    assert "no alarm #7" in capsys.readouterr().err
    with Store(nights["db"], read_only=True) as st:
        assert len(alarm_table(st, include_closed=True)) == 1  # reported once, not twice


def test_repaired_leak_is_closed(nights, twin_cli, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    repaired = nights["repaired"]["alarms"].states
    assert repaired[["alarm_id", "state"]].values.tolist() == [[1, "closed"]]
    assert "repair" in repaired["note"].iat[0]
    with Store(nights["fixed"], read_only=True) as st:
        assert alarm_table(st).empty and alarm_table(st, include_closed=True)["status"].tolist() == ["closed"]
        assert st.table("runs")[["new_alarms", "closed"]].values.tolist() == [[1, 0], [0, 1]]
    assert twin_cli("alarms", "--store", nights["fixed"]) == 0
    assert "no open alarm" in capsys.readouterr().out
    assert twin_cli("alarms", "--store", nights["fixed"], "--all") == 0
    out = capsys.readouterr().out
    # closed as a repair: the step either fell below the alarm's flow or is gone (detection decides which)
    assert "closed" in out and ("flow fell" in out or "step gone" in out)


def test_run_window_needs_readings(nights):
    from twin.pipeline import run_window

    with Store(nights["db"], read_only=True) as st:
        last = run_window(st)  # the local day of the latest reading, 7 days, within the stored readings
        assert last.start == _t("2026-03-02T00:00+08:00")
        assert _t("2026-03-08T23:00+08:00") < last.end <= _t("2026-03-09T00:00+08:00")
        assert run_window(st, until="2026-03-08", days=10) == last
        assert run_window(st, until="2026-03-04", days=1) == Window(_t("2026-03-04T00:00+08:00"),
                                                                    _t("2026-03-05T00:00+08:00"))
        with pytest.raises(InputError, match="no readings from 2026-04-0"):
            run_window(st, until="2026-04-05", days=2)
        with pytest.raises(InputError, match="not a date"):
            run_window(st, until="5 April")
    assert settings.RUN_DAYS == 7


def test_alarm_tables_print_ids_as_text():
    """A DMA, pipe or note holding rich markup is printed as it is, not interpreted (or crashing)."""
    from rich.console import Console

    from twin.cli.store import _alarms_table, _history_table

    t0 = pd.Timestamp("2026-03-05T03:00Z")
    alarms = pd.DataFrame([{"alarm_id": 1, "dma": "[bold]D1[/]", "status": "open", "onset": t0, "flow_lps": 1.5,
                            "first_seen_run": 1, "last_seen_run": 2, "runs_seen": 2, "top_link_id": "P[/]1",
                            "top_p": 0.4, "closed_at": pd.NaT}])
    history = pd.DataFrame([{"alarm_id": 1, "run_id": 2, "window_start": t0, "window_end": t0 + pd.Timedelta("7D"),
                             "state": "continuing", "onset": t0, "flow_lps": 1.5, "t_stat": 9.0,
                             "top_link_id": "P[/]1", "top_p_within_300m": 0.4, "note": "[red]x[/red]"}])
    con = Console(width=250, record=True)
    con.print(_alarms_table(alarms))
    con.print(_history_table(history))
    out = con.export_text()
    assert "[bold]D1[/]" in out and "P[/]1" in out and "[red]x[/red]" in out
