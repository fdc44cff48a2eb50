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


def test_error_text_in_brackets_is_printed_verbatim(tmp_path, monkeypatch, capsys):
    # Messages quote .inp fields like [status]; rich must not take them for markup.
    import twin.cli.options
    from twin.cli import main
    from twin.errors import NetworkError

    def broken(*args, **kwargs):
        raise NetworkError("line 7: the [status] field is not OPEN or CLOSED", path="net.inp")

    monkeypatch.setattr(twin.cli.options, "read_network", broken)
    status = main(["network", "info", str(tmp_path / "net.inp"), "--crs", "EPSG:32650"])
    err = capsys.readouterr().err
    assert status == 2
    assert "the [status] field" in " ".join(err.split())
