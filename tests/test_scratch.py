"""EPANET's scratch files stay out of the working directory."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import wntr

from conftest import wntr_network
from twin.scratch import epanet_scratch


def _watch(directory: Path, seen: set[str], stop: threading.Event) -> None:
    while not stop.is_set():
        seen.update(os.listdir(directory))


def test_epanet_scratch_file_is_not_written_to_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(work, seen, stop))
    watcher.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, epanet_scratch(tmp):
            results = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "run"))
    finally:
        stop.set()
        watcher.join()
    assert len(results.node["pressure"]) > 1
    assert seen == set(), f"EPANET wrote {sorted(seen)} into the working directory"
    assert Path.cwd() == work


def test_working_directory_is_restored_after_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        with epanet_scratch():
            raise RuntimeError("solver failed")
    except RuntimeError:
        pass
    assert Path.cwd() == tmp_path


def test_epanet_sessions_write_no_scratch_file_to_the_working_directory(tmp_path, monkeypatch):
    from twin.hydraulics import EpanetSession

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(work, seen, stop))
    watcher.start()
    try:
        results = EpanetSession.period(wn).run_period()
        with EpanetSession.closures(wn, time_s=3600) as closure:
            closure.solve()
        with EpanetSession.snapshots(wn) as snapshot:
            snapshot.solve()
    finally:
        stop.set()
        watcher.join()
    assert len(results.node["pressure"]) > 1
    assert seen == set(), f"EPANET wrote {sorted(seen)} into the working directory"
    assert Path.cwd() == work
