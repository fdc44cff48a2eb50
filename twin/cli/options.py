"""Option groups of the ``twin`` command line, defined once.

Every command that reads a network takes the same GIS reading options
(``--column``, ``--snap-tolerance``, ``--pipes-layer``, ``--valves-layer``,
``--allow-disconnected``, ``--default-diameter-mm``, ``--no-split-tees``).
They are declared here once: a command asks for them with the
:func:`gis_reading_options` decorator and receives one :class:`GisReading`
in its ``gis`` parameter, which turns them into the keyword options of
:func:`twin.network.read_network`.
"""

from __future__ import annotations

import functools
import logging
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer

from twin.errors import InputError

if TYPE_CHECKING:
    from twin.network import Network

#: Help of ``--crs`` for commands that read a network file.
NETWORK_CRS_HELP = "CRS of the network file's coordinates, e.g. EPSG:32650 (required for .inp)."
#: Help of ``--meters-crs``.
METERS_CRS_HELP = "CRS of the meters' lon/lat: EPSG:4326 (default), GCJ02 (Amap, Tencent) or BD09 (Baidu)."

#: Help of ``--workers`` (work run as Dask tasks, :mod:`twin.scale`).
WORKERS_HELP = ("Dask worker processes on this machine (default: its cores; 1 runs everything in this process, "
                "as does a single piece of work).")
#: Help of ``--scheduler``.
SCHEDULER_HELP = "Address of a Dask scheduler (e.g. tcp://host:8786) to run on a cluster instead of this machine."

COLUMN_HELP = ("GIS column mapping KEY=NAME (keys: link_id, diameter, roughness, material, install_year, "
               "zone, elevation, node_type...). Repeatable.")

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class GisReading:
    """The GIS reading options of a command, as given on the command line.

    Attributes
    ----------
    columns : tuple of str
        ``KEY=NAME`` column mappings (``--column``).
    snap_tolerance_m : float, optional
        Merge line ends closer than this, metres.
    pipes_layer : str, optional
        GeoPackage layer of the pipes.
    valves_layer : str, optional
        Valve and pump points: a layer of the network's GeoPackage or a GIS
        file. Points between separate parts of the pipes join them.
    allow_disconnected : bool
        A snapped network in parts is expected (its report is logged as info).
    default_diameter_mm : float, optional
        Diameter of pipes without one, mm.
    split_at_tees : bool
        Split lines where another line ends on them.
    """

    columns: tuple[str, ...] = ()
    snap_tolerance_m: float | None = None
    pipes_layer: str | None = None
    valves_layer: str | None = None
    allow_disconnected: bool = False
    default_diameter_mm: float | None = None
    split_at_tees: bool = True

    def options_for(self, path: str | Path) -> dict[str, Any]:
        """Keyword options of :func:`twin.network.read_network` for ``path``.

        Empty when no option was given, and for an EPANET ``.inp``: the GIS
        options do not apply to it, and a warning names the ones given.

        Raises
        ------
        InputError
            A ``--column`` is not ``KEY=NAME``.
        """
        opts = self._given()
        if opts and Path(path).suffix.lower() == ".inp":
            log.warning("%s is an EPANET .inp: the GIS reading option(s) %s do not apply and are ignored",
                        Path(path).name, ", ".join(sorted(opts)))
            return {}
        return opts

    def _given(self) -> dict[str, Any]:
        """The options given on the command line, as :func:`twin.network.read_network` keywords."""
        opts: dict[str, Any] = {}
        if not self.split_at_tees:
            opts["split_at_tees"] = False
        if self.default_diameter_mm is not None:
            opts["default_diameter_m"] = self.default_diameter_mm / 1000.0
        cols = parse_columns(self.columns)
        if cols:
            opts["columns"] = cols
        if self.snap_tolerance_m is not None:
            opts["snap_tolerance_m"] = self.snap_tolerance_m
        if self.pipes_layer:
            opts["pipes_layer"] = self.pipes_layer
        if self.valves_layer:
            opts["valves_layer"] = self.valves_layer
        if self.allow_disconnected:
            opts["allow_disconnected"] = True
        return opts

    def read(self, path: str | Path, *, crs: Any = None, to_crs: Any = None) -> Network:
        """Read the network at ``path`` with these options (see :func:`twin.network.read_network`)."""
        from twin.network import read_network  # deferred, see twin.cli

        return read_network(path, crs=crs, to_crs=to_crs, **self.options_for(path))


