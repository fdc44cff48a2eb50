"""The project's exceptions.

Every error caused by a user's input is a :class:`TwinError`. It names what is
wrong (the file, the row, the element) and how to fix it; the CLI prints its
message on one line and exits with status 2, with no traceback. Errors subclass
the built-in exception that fits (``ValueError``, ``KeyError``,
``FileNotFoundError``, ``RuntimeError``) so that library users can catch either.

Examples
--------
>>> raise InputError("diameter is negative", path="pipes.gpkg", element="P12",
...                  fix="correct the diameter column (millimetres)")
Traceback (most recent call last):
...
twin.errors.InputError: pipes.gpkg: P12: diameter is negative. Fix: correct the diameter column (millimetres)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TwinError(Exception):
    """Base of every error the project raises on purpose.

    Parameters
    ----------
    reason : str
        What is wrong, in a sentence without a trailing full stop.
    path : str or Path, optional
        The file that holds the problem.
    row : int, optional
        1-based data row in that file (header not counted).
    element : str, optional
        The network element, meter or column concerned.
    fix : str, optional
        What the user should do about it.
    data : Any, optional
        Structured detail for programs, so that a caller can act on the
        problem without parsing the message (as networkx's exceptions carry
        the offending nodes): a dictionary keyed by what it holds, for example
        ``{"missing_columns": ["kind"], "columns": ["meter_id", "lon", "lat"]}``
        when a table lacks columns, or the offending IDs or rows.

    Examples
    --------
    >>> try:
    ...     raise MeterError("registry lacks the column kind", data={"missing_columns": ["kind"]})
    ... except TwinError as exc:
    ...     exc.data["missing_columns"]
    ['kind']
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        element: str | None = None,
        fix: str | None = None,
        data: Any = None,
    ) -> None:
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.row = row
        self.element = element
        self.fix = fix
        self.data = data
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.element:
            where.append(str(self.element))
        text = ": ".join([*where, self.reason]) if where else self.reason
        if self.fix:
            text = f"{text.rstrip('.')}. Fix: {self.fix}"
        return text

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self._message()


class InputError(TwinError, ValueError):
    """An input file or argument is malformed or inconsistent."""


class NetworkError(InputError):
    """A network file or GIS layer cannot be read or is not a usable network."""


class CRSError(InputError):
    """A coordinate reference system is missing, unknown or does not fit the data."""


class MeterError(InputError):
    """A meter registry row is invalid or does not fit the network."""


class ReadingsError(InputError):
    """A readings file cannot be used at all (individual bad rows are quarantined)."""


class MissingFileError(TwinError, FileNotFoundError):
    """A file named by the user does not exist."""


class UnknownElementError(TwinError, KeyError):
    """A node, link or meter ID is not in the network or registry."""


class SimulationError(TwinError, RuntimeError):
    """A hydraulic simulation failed or did not converge."""


def require_file(path: str | Path, *, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise :class:`MissingFileError` naming it.

    Parameters
    ----------
    path : str or Path
        The file the user named.
    what : str
        What the file is for, used in the message ("network", "readings").
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(
            f"{what} file does not exist", path=p, fix="check the path and spelling"
        )
    if p.is_dir():
        raise InputError(f"expected a {what} file, got a directory", path=p)
    return p
