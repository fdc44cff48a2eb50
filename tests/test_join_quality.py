"""An implausible meter join is a warning naming the cause, or an error (issue 12, item 8).

Hostile inputs from the bundled week: the customer meters' lon/lat shifted
into GCJ-02 (as Amap gives them) but read as WGS84; the network read with
EPSG:32650 instead of EPSG:4548; meters a couple of kilometres off.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from tests.conftest import DATA, NETWORKS
from twin.crs import wgs84_to_gcj02
from twin.errors import MeterError
from twin.meters import join_meters, join_warnings, meters_from_frame
from twin.network import read_network

WEEK = DATA / "yingtan-small-week"
INP = NETWORKS / "yingtan-small.inp"


@pytest.fixture(scope="module")
def net():
    return read_network(INP, crs="EPSG:4548")


@pytest.fixture(scope="module")
def registry():
    return pd.read_csv(WEEK / "meters.csv", dtype={"node_id": str, "link_id": str})


@pytest.fixture(scope="module")
def gcj(registry):
    reg = registry.copy()
    reg["lon"], reg["lat"] = wgs84_to_gcj02(reg["lon"].to_numpy(), reg["lat"].to_numpy())
    return reg


def test_a_good_join_gives_no_warning(net, registry, caplog):
    with caplog.at_level(logging.WARNING, logger="twin.meters"):
        join = join_meters(meters_from_frame(registry), net)
    assert join.attrs["warnings"] == [] and not caplog.records


def test_gcj02_read_as_wgs84_is_a_warning_naming_the_datum_and_the_fix(net, gcj, caplog):
    with caplog.at_level(logging.WARNING, logger="twin.meters"):
        join = join_meters(meters_from_frame(gcj), net)
    (warning,) = join.attrs["warnings"]
    assert "GCJ-02" in warning and "--meters-crs GCJ-02" in warning and "3,152 of 10,000" in warning
    assert any(r.levelno == logging.WARNING and "GCJ-02" in r.getMessage() for r in caplog.records)


def test_a_network_read_in_the_wrong_crs_is_a_warning_naming_the_crs(registry):
    wrong = read_network(INP, crs="EPSG:32650")
    join = join_meters(meters_from_frame(registry), wrong)
    (warning,) = join.attrs["warnings"]
    assert "likely cause: the network's CRS may be wrong" in warning and "--crs" in warning and "EPSG:32650" in warning


def test_most_meters_unmatched_is_an_error(net, registry):
    far = registry.copy()
    far["lon"] = far["lon"] + 0.02  # 2 km east
    with pytest.raises(MeterError, match="do not fit") as exc:
        join_meters(meters_from_frame(far), net)
    assert exc.value.fix and exc.value.data["unmatched"] > 5000


def test_too_few_meters_get_no_verdict(net, gcj):
    join = join_meters(meters_from_frame(gcj.head(25).iloc[20:]), net)
    assert join_warnings(join, net) == []


def test_cli_ingest_shows_the_join_warning(gcj, tmp_path, twin_cli, capsys):
    path = tmp_path / "meters.csv"
    gcj.to_csv(path, index=False)
    rc = twin_cli("ingest", "--meters", path, "--store", tmp_path / "s.duckdb", "--network", INP,
                  "--crs", "EPSG:4548")
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "implausible" in out + err and "GCJ-02" in out + err
