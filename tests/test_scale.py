"""Scale-out on Dask (twin.scale): the harness's weeks and a backfill's nights on a 2-worker LocalCluster.

One local cluster serves the module (it takes seconds to start). Each test
checks that the work done as Dask tasks gives what the same work gives in
one process: the same rows in the same order, the same alarms.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from twin.errors import InputError

from conftest import DATA, NETWORKS

WEEK = DATA / "yingtan-small-week"
NET = NETWORKS / "yingtan-small.inp"
NIGHTS = ["2026-03-05", "2026-03-06", "2026-03-07"]


@pytest.fixture(scope="module")
def client():
    from twin.scale import dask_client

    with dask_client(workers=2) as cl:
        yield cl


def _without_timings(df: pd.DataFrame) -> pd.DataFrame:
    return df[[c for c in df.columns if not c.endswith("_s")]]


def test_local_cluster_has_two_single_threaded_workers_spilling_in_a_temporary_folder(client):
    import tempfile
    from pathlib import Path

    workers = client.scheduler_info()["workers"].values()
    assert len(workers) == 2 and all(w["nthreads"] == 1 for w in workers)
    for w in workers:  # never the working directory: a twin-dask-* folder removed when the cluster closes
        where = Path(w["local_directory"])
        assert where.relative_to(tempfile.gettempdir()).parts[0].startswith("twin-dask-")


def test_a_failed_task_is_its_own_result(client, tmp_path):
    from twin.bench import week_truth
    from twin.scale import map_tasks

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "truth.json").write_text("{not json")
    out = map_tasks(client, week_truth, [WEEK, tmp_path / "bad"], on_error=lambda week, exc: type(exc).__name__)
    assert out[0]["link_id"] == pd.read_json(WEEK / "truth.json", typ="series")["leak"]["link_id"]
    assert out[1] == "InputError"


def _no_run_times(summary: dict) -> dict:
    return {k: _no_run_times(v) if isinstance(v, dict) else v for k, v in summary.items() if not k.endswith("run_s")}


def test_harness_scenarios_on_two_workers_give_the_serial_rows(client):
    from twin.bench import run_bench

    opts = {"crs": "EPSG:4548", "scenarios": 1, "leak_free": 1, "seed": 1, "days": 4, "classic": False}
    serial = run_bench(NET, **opts)
    spread = run_bench(NET, client=client, **opts)
    assert spread.scenarios["seed"].tolist() == [1, 10001] and spread.scenarios["detected"].iat[0]
    pd.testing.assert_frame_equal(_without_timings(spread.scenarios), _without_timings(serial.scenarios))
    assert json.dumps(_no_run_times(spread.summary)) == json.dumps(_no_run_times(serial.summary))


def _store(path):
    from twin.network import read_network
    from twin.store import Store

    with Store(path) as st:
        st.ingest(WEEK / "meters.csv", WEEK / "readings.parquet", network=read_network(NET, crs="EPSG:4548"),
                  now="2026-03-20T00:00:00+08:00")
    return path


def _alarms(db):
    from twin.alarms import alarm_history, alarm_table
    from twin.store import Store

    with Store(db, read_only=True) as st:
        table = alarm_table(st, include_closed=True)[["alarm_id", "dma", "onset", "flow_lps", "status", "runs_seen"]]
        history = alarm_history(st)[["alarm_id", "run_id", "state"]]
        runs = st.table("runs")[["run_id", "window_start", "window_end", "status", "leaks"]]
    return table, history, runs


def test_backfill_on_two_workers_records_the_nights_run_one_by_one(client, tmp_path):
    from twin.pipeline import localise_backfill, localise_store

    db = _store(tmp_path / "backfill.duckdb")
    one_by_one = shutil.copy(db, tmp_path / "nightly.duckdb")
    opts = {"crs": "EPSG:4548", "write_map": False, "top": 0, "days": 4}
    rows = localise_backfill(NET, store_path=db, out_dir=tmp_path / "bf", start=NIGHTS[0], until=NIGHTS[-1],
                             client=client, **opts)
    for night in NIGHTS:
        localise_store(NET, store_path=one_by_one, out_dir=tmp_path / "nightly" / night, until=night, **opts)
    assert [str(r["day"]) for r in rows] == NIGHTS and [r["run_id"] for r in rows] == [1, 2, 3]
    assert all((tmp_path / "bf" / n / "report.json").is_file() for n in NIGHTS)
    got, want = _alarms(db), _alarms(one_by_one)
    for g, w in zip(got, want):
        pd.testing.assert_frame_equal(g, w)
    table, history, _ = got
    assert table["dma"].tolist() == ["DMA07"]  # the bundled week's leak, reported once
    assert history["state"].tolist() == ["new", "continuing", "continuing"]
    assert rows[0]["rounds"] == 2  # the new alarm reached back in the next nights' windows: planned again


def test_backfill_refuses_a_bad_period_and_a_bad_scheduler_in_one_line(tmp_path, twin_cli, capsys, monkeypatch):
    monkeypatch.setattr("twin.scale.CONNECT_TIMEOUT_S", 1)
    db = _store(tmp_path / "yt.duckdb")
    base = ["localise", "--network", NET, "--crs", "EPSG:4548", "--store", db, "--out", tmp_path / "out"]
    assert twin_cli(*base, "--from", "2026-03-07", "--until", "2026-03-05") == 2
    assert "--from 2026-03-07 is after --until 2026-03-05" in capsys.readouterr().err
    assert twin_cli(*base, "--from", "2026-03-40") == 2
    assert "is not a date" in capsys.readouterr().err
    assert twin_cli(*base, "--from", "2026-03-05", "--scheduler", "tcp://127.0.0.1:1") == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 or "Fix:" in err


def test_bench_cli_refuses_a_bad_scheduler(tmp_path, twin_cli, capsys, monkeypatch):
    monkeypatch.setattr("twin.scale.CONNECT_TIMEOUT_S", 1)
    with pytest.raises(InputError, match="--workers"):
        from twin.scale import dask_client

        with dask_client(workers=0):
            pass
    shutil.copytree(WEEK, tmp_path / "weeks" / "w1")
    shutil.copy(NET, tmp_path / "weeks" / "w1" / "network.inp")
    assert twin_cli("bench", "localise", "--weeks", tmp_path / "weeks", "--scheduler", "tcp://127.0.0.1:1") == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
