"""CLI commands of the network stage: ``twin network info`` and ``twin network convert``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from twin.errors import InputError

log = logging.getLogger(__name__)

network_app = typer.Typer(
    name="network",
    help="Import, inspect and convert pipe networks (EPANET .inp, GeoPackage, GeoJSON, Shapefile).",
    no_args_is_help=True,
)

_CRS_HELP = ("CRS of the file's coordinates, e.g. EPSG:32650 (required for .inp; overrides a GIS layer's own). "
             "GCJ02 / BD09 for Chinese web-map lon/lat.")
_TO_CRS_HELP = "Projected metric CRS to hold the network in (default: --crs if projected, else EPSG:4548)."


def _parse_columns(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, col = item.partition("=")
        if not sep or not key.strip() or not col.strip():
            raise InputError(f"--column {item!r} is not KEY=NAME", element="--column",
                             fix="write e.g. --column diameter=DN_MM --column zone=DMA")
        out[key.strip()] = col.strip()
    return out


def _gis_options(columns: list[str] | None, snap: Optional[float], pipes_layer: Optional[str],
                 allow_disconnected: bool, path: Path, default_diameter_mm: Optional[float] = None,
                 no_split_tees: bool = False) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if path.suffix.lower() == ".inp":
        return opts
    if no_split_tees:
        opts["split_at_tees"] = False
    if default_diameter_mm is not None:
        opts["default_diameter_m"] = default_diameter_mm / 1000.0
    cols = _parse_columns(columns)
    if cols:
        opts["columns"] = cols
    if snap is not None:
        opts["snap_tolerance_m"] = snap
    if pipes_layer:
        opts["pipes_layer"] = pipes_layer
    if allow_disconnected:
        opts["allow_disconnected"] = True
    return opts


@network_app.command("info")
def info(
    file: Path = typer.Argument(..., help="Network file: .inp, .gpkg, .geojson or .shp."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    to_crs: Optional[str] = typer.Option(None, "--to-crs", help=_TO_CRS_HELP),
    column: Optional[list[str]] = typer.Option(None, "--column", help="GIS column mapping KEY=NAME "
                                               "(keys: link_id, diameter, roughness, material, install_year, "
                                               "zone, elevation, node_type...). Repeatable."),
    snap_tolerance: Optional[float] = typer.Option(None, "--snap-tolerance",
                                                   help="GIS: merge line ends closer than this, metres."),
    pipes_layer: Optional[str] = typer.Option(None, "--pipes-layer", help="GeoPackage layer of the pipes."),
    allow_disconnected: bool = typer.Option(False, "--allow-disconnected",
                                            help="GIS: import a snapped network that falls into parts."),
    default_diameter_mm: Optional[float] = typer.Option(None, "--default-diameter-mm",
                                                        help="GIS: diameter for pipes without one, mm."),
    no_split_tees: bool = typer.Option(False, "--no-split-tees",
                                       help="GIS: do not split lines where another line ends on them."),
    max_findings: int = typer.Option(20, "--max-findings", help="Validation rows shown (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and findings as JSON."),
) -> None:
    """Counts, total pipe length, lon/lat bounding box, zones and validation findings."""
    from twin.network import read_network, validate_network

    net = read_network(file, crs=crs, to_crs=to_crs,
                       **_gis_options(column, snap_tolerance, pipes_layer, allow_disconnected, file,
                                     default_diameter_mm, no_split_tees))
    summary = net.summary()
    findings = validate_network(net)
    if as_json:
        payload = {**summary, "findings": findings.to_dict(orient="records")}
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    console = Console(width=max(Console().width, 100))
    table = Table(title=f"{file.name}  ({summary['crs']})", show_header=True)
    table.add_column("element")
    table.add_column("count", justify="right")
    for key in ("junctions", "reservoirs", "tanks", "pipes", "pumps", "valves", "isolation_valves"):
        table.add_row(key.replace("_", " "), f"{summary[key]:,}")
    table.add_row("pipe length", f"{summary['pipe_length_km']:,.2f} km")
    west, south, east, north = summary["bbox_lonlat"]
    table.add_row("bbox lon", f"{west:.6f} .. {east:.6f}")
    table.add_row("bbox lat", f"{south:.6f} .. {north:.6f}")
    zones = summary["zones"]
    table.add_row("zones", f"{len(zones)}: " + ", ".join(zones[:12]) + (" ..." if len(zones) > 12 else "")
                  if zones else "none")
    console.print(table)
    _print_findings(console, findings, max_findings)


def _print_findings(console: Console, findings, max_findings: int) -> None:
    n_err = int((findings["level"] == "error").sum())
    n_warn = int((findings["level"] == "warning").sum())
    console.print(f"validation: {n_err} errors, {n_warn} warnings", highlight=False)
    if findings.empty:
        return
    counts = findings.groupby(["level", "code"], sort=False).size()
    shown = findings if max_findings <= 0 else findings.groupby("code", sort=False).head(
        max(1, max_findings // max(1, len(counts))))
    shown = shown if max_findings <= 0 else shown.head(max_findings)
    ft = Table(show_header=True)
    for col in ("level", "code", "element", "message"):
        ft.add_column(col, overflow="fold")
    for row in shown.itertuples(index=False):
        style = "red" if row.level == "error" else "yellow"
        ft.add_row(f"[{style}]{row.level}[/{style}]", row.code, row.element, row.message)
    console.print(ft)
    if len(shown) < len(findings):
        rest = ", ".join(f"{code}: {n}" for (_, code), n in counts.items())
        console.print(f"showing {len(shown)} of {len(findings)} findings ({rest}); --max-findings 0 shows all",
                      highlight=False)


@network_app.command("check")
def check(
    file: Path = typer.Argument(..., help="Network file: .inp, .gpkg, .geojson or .shp."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    to_crs: Optional[str] = typer.Option(None, "--to-crs", help=_TO_CRS_HELP),
    column: Optional[list[str]] = typer.Option(None, "--column", help="GIS column mapping KEY=NAME. Repeatable."),
    snap_tolerance: Optional[float] = typer.Option(None, "--snap-tolerance",
                                                   help="GIS: merge line ends closer than this, metres."),
    pipes_layer: Optional[str] = typer.Option(None, "--pipes-layer", help="GeoPackage layer of the pipes."),
    allow_disconnected: bool = typer.Option(False, "--allow-disconnected",
                                            help="GIS: import a snapped network that falls into parts."),
    max_findings: int = typer.Option(0, "--max-findings", help="Validation rows shown (0: all)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
) -> None:
    """Validate a network: list every finding; exit 2 when there are errors (or warnings with --strict)."""
    from twin.errors import NetworkError
    from twin.network import read_network, validate_network

    net = read_network(file, crs=crs, to_crs=to_crs,
                       **_gis_options(column, snap_tolerance, pipes_layer, allow_disconnected, file))
    findings = validate_network(net)
    console = Console(width=max(Console().width, 100))
    _print_findings(console, findings, max_findings)
    failing = findings if strict else findings[findings["level"] == "error"]
    if not failing.empty:
        first = failing.iloc[0]
        raise NetworkError(
            f"{len(failing)} validation {'findings' if strict else 'errors'}, first: {first['code']} "
            f"{first['element']}: {first['message']}".replace(" : ", ": "),
            path=file,
            fix="correct the elements listed above in the source data",
        )


@network_app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="Input network: .inp, .gpkg, .geojson or .shp."),
    out: Path = typer.Argument(..., help="Output: .inp, .gpkg, .geojson or .shp (nodes/valves beside it)."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    to_crs: Optional[str] = typer.Option(None, "--to-crs", help="CRS of the written coordinates "
                                         "(default: the network's internal CRS, see twin network info)."),
    column: Optional[list[str]] = typer.Option(None, "--column", help="GIS column mapping KEY=NAME. Repeatable."),
    snap_tolerance: Optional[float] = typer.Option(None, "--snap-tolerance",
                                                   help="GIS: merge line ends closer than this, metres."),
    pipes_layer: Optional[str] = typer.Option(None, "--pipes-layer", help="GeoPackage layer of the pipes."),
    allow_disconnected: bool = typer.Option(False, "--allow-disconnected",
                                            help="GIS: import a snapped network that falls into parts."),
    default_diameter_mm: Optional[float] = typer.Option(None, "--default-diameter-mm",
                                                        help="GIS: diameter for pipes without one, mm."),
    no_split_tees: bool = typer.Option(False, "--no-split-tees",
                                       help="GIS: do not split lines where another line ends on them."),
) -> None:
    """Convert between EPANET .inp and GIS layers, keeping IDs, attributes and vertices."""
    from twin.crs import parse_crs
    from twin.network import read_network, write_network

    if out.resolve() == src.resolve():
        raise InputError("output is the input file", path=out, fix="name a different output file")
    # Internal CRS: the requested output CRS when it is metric, so no second transformation is needed.
    internal = None
    if to_crs is not None:
        target = parse_crs(to_crs, what="--to-crs")
        internal = target if target.is_projected else None
    net = read_network(src, crs=crs, to_crs=internal,
                       **_gis_options(column, snap_tolerance, pipes_layer, allow_disconnected, src,
                                     default_diameter_mm, no_split_tees))
    written = write_network(net, out, to_crs=to_crs)
    s = net.summary()
    typer.echo(f"wrote {', '.join(str(p) for p in written)}: {s['pipes']:,} pipes ({s['pipe_length_km']:,.2f} km), "
               f"{s['junctions'] + s['tanks'] + s['reservoirs']:,} nodes, CRS {to_crs or s['crs']}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the twin app."""
    app.add_typer(network_app, name="network")
