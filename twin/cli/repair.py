"""CLI commands of the repair stage: ``twin plan`` (work orders) and ``twin map`` (crew map)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import geopandas as gpd
import pandas as pd
import pyogrio
import typer
from rich.console import Console

from twin.cli.options import METERS_CRS_HELP, NETWORK_CRS_HELP, GisReading, gis_reading_options
from twin.errors import InputError, require_file

if TYPE_CHECKING:
    from twin.network import Network

log = logging.getLogger(__name__)

_CRS_HELP = NETWORK_CRS_HELP
_MCRS_HELP = METERS_CRS_HELP


def read_table(path: Path, *, what: str, dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet table, raising InputError naming the file on failure."""
    p = require_file(path, what=what)
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
            for col, typ in (dtype or {}).items():
                if col in df:
                    df[col] = df[col].astype(typ)
            return df
        return pd.read_csv(p, dtype=dtype)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read the {what} table: {exc}", path=p,
                         fix="give a CSV (comma-separated, header row) or Parquet file") from exc


def _candidates(path: Path) -> pd.DataFrame:
    df = read_table(path, what="candidates", dtype={"link_id": str, "zone": str})
    missing = [c for c in ("rank", "link_id") if c not in df.columns]
    if missing:
        raise InputError(f"column(s) {', '.join(missing)} missing", path=path,
                         fix="give candidates.csv as written by `twin localise` (rank, link_id, score)")
    return df


def _meters_and_join(path: Path | None, network: Network,
                     meters_crs: str) -> tuple[gpd.GeoDataFrame | None, pd.DataFrame | None]:
    """The meter registry of ``path`` (rejected rows logged) and its join to the network."""
    from twin.meters import join_meters, read_meters, validate_meters  # deferred, see twin.cli
    if path is None:
        return None, None
    meters = read_meters(path, crs=meters_crs)
    meters, rejected = validate_meters(meters, network)
    if len(rejected):
        log.warning("%d meter row(s) rejected: %s", len(rejected),
                    ", ".join(f"{k} ({v})" for k, v in rejected["reason"].value_counts().items()))
    return meters, join_meters(meters, network)


def _gpkg_dmas(network: Path) -> gpd.GeoDataFrame | None:
    """The ``dmas`` layer of a GeoPackage network (polygons with a ``dma`` column), if any."""
    if network.suffix.lower() != ".gpkg":
        return None
    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(network)}
        if "dmas" not in layers:
            return None
        dmas = gpd.read_file(network, layer="dmas")
    except Exception as exc:  # a broken optional layer should not stop the map
        log.warning("%s: dmas layer not used (%s)", network, exc)
        return None
    if "dma" not in dmas.columns or dmas.crs is None:
        return None
    return dmas


def _valves_beside(network: Path, valves: Optional[Path]) -> Optional[Path]:
    """``--valves``, else the ``valves`` layer of the ``<network>.gpkg`` beside an ``.inp`` (logged)."""
    if valves is not None or network.suffix.lower() != ".inp":
        return valves
    from twin.synth.readings import gpkg_beside  # deferred, see twin.cli
    found = gpkg_beside(network, "valves", option="--valves")
    if found is not None:
        log.info("valves: the 'valves' layer of %s beside the network (--valves overrides it)", found)
    return found


