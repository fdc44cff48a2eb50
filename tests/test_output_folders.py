"""Unwritable output folders: `twin plan`, `twin map`, `twin localise` and `twin demo` say so on one line, exit 2.

Two real cases: a folder whose permissions forbid writing (root ignores
permission bits, so as root the commands run in a child process without the
capability that lets root override them, through util-linux ``setpriv``), and
an output path below a file. Both are checked before any work is done.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_repair import CRS, _write_inp, candidates, toy_network


def commands(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    """The three commands with real inputs, writing below ``out``."""
    inp = tmp_path / "toy.inp"
    if not inp.exists():
        _write_inp(toy_network(), inp)
        candidates(["p1"]).to_csv(tmp_path / "candidates.csv", index=False)
        (tmp_path / "meters.csv").write_text("meter_id,kind,lon,lat,node_id,link_id\n")
        (tmp_path / "readings.csv").write_text("meter_id,timestamp,value\n")
    net = ["--network", str(inp), "--crs", CRS]
    return {
        "plan": ["plan", *net, "--candidates", str(tmp_path / "candidates.csv"), "--no-simulate",
                 "--out", str(out / "plan")],
        "map": ["map", *net, "--basemap", "none", "--out", str(out / "maps" / "map.html")],
        "localise": ["localise", *net, "--meters", str(tmp_path / "meters.csv"),
                     "--readings", str(tmp_path / "readings.csv"), "--out", str(out / "job")],
        "demo": ["demo", *net, "--meters", str(tmp_path / "meters.csv"), "--readings", str(tmp_path / "readings.csv"),
                 "--basemap", "none", "--out", str(out / "demo")],
    }


RUN = """
import contextlib, io, json, sys
from twin.cli import main
out = {}
for name, args in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    out[name] = [rc, err.getvalue()]
print(json.dumps(out))
"""


def run_unprivileged(cmds: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Run the CLI commands in one child process that permission bits apply to."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux setpriv: permission bits cannot be tested")
        prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    proc = subprocess.run([*prefix, sys.executable, "-c", RUN, json.dumps(cmds)], capture_output=True,
                          text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: (v[0], v[1]) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def assert_one_line(rc: int, err: str, folder: Path) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert str(folder) in lines[0] and "Fix:" in lines[0], err


def test_read_only_output_folder(tmp_path):
    ro = tmp_path / "read-only"
    ro.mkdir()
    cmds = commands(tmp_path, ro)
    cmds["map_here"] = cmds["map"][:-1] + [str(ro / "map.html")]  # the folder itself, not a new subfolder
    ro.chmod(0o555)
    try:
        results = run_unprivileged(cmds)
    finally:
        ro.chmod(0o755)
    for name, folder in (("plan", ro / "plan"), ("map", ro / "maps"), ("localise", ro / "job"), ("demo", ro / "demo"),
                         ("map_here", ro)):
        rc, err = results[name]
        assert_one_line(rc, err, folder)
        assert "Permission denied" in err
    assert list(ro.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("name", ["plan", "map", "localise", "demo"])
def test_output_below_a_file(tmp_path, twin_cli, capsys, name):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should be\n")
    cmds = commands(tmp_path, blocker / "today")
    rc = twin_cli(*cmds[name])
    err = capsys.readouterr().err
    folder = blocker / "today" / {"plan": "plan", "map": "maps", "localise": "job", "demo": "demo"}[name]
    assert_one_line(rc, err, folder)
