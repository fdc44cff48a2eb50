"""`twin demo`: the main job end to end on the bundled Yingtan week."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import DATA, NETWORKS
from twin.graph import pipe_distances
from twin.network import read_network


def test_demo_writes_every_output_and_finds_the_leak_district(tmp_path, twin_cli, capsys):
    out = tmp_path / "demo"
    assert twin_cli("demo", "--out", out, "--basemap", "none", "--top", "3") == 0
    printed = capsys.readouterr().out
    assert "leak detected" in printed
    for name in ("candidates.csv", "report.json", "balance.csv", "balance.parquet", "balance_zones.csv",
                 "balance_zones.json", "map.html", "plan/work_orders.csv"):
        assert (out / name).exists(), name
    # the zones' summary explains the transmission main's figure
    zones = pd.read_csv(out / "balance_zones.csv", keep_default_na=False)
    assert set(zones["dma"]) == set(pd.read_csv(out / "balance.csv", keep_default_na=False)["dma"])
    truth = json.loads((DATA / "yingtan-small-week" / "truth.json").read_text())["leak"]
    report = json.loads((out / "report.json").read_text())
    assert report["detected"] is True
    assert abs((pd.Timestamp(report["onset"]) - pd.Timestamp(truth["onset"])).total_seconds()) <= 3600
    # the crew is sent to the right district, and the balance flags it
    candidates = pd.read_csv(out / "candidates.csv", dtype={"link_id": str, "zone": str})
    balance = pd.read_csv(out / "balance.csv", keep_default_na=False)
    flagged = set(balance.loc[balance["flag"].str.contains("jump"), "dma"])
    assert candidates["zone"].iat[0] in flagged
    # the top candidate is within 300 m of the leak, or its score says the job is unsure
    dist = pipe_distances(read_network(NETWORKS / "yingtan-small.inp", crs="EPSG:4548"), truth["link_id"],
                          truth["position"], to="middle")
    if dist[candidates["link_id"].iat[0]] > 300.0:
        assert candidates["p_within_300m"].iat[0] < 0.5 and candidates["score"].iat[0] < 0.2
    orders = pd.read_csv(out / "plan" / "work_orders.csv", dtype={"link_id": str})
    assert len(orders) == 3
    # crews see how likely the leak is within their 300 m search, on the order and its sheet
    near = candidates.set_index("link_id")["p_within_300m"]
    assert orders["p_within_300m"].tolist() == [pytest.approx(near[lk], abs=1e-4) for lk in orders["link_id"]]
    sheet = next((out / "plan" / "sheets").glob("*.html")).read_text()
    assert "Chance the leak is within 300 m" in sheet
    assert "http" not in "".join(
        line for line in (out / "map.html").read_text().splitlines() if "<script src" in line
    )


def test_run_demo_returns_what_it_wrote_and_clears_an_earlier_plan(tmp_path):
    from twin.pipeline import run_demo

    root = DATA.parent
    week = DATA / "yingtan-small-week"
    out = tmp_path / "demo"
    (out / "plan" / "sheets").mkdir(parents=True)
    (out / "plan" / "sheets" / "WO-OLD.html").write_text("stale")
    done = run_demo(root / "networks" / "yingtan-small.inp", crs="EPSG:4548", meters_path=week / "meters.csv",
                    readings_path=week / "readings.parquet", out_dir=out, truth_path=week / "truth.json",
                    gis_layers=root / "networks" / "yingtan-small.gpkg", top=2, basemap="none")
    assert set(done.paths) == {"candidates", "report", "balance", "plan", "map"}
    assert all(p.exists() for p in done.paths.values())
    assert not (out / "plan" / "sheets" / "WO-OLD.html").exists()
    assert len(done.orders) == 2 and done.report["detected"] is True
    truth = json.loads((week / "truth.json").read_text())
    assert done.truth == truth
    ranked = done.candidates["link_id"].tolist()
    expected = ranked.index(truth["leak"]["link_id"]) + 1 if truth["leak"]["link_id"] in ranked else None
    assert (done.hit["rank"] == expected) if expected else done.hit["rank"] != done.hit["rank"]
