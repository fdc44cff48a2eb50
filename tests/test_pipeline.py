"""`twin localise` end to end on the data contract's files, and its errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import SHARED_NETWORKS

LTOWN = SHARED_NETWORKS / "L-TOWN.inp"
pytestmark = pytest.mark.skipif(not LTOWN.exists(), reason="L-Town not found")


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    from twin.synth import synth_readings

    out = tmp_path_factory.mktemp("week")
    return synth_readings(LTOWN, crs="EPSG:32650", days=5, leak="p170", leak_flow_lps=3.0, seed=21, out_dir=out)


def test_cli_writes_candidates_report_and_map(week, tmp_path, twin_cli, capsys):
    out = tmp_path / "out"
    rc = twin_cli("localise", "--network", LTOWN, "--crs", "EPSG:32650", "--meters", week["meters"],
                  "--readings", week["readings"], "--out", out)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "leak detected" in printed
    cand = pd.read_csv(out / "candidates.csv", dtype={"link_id": str})
    assert {"rank", "link_id", "score", "leak_flow_lps", "lon", "lat", "zone", "in_candidate_zone"} <= set(cand.columns)
    assert cand["rank"].tolist() == list(range(1, len(cand) + 1))
    report = json.loads((out / "report.json").read_text())
    truth = json.loads(week["truth"].read_text())["leak"]
    assert report["detected"] is True
    assert report["leak_flow_lps"] == pytest.approx(truth["flow_lps"], rel=0.25)
    assert abs((pd.Timestamp(report["onset"]) - pd.Timestamp(truth["onset"])).total_seconds()) <= 3600
    # data used and rejected, and the time each stage took
    assert report["ingest"]["adds_up"] is True
    assert report["ingest"]["quarantined_total"] > 0  # synthetic data carries bad rows, kept with a reason
    assert report["data"]["pressure_loggers_used"] > 20
    for key in ("network_s", "ingest_s", "localise_s", "snapshots_s", "map_s", "total_s"):
        assert report["timings_s"][key] >= 0
    html = (out / "map.html").read_text()
    assert "leaflet" in html.lower() and cand["link_id"].iat[0] in html
    # a crew navigates to the written lon/lat: they lie on the candidate pipe (within a metre)
    from twin.crs import transform_xy
    from twin.network import read_network

    net = read_network(LTOWN, crs="EPSG:32650")
    top = cand.head(5)
    x, y = transform_xy(top["lon"].to_numpy(), top["lat"].to_numpy(), from_crs="EPSG:4326", to_crs=net.crs)
    import shapely

    off = shapely.distance(net.links.loc[top["link_id"]].geometry.values, shapely.points(x, y))
    assert (off < 1.0).all(), off


def test_cli_missing_readings_exits_two(tmp_path, twin_cli, capsys, week):
    rc = twin_cli("localise", "--network", LTOWN, "--crs", "EPSG:32650", "--meters", week["meters"],
                  "--readings", tmp_path / "nope.csv", "--out", tmp_path / "o")
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "Traceback" not in err


def test_meters_of_another_network_exit_two(tmp_path, twin_cli, capsys, week):
    meters = pd.read_csv(week["meters"], dtype=str)
    meters["lon"] = (meters["lon"].astype(float) + 0.5).map("{:.7f}".format)  # 50 km away
    bad = tmp_path / "meters.csv"
    meters.to_csv(bad, index=False)
    rc = twin_cli("localise", "--network", LTOWN, "--crs", "EPSG:32650", "--meters", bad,
                  "--readings", week["readings"], "--out", tmp_path / "o")
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err.lower()


def test_readings_of_other_meters_exit_two(tmp_path, twin_cli, capsys, week):
    readings = pd.read_csv(week["readings"], dtype=str, nrows=5000)
    readings["meter_id"] = "X" + readings["meter_id"]
    bad = tmp_path / "readings.csv"
    readings.to_csv(bad, index=False)
    rc = twin_cli("localise", "--network", LTOWN, "--crs", "EPSG:32650", "--meters", week["meters"],
                  "--readings", bad, "--out", tmp_path / "o")
    assert rc == 2
    assert "Traceback" not in capsys.readouterr().err
