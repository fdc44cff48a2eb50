"""Crew maps: interactive folium pages that open offline.

:func:`crew_map` draws whatever a stage has: the pipes coloured by leak score,
the ranked candidates and the candidate zone, DMA polygons coloured by
non-revenue water, pressure loggers with their residuals, flow meters, the
customer meters (clustered; a city has about 130,000), the valve layer and, for
a work order, the valves to close and the isolated segment.
:func:`save_map` writes a single HTML file with Leaflet
and the project's own small script inlined, so the page needs no CDN; only the
basemap tiles (``"osm"`` or ``"amap"``) come from the network, and
``basemap="none"`` needs nothing at all.

Geometry is held in the network's projected CRS and converted at the last
moment to EPSG:4326 (WGS84 lon/lat), or to GCJ-02 when the basemap is Amap
(Gaode), whose tiles are drawn on that datum. Lines are simplified in metres
before conversion and coordinates are rounded (5 decimals, about 1 m), and
every vector layer is drawn on a canvas, so a 20,000-pipe city stays small and
quick to open.

Examples
--------
>>> from twin.network import read_network          # doctest: +SKIP
>>> net = read_network("city.inp", crs="EPSG:4548")  # doctest: +SKIP
>>> m = crew_map(net, candidates=cands, basemap="none")  # doctest: +SKIP
>>> save_map(m, "map.html")                          # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from branca.element import Element, MacroElement
from jinja2 import Template

from twin import settings
from twin.crs import wgs84_to_gcj02
from twin.errors import InputError, UnknownElementError
from twin.network import Network
from twin.repair import candidate_points, split_ids

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"

Basemap = Literal["osm", "amap", "none"]

#: Tile layers of the basemaps: (url, attribution, subdomains).
BASEMAPS: dict[str, tuple[str, str, str] | None] = {
    "osm": (
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
        "abc",
    ),
    "amap": (
        "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}",
        "&copy; AutoNavi (高德地图); geometry shifted to GCJ-02",
        "1234",
    ),
    "none": None,
}

#: Pipe colours by leak score, from no score (grey) to the highest (dark red).
SCORE_PALETTE = ["#b0b0b0", "#fee08b", "#fdae61", "#f46d43", "#d73027", "#a50026"]
#: Lower edges of the score classes 1..5, as a share of the highest score;
#: pipes below the first edge are drawn grey like pipes without a score.
SCORE_EDGES = (0.01, 0.1, 0.25, 0.5, 0.75)

#: DMA colours by NRW %: (upper bound %, colour, label); last class is open.
NRW_CLASSES = [
    (10.0, "#1a9850", "< 10 %"),
    (15.0, "#91cf60", "10-15 %"),
    (20.0, "#fee08b", "15-20 %"),
    (30.0, "#fc8d59", "20-30 %"),
    (np.inf, "#d73027", ">= 30 %"),
]
NO_DATA_COLOUR = "#cccccc"

#: The crew map opens on the candidates with a margin of this share of their
#: box's larger side, and at least :data:`VIEW_MARGIN_M` metres.
VIEW_MARGIN_SHARE = 0.25
VIEW_MARGIN_M = 150.0

#: Popup fields of a pipe.
PIPE_LABELS = ["ID", "type", "diameter mm", "material", "install year", "length m", "zone",
               "leak score", "rank"]

_CSS = """
.twin-popup table { border-collapse: collapse; font-size: 12px; margin-top: 4px; }
.twin-popup th { text-align: left; padding: 1px 8px 1px 0; color: #555; font-weight: normal; }
.twin-popup td { padding: 1px 0; font-weight: bold; }
.twin-legend { background: rgba(255,255,255,0.92); padding: 6px 9px; font: 12px/1.35 sans-serif;
  border-radius: 4px; box-shadow: 0 0 4px rgba(0,0,0,0.3); max-width: 240px; }
.twin-legend i { display: inline-block; width: 14px; height: 10px; margin-right: 5px; vertical-align: middle; }
.twin-legend i.dot { width: 10px; border-radius: 50%; border: 1px solid #222; }
.twin-legend b { display: block; margin-top: 4px; }
.twin-rank { background: #a50026; color: #fff; border: 2px solid #fff; border-radius: 50%;
  text-align: center; font: bold 12px/18px sans-serif; box-shadow: 0 0 3px #000; }
.twin-valve { background: #d50000; color: #fff; border: 1px solid #fff; border-radius: 3px;
  text-align: center; font: bold 11px/18px sans-serif; box-shadow: 0 0 3px #000; }
.twin-cluster { background: rgba(102,187,106,0.35); border-radius: 50%; }
.twin-cluster div { margin: 3px; height: calc(100% - 6px); border-radius: 50%; background: rgba(46,125,50,0.6);
  color: #fff; font: bold 10px sans-serif; display: flex; align-items: center; justify-content: center; }
.twin-valve-other { background: #ff8a65; }
.twin-title { background: rgba(255,255,255,0.92); padding: 4px 8px; font: bold 14px sans-serif;
  border-radius: 4px; }
"""


# --------------------------------------------------------------------------- #
# Coordinates
# --------------------------------------------------------------------------- #


class _Projector:
    """Convert coordinates of one CRS to map lat/lon (WGS84 or GCJ-02), rounded."""

    def __init__(self, basemap: str, precision: int) -> None:
        self.gcj = basemap == "amap"
        self.precision = precision
        self._cache: dict[str, pyproj.Transformer] = {}

    def lonlat(self, xy: np.ndarray, crs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat degrees on the map's datum of an (n, 2) array in ``crs``."""
        key = pyproj.CRS.from_user_input(crs).to_wkt()
        tr = self._cache.get(key)
        if tr is None:
            tr = pyproj.Transformer.from_crs(crs, settings.MAP_CRS, always_xy=True)
            self._cache[key] = tr
        lon, lat = tr.transform(np.asarray(xy[:, 0], float), np.asarray(xy[:, 1], float))
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        if self.gcj:
            lon, lat = wgs84_to_gcj02(lon, lat)
        return np.round(lon, self.precision), np.round(lat, self.precision)

    def flat_points(self, geoms: np.ndarray, crs: Any) -> list[float]:
        """Flat ``[lat0, lon0, lat1, lon1, ...]`` of point geometries."""
        if len(geoms) == 0:
            return []
        xy = shapely.get_coordinates(geoms)
        lon, lat = self.lonlat(xy, crs)
        return np.column_stack([lat, lon]).ravel().tolist()

    def flat_lines(self, geoms: np.ndarray, crs: Any) -> list[list[float]]:
        """One flat ``[lat, lon, ...]`` list per line geometry (multi-parts joined)."""
        if len(geoms) == 0:
            return []
        xy, idx = shapely.get_coordinates(geoms, return_index=True)
        lon, lat = self.lonlat(xy, crs)
        flat = np.column_stack([lat, lon]).ravel()
        counts = np.bincount(idx, minlength=len(geoms))
        cuts = np.cumsum(counts)[:-1] * 2
        return [part.tolist() for part in np.split(flat, cuts)]

    def geometry(self, geoms: np.ndarray, crs: Any) -> np.ndarray:
        """Any geometries converted to map lon/lat (for GeoJSON layers)."""
        return shapely.transform(
            geoms, lambda xy: np.column_stack(self.lonlat(xy, crs))
        )


#: Characters that could end or re-open a <script> element (``</script>``,
#: ``<!--<script>``), as JSON escapes: inside JSON they can only occur in strings.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


#: A brace that would open a Jinja tag (``{{``, ``{%``, ``{#``). folium and
#: branca render every element's script, header and HTML a second time as a
#: Jinja template, so such text in an ID would be evaluated (``{{7*7}}``
#: shown as 49) or break the page (``{% raw %}``).
_JINJA_OPEN = re.compile(r"\{(?=[{%#])")


def _js(value: Any) -> str:
    """JSON for inclusion in a <script> element: no ``<``, ``>`` or ``&`` left for the HTML parser,
    no ``{{``, ``{%`` or ``{#`` left for Jinja.

    In JSON an object's ``{`` is followed by ``"`` or ``}``, so a brace before
    ``{``, ``%`` or ``#`` is inside a string, where ``\\u007b`` is the same
    character to JavaScript.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).translate(_SCRIPT_SAFE)
    return _JINJA_OPEN.sub(r"\\u007b", text)


def _html_text(value: str) -> str:
    """``value`` as HTML text that neither the browser nor Jinja reads as markup (``{{`` stays text)."""
    return _JINJA_OPEN.sub("&#123;", html.escape(value))


def _clean(values: Sequence[Any] | pd.Series) -> list[Any]:
    """Plain JSON-able Python values of a column; NaN / NA become None."""
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype="object")
    if pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
        return [bool(v) for v in s.tolist()]
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        isint = pd.api.types.is_integer_dtype(s.dtype)
        arr = s.to_numpy(dtype="float64", na_value=np.nan)
        ok = np.isfinite(arr)
        out = arr.astype(np.int64).tolist() if isint and ok.all() else arr.tolist()
        if isint and not ok.all():
            out = [int(v) if k else None for v, k in zip(out, ok.tolist())]
        elif not ok.all():
            out = [v if k else None for v, k in zip(out, ok.tolist())]
        return out
    obj = s.astype("object")
    out = obj.where(obj.notna(), None).tolist()
    return [v if v is None or isinstance(v, (str, bool, int, float)) and not isinstance(v, np.generic)
            else _scalar(v) for v in out]


def _scalar(v: Any) -> Any:
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v) if np.isfinite(v) else None
    return str(v)


def _rows(frame: pd.DataFrame) -> list[list[Any]]:
    """Row-wise JSON-able values of a table."""
    cols = [_clean(frame[c]) for c in frame.columns]
    return [list(r) for r in zip(*cols)] if cols else [[] for _ in range(len(frame))]


# --------------------------------------------------------------------------- #
# folium elements
# --------------------------------------------------------------------------- #


class _TwinLayer(MacroElement):
    """Call one of the functions of ``twin-map.js`` on the parent feature group."""

    _template = Template(
        """
{% macro script(this, kwargs) %}
twin.{{ this.fn }}({{ this._parent.get_name() }}, {{ this.stat_name }}, {{ this.payload }});
{% endmacro %}
"""
    )

    def __init__(self, fn: str, name: str, payload: Any) -> None:
        super().__init__()
        self._name = "TwinLayer"
        self.fn = fn
        self.stat_name = _js(name)
        self.payload = _js(payload)


class _TwinLegend(MacroElement):
    _template = Template(
        """
{% macro script(this, kwargs) %}
twin.legend({{ this._parent.get_name() }}, {{ this.html }});
{% endmacro %}
"""
    )

    def __init__(self, legend_html: str) -> None:
        super().__init__()
        self._name = "TwinLegend"
        self.html = _js(legend_html)


class _MaxZoom(MacroElement):
    _template = Template(
        """
{% macro script(this, kwargs) %}
{{ this._parent.get_name() }}.setMaxZoom({{ this.zoom }});
{% endmacro %}
"""
    )

    def __init__(self, zoom: int) -> None:
        super().__init__()
        self._name = "MaxZoom"
        self.zoom = int(zoom)


def _group(m: folium.Map, name: str, *, show: bool = True) -> folium.FeatureGroup:
    """A feature group listed in the layer control as ``name`` (text: Leaflet shows it as HTML)."""
    return folium.FeatureGroup(name=_html_text(name), show=show).add_to(m)


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #


def _check_candidates(candidates: pd.DataFrame, links: gpd.GeoDataFrame) -> pd.DataFrame:
    missing = [c for c in ("rank", "link_id") if c not in candidates.columns]
    if missing:
        raise InputError(
            f"candidates table lacks column(s) {', '.join(missing)}",
            element="candidates",
            fix="give a table with rank, link_id, score as written by `twin localise`",
        )
    cands = candidates.copy()
    cands["link_id"] = cands["link_id"].astype(str)
    unknown = ~cands["link_id"].isin(links.index)
    if unknown.any():
        bad = cands.loc[unknown, "link_id"].head(3).tolist()
        raise UnknownElementError(
            f"{int(unknown.sum())} candidate link(s) not in the network, e.g. {bad}",
            element="candidates",
            fix="use the candidates computed for this network",
        )
    if "score" not in cands.columns:
        cands["score"] = 1.0 / cands["rank"].astype(float)
    return cands.sort_values("rank", kind="stable")


def _score_classes(score: pd.Series) -> tuple[np.ndarray, list[float]]:
    """Palette index per pipe (0 = no score) and the absolute class edges."""
    s = score.to_numpy(dtype=float)
    top = np.nanmax(s) if np.isfinite(s).any() else 0.0
    edges = [e * top for e in SCORE_EDGES]
    cls = np.zeros(len(s), dtype=int)
    if top > 0:
        with np.errstate(invalid="ignore"):
            cls = np.where(np.isfinite(s) & (s > 0), np.searchsorted(edges, s, side="right"), 0)
    return np.clip(cls, 0, len(SCORE_PALETTE) - 1), edges


def _nrw_colour(pct: float | None) -> str:
    if pct is None or not np.isfinite(pct):
        return NO_DATA_COLOUR
    for upper, colour, _ in NRW_CLASSES:
        if pct < upper:
            return colour
    return NRW_CLASSES[-1][1]


def dma_polygons(
    network: Network,
    *,
    method: Literal["hull", "buffer"] = "hull",
    buffer_m: float = 25.0,
    hull_ratio: float = 0.1,
    simplify_m: float = 5.0,
) -> gpd.GeoDataFrame:
    """DMA outlines from the zones of the network's pipes.

    Parameters
    ----------
    network : twin.network.Network
        Links with a ``zone`` column, geometry in ``network.crs`` (metres).
    method : {"hull", "buffer"}
        ``"hull"``: the concave hull (``hull_ratio``) of the DMA's pipe
        vertices, buffered by ``buffer_m`` (fast: 0.4 s for a 20,000-pipe
        city). ``"buffer"``: the union of ``buffer_m`` buffers around every
        pipe (follows the pipes exactly, about 10 times slower).
    buffer_m : float
        Buffer, metres.
    hull_ratio : float
        Concavity of the hull, 0 (most concave) to 1 (convex).
    simplify_m : float
        Simplification tolerance of the outline, metres.

    Returns
    -------
    geopandas.GeoDataFrame
        Index ``dma`` (str), columns ``n_pipes``, ``length_m``; Polygon or
        MultiPolygon geometry in ``network.crs``. Empty when no pipe has a zone.
    """
    links = network.links
    if "zone" not in links.columns:
        return gpd.GeoDataFrame({"n_pipes": [], "length_m": []}, geometry=[], crs=network.crs)
    zoned = links[links["zone"].notna() & (links["zone"].astype(str) != "")]
    rows = []
    for dma, grp in zoned.groupby(zoned["zone"].astype(str), sort=True):
        geoms = grp.geometry.values
        if method == "hull":
            pts = shapely.multipoints(shapely.get_coordinates(geoms))
            shape = shapely.buffer(shapely.concave_hull(pts, ratio=hull_ratio), buffer_m, quad_segs=2)
        elif method == "buffer":
            shape = shapely.union_all(shapely.buffer(shapely.simplify(geoms, simplify_m), buffer_m,
                                                     quad_segs=2))
        else:
            raise InputError(f"unknown DMA outline method {method!r}", element="method",
                             fix="use 'hull' or 'buffer'")
        shape = shapely.simplify(shape, simplify_m)
        length = grp["length_m"].sum() if "length_m" in grp else grp.geometry.length.sum()
        rows.append((dma, len(grp), float(length), shape))
    frame = pd.DataFrame(rows, columns=["dma", "n_pipes", "length_m", "geometry"])
    out = gpd.GeoDataFrame(frame, geometry="geometry", crs=network.crs).set_index("dma")
    if method == "hull" and len(out) > 2:
        # A trunk or transmission zone runs through the whole city: its hull would
        # cover the districts it feeds. Such a zone is outlined by its pipe corridor.
        mid = shapely.line_interpolate_point(zoned.geometry.values, 0.5, normalized=True)
        zone_of = zoned["zone"].astype(str).to_numpy()
        for dma in out.index:
            others = zone_of != dma
            inside = shapely.contains_xy(out.geometry[dma], shapely.get_x(mid[others]),
                                         shapely.get_y(mid[others]))
            if others.any() and inside.mean() > 0.5:
                corridor = shapely.union_all(shapely.buffer(
                    shapely.simplify(zoned.geometry.values[~others], simplify_m), buffer_m, quad_segs=2))
                out.loc[dma, "geometry"] = shapely.simplify(corridor, simplify_m)
    return out


# --------------------------------------------------------------------------- #
# The map
# --------------------------------------------------------------------------- #


def crew_map(
    network: Network,
    *,
    candidates: pd.DataFrame | None = None,
    join: pd.DataFrame | None = None,
    meters: gpd.GeoDataFrame | None = None,
    balance: pd.DataFrame | None = None,
    residuals: pd.Series | pd.DataFrame | None = None,
    plan: pd.DataFrame | None = None,
    basemap: Basemap = "osm",
    valves: gpd.GeoDataFrame | None = None,
    dmas: gpd.GeoDataFrame | None = None,
    selected: str | int | None = None,
    top_n: int = 10,
    simplify_m: float = 1.0,
    precision: int = 5,
    title: str | None = None,
    max_valves: int = 2000,
    valve_radius_m: float = 300.0,
    valve_min_zoom: int = 15,
) -> folium.Map:
    """Build the crew map of a network and whatever results are at hand.

    Parameters
    ----------
    network : twin.network.Network
        Nodes, links and valves as GeoDataFrames in ``network.crs`` (projected,
        metres). Links need ``link_type``, ``diameter_m``, ``length_m``; the
        columns ``material``, ``install_year``, ``zone`` are shown when present.
    candidates : pandas.DataFrame, optional
        Leak candidates (``rank``, ``link_id``, ``score``, optionally
        ``leak_flow_lps``, ``lon``/``lat`` in WGS84 degrees, ``zone``,
        ``in_candidate_zone``). Pipes are coloured by score; the ``top_n``
        first get rank labels; the pipes ``in_candidate_zone`` (else those
        holding ``settings.CANDIDATE_ZONE_SHARE`` of the score) form the zone.
        The map opens on the zone and the ``top_n`` first (see
        :data:`VIEW_MARGIN_SHARE`); without candidates, on the whole network.
    join : pandas.DataFrame, optional
        ``twin.meters.join_meters`` output (index ``meter_id``; ``link_id``,
        ``position``, ``matched``). Gives each customer meter its pipe, and its
        position when ``meters`` lacks it.
    meters : geopandas.GeoDataFrame, optional
        Meter registry (index ``meter_id``; ``kind`` in customer / pressure /
        flow; any CRS, usually EPSG:4326).
    balance : pandas.DataFrame, optional
        Water balance (``dma``, ``date``, ``nrw_pct``, optionally ``siv_m3``,
        ``nrw_m3``, ``mnf_lps``); DMAs are coloured by mean NRW %.
    residuals : pandas.Series or pandas.DataFrame, optional
        Per pressure logger (index ``meter_id``, or a ``meter_id`` column): the
        residual change (m) and anything else to show in its popup; loggers
        are coloured by the magnitude of the first numeric column.
    plan : pandas.DataFrame, optional
        Work orders of :func:`twin.repair.plan_repairs` (``order_id``,
        ``link_id``, ``valves_to_close`` and ``isolated_links`` as
        ``;``-separated IDs, ...). The ``selected`` order is drawn.
    basemap : {"osm", "amap", "none"}
        OpenStreetMap tiles, Amap/Gaode tiles (all geometry shifted to GCJ-02),
        or no tiles (fully offline).
    valves : geopandas.GeoDataFrame, optional
        The valve layer used by ``plan`` (index ``valve_id``, Point geometry in
        any CRS); default ``network.valves``.
    dmas : geopandas.GeoDataFrame, optional
        DMA polygons (index or column ``dma``); default: built from the pipes'
        zones with :func:`dma_polygons`.
    selected : str or int, optional
        ``order_id`` or candidate ``rank`` of the work order to draw; default
        the first order of ``plan``.
    top_n : int
        Number of ranked candidates labelled on the map.
    simplify_m : float
        Simplification tolerance of pipe geometry, metres (0 keeps it all).
    precision : int
        Decimals of the map coordinates (5 is about 1 m).
    title : str, optional
        A title box at the top of the map.
    max_valves : int
        Largest valve layer drawn whole; a larger one is drawn only within
        ``valve_radius_m`` of the top candidates and the work orders' segments.
    valve_radius_m : float
        See ``max_valves``, metres.
    valve_min_zoom : int
        The valve layer appears from this zoom level on (the valves to close
        of the work order are always shown).

    Returns
    -------
    folium.Map
        Write it with :func:`save_map` to get a page that works offline.
    """
    if basemap not in BASEMAPS:
        raise InputError(f"unknown basemap {basemap!r}", element="basemap", fix="use one of osm, amap, none")
    links, crs = _str_index(network.links), network.crs
    proj = _Projector(basemap, precision)
    cands = _check_candidates(candidates, links) if candidates is not None else None
    m = _map_frame(_view_box(links, network.nodes, cands, top_n), proj, crs, basemap, title)
    counts = _dma_layer(m, network, dmas, balance, proj)
    pipe_rows, edges = _pipe_layer(m, links, cands, proj, crs, simplify_m)
    counts["pipes"] = len(links)
    if cands is not None and len(cands):
        counts.update(_zone_layer(m, cands, links, proj, crs))
        counts.update(_candidate_layer(m, cands.head(top_n), network, proj, crs))
    if (meters is not None and len(meters)) or (join is not None and len(join)):
        registry = meters if meters is not None and len(meters) else None
        counts.update(_meter_layers(m, registry, join, residuals, links, network.nodes, proj, crs))
    valve_layer = valves if valves is not None else getattr(network, "valves", None)
    if valve_layer is not None and len(valve_layer):
        valve_layer = _str_index(valve_layer)
        counts.update(_valve_points(m, valve_layer, _valve_focus(cands, plan, links, top_n), links, proj, crs,
                                    max_valves=max_valves, radius_m=valve_radius_m, min_zoom=valve_min_zoom))
    if plan is not None and len(plan):
        counts.update(_plan_layers(m, plan, valve_layer, links, proj, crs, selected, pipe_rows))
    _TwinLegend(_legend_html(edges if cands is not None else None, "dmas" in counts and balance is not None,
                             counts, residuals=residuals is not None)).add_to(m)
    folium.LayerControl(collapsed=True).add_to(m)
    _deterministic_ids(m)
    log.info("crew map: %s", ", ".join(f"{v:,} {k}" for k, v in counts.items()) + f"; basemap {basemap}")
    return m


def _str_index(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A copy of a layer with its index (element IDs) as str."""
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    return frame


def _view_box(links: gpd.GeoDataFrame, nodes: gpd.GeoDataFrame, cands: pd.DataFrame | None,
              top_n: int) -> tuple[float, float, float, float]:
    """The box the map opens on, in the network's CRS (m).

    With candidates: the pipes of the candidate zone and the ``top_n`` best
    candidates, with a margin of :data:`VIEW_MARGIN_SHARE` of the box's larger
    side and at least :data:`VIEW_MARGIN_M`; else the whole network.
    """
    if cands is None or not len(cands):
        return tuple(links.total_bounds if len(links) else nodes.total_bounds)
    focus = pd.unique(np.concatenate([cands.loc[_zone_mask(cands), "link_id"].to_numpy(),
                                      cands["link_id"].head(top_n).to_numpy()]))
    x0, y0, x1, y1 = links.loc[focus].total_bounds
    pad = max(VIEW_MARGIN_M, VIEW_MARGIN_SHARE * max(x1 - x0, y1 - y0))
    return x0 - pad, y0 - pad, x1 + pad, y1 + pad


def _map_frame(box: tuple[float, float, float, float], proj: _Projector, crs: Any,
               basemap: str, title: str | None) -> folium.Map:
    """The map fitted to ``box`` (in ``crs``), with the project's CSS, the basemap tiles and the title box."""
    xmin, ymin, xmax, ymax = box
    lon, lat = proj.lonlat(np.array([[xmin, ymin], [xmax, ymax]]), crs)
    m = folium.Map(
        location=[float(lat.mean()), float(lon.mean())],
        tiles=None,
        prefer_canvas=True,
        control_scale=True,
        zoom_start=14,
    )
    _MaxZoom(19).add_to(m)  # Leaflet needs a max zoom when there is no tile layer
    m.fit_bounds([[float(lat[0]), float(lon[0])], [float(lat[1]), float(lon[1])]])
    m.get_root().header.add_child(Element(f"<style>{_CSS}</style>"), name="twin_css")
    if BASEMAPS[basemap] is not None:
        url, attr, subdomains = BASEMAPS[basemap]  # type: ignore[misc]
        folium.TileLayer(
            tiles=url, attr=attr, name=f"Basemap ({basemap})", subdomains=subdomains,
            max_zoom=19, max_native_zoom=18 if basemap == "amap" else 19, overlay=False,
        ).add_to(m)
    else:
        m.get_root().header.add_child(
            Element("<style>.leaflet-container { background: #f4f3ef; }</style>"), name="twin_bg"
        )
    if title:
        m.get_root().html.add_child(
            Element(
                '<div class="twin-title" style="position:absolute;top:10px;left:60px;'
                f'z-index:1000">{_html_text(title)}</div>'
            ),
            name="twin_title",
        )
    return m


def _dma_outlines(network: Network, dmas: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    """DMA polygons indexed by ``dma`` (str): the given layer (simplified 5 m), else from the zones."""
    if dmas is None:
        return dma_polygons(network)
    dmas = dmas.copy()
    if "dma" in dmas.columns:
        dmas = dmas.set_index("dma")
    dmas.index = dmas.index.astype(str)
    if dmas.crs is not None and dmas.crs.is_projected:
        dmas["geometry"] = shapely.simplify(dmas.geometry.values, 5.0)
    return dmas


def _dma_layer(m: folium.Map, network: Network, dmas: gpd.GeoDataFrame | None,
               balance: pd.DataFrame | None, proj: _Projector) -> dict[str, int]:
    """DMA polygons coloured by mean NRW %, with the balance in their popups."""
    dmas = _dma_outlines(network, dmas)
    if not len(dmas):
        return {}
    nrw = _balance_summary(balance)
    gfc = []
    geoms = proj.geometry(dmas.geometry.values, dmas.crs)
    labels = ["NRW % (mean)", "NRW % (last day)", "last day", "SIV m³/day", "MNF L/s"]
    for dma, geom in zip(dmas.index, geoms):
        row = nrw.get(dma, {})
        colour = _nrw_colour(row.get("nrw_pct_mean"))
        values = [
            _fmt(row.get("nrw_pct_mean"), 1), _fmt(row.get("nrw_pct_last"), 1),
            row.get("date_last"), _fmt(row.get("siv_m3_mean"), 0),
            _fmt(row.get("mnf_lps_mean"), 2),
        ]
        gfc.append(
            {
                "type": "Feature",
                "geometry": shapely.geometry.mapping(geom),
                "properties": {
                    "_style": {"color": colour, "weight": 2, "fillColor": colour,
                               "fillOpacity": 0.25 if row else 0.08, "dashArray": "4 4"},
                    "_popup": _table_html(f"DMA {dma}", labels, values),
                },
            }
        )
    grp = _group(m, "DMAs (NRW %)" if balance is not None else "DMAs")
    _TwinLayer("geojson", "dmas", {"type": "FeatureCollection", "features": gfc}).add_to(grp)
    return {"dmas": len(gfc)}


def _pipe_scores(links: gpd.GeoDataFrame, cands: pd.DataFrame | None) -> tuple[pd.Series, pd.Series]:
    """Leak score (NaN: none) and rank (NA: none) of every pipe, from its best candidate row."""
    score = pd.Series(np.nan, index=links.index)
    rank = pd.Series(pd.NA, index=links.index, dtype="Int64")
    if cands is not None:
        first = cands.drop_duplicates("link_id")
        score.loc[first["link_id"].to_numpy()] = first["score"].to_numpy(dtype=float)
        rank.loc[first["link_id"].to_numpy()] = first["rank"].to_numpy()
    return score, rank


def _pipe_table(links: gpd.GeoDataFrame, score: pd.Series, rank: pd.Series) -> pd.DataFrame:
    """Popup fields of every pipe, in the order of :data:`PIPE_LABELS`."""
    diameter_mm = (links["diameter_m"] * 1000).round() if "diameter_m" in links else pd.Series(np.nan, index=links.index)
    return pd.DataFrame(
        {
            "id": links.index,
            "type": links.get("link_type", pd.Series("pipe", index=links.index)),
            "diameter_mm": diameter_mm.astype("Int64") if diameter_mm.notna().any() else diameter_mm,
            "material": links.get("material"),
            "install_year": links.get("install_year"),
            "length_m": links["length_m"].round(1) if "length_m" in links else links.geometry.length.round(1),
            "zone": links.get("zone"),
            "score": score.round(4),
            "rank": rank,
        },
        index=links.index,
    )


def _pipe_layer(m: folium.Map, links: gpd.GeoDataFrame, cands: pd.DataFrame | None, proj: _Projector,
                crs: Any, simplify_m: float) -> tuple[dict[str, list[Any]], list[float]]:
    """Pipes coloured by leak score, the highest drawn last.

    Returns
    -------
    pipe_rows : dict
        Popup values of each pipe by ID (for the work-order layers).
    edges : list of float
        Lower edges of the score classes (for the legend).
    """
    score, rank = _pipe_scores(links, cands)
    cls, edges = _score_classes(score)
    table = _pipe_table(links, score, rank)
    geoms = links.geometry.values
    if simplify_m > 0:
        geoms = shapely.simplify(geoms, simplify_m, preserve_topology=False)
    diameter_mm = table["diameter_mm"].astype(float)
    weight = np.where(cls > 0, 4.0, 2.0) + np.where(diameter_mm.fillna(0).to_numpy() >= 300, 1.5, 0.0)
    order = np.argsort(cls, kind="stable")  # draw high scores last (on top)
    rows = _rows(table)
    lines = proj.flat_lines(geoms, crs)
    grp = _group(m, "Pipes (leak score)")
    _TwinLayer(
        "lines",
        "pipes",
        {
            "title": "Pipe",
            "labels": PIPE_LABELS,
            "rows": [rows[i] for i in order],
            "coords": [lines[i] for i in order],
            "colour": cls[order].tolist(),
            "palette": SCORE_PALETTE,
            "weight": weight[order].tolist(),
            "opacity": 0.9,
        },
    ).add_to(grp)
    return dict(zip(links.index, rows)), edges


def _zone_layer(m: folium.Map, cands: pd.DataFrame, links: gpd.GeoDataFrame, proj: _Projector,
                crs: Any) -> dict[str, int]:
    """The candidate zone: a 30 m outline around its pipes, with its share of the score."""
    zone_mask = _zone_mask(cands)
    zone_links = cands.loc[zone_mask, "link_id"].unique()
    if not len(zone_links):
        return {}
    hull = shapely.union_all(
        shapely.buffer(links.loc[zone_links].geometry.values, 30.0, quad_segs=4)
    )
    hull = shapely.simplify(hull, 3.0)
    zgeom = proj.geometry(np.array([hull]), crs)[0]
    share = cands.loc[zone_mask, "score"].sum() / max(cands["score"].sum(), 1e-300)
    fc = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": shapely.geometry.mapping(zgeom),
        "properties": {
            "_style": {"color": "#7b1fa2", "weight": 2, "fillColor": "#ce93d8",
                       "fillOpacity": 0.2},
            "_popup": _table_html("Candidate zone", ["pipes", "share of score"],
                                  [len(zone_links), f"{100 * share:.0f} %"]),
        }}]}
    grp = _group(m, f"Candidate zone ({int(round(100 * settings.CANDIDATE_ZONE_SHARE))} %)")
    _TwinLayer("geojson", "zone", fc).add_to(grp)
    return {"zone": 1}


def _candidate_layer(m: folium.Map, top: pd.DataFrame, network: Network, proj: _Projector,
                     crs: Any) -> dict[str, int]:
    """Rank labels of the top candidates, on their pipes."""
    xy = _candidate_points(top, network, proj, crs)
    cols = [c for c in ("link_id", "score", "p_within_300m", "leak_flow_lps", "zone", "in_candidate_zone")
            if c in top.columns]
    tab = top[cols].copy()
    for c in ("score", "p_within_300m"):
        if c in tab:
            tab[c] = tab[c].astype(float).round(4)
    if "leak_flow_lps" in tab:
        tab["leak_flow_lps"] = tab["leak_flow_lps"].astype(float).round(2)
    grp = _group(m, f"Top {len(top)} candidates")
    _TwinLayer(
        "labels",
        "candidates",
        {
            "title": "Candidate",
            "labels": ["rank", "pipe", *cols[1:]],
            "rows": [[f"#{r}", *row] for r, row in zip(top["rank"].tolist(), _rows(tab))],
            "coords": xy,
            "text": [str(r) for r in top["rank"].tolist()],
            "className": "twin-rank",
        },
    ).add_to(grp)
    return {"candidates": len(top)}


def _valve_focus(cands: pd.DataFrame | None, plan: pd.DataFrame | None, links: gpd.GeoDataFrame,
                 top_n: int) -> list[str]:
    """Pipes a large valve layer is drawn around: the top candidates and the orders' segments."""
    focus = list(cands["link_id"].head(top_n)) if cands is not None else []
    if plan is not None and "isolated_links" in plan:
        focus += [i for v in plan["isolated_links"] for i in split_ids(v)]
    return [f for f in dict.fromkeys(focus) if f in links.index]


def _valve_points(m: folium.Map, valve_layer: gpd.GeoDataFrame, focus: list[str], links: gpd.GeoDataFrame,
                  proj: _Projector, crs: Any, *, max_valves: int, radius_m: float,
                  min_zoom: int) -> dict[str, int]:
    """The valve layer: whole up to ``max_valves``, else within ``radius_m`` (m) of the ``focus`` pipes."""
    shown = valve_layer
    label = f"Valves ({len(valve_layer):,})"
    if len(valve_layer) > max_valves:  # a city has tens of thousands: show those that matter
        if focus:
            area = shapely.union_all(shapely.buffer(links.loc[focus].geometry.values, radius_m))
            pts = valve_layer.to_crs(crs).geometry.values
            shown = valve_layer[shapely.intersects(area, pts)]
        else:
            shown = valve_layer.iloc[:0]
        label = f"Valves within {radius_m:g} m of the candidates ({len(shown):,} of {len(valve_layer):,})"
    vals = pd.DataFrame({
        "id": shown.index,
        "pipe": shown.get("link_id"),
        "node": shown.get("node_id"),
    })
    grp = _group(m, label)
    _TwinLayer("points", "valves", {
        "title": "Valve", "labels": ["ID", "pipe", "node"], "rows": _rows(vals),
        "coords": proj.flat_points(shown.geometry.values, shown.crs),
        "colour": [0] * len(vals), "palette": ["#ffffff"], "radius": 3, "fill": 1.0,
        "stroke": "#333", "minZoom": min_zoom,
    }).add_to(grp)
    return {"valves": len(vals)}


def _fmt(v: Any, nd: int) -> Any:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if not np.isfinite(f) else round(f, nd)


def _table_html(title: str, labels: Sequence[str], values: Sequence[Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in zip(labels, values)
        if v is not None and v != ""
    )
    return f"<div class='twin-popup'><b>{html.escape(title)}</b><table>{rows}</table></div>"


def _balance_summary(balance: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Per DMA: mean and last-day NRW %, mean SIV and MNF."""
    if balance is None or len(balance) == 0:
        return {}
    if "dma" not in balance.columns or "nrw_pct" not in balance.columns:
        raise InputError(
            "balance table lacks the columns dma and nrw_pct",
            element="balance",
            fix="give the table of twin.balance.water_balance (dma, date, nrw_pct, ...)",
        )
    b = balance.copy()
    b["dma"] = b["dma"].astype(str)
    if "date" in b:
        b = b.sort_values(["dma", "date"], kind="stable")
    out: dict[str, dict[str, Any]] = {}
    for dma, g in b.groupby("dma", sort=False):
        row: dict[str, Any] = {
            "nrw_pct_mean": float(g["nrw_pct"].astype(float).mean()),
            "nrw_pct_last": float(g["nrw_pct"].astype(float).iloc[-1]),
        }
        if "date" in g:
            row["date_last"] = str(g["date"].iloc[-1])[:10]
        for col in ("siv_m3", "mnf_lps"):
            if col in g:
                row[f"{col}_mean"] = float(g[col].astype(float).mean())
        out[str(dma)] = row
    return out


def _zone_mask(cands: pd.DataFrame) -> np.ndarray:
    if "in_candidate_zone" in cands.columns:
        return cands["in_candidate_zone"].fillna(False).astype(bool).to_numpy()
    s = cands["score"].astype(float).clip(lower=0).to_numpy()
    total = s.sum()
    if total <= 0:
        return np.zeros(len(s), dtype=bool)
    before = np.concatenate([[0.0], np.cumsum(s)[:-1]]) / total
    return before < settings.CANDIDATE_ZONE_SHARE


def _candidate_points(
    top: pd.DataFrame, network: Network, proj: _Projector, crs: Any
) -> list[float]:
    """Label positions: the candidate's lon/lat projected onto its pipe, else the pipe's middle."""
    return proj.flat_points(candidate_points(top, network), crs)


def _meter_layers(
    m: folium.Map,
    meters: gpd.GeoDataFrame | None,
    join: pd.DataFrame | None,
    residuals: pd.Series | pd.DataFrame | None,
    links: gpd.GeoDataFrame,
    network_nodes: gpd.GeoDataFrame,
    proj: _Projector,
    crs: Any,
) -> dict[str, int]:
    """Customer meters (from the registry, else placed on their pipes by the join), loggers, flow meters."""
    if meters is None:
        return _customer_layer(m, *_joined_customers(join, links, proj, crs))  # type: ignore[arg-type]
    meters = meters.copy()
    meters.index = meters.index.astype(str)
    if "kind" not in meters.columns:
        raise InputError("meter registry lacks the column kind", element="meters",
                         fix="give the table of twin.meters.read_meters")
    kind = meters["kind"].astype(str).str.lower()
    counts = _customer_layer(m, *_registry_customers(meters[kind == "customer"], meters.crs, join, proj))
    counts.update(_logger_layer(m, meters[kind == "pressure"], residuals, network_nodes, proj, crs))
    counts.update(_flow_layer(m, meters[kind == "flow"], links, proj, crs))
    return counts


def _registry_customers(
    cust: gpd.GeoDataFrame, meters_crs: Any, join: pd.DataFrame | None, proj: _Projector
) -> tuple[list[str], list[float], list[Any] | None, list[Any] | None]:
    """IDs, flat map coordinates, pipe (matched joins only) and class of the registry's customer meters."""
    cust = cust[~cust.geometry.is_empty & cust.geometry.notna()]
    coords = proj.flat_points(cust.geometry.values, meters_crs)
    pipe = None
    if join is not None and "link_id" in join:
        j = join["link_id"].copy()
        j.index = j.index.astype(str)
        if "matched" in join:
            j = j.where(join["matched"].astype(bool).to_numpy())
        pipe = _clean(j.reindex(cust.index))
    classes = _clean(cust["customer_class"]) if "customer_class" in cust else None
    return cust.index.tolist(), coords, pipe, classes


def _joined_customers(
    join: pd.DataFrame, links: gpd.GeoDataFrame, proj: _Projector, crs: Any
) -> tuple[list[str], list[float], list[Any], None]:
    """IDs, flat map coordinates and pipe of the joined customer meters, placed at their position on it."""
    jj = join[join["matched"].astype(bool)] if "matched" in join else join
    jj = jj[jj["link_id"].astype(str).isin(links.index)]
    pts = shapely.line_interpolate_point(
        links.loc[jj["link_id"].astype(str)].geometry.values,
        jj["position"].astype(float).clip(0, 1).to_numpy(), normalized=True,
    )
    return [str(i) for i in jj.index], proj.flat_points(pts, crs), jj["link_id"].astype(str).tolist(), None


def _customer_layer(m: folium.Map, ids: list[str], coords: list[float], pipe: list[Any] | None,
                    classes: list[Any] | None) -> dict[str, int]:
    """The customer meters, clustered; pipes and classes as factor codes."""
    if not ids:
        return {}
    grp = _group(m, f"Customer meters ({len(ids):,})")
    payload: dict[str, Any] = {"ids": ids, "coords": coords, "pointZoom": 17}
    if pipe is not None:
        codes, names = pd.factorize(pd.Series(pipe, dtype="object"), use_na_sentinel=True)
        payload["links"] = codes.tolist()
        payload["linkNames"] = [str(x) for x in names]
    if classes is not None:
        codes, names = pd.factorize(pd.Series(classes, dtype="object"), use_na_sentinel=True)
        payload["classes"] = codes.tolist()
        payload["classNames"] = [str(x) for x in names]
    _TwinLayer("cluster", "customers", payload).add_to(grp)
    return {"customers": len(ids)}


def _logger_layer(m: folium.Map, loggers: gpd.GeoDataFrame, residuals: pd.Series | pd.DataFrame | None,
                  nodes: gpd.GeoDataFrame, proj: _Projector, crs: Any) -> dict[str, int]:
    """Pressure loggers at their position (else their node), coloured by |residual| when given."""
    logger_pts = _device_points(loggers, nodes, "node_id", crs)
    loggers, logger_pts = loggers[_placed(logger_pts)], logger_pts[_placed(logger_pts)]
    if not len(loggers):
        return {}
    tab = pd.DataFrame({"id": loggers.index,
                        "node": loggers.get("node_id")}, index=loggers.index)
    colour = np.zeros(len(loggers), dtype=int)
    palette = ["#1565c0", "#90caf9", "#ffb74d", "#e65100"]
    if residuals is not None:
        colour = _residual_columns(tab, residuals, colour)
    grp = _group(m, f"Pressure loggers ({len(loggers)})")
    _TwinLayer("points", "loggers", {
        "title": "Pressure logger", "labels": ["ID", *tab.columns[1:].map(str)],
        "rows": _rows(tab), "coords": proj.flat_points(logger_pts, crs),
        "colour": colour.tolist(), "palette": palette, "radius": 7, "fill": 0.95,
        "tooltip": loggers.index.tolist(),
    }).add_to(grp)
    return {"loggers": len(loggers)}


def _residual_columns(tab: pd.DataFrame, residuals: pd.Series | pd.DataFrame,
                      colour: np.ndarray) -> np.ndarray:
    """Add the residuals' numeric columns to the loggers' table ``tab`` (in place, 3 decimals).

    Returns the colour class of each logger: 0 without a residual, else 1-3 by
    the magnitude of the first numeric column relative to the largest.
    """
    res = residuals.to_frame() if isinstance(residuals, pd.Series) else residuals.copy()
    if "meter_id" in res.columns:
        res = res.set_index("meter_id")
    res.index = res.index.astype(str)
    num = res.select_dtypes("number").reindex(tab.index)
    for c in num.columns:
        tab[str(c) if c != 0 else "residual_m"] = num[c].round(3)
    if num.shape[1]:
        mag = num.iloc[:, 0].abs().to_numpy(dtype=float)
        top = np.nanmax(mag) if np.isfinite(mag).any() else 0.0
        if top > 0:
            ok = np.isfinite(mag)
            level = np.minimum((np.where(ok, mag, 0.0) / top * 3).astype(int), 2)
            colour = np.where(ok, 1 + level, 0)
    return colour


def _flow_layer(m: folium.Map, flows: gpd.GeoDataFrame, links: gpd.GeoDataFrame, proj: _Projector,
                crs: Any) -> dict[str, int]:
    """Flow meters at their position, else the middle of their pipe."""
    flow_pts = _device_points(flows, links, "link_id", crs)
    flows, flow_pts = flows[_placed(flow_pts)], flow_pts[_placed(flow_pts)]
    if not len(flows):
        return {}
    tab = pd.DataFrame({"id": flows.index, "pipe": flows.get("link_id")}, index=flows.index)
    grp = _group(m, f"Flow meters ({len(flows)})")
    _TwinLayer("points", "flowmeters", {
        "title": "Flow meter", "labels": ["ID", "pipe"], "rows": _rows(tab),
        "coords": proj.flat_points(flow_pts, crs),
        "colour": [0] * len(flows), "palette": ["#6a1b9a"], "radius": 8, "fill": 0.95,
        "stroke": "#fff", "strokeWeight": 2, "tooltip": flows.index.tolist(),
    }).add_to(grp)
    return {"flowmeters": len(flows)}


def _device_points(devices: gpd.GeoDataFrame, places: gpd.GeoDataFrame, column: str,
                   crs: Any) -> np.ndarray:
    """Device positions in ``crs``: their own, else their node (or the link's middle)."""
    own = devices.geometry.to_crs(crs).values
    missing = shapely.is_missing(own) | shapely.is_empty(own)
    if missing.any() and column in devices.columns:
        ids = devices[column].astype("string").to_numpy()[missing]
        known = pd.Series(ids).isin(places.index.astype(str)).to_numpy()
        fill = np.array([None] * int(missing.sum()), dtype=object)
        if known.any():
            geoms = places.geometry.reindex(pd.Index(ids[known]).astype(str)).values
            if places.geom_type.isin(["LineString", "MultiLineString"]).any():
                geoms = shapely.line_interpolate_point(geoms, 0.5, normalized=True)
            fill[known] = geoms
        own = own.copy()
        own[missing] = fill
    return own


def _placed(points: np.ndarray) -> np.ndarray:
    """True where a point geometry exists and is not empty."""
    return ~(shapely.is_missing(points) | shapely.is_empty(points))


def _plan_layers(
    m: folium.Map,
    plan: pd.DataFrame,
    valve_layer: gpd.GeoDataFrame | None,
    links: gpd.GeoDataFrame,
    proj: _Projector,
    crs: Any,
    selected: str | int | None,
    pipe_rows: dict[str, list[Any]],
) -> dict[str, int]:
    """The selected work order (segment, cut-off pipes, valves to close) and the other orders, hidden."""
    plan = plan.reset_index(drop=True)
    idx = _selected_order(plan, selected)
    order = plan.iloc[idx]
    oid = str(order.get("order_id", idx + 1))
    grp = _group(m, f"Work order {oid}: isolated segment and valves to close")
    counts = _order_pipes(grp, order, oid, links, proj, crs, pipe_rows)
    close = split_ids(order.get("valves_to_close"))
    if close and valve_layer is not None and len(valve_layer):
        known = [v for v in close if v in valve_layer.index]
        if len(known) < len(close):
            log.warning("work order %s: %d valve(s) not in the valve layer", oid,
                        len(close) - len(known))
        vl = valve_layer.loc[known]
        tab = pd.DataFrame({"id": known, "pipe": vl.get("link_id"), "node": vl.get("node_id"),
                            "order": oid})
        _TwinLayer("labels", "close", {
            "title": "Close valve", "labels": ["ID", "pipe", "node", "work order"],
            "rows": _rows(tab), "coords": proj.flat_points(vl.geometry.values, vl.crs),
            "text": ["V"] * len(known), "className": "twin-valve",
        }).add_to(grp)
        counts["close"] = len(known)
    counts.update(_other_orders(m, plan.drop(index=idx), valve_layer, links, proj, crs, pipe_rows))
    return counts


def _selected_order(plan: pd.DataFrame, selected: str | int | None) -> int:
    """Row of the work order to draw: ``selected`` as an ``order_id``, else a candidate rank; default 0."""
    if selected is None:
        return 0
    hit = plan.index[plan.get("order_id", pd.Series(dtype=str)).astype(str) == str(selected)]
    if not len(hit) and "rank" in plan:
        hit = plan.index[plan["rank"].astype(str) == str(selected)]
    if not len(hit):
        raise UnknownElementError(
            f"work order {selected!r} is not in the plan", element="selected",
            fix="give an order_id or candidate rank of the plan",
        )
    return int(hit[0])


def _order_pipes(grp: folium.FeatureGroup, order: pd.Series, oid: str, links: gpd.GeoDataFrame,
                 proj: _Projector, crs: Any, pipe_rows: dict[str, list[Any]]) -> dict[str, int]:
    """The isolated segment of a work order and the pipes its closure cuts off (dashed)."""
    counts: dict[str, int] = {}
    seg = [i for i in split_ids(order.get("isolated_links")) if i in links.index]
    if seg:
        _TwinLayer("lines", "segment", {
            "title": f"Work order {oid}: isolated pipe", "labels": PIPE_LABELS,
            "rows": [pipe_rows[i] for i in seg],
            "coords": proj.flat_lines(links.loc[seg].geometry.values, crs),
            "colour": [0] * len(seg), "palette": ["#ff6d00"], "weight": [8] * len(seg),
            "opacity": 0.75,
        }).add_to(grp)
        counts["segment"] = len(seg)
    dry = [i for i in split_ids(order.get("cut_off_links")) if i in links.index]
    if dry:
        _TwinLayer("lines", "cut_off", {
            "title": f"Work order {oid}: cut off by the closure", "labels": PIPE_LABELS,
            "rows": [pipe_rows[i] for i in dry],
            "coords": proj.flat_lines(links.loc[dry].geometry.values, crs),
            "colour": [0] * len(dry), "palette": ["#ff6d00"], "weight": [5] * len(dry),
            "opacity": 0.7, "dashArray": "6 6",
        }).add_to(grp)
        counts["cut_off"] = len(dry)
    return counts


def _other_orders(m: folium.Map, others: pd.DataFrame, valve_layer: gpd.GeoDataFrame | None,
                  links: gpd.GeoDataFrame, proj: _Projector, crs: Any,
                  pipe_rows: dict[str, list[Any]]) -> dict[str, int]:
    """The other work orders' segments and valves, hidden, for a crew that moves on to the next one."""
    seg_rows, seg_ids, valve_rows, valve_ids = [], [], [], []
    for _, o in others.iterrows():
        other_id = str(o.get("order_id", ""))
        for lk in split_ids(o.get("isolated_links")):
            if lk in links.index:
                seg_ids.append(lk)
                seg_rows.append([*pipe_rows[lk], other_id])
        if valve_layer is not None:
            for v in split_ids(o.get("valves_to_close")):
                if v in valve_layer.index:
                    valve_ids.append(v)
                    valve_rows.append([v, str(valve_layer.at[v, "link_id"]) if "link_id" in valve_layer else None,
                                       other_id])
    if not (seg_ids or valve_ids):
        return {}
    counts: dict[str, int] = {}
    grp = _group(m, f"Other work orders ({len(others)})", show=False)
    if seg_ids:
        _TwinLayer("lines", "other_segments", {
            "title": "Isolated pipe", "labels": [*PIPE_LABELS, "work order"], "rows": seg_rows,
            "coords": proj.flat_lines(links.loc[seg_ids].geometry.values, crs),
            "colour": [0] * len(seg_ids), "palette": ["#ffab40"], "weight": [6] * len(seg_ids),
            "opacity": 0.7,
        }).add_to(grp)
        counts["other_segments"] = len(seg_ids)
    if valve_ids:
        vl = valve_layer.loc[valve_ids]  # type: ignore[union-attr]
        _TwinLayer("labels", "other_close", {
            "title": "Close valve", "labels": ["ID", "pipe", "work order"], "rows": valve_rows,
            "coords": proj.flat_points(vl.geometry.values, vl.crs),
            "text": ["V"] * len(valve_ids), "className": "twin-valve twin-valve-other",
        }).add_to(grp)
        counts["other_close"] = len(valve_ids)
    return counts


def _legend_html(edges: list[float] | None, nrw: bool, counts: dict[str, int],
                 residuals: bool = False) -> str:
    parts = ["<b>Pipes</b>"]
    if edges is not None:
        for k in range(len(SCORE_PALETTE) - 1, 0, -1):
            parts.append(f'<i style="background:{SCORE_PALETTE[k]}"></i>score &ge; {edges[k - 1]:.3g}<br>')
    low = f"score &lt; {edges[0]:.3g} or none" if edges is not None else "pipe"
    parts.append(f'<i style="background:{SCORE_PALETTE[0]}"></i>{low}<br>')
    if "zone" in counts:
        parts.append('<i style="background:#ce93d8;border:1px solid #7b1fa2"></i>candidate zone<br>')
    if "candidates" in counts:
        parts.append('<i class="dot" style="background:#a50026"></i>ranked candidate<br>')
    if nrw:
        parts.append("<b>DMA NRW %</b>")
        for _, colour, label in NRW_CLASSES:
            parts.append(f'<i style="background:{colour}"></i>{label}<br>')
    sym = []
    if "loggers" in counts and residuals:
        sym.append('pressure logger, |residual| relative to the largest:<br>'
                   '<i class="dot" style="background:#90caf9"></i>&lt; 1/3 '
                   '<i class="dot" style="background:#ffb74d"></i>&lt; 2/3 '
                   '<i class="dot" style="background:#e65100"></i>larger<br>')
    elif "loggers" in counts:
        sym.append('<i class="dot" style="background:#1565c0"></i>pressure logger<br>')
    if "flowmeters" in counts:
        sym.append('<i class="dot" style="background:#6a1b9a"></i>flow meter<br>')
    if "customers" in counts:
        sym.append('<i class="dot" style="background:#66bb6a"></i>customer meter<br>')
    if "valves" in counts:
        sym.append('<i class="dot" style="background:#fff"></i>valve<br>')
    if "close" in counts:
        sym.append('<i style="background:#d50000"></i>valve to close<br>')
    if "segment" in counts:
        sym.append('<i style="background:#ff6d00"></i>isolated segment<br>')
    if "cut_off" in counts:
        sym.append('<i style="background:repeating-linear-gradient(90deg,#ff6d00 0 4px,#fff 4px 7px)"></i>'
                   "cut off by the closure<br>")
    if sym:
        parts.append("<b>Symbols</b>")
        parts.extend(sym)
    return "".join(parts)


def _walk(el: Any) -> Iterator[Any]:
    yield el
    for child in el._children.values():
        yield from _walk(child)


def _deterministic_ids(m: folium.Map) -> None:
    """Replace folium's random element IDs so that the same inputs give the same HTML."""
    for i, el in enumerate(_walk(m)):
        el._id = f"{i:04d}"


# --------------------------------------------------------------------------- #
# Offline HTML
# --------------------------------------------------------------------------- #

_CDN_TAG = re.compile(
    r'<script\s+src="(https?://[^"]+)"\s*>\s*</script>|<link\s+rel="stylesheet"\s+href="(https?://[^"]+)"\s*/?>'
)
_KNOWN = ("leaflet", "jquery", "bootstrap", "awesome", "fontawesome", "markercluster", "glyphicons")


def _asset_bundle() -> str:
    """Inline <style> and <script> elements for Leaflet and twin-map.js."""

    def read(rel: str) -> str:
        text = (ASSETS / rel).read_text(encoding="utf-8")
        return re.sub(r"//# sourceMappingURL=\S+", "", text)

    css = read("leaflet/leaflet.css")
    for name in ("layers.png", "layers-2x.png", "marker-icon.png"):
        path = ASSETS / "leaflet" / "images" / name
        if path.exists():
            uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
            css = css.replace(f"url(images/{name})", f"url({uri})")
    css = css.replace("url(images/marker-icon.png)", "none")
    js = "\n".join(read(p) for p in ("leaflet/leaflet.js", "twin-map.js"))
    return f"<style>\n{css}\n</style>\n<script>\n{js}\n</script>\n"


def offline_html(m: folium.Map) -> str:
    """Render a map to HTML with every script and stylesheet inlined (no CDN).

    folium's default ``<script src=...>`` and ``<link href=...>`` tags
    (Leaflet, jQuery, Bootstrap, awesome-markers) are removed from the rendered
    page, not from folium's classes, and replaced by the copy of Leaflet
    1.9.4 vendored in ``twin/assets/leaflet`` (BSD-2 licence beside it) and
    the project's ``twin-map.js`` (canvas line layers, grid clustering of
    customer meters, legend).

    Parameters
    ----------
    m : folium.Map
        A map built by :func:`crew_map` (other folium maps work when they only
        use Leaflet core features).

    Returns
    -------
    str
        A complete HTML document.
    """
    page = m.get_root().render()
    unknown = []
    first = True

    def repl(match: re.Match[str]) -> str:
        nonlocal first
        url = match.group(1) or match.group(2)
        if not any(k in url.lower() for k in _KNOWN):
            unknown.append(url)
        if first:
            first = False
            return _asset_bundle()
        return ""

    page = _CDN_TAG.sub(repl, page)
    if first:  # no tag found: put the bundle at the end of <head>
        page = page.replace("</head>", _asset_bundle() + "</head>", 1)
    if unknown:
        log.warning("removed %d script/stylesheet(s) not vendored in twin/assets: %s",
                    len(unknown), ", ".join(unknown))
    return page


def save_map(m: folium.Map, path: str | Path) -> Path:
    """Write a map as one self-contained HTML file that opens offline.

    Parameters
    ----------
    m : folium.Map
        The map, usually from :func:`crew_map`.
    path : str or Path
        The ``.html`` file to write; missing parent folders are created.

    Returns
    -------
    Path
        The file written.
    """
    out = Path(path)
    if out.exists() and out.is_dir():
        raise InputError("the map path is a directory", path=out, fix="give a file name ending in .html")
    out.parent.mkdir(parents=True, exist_ok=True)
    page = offline_html(m)
    out.write_text(page, encoding="utf-8")
    log.info("wrote crew map %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out
