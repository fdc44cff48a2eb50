"""The parsed-network cache (twin.cache): same network from the cache, rebuilt when stale or broken."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.cache import cache_dir, network_key
from twin.dma import assign_dmas
from twin.network import read_network

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "networks" / "yingtan-small.inp"
CRS = "EPSG:4548"


def _entries(folder: Path) -> list[Path]:
    return sorted((folder / "networks").glob("*.pickle")) if (folder / "networks").exists() else []


def _assert_same(a, b) -> None:
    """The networks a user would see as the same: ids, coordinates, CRS, tables, DMAs, model."""
    assert a.crs == b.crs
    assert a.source == b.source
    pd.testing.assert_frame_equal(a.nodes.drop(columns="geometry"), b.nodes.drop(columns="geometry"))
    pd.testing.assert_frame_equal(a.links.drop(columns="geometry"), b.links.drop(columns="geometry"))
    assert a.nodes.geometry.geom_equals_exact(b.nodes.geometry, tolerance=0).all()
    assert a.links.geometry.geom_equals_exact(b.links.geometry, tolerance=0).all()
    assert list(a.wn.node_name_list) == list(b.wn.node_name_list)
    assert list(a.wn.link_name_list) == list(b.wn.link_name_list)
    xy_a = np.array([a.wn.get_node(n).coordinates for n in a.wn.node_name_list])
    xy_b = np.array([b.wn.get_node(n).coordinates for n in b.wn.node_name_list])
    np.testing.assert_array_equal(xy_a, xy_b)
    pd.testing.assert_series_equal(assign_dmas(a), assign_dmas(b))
    assert a.wn.options.hydraulic.inpfile_units == b.wn.options.hydraulic.inpfile_units
    assert list(a.wn.pattern_name_list) == list(b.wn.pattern_name_list)


def test_a_cached_network_is_the_network_read_from_the_file(cache_folder):
    first = read_network(SMALL, crs=CRS)
    assert len(_entries(cache_folder)) == 1
    again = read_network(SMALL, crs=CRS)
    assert again is not first
    _assert_same(first, again)
    os.environ["TWIN_NO_CACHE"] = "1"
    try:
        uncached = read_network(SMALL, crs=CRS)
    finally:
        del os.environ["TWIN_NO_CACHE"]
    _assert_same(uncached, again)


def test_a_transformed_network_is_cached_per_target_crs(cache_folder):
    held_4547 = read_network(SMALL, crs=CRS, to_crs="EPSG:4547")
    held_4548 = read_network(SMALL, crs=CRS)
    assert len(_entries(cache_folder)) == 2
    again = read_network(SMALL, crs=CRS, to_crs="EPSG:4547")
    _assert_same(held_4547, again)
    assert again.crs.to_epsg() == 4547 and held_4548.crs.to_epsg() == 4548
    # 3-degree zones 117 E and 114 E: the same pipes, other coordinates
    assert not np.allclose(again.nodes.geometry.x.to_numpy(), held_4548.nodes.geometry.x.to_numpy())


def test_networks_from_the_cache_are_independent(cache_folder):
    read_network(SMALL, crs=CRS)
    a = read_network(SMALL, crs=CRS)
    b = read_network(SMALL, crs=CRS)
    junction = a.wn.junction_name_list[0]
    a.wn.get_node(junction).elevation += 100.0
    assert b.wn.get_node(junction).elevation == read_network(SMALL, crs=CRS).wn.get_node(junction).elevation


def test_a_corrupt_entry_is_rebuilt_silently(cache_folder, caplog):
    expected = read_network(SMALL, crs=CRS)
    (entry,) = _entries(cache_folder)
    entry.write_bytes(b"not a pickle at all")
    with caplog.at_level(logging.DEBUG, logger="twin.cache"):
        net = read_network(SMALL, crs=CRS)
    _assert_same(expected, net)
    assert "unreadable" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    _assert_same(expected, read_network(SMALL, crs=CRS))
    _assert_same(expected, read_network(SMALL, crs=CRS))  # the replaced entry loads


def test_a_changed_file_is_read_again(tmp_path, cache_folder):
    inp = tmp_path / "net.inp"
    inp.write_bytes(SMALL.read_bytes())
    before = read_network(inp, crs=CRS)
    junction = before.wn.junction_name_list[0]
    text = inp.read_text()
    old = next(ln for ln in text.splitlines() if ln.split()[:1] == [junction])
    fields = old.split()
    fields[1] = str(float(fields[1]) + 7.0)
    inp.write_text(text.replace(old, " ".join(fields)))
    after = read_network(inp, crs=CRS)
    assert after.wn.get_node(junction).elevation == pytest.approx(before.wn.get_node(junction).elevation + 7.0)
    assert len(_entries(cache_folder)) == 2
    # the same bytes under another name hit the entry, and the network names the path read
    copy = tmp_path / "copy.inp"
    copy.write_bytes(inp.read_bytes())
    assert network_key(copy, crs=CRS, to_crs=None) == network_key(inp, crs=CRS, to_crs=None)
    assert read_network(copy, crs=CRS).source == str(copy)
    assert len(_entries(cache_folder)) == 2


def test_an_unwritable_cache_folder_is_ignored(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TWIN_CACHE_DIR", str(blocker / "twin"))
    with caplog.at_level(logging.INFO, logger="twin.cache"):
        net = read_network(SMALL, crs=CRS)
        again = read_network(SMALL, crs=CRS)
    _assert_same(net, again)
    assert "without the cache" in caplog.text


def test_no_cache_writes_nothing(cache_folder, monkeypatch):
    monkeypatch.setenv("TWIN_NO_CACHE", "1")
    read_network(SMALL, crs=CRS)
    assert _entries(cache_folder) == []


def test_the_cache_lives_in_the_user_cache_folder_never_beside_the_files(tmp_path, monkeypatch):
    monkeypatch.delenv("TWIN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "twin"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "twin"
    work = tmp_path / "work"
    work.mkdir()
    inp = work / "net.inp"
    inp.write_bytes(SMALL.read_bytes())
    monkeypatch.chdir(work)
    read_network("net.inp", crs=CRS)
    assert sorted(p.name for p in work.iterdir()) == ["net.inp"]
    assert len(_entries(tmp_path / "home" / ".cache" / "twin")) == 1


def test_errors_are_not_cached(tmp_path, cache_folder):
    from twin.errors import CRSError

    with pytest.raises(CRSError):
        read_network(SMALL)
    assert _entries(cache_folder) == []
