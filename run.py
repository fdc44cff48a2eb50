#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+.

Usage
-----
``python3 run.py demo``   create/reuse ``.venv``, install twin, run the main job on
                          the bundled Yingtan data, write outputs to ``build/demo``.
``python3 run.py test``   create/reuse ``.venv``, install twin with its test and bench extras,
                          run the whole default test suite.

Extra arguments after ``test`` go to pytest (``python3 run.py test -k network``);
``python3 run.py test --slow`` also runs the long tests (evaluation harness).
The virtual environment is reinstalled only when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"twin needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".stamp-{digest}"
    if not stamp.exists():
        print("installing twin and its dependencies (first run only)", flush=True)
        subprocess.run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run(
            [str(PY), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test,bench]"], check=True
        )
        for old in VENV.glob(".stamp-*"):
            old.unlink()
        stamp.touch()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    _ensure_env()
    if argv[0] == "demo":
        out = ROOT / "build" / "demo"
        cmd = [str(BIN / "twin"), "demo", "--out", str(out), *argv[1:]]
    else:
        args = list(argv[1:])
        if "--slow" in args:
            args.remove("--slow")
            args = ["-m", "slow or not slow", *args]
        cmd = [str(PY), "-m", "pytest", "-q", *args]
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