def parse_columns(values: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``["diameter=DN_MM", ...]`` as ``{"diameter": "DN_MM", ...}``.

    Raises
    ------
    InputError
        An item is not ``KEY=NAME``.
    """
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, col = item.partition("=")
        if not sep or not key.strip() or not col.strip():
            raise InputError(f"--column {item!r} is not KEY=NAME", element="--column",
                             fix="write e.g. --column diameter=DN_MM --column zone=DMA")
        out[key.strip()] = col.strip()
    return out


def _gis_parameters(kind: Any = inspect.Parameter.KEYWORD_ONLY) -> list[inspect.Parameter]:
    """The typer parameters of the GIS reading options, in the order of ``--help``."""
    specs: list[tuple[str, Any, Any]] = [
        ("column", Optional[list[str]], typer.Option(None, "--column", help=COLUMN_HELP)),
        ("snap_tolerance", Optional[float], typer.Option(
            None, "--snap-tolerance", help="GIS: merge line ends closer than this, metres.")),
        ("pipes_layer", Optional[str], typer.Option(None, "--pipes-layer", help="GeoPackage layer of the pipes.")),
        ("valves_layer", Optional[str], typer.Option(
            None, "--valves-layer", help="GIS: valve and pump points (a layer of the network's GeoPackage, or a "
            "file); points in a gap between parts of the pipes join them (pumps, PRVs...), the rest are "
            "isolation valves.")),
        ("allow_disconnected", bool, typer.Option(
            False, "--allow-disconnected",
            help="GIS: a snapped network in parts is expected: report the parts as info, not as a warning.")),
        ("default_diameter_mm", Optional[float], typer.Option(
            None, "--default-diameter-mm", help="GIS: diameter for pipes without one, mm.")),
        ("no_split_tees", bool, typer.Option(
            False, "--no-split-tees", help="GIS: do not split lines where another line ends on them.")),
    ]
    return [inspect.Parameter(name, kind, default=default, annotation=annotation)
            for name, annotation, default in specs]


#: Names of the command-line parameters that :func:`gis_reading_options` adds.
GIS_PARAMETERS = tuple(p.name for p in _gis_parameters())


def gis_reading_options(command: F) -> F:
    """Give a command the GIS reading options, collected into its ``gis`` parameter.

    The decorated function declares ``gis: GisReading``; the command line
    shows the options of :data:`GIS_PARAMETERS` in its place.
    """
    signature = inspect.signature(command)
    if "gis" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no 'gis' parameter")

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in GIS_PARAMETERS}
        gis = GisReading(
            columns=tuple(given["column"] or ()),
            snap_tolerance_m=given["snap_tolerance"],
            pipes_layer=given["pipes_layer"],
            valves_layer=given["valves_layer"],
            allow_disconnected=bool(given["allow_disconnected"]),
            default_diameter_mm=given["default_diameter_mm"],
            split_at_tees=not given["no_split_tees"],
        )
        return command(*args, gis=gis, **kwargs)

    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        params.extend(_gis_parameters(p.kind) if p.name == "gis" else [p])
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    hints = {k: v for k, v in command.__annotations__.items() if k != "gis"}
    hints.update({p.name: p.annotation for p in _gis_parameters()})
    wrapper.__annotations__ = hints
    return wrapper  # type: ignore[return-value]
