"""CLI commands of the synth stage (filled in by the issue that builds the stage)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the twin app."""
