"""`twin demo`: the main job end to end on the bundled Yingtan week."""

from __future__ import annotations

import json

import pandas as pd

from conftest import DATA


def test_demo_writes_every_output_and_finds_the_leak_district(tmp_path, twin_cli, capsys):
    out = tmp_path / "demo"
    assert twin_cli("demo", "--out", out, "--basemap", "none", "--top", "3") == 0
    printed = capsys.readouterr().out
    assert "leak detected" in printed
    for name in ("candidates.csv", "report.json", "balance.csv", "balance.parquet", "map.html",
                 "plan/work_orders.csv"):
        assert (out / name).exists(), name
    truth = json.loads((DATA / "yingtan-small-week" / "truth.json").read_text())["leak"]
    report = json.loads((out / "report.json").read_text())
    assert report["detected"] is True
    assert abs((pd.Timestamp(report["onset"]) - pd.Timestamp(truth["onset"])).total_seconds()) <= 3600
    # the crew is sent to the right district, and the balance flags it
    candidates = pd.read_csv(out / "candidates.csv", dtype={"link_id": str, "zone": str})
    balance = pd.read_csv(out / "balance.csv", keep_default_na=False)
    flagged = set(balance.loc[balance["flag"].str.contains("jump"), "dma"])
    assert candidates["zone"].iat[0] in flagged
    orders = pd.read_csv(out / "plan" / "work_orders.csv")
    assert len(orders) == 3
    assert "http" not in "".join(
        line for line in (out / "map.html").read_text().splitlines() if "<script src" in line
    )
