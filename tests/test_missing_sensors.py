"""Missing sensors are not results (issue 12, item 7).

Without a flow meter on the system input a leak cannot be detected: exit 2,
never "no leak detected". Without pressure loggers the ranking is flagged
degraded and no pipe claims a probability the flows cannot give.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import DATA, NETWORKS

WEEK = DATA / "yingtan-small-week"
INP = NETWORKS / "yingtan-small.inp"


@pytest.fixture(scope="module")
def registry():
    return pd.read_csv(WEEK / "meters.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def readings():
    return pd.read_parquet(WEEK / "readings.parquet")


def _without(kind: str, registry: pd.DataFrame, readings: pd.DataFrame, folder) -> tuple:
    """The bundled week without the meters of one kind (registry and readings)."""
    keep = registry[registry["kind"] != kind]
    mpath, rpath = folder / "meters.csv", folder / "readings.parquet"
    keep.to_csv(mpath, index=False)
    readings[readings["meter_id"].isin(keep["meter_id"])].to_parquet(rpath, index=False)
    return mpath, rpath


def test_without_flow_meters_the_job_refuses_instead_of_saying_no_leak(registry, readings, tmp_path, twin_cli,
                                                                       capsys):
    mpath, rpath = _without("flow", registry, readings, tmp_path)
    rc = twin_cli("localise", "--network", INP, "--crs", "EPSG:4548", "--meters", mpath, "--readings", rpath,
                  "--out", tmp_path / "out", "--no-map")
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "no leak detected" not in out
    assert "system input" in err and "PLANT1-CW" in err and "Fix:" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "candidates.csv").exists()


def test_without_pressure_loggers_the_result_is_degraded_and_scores_flat_in_the_dma(registry, readings, tmp_path,
                                                                                   twin_cli, capsys):
    mpath, rpath = _without("pressure", registry, readings, tmp_path)
    out_dir = tmp_path / "out"
    rc = twin_cli("localise", "--network", INP, "--crs", "EPSG:4548", "--meters", mpath, "--readings", rpath,
                  "--out", out_dir, "--no-map")
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "leak detected" in out  # the flows still detect it
    assert "DEGRADED" in err and "not possible" in err and "pressure logger" in err
    report = json.loads((out_dir / "report.json").read_text())
    assert report["degraded"] is True
    assert any("localisation within a DMA is not possible" in w for w in report["warnings"])
    cand = pd.read_csv(out_dir / "candidates.csv", dtype={"link_id": str, "zone": str})
    zone = cand.loc[cand["in_candidate_zone"], "zone"]
    assert zone.nunique() == 1 and len(zone) == (cand["zone"] == zone.iat[0]).sum()  # the whole DMA
    assert report["candidate_zone"]["pipes"] == len(zone) > 10
    assert cand["score"].max() < 0.1  # no pipe claims certainty on no pressure evidence
    truth = json.loads((WEEK / "truth.json").read_text())["leak"]["link_id"]
    assert truth in set(cand.loc[cand["in_candidate_zone"], "link_id"])
    # within the DMA, scores follow length: the flows say nothing about the pipes of one DMA
    inz = cand[cand["in_candidate_zone"]]
    ratio = inz["score"] / inz["length_m"]
    assert ratio.max() == pytest.approx(ratio.min(), rel=1e-3)
