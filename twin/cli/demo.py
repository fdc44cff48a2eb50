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

import json
import logging
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

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


def _summary_table(report: dict, candidates, truth: dict | None, hit: dict | None) -> Table:
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
        table.add_row(f"candidate {row.rank}", f"pipe {row.link_id}  score {row.score:.3f}  "
                                               f"flow {flow:.2f} L/s  zone {getattr(row, 'zone', '')}")
    if truth is not None:
        leak = truth.get("leak")
        if leak:
            table.add_row("truth", f"pipe {leak['link_id']} at {leak['position']:.2f}, "
                                   f"onset {leak['onset']}, {leak['flow_lps']:.2f} L/s")
        else:
            table.add_row("truth", "no leak")
    if hit is not None:
        table.add_row("top candidate to leak", f"{hit['top_distance_m']:.0f} m of pipe "
                                               f"({'within' if hit['hit'] else 'beyond'} 300 m)")
        rank = hit["rank"]
        table.add_row("rank of the leaking pipe", "not ranked" if rank != rank else f"{int(rank)}")
    return table


def register(app: typer.Typer) -> None:
    """Add ``twin demo`` to the app."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("build/demo"), "--out", help="Output folder (created)."),
        network: Optional[Path] = typer.Option(None, help="Network .inp (default: bundled Yingtan small)."),
        crs: str = typer.Option("EPSG:4548", help="CRS of the network's coordinates."),
        meters: Optional[Path] = typer.Option(None, help="meters.csv (default: bundled week)."),
        readings: Optional[Path] = typer.Option(None, help="readings.csv/.parquet (default: bundled week)."),
        truth: Optional[Path] = typer.Option(None, help="truth.json to score against (default: bundled)."),
        top: int = typer.Option(5, min=1, help="Work orders for the top N candidates."),
        basemap: str = typer.Option("osm", help="Basemap of the crew map: osm, amap or none."),
    ) -> None:
        """Run the main job end to end: ingest, localise, water balance, work orders, crew map."""
        import geopandas as gpd

        from twin.balance import water_balance
        from twin.bench import pipe_distances, score_ranking
        from twin.cli.progress import StageProgress
        from twin.maps import crew_map, save_map
        from twin.pipeline import localise_files, logger_residuals
        from twin.repair import plan_repairs, write_plan
        from twin.store import Store

        console = Console()
        week = BUNDLED_WEEK
        network_path = _bundled(network, BUNDLED_NETWORK, "network")
        meters_path = _bundled(meters, week / "meters.csv", "meters")
        readings_path = readings or _readings_file(week)
        truth_path = truth or (week / "truth.json" if network is None else None)

        out.mkdir(parents=True, exist_ok=True)
        store_path = out / "store.duckdb"
        for stale in (store_path, out / "store.duckdb.wal", out / "plan"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()

        with StageProgress() as bar:
            done = localise_files(network_path, crs=crs, meters_path=meters_path,
                                  readings_path=readings_path, out_dir=out, store_path=store_path,
                                  write_map=False, progress=bar.update)
        report = done["report_dict"]
        result = done["result"]
        candidates = result.candidates

        net, join, registry = done["network"], done["join"], done["meters"]
        with Store(store_path) as store:
            balance = water_balance(net, store, join=join)
            store.write_table("balance", balance)
        balance.to_csv(out / "balance.csv", index=False, float_format="%.4f")
        balance.to_parquet(out / "balance.parquet", index=False)

        bundled_gis = network is None and BUNDLED_GIS.exists()
        orders = None
        if report.get("detected") and len(candidates):
            valves = BUNDLED_GIS if bundled_gis else None
            orders = plan_repairs(net, candidates=candidates, join=join, meters=registry,
                                  top_n=top, valves=valves)
            write_plan(orders, out / "plan", net, join=join, meters=registry)

        residuals = logger_residuals(result)
        dmas = gpd.read_file(BUNDLED_GIS, layer="dmas") if bundled_gis else None
        m = crew_map(net, candidates=candidates if len(candidates) else None, join=join, meters=registry,
                     balance=balance, residuals=residuals, plan=orders, basemap=basemap, dmas=dmas,
                     title="Leak candidates" if report.get("detected") else "No leak detected")
        save_map(m, out / "map.html")

        truth_doc, hit = None, None
        if truth_path is not None and Path(truth_path).exists():
            truth_doc = json.loads(Path(truth_path).read_text(encoding="utf-8"))
            leak = truth_doc.get("leak")
            if leak and len(candidates):
                dist = pipe_distances(net, leak["link_id"], float(leak["position"]))
                length = float(net.links.loc[net.links["link_type"] == "pipe", "length_m"].sum())
                hit = score_ranking(candidates, dist, leak["link_id"], length)

        console.print(_summary_table(report, candidates, truth_doc, hit))
        flagged = balance[balance["flag"].fillna("").str.contains("jump")]
        if len(flagged):
            console.print("water balance flags: " + ", ".join(
                f"{r.dma} {r.date} (NRW {r.nrw_pct:.0f} %)" for r in flagged.itertuples()))
        console.print(f"outputs in {out}: candidates.csv, report.json, balance.csv, "
                      f"map.html{', plan/' if orders is not None else ''}")
