"""The command line's own behaviour: help, usage errors, exit codes."""

from __future__ import annotations

import subprocess
import sys


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


def test_error_text_in_brackets_is_printed_verbatim(tmp_path):
    # A message naming an .inp section like [PIPES] must not be eaten as rich markup.
    bad = tmp_path / "net.inp"
    bad.write_text("[PIPES]\nP1 J1\n", encoding="utf-8")
    result = run_twin("network", "info", str(bad), "--crs", "EPSG:32650")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "[PIPES]" in result.stderr
