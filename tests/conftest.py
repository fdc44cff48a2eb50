"""Shared fixtures: bundled networks, the shared benchmark networks, the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ROOT / "networks"
DATA = ROOT / "data"
SHARED_NETWORKS = Path(os.environ.get("TWIN_SHARED", ROOT.parent / "shared")) / "networks"


def wntr_network(name: str) -> Path:
    """Path of a network shipped with WNTR (Net1, Net3, Net6, ky4, ky10...)."""
    import wntr

    return Path(wntr.__file__).parent / "library" / "networks" / f"{name}.inp"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    """The network cache of the whole run in a temporary folder: tests never touch the user's ~/.cache.

    Session-scoped so that module-scoped fixtures reading networks use it too.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWIN_CACHE_DIR", str(tmp_path_factory.mktemp("twin-cache")))
        mp.delenv("TWIN_NO_CACHE", raising=False)
        yield


@pytest.fixture
def cache_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty network cache folder for this test (``TWIN_CACHE_DIR``)."""
    folder = tmp_path_factory.mktemp("twin-cache")
    monkeypatch.setenv("TWIN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def ltown_inp() -> Path:
    """L-Town (BattLeDIM 2020, CC BY 4.0), from ../shared/networks."""
    path = SHARED_NETWORKS / "L-TOWN.inp"
    if not path.exists():
        pytest.skip(f"L-Town not found at {path}; set TWIN_SHARED to the shared folder")
    return path


@pytest.fixture
def twin_cli():
    """Run the ``twin`` CLI in-process; returns the exit status. Read output with capsys."""
    from twin.cli import main

    return lambda *args: main([str(a) for a in args])
