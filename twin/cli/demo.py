"""``twin demo``: the main job end to end on the bundled Yingtan data.

The bundled data is the Yingtan reference city (``networks/yingtan-small.*``)
and a synthetic week of its smart-water readings with one hidden leak
(``data/yingtan-small-week/``). The demo runs what a utility engineer runs
each morning: ingest and localise (``twin localise``), the water balance per
DMA and day (``twin balance``), work orders for the top candidates
(``twin plan``) and the complete crew map (``twin map``); then it compares the
result with the hidden truth.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twin.cli.options import GisReading, gis_reading_options
from twin.cli.progress import StageProgress
from twin.errors import InputError

log = logging.getLogger(__name__)

#: The checkout the package runs from (editable install, or run.py).
ROOT = Path(__file__).resolve().parents[2]
BUNDLED_NETWORK = ROOT / "networks" / "yingtan-small.inp"
#: GIS layers of the bundled city: isolation valves and DMA outlines.
BUNDLED_GIS = ROOT / "networks" / "yingtan-small.gpkg"
BUNDLED_WEEK = ROOT / "data" / "yingtan-small-week"


def _bundled(path: Optional[Path], default: Path, what: str) -> Path:
    chosen = path or default
    if not chosen.exists():
        raise InputError(
            f"the bundled {what} is not there",
            path=chosen,
            fix=f"run the demo from a checkout of twin, or pass the {what} explicitly",
        )
    return chosen


def _readings_file(week: Path) -> Path:
    for name in ("readings.parquet", "readings.csv"):
        if (week / name).exists():
            return week / name
    raise InputError("no readings.parquet or readings.csv", path=week,
                     fix="pass --readings or regenerate with `twin synth readings`")


def _summary_table(report: dict, candidates: pd.DataFrame, truth: dict | None, hit: dict | None) -> Table:
    table = Table(title="Leak localisation (Yingtan small, bundled week)", show_lines=False)
    table.add_column("item")
    table.add_column("value", overflow="fold")
    table.add_row("leak detected", "yes" if report.get("detected") else "no")
    if report.get("detected"):
        table.add_row("estimated onset", str(report.get("onset")))
        flow = report.get("leak_flow_lps")
        table.add_row("estimated leak flow", f"{flow:.2f} L/s" if flow is not None else "-")
    top = candidates.head(5)
    for row in top.itertuples():
        flow = getattr(row, "leak_flow_lps", float("nan"))
        near = getattr(row, "p_within_300m", float("nan"))
        table.add_row(f"candidate {row.rank}", escape(f"pipe {row.link_id}  score {row.score:.3f}  "
                                                      f"within 300 m {near:.2f}  "
                                                      f"flow {flow:.2f} L/s  zone {getattr(row, 'zone', '')}"))
    if truth is not None:
        leak = truth.get("leak")
        if leak:
            table.add_row("truth", escape(f"pipe {leak['link_id']} at {leak['position']:.2f}, "
                                          f"onset {leak['onset']}, {leak['flow_lps']:.2f} L/s"))
        else:
            table.add_row("truth", "no leak")
    if hit is not None:
        table.add_row("top candidate to leak", f"{hit['top_distance_m']:.0f} m of pipe "
                                               f"({'within' if hit['hit'] else 'beyond'} 300 m)")
        rank = hit["rank"]
        table.add_row("rank of the leaking pipe", "not ranked" if rank != rank else f"{int(rank)}")
    return table


def demo(
    out: Path = typer.Option(Path("build/demo"), "--out", help="Output folder (created)."),
    network: Optional[Path] = typer.Option(None, help="Network: .inp or GIS file (default: bundled Yingtan small)."),
    crs: str = typer.Option("EPSG:4548", help="CRS of the network's coordinates."),
    gis: GisReading = GisReading(),
    meters: Optional[Path] = typer.Option(None, help="meters.csv (default: bundled week)."),
    readings: Optional[Path] = typer.Option(None, help="readings.csv/.parquet (default: bundled week)."),
    truth: Optional[Path] = typer.Option(None, help="truth.json to score against (default: bundled)."),
    top: int = typer.Option(5, min=1, help="Work orders for the top N candidates."),
    basemap: str = typer.Option("osm", help="Basemap of the crew map: osm, amap or none."),
) -> None:
    """Run the main job end to end: ingest, localise, water balance, work orders, crew map."""
    from twin.pipeline import run_demo  # deferred, see twin.cli
    week = BUNDLED_WEEK
    network_path = _bundled(network, BUNDLED_NETWORK, "network")
    with StageProgress() as bar:
        done = run_demo(
            network_path, crs=crs, meters_path=_bundled(meters, week / "meters.csv", "meters"),
            readings_path=readings or _readings_file(week), out_dir=out,
            truth_path=truth or (week / "truth.json" if network is None else None),
            gis_layers=BUNDLED_GIS if network is None and BUNDLED_GIS.exists() else None,
            top=top, basemap=basemap, gis_options=gis.options_for(network_path), progress=bar.update,
        )
    console = Console()
    console.print(_summary_table(done.report, done.candidates, done.truth, done.hit))
    flagged = done.balance[done.balance["flag"].fillna("").str.contains("jump")]
    if len(flagged):
        console.print("water balance flags: " + escape(", ".join(
            f"{r.dma} {r.date} (NRW {r.nrw_pct:.0f} %)" for r in flagged.itertuples())))
    console.print(escape(f"outputs in {out}: candidates.csv, report.json, balance.csv, balance_zones.csv, "
                         f"map.html{', plan/' if done.orders is not None else ''}"))


def register(app: typer.Typer) -> None:
    """Add ``twin demo`` to the app."""
    app.command("demo")(gis_reading_options(demo))
