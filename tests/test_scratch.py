"""EPANET's scratch files stay out of the working directory."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import wntr

from conftest import wntr_network
from twin.scratch import epanet_scratch


@contextmanager
def _watching(directory: Path) -> Iterator[set[str]]:
    """Names that appear in ``directory`` while the block runs (a watcher thread lists it)."""
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(os.listdir(directory))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()


def test_epanet_scratch_file_is_not_written_to_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    wn = wntr.network.WaterNetworkModel(str(wntr_network("Net3")))
    with _watching(work) as seen:
        with tempfile.TemporaryDirectory() as tmp, epanet_scratch(tmp):
            results = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=str(Path(tmp) / "run"))
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
    with _watching(work) as seen:
        results = EpanetSession.period(wn).run_period()
        with EpanetSession.closures(wn, time_s=3600) as closure:
            closure.solve()
        with EpanetSession.snapshots(wn) as snapshot:
            snapshot.solve()
    assert len(results.node["pressure"]) > 1
    assert seen == set(), f"EPANET wrote {sorted(seen)} into the working directory"
    assert Path.cwd() == work
