"""CLI commands of the synth stage: ``twin synth city`` and ``twin synth readings``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

from twin.errors import InputError

log = logging.getLogger(__name__)

synth_app = typer.Typer(
    name="synth",
    help="Synthetic data: the Yingtan reference city and realistic smart-water readings.",
    no_args_is_help=True,
)


def _refuse_file_as_folder(out: Path) -> None:
    """Raise when ``--out`` names an existing file (checked before any simulation)."""
    if out.exists() and not out.is_dir():
        raise InputError("--out names an existing file, not a folder", path=out,
                         fix="give a folder (created when missing) for the output files")


@synth_app.command("city")
def city(
    size: str = typer.Option("small", "--size", help="small (~1,000 pipes, ~10,000 customers) or city "
                                                     "(20,000+ pipes, 130,000 customers)."),
    seed: int = typer.Option(2026, "--seed", help="Seed of every random draw; same seed, same files."),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
) -> None:
    """Build the Yingtan reference network: yingtan-SIZE.inp (EPSG:4548) and yingtan-SIZE.gpkg."""
    from twin.synth.city import synth_city  # deferred, see twin.cli
    _refuse_file_as_folder(out)
    if size not in ("small", "city"):
        raise InputError(f"unknown size {size!r}", element="--size", fix="use --size small or --size city")
    paths = synth_city(size=size, seed=seed, out_dir=out)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@synth_app.command("readings")
def readings(
    network: Path = typer.Option(..., "--network", help="The utility's EPANET .inp."),
    crs: str = typer.Option("EPSG:4548", "--crs", help="CRS of the .inp coordinates (projected), e.g. EPSG:32650."),
    days: int = typer.Option(7, "--days", help="Days to simulate (whole local days; 3+ with a leak)."),
    leak: Optional[List[str]] = typer.Option(None, "--leak",
                                             help="'random' (default), 'none', or pipe IDs: repeat the option "
                                                  "or give a comma list, one leak on each."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw; same seed, same bytes."),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    leak_flow_lps: Optional[float] = typer.Option(None, "--leak-flow-lps",
                                                  help="Flow of every leak at full size, L/s (default 1-6 % of "
                                                       "the demand of its DMA, or of the system for one leak)."),
    leaks: Optional[int] = typer.Option(None, "--leaks", help="Number of random leaks (default 1; 0 with "
                                                              "--leak none)."),
    leak_districts: str = typer.Option("any", "--leak-districts",
                                       help="Random leaks anywhere, one per DMA, or all in one DMA: "
                                            "any, different or same."),
    leak_growth: str = typer.Option("abrupt", "--leak-growth",
                                    help="abrupt (a burst), growing (linear over 6-48 h) or mixed."),
    start: str = typer.Option("2026-03-02", "--start", help="Local date of the first day (UTC+8)."),
    customers: Optional[Path] = typer.Option(None, "--customers",
                                             help="Customers layer (GeoPackage layer 'customers'); default: "
                                                  "NETWORK.gpkg beside the .inp if it has one."),
    readings_format: str = typer.Option("csv", "--format", help="Readings file format: csv or parquet."),
    meters_crs: str = typer.Option("EPSG:4326", "--meters-crs",
                                   help="Datum of the meters' lon/lat: EPSG:4326, GCJ02 (Amap) or BD09 (Baidu)."),
    shift_to_yingtan: bool = typer.Option(False, "--shift-to-yingtan",
                                          help="Move a network in local coordinates (e.g. L-Town) into "
                                               "Yingtan; writes the shifted network.inp beside the data."),
) -> None:
    """Simulate a true network and write meters.csv, readings.csv and truth.json."""
    from twin.synth.readings import synth_readings  # deferred, see twin.cli
    _refuse_file_as_folder(out)
    paths = synth_readings(
        network, crs=crs, days=days, leak=leak or "random", seed=seed, out_dir=out, customers=customers,
        leak_flow_lps=leak_flow_lps, leaks=leaks, leak_districts=leak_districts, leak_growth=leak_growth,
        start=start, readings_format=readings_format,
        shift_to_yingtan=shift_to_yingtan, meters_crs=meters_crs,
    )
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the twin app."""
    app.add_typer(synth_app, name="synth")
