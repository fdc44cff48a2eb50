"""CLI commands of the network stage: ``twin network info``, ``check`` and ``convert``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twin.cli.options import GisReading, gis_reading_options
from twin.crs import parse_crs
from twin.errors import InputError, NetworkError

log = logging.getLogger(__name__)

network_app = typer.Typer(
    name="network",
    help="Import, inspect and convert pipe networks (EPANET .inp, GeoPackage, GeoJSON, Shapefile).",
    no_args_is_help=True,
)

_CRS_HELP = ("CRS of the file's coordinates, e.g. EPSG:32650 (required for .inp; overrides a GIS layer's own). "
             "GCJ02 / BD09 for Chinese web-map lon/lat.")
_TO_CRS_HELP = "Projected metric CRS to hold the network in (default: --crs if projected, else EPSG:4548)."


@network_app.command("info")
@gis_reading_options
def info(
    file: Path = typer.Argument(..., help="Network file: .inp, .gpkg, .geojson or .shp."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    to_crs: Optional[str] = typer.Option(None, "--to-crs", help=_TO_CRS_HELP),
    gis: GisReading = GisReading(),
    max_findings: int = typer.Option(20, "--max-findings", help="Validation rows shown (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and findings as JSON."),
) -> None:
    """Counts, total pipe length, lon/lat bounding box, zones and validation findings.

    An EPANET .inp needs --crs only for the lon/lat bounding box (and the CRS checks): without it the rest
    is printed, coordinates as in the file.
    """
    from twin.network import read_network, validate_network  # deferred, see twin.cli
    if crs is None and to_crs is None and file.suffix.lower() == ".inp":
        net = read_network(file, require_crs=False)
        log.warning("%s: no --crs: the lon/lat bounding box and the CRS checks need it (e.g. --crs EPSG:32650)",
                    file.name)
    else:
        net = gis.read(file, crs=crs, to_crs=to_crs)
    summary = net.summary()
    findings = validate_network(net)
    if as_json:
        payload = {**summary, "findings": findings.to_dict(orient="records")}
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    console = Console(width=max(Console().width, 100))
    table = Table(title=escape(f"{file.name}  ({summary['crs'] or 'no CRS'})"), show_header=True)
    table.add_column("element")
    table.add_column("count", justify="right")
    for key in ("junctions", "reservoirs", "tanks", "pipes", "pumps", "valves", "isolation_valves"):
        table.add_row(key.replace("_", " "), f"{summary[key]:,}")
    table.add_row("pipe length", f"{summary['pipe_length_km']:,.2f} km")
    if summary["bbox_lonlat"] is None:
        table.add_row("bbox lon/lat", "needs --crs")
    else:
        west, south, east, north = summary["bbox_lonlat"]
        table.add_row("bbox lon", f"{west:.6f} .. {east:.6f}")
        table.add_row("bbox lat", f"{south:.6f} .. {north:.6f}")
    zones = summary["zones"]
    table.add_row("zones", f"{len(zones)}: " + escape(", ".join(map(str, zones[:12]))) + (" ..." if len(zones) > 12 else "")
                  if zones else "none")
    console.print(table)
    _print_findings(console, findings, max_findings)


def _print_findings(console: Console, findings: pd.DataFrame, max_findings: int) -> None:
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
        ft.add_row(f"[{style}]{row.level}[/{style}]", row.code, escape(str(row.element)), escape(str(row.message)))
    console.print(ft)
    if len(shown) < len(findings):
        rest = ", ".join(f"{code}: {n}" for (_, code), n in counts.items())
        console.print(f"showing {len(shown)} of {len(findings)} findings ({rest}); --max-findings 0 shows all",
                      highlight=False)


@network_app.command("check")
@gis_reading_options
def check(
    file: Path = typer.Argument(..., help="Network file: .inp, .gpkg, .geojson or .shp."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    to_crs: Optional[str] = typer.Option(None, "--to-crs", help=_TO_CRS_HELP),
    gis: GisReading = GisReading(),
    max_findings: int = typer.Option(0, "--max-findings", help="Validation rows shown (0: all)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
) -> None:
    """Validate a network: list every finding; exit 2 when there are errors (or warnings with --strict)."""
    from twin.network import validate_network  # deferred, see twin.cli
    net = gis.read(file, crs=crs, to_crs=to_crs)
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
@gis_reading_options
def convert(
    src: Path = typer.Argument(..., help="Input network: .inp, .gpkg, .geojson or .shp."),
    out: Path = typer.Argument(..., help="Output: .inp, .gpkg, .geojson or .shp (nodes/valves beside it)."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    to_crs: Optional[str] = typer.Option(None, "--to-crs", help="CRS of the written coordinates "
                                         "(default: the network's internal CRS, see twin network info)."),
    gis: GisReading = GisReading(),
) -> None:
    """Convert between EPANET .inp and GIS layers, keeping IDs, attributes and vertices."""
    from twin.network import write_network  # deferred, see twin.cli
    if out.resolve() == src.resolve():
        raise InputError("output is the input file", path=out, fix="name a different output file")
    # Internal CRS: the requested output CRS when it is metric, so no second transformation is needed.
    internal = None
    if to_crs is not None:
        target = parse_crs(to_crs, what="--to-crs")
        internal = target if target.is_projected else None
    net = gis.read(src, crs=crs, to_crs=internal)
    written = write_network(net, out, to_crs=to_crs)
    s = net.summary()
    typer.echo(f"wrote {', '.join(str(p) for p in written)}: {s['pipes']:,} pipes ({s['pipe_length_km']:,.2f} km), "
               f"{s['junctions'] + s['tanks'] + s['reservoirs']:,} nodes, CRS {to_crs or s['crs']}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the twin app."""
    app.add_typer(network_app, name="network")
