"""The command line's own behaviour: help, usage errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def run_twin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from twin.cli import main; sys.exit(main(sys.argv[1:]))", *args],
        capture_output=True,
        text=True,
    )


def test_help_lists_commands_and_exits_zero():
    result = run_twin("--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_unknown_command_exits_two_without_traceback():
    result = run_twin("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "No such command" in result.stderr


def test_error_text_in_brackets_is_printed_verbatim(tmp_path, monkeypatch, capsys):
    # Messages quote .inp fields like [status]; rich must not take them for markup.
    import twin.network
    from twin.cli import main
    from twin.errors import NetworkError

    def broken(*args, **kwargs):
        raise NetworkError("line 7: the [status] field is not OPEN or CLOSED", path="net.inp")

    monkeypatch.setattr(twin.network, "read_network", broken)
    status = main(["network", "info", str(tmp_path / "net.inp"), "--crs", "EPSG:32650"])
    err = capsys.readouterr().err
    assert status == 2
    assert "the [status] field" in " ".join(err.split())


# --------------------------------------------------------------------------- network reading options

#: Commands that read a network file, as typed after ``twin``.
NETWORK_COMMANDS = [("network", "info"), ("network", "check"), ("network", "convert"), ("ingest",),
                    ("balance",), ("meters", "join"), ("plan",), ("map",), ("localise",), ("demo",)]
GIS_FLAGS = {"--column", "--snap-tolerance", "--pipes-layer", "--allow-disconnected",
             "--default-diameter-mm", "--no-split-tees"}


def _command(path: tuple[str, ...]):
    import typer

    from twin.cli import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


@pytest.mark.parametrize("path", NETWORK_COMMANDS, ids=" ".join)
def test_every_command_that_reads_a_network_takes_the_gis_options(path):
    flags = {opt for p in _command(path).params for opt in p.opts}
    assert GIS_FLAGS <= flags, sorted(GIS_FLAGS - flags)


ROOT = Path(__file__).resolve().parents[1]
WEEK = ROOT / "data" / "yingtan-small-week"
YINGTAN = ROOT / "networks" / "yingtan-small.inp"


@pytest.fixture(scope="module")
def utility_gpkg(tmp_path_factory):
    """The bundled Yingtan network as a utility keeps it: layer ``mains``, DN in mm, DMA column renamed."""
    if not (WEEK / "readings.parquet").exists() or not YINGTAN.exists():
        pytest.skip("bundled Yingtan week not found")
    import geopandas as gpd

    from twin.network import read_network, write_network

    tmp = tmp_path_factory.mktemp("gis")
    write_network(read_network(YINGTAN, crs="EPSG:4548"), tmp / "plain.gpkg")
    pipes = gpd.read_file(tmp / "plain.gpkg", layer="pipes")
    pipes["DN_MM"] = (pipes.pop("diameter_m") * 1000).round(1)
    nodes = gpd.read_file(tmp / "plain.gpkg", layer="nodes")
    out = tmp / "utility.gpkg"
    pipes.rename(columns={"zone": "DMA_NAME"}).to_file(out, layer="mains")
    nodes.rename(columns={"zone": "DMA_NAME"}).to_file(out, layer="nodes")
    return out


GIS_ARGS = ["--pipes-layer", "mains", "--column", "diameter=DN_MM", "--column", "zone=DMA_NAME"]


def test_ingest_and_balance_read_a_gis_network_with_column_mapping(utility_gpkg, tmp_path, twin_cli, capsys):
    db = tmp_path / "store.duckdb"
    assert twin_cli("ingest", "--meters", WEEK / "meters.csv", "--readings", WEEK / "readings.parquet",
                    "--store", db, "--network", utility_gpkg, *GIS_ARGS) == 0
    assert "joined within 50 m" in capsys.readouterr().out
    # without the options the layer is not found: the options reach read_network
    assert twin_cli("balance", "--network", utility_gpkg, "--store", db, "--out", tmp_path / "x") == 2
    capsys.readouterr()
    assert twin_cli("balance", "--network", utility_gpkg, *GIS_ARGS, "--store", db, "--out", tmp_path / "gis") == 0
    assert twin_cli("balance", "--network", YINGTAN, "--crs", "EPSG:4548", "--store", db,
                    "--out", tmp_path / "inp") == 0
    gis = pd.read_csv(tmp_path / "gis" / "balance.csv", keep_default_na=False)
    inp = pd.read_csv(tmp_path / "inp" / "balance.csv", keep_default_na=False)
    assert sorted(gis["dma"].unique()) == sorted(inp["dma"].unique())
    assert gis["siv_m3"].sum() == pytest.approx(inp["siv_m3"].sum(), rel=1e-3)
    assert gis["flag"].tolist() == inp["flag"].tolist()


def test_localise_reads_a_gis_network_with_column_mapping(utility_gpkg, tmp_path, twin_cli, capsys):
    import geopandas as gpd

    out = tmp_path / "loc"
    assert twin_cli("localise", "--network", utility_gpkg, *GIS_ARGS, "--crs", "EPSG:4548",
                    "--meters", WEEK / "meters.csv", "--readings", WEEK / "readings.parquet",
                    "--out", out, "--no-map") == 0
    assert "leak detected" in capsys.readouterr().out
    cand = pd.read_csv(out / "candidates.csv", dtype={"link_id": str, "zone": str})
    truth = json.loads((WEEK / "truth.json").read_text())["leak"]
    nodes = gpd.read_file(utility_gpkg, layer="nodes").set_index("node_id")
    # the crew goes to the leak's district, named from the mapped column
    assert cand["zone"].iat[0] == nodes.at[truth["node_start"], "DMA_NAME"]
    # the model calibration says what it did and what the misfit was before and after
    model_cal = json.loads((out / "report.json").read_text())["calibration"]["model_calibration"]
    assert model_cal["decision"] in ("applied", "refused") and model_cal["reason"]
    for part in ("in_sample", "held_out"):
        assert model_cal["misfit_reduced_chi2"][part]["before"] > 0
        assert model_cal["misfit_reduced_chi2"][part]["after"] > 0