def _inoperable(value: Optional[str]) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@gis_reading_options
def plan(
    network: Path = typer.Option(..., "--network", help="Network file: .inp, .gpkg, .geojson or .shp."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    gis: GisReading = GisReading(),
    meters: Optional[Path] = typer.Option(None, "--meters", help="Meter registry (meters.csv / .parquet)."),
    candidates: Path = typer.Option(..., "--candidates", help="candidates.csv of `twin localise`."),
    out: Path = typer.Option(..., "--out", help="Folder for work_orders.csv/.geojson and sheets/."),
    top: int = typer.Option(10, "--top", min=1, help="Plan the N best-ranked candidates."),
    zone: bool = typer.Option(False, "--zone", help="Plan the candidates in the candidate zone instead."),
    inoperable: Optional[str] = typer.Option(None, "--inoperable",
                                             help="Valves that cannot be closed, comma-separated IDs."),
    valves: Optional[Path] = typer.Option(None, "--valves", help="GIS valve layer (points); default the "
                                          "network's (for an .inp: the 'valves' layer of NETWORK.gpkg "
                                          "beside it), else generated N-1 with --seed."),
    meters_crs: str = typer.Option("EPSG:4326", "--meters-crs", help=_MCRS_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of a generated valve layer."),
    no_simulate: bool = typer.Option(False, "--no-simulate", help="Skip the closure simulations."),
    with_map: bool = typer.Option(True, "--map/--no-map", help="Also write OUT/map.html (offline, no basemap)."),
) -> None:
    """Work orders for the candidate pipes: valves to close, customers affected, loss, priority."""
    from twin.maps import crew_map, save_map  # deferred, see twin.cli
    from twin.pipeline import output_folder
    from twin.repair import plan_repairs, split_ids, write_plan
    output_folder(out)
    net = gis.read(network, crs=crs)
    cands = _candidates(candidates)
    met, join = _meters_and_join(meters, net, meters_crs)
    if join is None:
        log.warning("no --meters: customers affected are not counted")
    orders = plan_repairs(
        net, candidates=cands, join=join, meters=met, top_n=top, zone=zone,
        inoperable_valves=_inoperable(inoperable), valves=_valves_beside(network, valves), seed=seed,
        simulate=not no_simulate,
    )
    files = write_plan(orders, out, net, join=join, meters=met)
    if with_map and len(orders):
        m = crew_map(net, candidates=cands, join=join, meters=met, plan=orders,
                     valves=orders.attrs["valves"], dmas=_gpkg_dmas(network), basemap="none",
                     title="twin: repair plan")
        files["map"] = save_map(m, Path(out) / "map.html")
    console = Console()
    for _, row in orders.iterrows():
        console.print(  # IDs are the utility's: text, not rich markup
            f"{row['order_id']} [{row['priority_class']}] pipe {row['link_id']} (rank {row['rank']}): "
            f"close {row['n_valves']} valve(s) {', '.join(split_ids(row['valves_to_close']))}; "
            f"{row['customers_affected']} customer(s) affected, "
            f"{row['water_lost_m3_per_day']:.1f} m³/day lost",
            markup=False, highlight=False, soft_wrap=True,
        )
    console.print(f"wrote {files['work_orders']} and {len(orders)} sheet(s) in {Path(out) / 'sheets'}",
                  markup=False, highlight=False, soft_wrap=True)


@gis_reading_options
def map_(
    network: Path = typer.Option(..., "--network", help="Network file: .inp, .gpkg, .geojson or .shp."),
    crs: Optional[str] = typer.Option(None, "--crs", help=_CRS_HELP),
    gis: GisReading = GisReading(),
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
    candidates: Optional[Path] = typer.Option(None, "--candidates", help="candidates.csv of `twin localise`."),
    meters: Optional[Path] = typer.Option(None, "--meters", help="Meter registry (meters.csv / .parquet)."),
    balance: Optional[Path] = typer.Option(None, "--balance", help="Water balance table (dma, date, nrw_pct...)."),
    residuals: Optional[Path] = typer.Option(None, "--residuals",
                                             help="Per logger: meter_id and residual columns (m)."),
    plan_dir: Optional[Path] = typer.Option(None, "--plan", help="Output folder of `twin plan`."),
    order: Optional[str] = typer.Option(None, "--order", help="Work order to draw (order_id); default the first."),
    basemap: str = typer.Option("osm", "--basemap", help="osm, amap (GCJ-02) or none (offline)."),
    meters_crs: str = typer.Option("EPSG:4326", "--meters-crs", help=_MCRS_HELP),
    title: Optional[str] = typer.Option(None, "--title", help="Title shown on the map."),
) -> None:
    """Crew map (offline HTML): pipes by leak score, candidates, DMAs, meters, valves, work order."""
    from twin.maps import crew_map, save_map  # deferred, see twin.cli
    from twin.pipeline import output_folder
    from twin.repair import read_plan
    if basemap not in ("osm", "amap", "none"):
        raise InputError(f"unknown basemap {basemap!r}", element="--basemap", fix="use osm, amap or none")
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError("the map file must end in .html", path=out, fix="e.g. --out map.html")
    output_folder(out.parent)
    net = gis.read(network, crs=crs)
    cands = _candidates(candidates) if candidates is not None else None
    met, join = _meters_and_join(meters, net, meters_crs)
    bal = read_table(balance, what="balance", dtype={"dma": str}) if balance is not None else None
    res = None
    if residuals is not None:
        res = read_table(residuals, what="residuals", dtype={"meter_id": str})
        if "meter_id" not in res.columns:
            raise InputError("column meter_id missing", path=residuals,
                             fix="give one row per pressure logger: meter_id, residual_m, ...")
    orders = valves = None
    if plan_dir is not None:
        orders, valves = read_plan(plan_dir)
    m = crew_map(net, candidates=cands, join=join, meters=met, balance=bal, residuals=res,
                 plan=orders, valves=valves, dmas=_gpkg_dmas(network), basemap=basemap,  # type: ignore[arg-type]
                 selected=order, title=title)
    path = save_map(m, out)
    Console().print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``twin plan`` and ``twin map`` to the twin app."""
    app.command("plan")(plan)
    app.command("map")(map_)
