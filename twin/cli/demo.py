"""``twin demo``: the main job end to end on the bundled Yingtan data."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``twin demo`` to the app."""
