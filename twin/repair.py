"""Repair planning: from leak candidates to work orders a crew can execute.

For each candidate pipe (the top N of a localisation, or its candidate zone)
:func:`plan_repairs` finds

- the **valves to close**: the boundary of the valve segment holding the pipe
  (:mod:`twin.valves`); valves marked inoperable are left out, so the segment
  grows to the next valves out;
- the **isolated segment** and any part of the network **cut off** from every
  source (reservoir or tank) by the closure;
- the **customers affected**: the customer meters joined
  (:func:`twin.meters.join_meters`) to an isolated or cut-off pipe, and among
  them the **critical** ones (hospitals, schools, industry... by
  ``customer_class``);
- the **demand not served** (L/s) at the isolated and cut-off nodes, and the
  **pressure drop elsewhere** from a pressure-driven (PDD) simulation of the
  closure against the same simulation without it (a closure configuration of
  :class:`twin.hydraulics.EpanetSession`: one input file for every order);
- the **water lost per day** until the repair (from the candidate's leak
  flow) and a **priority**.

Candidates whose pipes share a segment make one work order (one closure
covers them all). :func:`write_plan` writes ``work_orders.csv``,
``work_orders.geojson`` (EPSG:4326), ``valves.geojson`` and one printable HTML
sheet per order with a small inline-SVG map.

Units: flows in L/s, volumes in m³, pressure head in m, lengths in m; geometry
in the network's projected CRS until written (GeoJSON in EPSG:4326).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import wntr

from twin import settings
from twin.crs import transform_xy, wgs84_to_gcj02
from twin.errors import InputError, MissingFileError, UnknownElementError
from twin.graph import edge_components, link_ends
from twin.hydraulics import EpanetSession
from twin.network import Network
from twin.valves import Segments, valve_layer, valve_segments

log = logging.getLogger(__name__)

#: Customer classes (case-insensitive substrings of ``customer_class``)
#: counted as critical: an outage needs advance notice and alternative supply.
CRITICAL_CLASSES = ("hospital", "clinic", "school", "industrial", "industry", "critical",
                    "fire", "care", "dialysis")

#: Expected loss (m³/day) from which an order is priority class P1, resp. P2.
P1_LOSS_M3_DAY = 100.0
P2_LOSS_M3_DAY = 20.0

#: Pressure head below which a node counts as not served, metres.
SERVICE_PRESSURE_M = 10.0

#: Time of day of the closure simulation (local morning peak), seconds after
#: the start of the demand patterns.
SIM_TIME_S = 8 * 3600

ORDER_COLUMNS = [
    "order_id", "priority", "priority_class", "rank", "link_id", "candidate_links",
    "score_share", "p_within_300m", "leak_flow_lps", "water_lost_m3_per_day", "expected_loss_m3_per_day",
    "valves_to_close", "n_valves", "inoperable_nearby", "isolated_links", "isolated_length_m",
    "n_isolated_nodes", "cut_off_links", "customers_affected", "customer_ids",
    "critical_customers", "critical_customer_ids", "advance_notice", "demand_not_served_lps",
    "max_pressure_drop_m", "max_drop_node", "nodes_below_service", "shortfall_elsewhere_lps",
    "lon", "lat",
]


#: Separator of the ID lists of a work order (``valves_to_close``, ``customer_ids``...).
ID_SEPARATOR = ";"


def join_ids(ids: Iterable[Any]) -> str:
    """One ``;``-separated text of IDs, as the ID-list columns of the work orders hold them.

    A ``\\`` in an ID is written ``\\\\`` and a ``;`` is written ``\\;``, so
    :func:`split_ids` gives every ID back whatever it holds (``"V;1"`` stays
    one valve). IDs without either character are written as they are.

    Parameters
    ----------
    ids : iterable
        IDs (converted with ``str``).

    Returns
    -------
    str
        ``""`` for no IDs.
    """
    return ID_SEPARATOR.join(str(i).replace("\\", "\\\\").replace(";", "\\;") for i in ids)


_ID_ITEM = re.compile(r"(?:[^;\\]|\\.|\\$)+", re.DOTALL)
_ID_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def split_ids(value: Any) -> list[str]:
    """The IDs of a text written by :func:`join_ids` (a list, NaN or None are taken as they are).

    Parameters
    ----------
    value : str, sequence, None or NaN
        ``"V1;V\\;2"`` gives ``["V1", "V;2"]``; an empty text, None or NaN
        give ``[]``; a list or array gives its items as strings.

    Returns
    -------
    list of str
    """
    if isinstance(value, (list, tuple, np.ndarray, pd.Index, pd.Series)):
        return [str(v) for v in value]
    if value is None or pd.isna(value):
        return []
    return [_ID_ESCAPE.sub(r"\1", part) for part in _ID_ITEM.findall(str(value))]


# --------------------------------------------------------------------------- #
# Closure simulation
# --------------------------------------------------------------------------- #


class ClosureSimulator:
    """Steady pressure-driven simulations of a network with links closed.

    A closure configuration of :class:`twin.hydraulics.EpanetSession`: the
    model is written once, unchanged, to a temporary directory; the demands
    are frozen at their value at ``sim_time_s`` (base demand × pattern, every
    category summed into the first), the analysis is pressure-driven, and
    each closure only changes link statuses and node demands and solves one
    snapshot. The caller's model is never modified.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The hydraulic model (SI units).
    sim_time_s : int
        Time of day of the snapshot, seconds after the patterns' start.
    required_pressure_m, minimum_pressure_m : float
        PDD pressures: full demand at and above ``required_pressure_m``, none
        at or below ``minimum_pressure_m`` (head, m).

    Notes
    -----
    Use as a context manager (the EPANET project opens on entry, its
    temporary directory is removed on exit), or :meth:`open` and
    :meth:`close`. Results are in L/s and m.
    """

    def __init__(
        self,
        wn: wntr.network.WaterNetworkModel,
        *,
        sim_time_s: int = SIM_TIME_S,
        required_pressure_m: float = 20.0,
        minimum_pressure_m: float = 0.0,
    ) -> None:
        self.wn = wn
        self.sim_time_s = int(sim_time_s)
        self.required_pressure_m = required_pressure_m
        self.minimum_pressure_m = minimum_pressure_m
        self.session: EpanetSession | None = None

    def open(self) -> ClosureSimulator:
        """Open the EPANET project (seconds on a city; safe in a worker thread)."""
        self.session = EpanetSession.closures(
            self.wn, time_s=self.sim_time_s, required_pressure_m=self.required_pressure_m,
            minimum_pressure_m=self.minimum_pressure_m)
        self.node_ids = self.session.node_ids
        self.junction_ids = self.session.junctions
        self.is_junction = pd.Index(self.node_ids).isin(self.junction_ids)
        self._junction_set = set(self.junction_ids)
        return self

    def close(self) -> None:
        """Close the project and remove its temporary directory."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self) -> ClosureSimulator:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, *, closed_links: Iterable[str] = (), dry_nodes: Iterable[str] = ()) -> pd.DataFrame:
        """Solve one snapshot with ``closed_links`` closed and no demand at ``dry_nodes``.

        Returns
        -------
        pandas.DataFrame
            Index node_id (every node), columns ``pressure_m`` and
            ``demand_lps`` (delivered, PDD).
        """
        session = self.session
        if session is None:
            raise RuntimeError("use ClosureSimulator as a context manager")
        closed = [str(lk) for lk in closed_links]
        dry = [str(n) for n in dry_nodes if str(n) in self._junction_set]
        session.set_link_status({lk: False for lk in closed})
        session.set_demands(np.zeros(len(dry)), dry)
        try:
            session.solve()
            pressure = session.node_values("pressure")
            demand = session.node_values("demand_lps")
        finally:
            session.reset_link_status(closed)
            session.reset_demands(dry)
        return pd.DataFrame({"pressure_m": pressure, "demand_lps": demand},
                            index=pd.Index(self.node_ids, name="node_id"))


# --------------------------------------------------------------------------- #
# Isolation
# --------------------------------------------------------------------------- #


def cut_off(network: Network, segments: Segments, segment: int, closed_valves: Sequence[str]) -> tuple[
    pd.Index, pd.Index
]:
    """Nodes and links left without any source when ``segment`` is isolated.

    The isolated segment itself is not included. A part of the network is cut
    off when no reservoir or tank remains connected to it once the segment's
    links are out of service and ``closed_valves`` are shut.

    Returns
    -------
    (pandas.Index, pandas.Index)
        node IDs and link IDs cut off.
    """
    nodes = network.nodes
    links = network.links
    node_ids, start, end = link_ends(network, strict=True)
    nn = len(node_ids)
    in_seg_link = segments.link_segment.to_numpy() == segment
    in_seg_node = segments.node_segment.reindex(nodes.index.astype(str)).to_numpy() == segment
    closed_link_ids = segments.valves.loc[list(closed_valves), "link_id"].astype(str)
    out_link = in_seg_link | links.index.astype(str).isin(closed_link_ids)
    if "status" in links.columns:
        out_link |= links["status"].astype(str).str.lower().eq("closed").to_numpy()
    keep = ~out_link & ~in_seg_node[start] & ~in_seg_node[end]
    _, label = edge_components(nn, start[keep], end[keep])
    source = nodes["node_type"].isin(["reservoir", "tank"]).to_numpy() & ~in_seg_node
    fed = np.zeros(label.max() + 1, dtype=bool)
    fed[label[source]] = True
    dry_node = ~fed[label] & ~in_seg_node
    dry_link = ~in_seg_link & (dry_node[start] | dry_node[end])
    return nodes.index.astype(str)[dry_node], links.index.astype(str)[dry_link]


def candidate_points(candidates: pd.DataFrame, network: Network) -> np.ndarray:
    """Where to dig: each candidate's point on its pipe, in ``network.crs``.

    The candidate's ``lon``/``lat`` (WGS84 degrees, e.g. the estimated leak
    position) is projected onto its pipe, so a rounded or shifted coordinate
    still lands on the pipe; without coordinates, the pipe's middle.

    Parameters
    ----------
    candidates : pandas.DataFrame
        ``link_id`` and optionally ``lon``, ``lat``.
    network : twin.network.Network

    Returns
    -------
    numpy.ndarray of shapely.Point
    """
    lines = network.links.loc[candidates["link_id"].astype(str).to_numpy()].geometry.values
    along = np.full(len(lines), 0.5)
    if {"lon", "lat"} <= set(candidates.columns):
        lon = pd.to_numeric(candidates["lon"], errors="coerce").to_numpy(dtype=float)
        lat = pd.to_numeric(candidates["lat"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(lon) & np.isfinite(lat)
        if ok.any():
            x, y = transform_xy(lon[ok], lat[ok], from_crs=settings.MAP_CRS, to_crs=network.crs)
            along[ok] = shapely.line_locate_point(lines[ok], shapely.points(x, y), normalized=True)
    return shapely.line_interpolate_point(lines, along, normalized=True)


def _critical_mask(classes: pd.Series, critical: Sequence[str]) -> pd.Series:
    text = classes.astype("string").str.lower().fillna("")
    mask = pd.Series(False, index=classes.index)
    for word in critical:
        mask |= text.str.contains(str(word).lower(), regex=False)
    return mask


def _check_candidates(candidates: pd.DataFrame, network: Network) -> pd.DataFrame:
    missing = [c for c in ("rank", "link_id") if c not in candidates.columns]
    if missing:
        raise InputError(
            f"candidates table lacks column(s) {', '.join(missing)}", element="candidates",
            fix="give candidates.csv as written by `twin localise` (rank, link_id, score, ...)",
        )
    c = candidates.copy()
    c["link_id"] = c["link_id"].astype(str)
    c["rank"] = pd.to_numeric(c["rank"], errors="coerce")
    if c["rank"].isna().any():
        row = int(np.flatnonzero(c["rank"].isna().to_numpy())[0]) + 1
        raise InputError("rank is not a number", row=row, element="candidates",
                         fix="give integer ranks, 1 = most likely")
    unknown = ~c["link_id"].isin(network.links.index.astype(str))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0]) + 1
        raise UnknownElementError(
            f"candidate link {c.loc[unknown, 'link_id'].iloc[0]!r} is not in the network",
            row=row, element="candidates",
            fix="plan with the network the candidates were computed on",
        )
    if "score" not in c.columns:
        c["score"] = 1.0 / c["rank"]
    if "leak_flow_lps" not in c.columns:
        c["leak_flow_lps"] = np.nan
    return c.sort_values("rank", kind="stable").reset_index(drop=True)


def plan_repairs(
    network: Network,
    *,
    candidates: pd.DataFrame,
    join: pd.DataFrame | None = None,
    top_n: int | None = 10,
    zone: bool = False,
    inoperable_valves: Iterable[str] = (),
    valves: gpd.GeoDataFrame | str | Path | None = None,
    meters: pd.DataFrame | None = None,
    critical_classes: Sequence[str] = CRITICAL_CLASSES,
    simulate: bool = True,
    sim_time_s: int = SIM_TIME_S,
    service_pressure_m: float = SERVICE_PRESSURE_M,
    seed: int | None = 0,
    progress: Callable[[int, int], None] | None = None,
) -> gpd.GeoDataFrame:
    """Work orders for the repair of the candidate pipes.

    Parameters
    ----------
    network : twin.network.Network
        Network in a projected CRS (metres) with its WNTR model.
    candidates : pandas.DataFrame
        ``rank``, ``link_id``, ``score``; optionally ``leak_flow_lps``, ``lon``,
        ``lat`` (WGS84), ``in_candidate_zone`` (as written by ``twin localise``).
    join : pandas.DataFrame, optional
        :func:`twin.meters.join_meters` output (index ``meter_id``; ``link_id``,
        ``matched``). Without it no customer is counted.
    top_n : int or None
        Plan the ``top_n`` best-ranked candidates (None: all).
    zone : bool
        Plan the candidates ``in_candidate_zone`` instead of the top N.
    inoperable_valves : iterable of str
        Valve IDs that cannot be closed; the next valves out are used.
    valves : GeoDataFrame or path, optional
        Valve layer; default the network's, else generated (N-1, ``seed``);
        see :func:`twin.valves.valve_layer`.
    meters : pandas.DataFrame, optional
        Meter registry with a ``customer_class`` column (index ``meter_id``),
        to find critical customers.
    critical_classes : sequence of str
        Substrings of ``customer_class`` that mark a critical customer.
    simulate : bool
        Run the PDD closure simulations (pressure drop, shortfall elsewhere).
    sim_time_s : int
        Time of the simulated snapshot after the patterns' start, s.
    service_pressure_m : float
        Pressure head below which a node counts as under-served, m.
    seed : int or None
        Seed of a generated valve layer.
    progress : callable, optional
        ``progress(done, total)`` after each order.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per work order (columns :data:`ORDER_COLUMNS`), sorted by
        ``priority`` (1 = first); geometry: the isolated pipes
        (MultiLineString) in ``network.crs``. ``attrs["valves"]`` holds the
        valve layer used, ``attrs["skipped_candidates"]`` the candidates that
        are pumps or valves (``rank``, ``link_id``, ``link_type``, ``reason``):
        they are not planned, and a warning names them.

    Raises
    ------
    InputError
        When no candidate is a pipe.
    """
    cands = _check_candidates(candidates, network)
    total_score = float(cands["score"].clip(lower=0).sum()) or 1.0
    pipes, skipped = _pipe_candidates(cands, network)
    chosen = _choose_candidates(pipes, zone=zone, top_n=top_n)
    vl = valve_layer(network, valves=valves, seed=seed)  # files are read before EPANET opens
    with _closures_opening(network.wn, sim_time_s, enabled=simulate) as closures:
        layout = _layout(network, vl, inoperable_valves=inoperable_valves, join=join, meters=meters,
                         critical_classes=critical_classes)
        rows, geoms = _orders(layout, chosen, closures(), total_score=total_score,
                              service_pressure_m=service_pressure_m, progress=progress)
    out = _prioritised(rows, geoms, network)
    out.attrs["valves"] = layout.valves
    out.attrs["skipped_candidates"] = skipped
    log.info(
        "planned %d work order(s) for %d candidate(s); %d valves in the layer (%s); "
        "%d customers affected in total",
        len(out), len(chosen), len(layout.valves),
        layout.valves["source"].iloc[0] if len(layout.valves) else "none",
        int(out["customers_affected"].sum()) if len(out) else 0,
    )
    return out


def _orders(layout: _Layout, chosen: pd.DataFrame, closures: _Closures | None, *, total_score: float,
            service_pressure_m: float,
            progress: Callable[[int, int], None] | None) -> tuple[list[dict[str, Any]], list[Any]]:
    """One row and one geometry (the isolated pipes) per valve segment holding candidates."""
    network = layout.network
    dig = gpd.GeoSeries(candidate_points(chosen, network), crs=network.crs).to_crs(settings.MAP_CRS)
    dig_lon, dig_lat = np.round(dig.x.to_numpy(), 7), np.round(dig.y.to_numpy(), 7)
    groups = _segment_groups(chosen, layout.segs)
    rows, geoms = [], []
    for k, (seg, members) in enumerate(groups.items()):
        row, out_nodes, seg_links = _order_facts(layout, seg, chosen.iloc[members], total_score)
        row["lon"], row["lat"] = float(dig_lon[members[0]]), float(dig_lat[members[0]])
        row.update(_closure_effects(layout, closures, seg, seg_links, out_nodes,
                                    service_pressure_m=service_pressure_m))
        rows.append(row)
        geoms.append(shapely.union_all(network.links.loc[seg_links].geometry.values))
        if progress is not None:
            progress(k + 1, len(groups))
    return rows, geoms


def _pipe_candidates(cands: pd.DataFrame, network: Network) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The candidates on pipes, and those on pumps and valves (skipped, with their type and the reason).

    A pump or a valve (PRV, PSV, FCV...) is not isolated and dug up like a
    pipe: its leak is a job for the station's mechanics, so a work order that
    calls it a pipe would send a crew to the wrong job. It is skipped with a
    warning naming it; the pipes are still planned. No pipe at all is an error.
    """
    links = network.links
    ids = cands["link_id"].to_numpy()
    kind = (links["link_type"].astype(str).reindex(ids).fillna("pipe").str.lower().to_numpy()
            if "link_type" in links else np.full(len(cands), "pipe"))
    ok = kind == "pipe"
    if ok.all():
        return cands, pd.DataFrame(columns=["rank", "link_id", "link_type", "reason"])
    vtype = (links["valve_type"].reindex(ids).astype("string").fillna("").to_numpy()
             if "valve_type" in links else np.full(len(cands), ""))
    what = np.where((kind == "valve") & (vtype != ""), vtype + " " + kind, kind)
    skipped = pd.DataFrame({"rank": cands["rank"].to_numpy()[~ok], "link_id": ids[~ok],
                            "link_type": what[~ok],
                            "reason": "not a pipe: inspect it on site, it is not isolated and dug up"})
    names = ", ".join(f"{i} ({t}, rank {r:g})" for r, i, t in skipped[["rank", "link_id", "link_type"]].itertuples(
        index=False))
    if not ok.any():
        raise InputError(f"no candidate is a pipe: {names}", element="candidates",
                         fix="a pump or valve is inspected on site, not planned as a pipe repair; "
                             "give candidates on pipes")
    log.warning("skipped %d candidate(s) that are not pipes (inspect them on site; no work order): %s",
                len(skipped), names)
    return cands[ok], skipped


def _choose_candidates(cands: pd.DataFrame, *, zone: bool, top_n: int | None) -> pd.DataFrame:
    """The candidates to plan: those in the candidate zone, or the ``top_n`` best ranked."""
    if zone:
        if "in_candidate_zone" not in cands.columns:
            raise InputError("candidates have no in_candidate_zone column", element="candidates",
                             fix="plan the top N instead (--top N)")
        return cands[cands["in_candidate_zone"].astype(str).str.lower().isin(["true", "1", "yes"])]
    return cands if top_n is None else cands.head(int(top_n))


@dataclass
class _Closures:
    """An open closure simulator and its baseline (no closure) solution."""

    simulator: ClosureSimulator
    baseline: pd.DataFrame


def _open_closures(wn: wntr.network.WaterNetworkModel, sim_time_s: int) -> _Closures:
    """Open the closure model and solve the baseline (runs in the worker thread)."""
    simulator = ClosureSimulator(wn, sim_time_s=sim_time_s).open()
    try:
        return _Closures(simulator, simulator.run())
    except BaseException:
        simulator.close()
        raise


@contextmanager
def _closures_opening(wn: wntr.network.WaterNetworkModel, sim_time_s: int, *,
                      enabled: bool) -> Iterator[Callable[[], _Closures | None]]:
    """Open the closure model in a worker thread; yield a call that waits for it (None if disabled).

    EPANET reads the model and opens its hydraulics (seconds on a city) while
    the caller works out segments, customers and cut-off areas (ctypes
    releases the GIL). Opening switches the process's working directory for a
    moment (EPANET's scratch names, :func:`twin.scratch.epanet_scratch`): the
    caller uses no relative path meanwhile. On exit the model is closed, also
    after an error.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-closure-open") as pool:
        opening = pool.submit(_open_closures, wn, sim_time_s) if enabled else None
        try:
            yield (lambda: opening.result()) if opening is not None else (lambda: None)
        finally:
            if opening is not None:
                _close_when_opened(opening)


def _close_when_opened(opening: Future) -> None:
    """Close the closure model once its worker is done (it may still be opening after an error)."""
    try:
        closures = opening.result()
    except BaseException:  # the opening failed: nothing is left open, the error was raised already
        return
    closures.simulator.close()


@dataclass
class _Layout:
    """What the work orders are cut from, EPANET aside.

    Attributes
    ----------
    network : Network
    valves : geopandas.GeoDataFrame
        The valve layer used.
    segs, all_segs : Segments
        Valve segments without the inoperable valves, and with every valve.
    inoperable : set of str
        Valve IDs that cannot be closed.
    length : pandas.Series
        Pipe length (m) by link ID.
    by_link : dict
        Customer meter IDs by link ID.
    critical : pandas.Series
        Whether a customer meter (index) is critical.
    """

    network: Network
    valves: gpd.GeoDataFrame
    segs: Segments
    all_segs: Segments
    inoperable: set[str]
    length: pd.Series
    by_link: Mapping[str, Sequence[str]]
    critical: pd.Series


def _layout(network: Network, vl: gpd.GeoDataFrame, *, inoperable_valves: Iterable[str],
            join: pd.DataFrame | None, meters: pd.DataFrame | None,
            critical_classes: Sequence[str]) -> _Layout:
    """Valve segments, pipe lengths and customers per pipe, for the valve layer ``vl``."""
    inoperable_valves = list(inoperable_valves)
    segs = valve_segments(network, vl, inoperable=inoperable_valves)
    all_segs = valve_segments(network, vl) if inoperable_valves else segs
    links = network.links
    length = links["length_m"].fillna(0.0) if "length_m" in links else links.geometry.length
    length.index = links.index.astype(str)
    by_link, critical = _customers_by_link(join, meters, critical_classes)
    return _Layout(network, vl, segs, all_segs, set(map(str, inoperable_valves)), length, by_link, critical)


def _customers_by_link(join: pd.DataFrame | None, meters: pd.DataFrame | None,
                       critical_classes: Sequence[str]) -> tuple[Mapping[str, Sequence[str]], pd.Series]:
    """Matched customer meters per link ID, and which of them are critical."""
    cust = pd.DataFrame(columns=["link_id"])
    if join is not None and len(join):
        j = join.copy()
        j.index = j.index.astype(str)
        if "matched" in j.columns:
            j = j[j["matched"].fillna(False).astype(bool)]
        cust = j[["link_id"]].dropna().astype({"link_id": str})
    critical = pd.Series(False, index=cust.index)
    if meters is not None and "customer_class" in getattr(meters, "columns", []):
        cls = meters["customer_class"].copy()
        cls.index = cls.index.astype(str)
        critical = _critical_mask(cls.reindex(cust.index), critical_classes)
    return (cust.groupby("link_id").groups if len(cust) else {}), critical


def _segment_groups(chosen: pd.DataFrame, segs: Segments) -> dict[int, list[int]]:
    """Positions of the chosen candidates per valve segment (one work order each)."""
    groups: dict[int, list[int]] = {}
    for i, lk in enumerate(chosen["link_id"]):
        groups.setdefault(int(segs.link_segment[lk]), []).append(i)
    return groups


def _order_facts(layout: _Layout, seg: int, sub: pd.DataFrame,
                 total_score: float) -> tuple[dict[str, Any], pd.Index, pd.Index]:
    """One work order's valves, isolated and cut-off parts, customers and losses.

    Returns the order's row (without dig point and hydraulics), the nodes out
    of service (segment and cut off) and the segment's links.
    """
    network, segs = layout.network, layout.segs
    best = sub.iloc[0]
    close = list(segs.boundary(seg))
    seg_links = network.links.index.astype(str)[segs.link_segment.to_numpy() == seg]
    seg_nodes = segs.node_segment.index[segs.node_segment.to_numpy() == seg]
    dry_nodes, dry_links = cut_off(network, segs, seg, close)
    nearby = []  # inoperable valves that would have bounded the normal segment
    if layout.inoperable:
        normal = int(layout.all_segs.link_segment[best["link_id"]])
        nearby = [v for v in layout.all_segs.boundary(normal) if v in layout.inoperable]
    affected = sorted(m for lk in seg_links.append(dry_links) for m in layout.by_link.get(lk, []))
    crit = [m for m in affected if bool(layout.critical.get(m, False))]
    leak = float(best["leak_flow_lps"]) if pd.notna(best["leak_flow_lps"]) else np.nan
    share = float(sub["score"].clip(lower=0).sum()) / total_score
    lost = leak * 86.4 if np.isfinite(leak) else np.nan
    row: dict[str, Any] = {
        "rank": int(best["rank"]),
        "link_id": best["link_id"],
        "candidate_links": join_ids(sub["link_id"]),
        "score_share": round(share, 6),
        "p_within_300m": float(best["p_within_300m"]) if pd.notna(best.get("p_within_300m", np.nan)) else np.nan,
        "leak_flow_lps": leak,
        "water_lost_m3_per_day": lost,
        "expected_loss_m3_per_day": lost * share if np.isfinite(lost) else np.nan,
        "valves_to_close": join_ids(close),
        "n_valves": len(close),
        "inoperable_nearby": join_ids(nearby),
        "isolated_links": join_ids(seg_links),
        "isolated_length_m": float(layout.length.reindex(seg_links).sum()),
        "n_isolated_nodes": len(seg_nodes),
        "cut_off_links": join_ids(dry_links),
        "customers_affected": len(affected),
        "customer_ids": join_ids(affected),
        "critical_customers": len(crit),
        "critical_customer_ids": join_ids(crit),
        "advance_notice": bool(crit),
    }
    return row, seg_nodes.append(dry_nodes), seg_links


def _closure_effects(layout: _Layout, closures: _Closures | None, seg: int, seg_links: pd.Index,
                     out_nodes: pd.Index, *, service_pressure_m: float) -> dict[str, Any]:
    """Demand not served (L/s) and, with a closure model, the pressure effects elsewhere."""
    if closures is None:
        dem = layout.network.nodes["base_demand_m3s"].copy()
        dem.index = dem.index.astype(str)
        return {"demand_not_served_lps": float(dem.reindex(out_nodes).fillna(0).sum() * 1000),
                "max_pressure_drop_m": np.nan, "max_drop_node": "", "nodes_below_service": np.nan,
                "shortfall_elsewhere_lps": np.nan}
    sim, baseline = closures.simulator, closures.baseline
    valves = list(layout.segs.boundary(seg))
    closed = list(seg_links) + list(layout.segs.valves.loc[valves, "link_id"].astype(str))
    res = sim.run(closed_links=sorted(set(closed)), dry_nodes=out_nodes)
    elsewhere = sim.is_junction & ~baseline.index.isin(out_nodes)
    drop = (baseline["pressure_m"] - res["pressure_m"])[elsewhere]
    below = (res["pressure_m"] < service_pressure_m) & (baseline["pressure_m"] >= service_pressure_m)
    return {
        "demand_not_served_lps": float(baseline["demand_lps"][baseline.index.isin(out_nodes)].sum()),
        "max_pressure_drop_m": max(float(drop.max()), 0.0) if len(drop) else 0.0,
        "max_drop_node": str(drop.idxmax()) if len(drop) else "",
        "nodes_below_service": int(below[elsewhere].sum()),
        "shortfall_elsewhere_lps": float((baseline["demand_lps"] - res["demand_lps"])[elsewhere]
                                         .clip(lower=0).sum()),
    }


def _prioritised(rows: list[dict[str, Any]], geoms: list[Any], network: Network) -> gpd.GeoDataFrame:
    """The work orders by priority: expected loss first; equal losses, fewer customers first."""
    orders = pd.DataFrame(rows)
    if len(orders):
        key = orders["expected_loss_m3_per_day"].fillna(-1.0)
        order = np.lexsort((orders["rank"].to_numpy(), orders["customers_affected"].to_numpy(),
                            -key.to_numpy()))
        orders = orders.iloc[order].reset_index(drop=True)
        geoms = [geoms[i] for i in order]
        orders["priority"] = np.arange(1, len(orders) + 1)
        loss = orders["expected_loss_m3_per_day"]
        orders["priority_class"] = np.where(loss >= P1_LOSS_M3_DAY, "P1",
                                            np.where(loss >= P2_LOSS_M3_DAY, "P2", "P3"))
        orders["order_id"] = [f"WO-{i:02d}" for i in orders["priority"]]
    else:
        orders = pd.DataFrame(columns=ORDER_COLUMNS)
    orders = orders.reindex(columns=ORDER_COLUMNS)
    return gpd.GeoDataFrame(orders, geometry=gpd.GeoSeries(geoms, crs=network.crs), crs=network.crs)


# --------------------------------------------------------------------------- #
# Output files
# --------------------------------------------------------------------------- #


def write_plan(
    orders: gpd.GeoDataFrame,
    out_dir: str | Path,
    network: Network,
    *,
    valves: gpd.GeoDataFrame | None = None,
    join: pd.DataFrame | None = None,
    meters: gpd.GeoDataFrame | None = None,
) -> dict[str, Path]:
    """Write the work orders: CSV, GeoJSON, valve layer and one HTML sheet per order.

    Parameters
    ----------
    orders : geopandas.GeoDataFrame
        :func:`plan_repairs` output.
    out_dir : str or Path
        Folder to write into (created).
    network : twin.network.Network
    valves : geopandas.GeoDataFrame, optional
        The valve layer (default ``orders.attrs["valves"]``).
    join, meters : optional
        To draw the affected customers on the sheets (meters' own positions
        when given, else their positions on the pipes).

    Returns
    -------
    dict of str to Path
        ``work_orders``, ``geojson``, ``valves`` and ``sheet:<order_id>`` files.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the plan output is a file, not a folder", path=out,
                         fix="give a folder for --out")
    out.mkdir(parents=True, exist_ok=True)
    vl = valves if valves is not None else orders.attrs.get("valves")
    files: dict[str, Path] = {}
    csv = out / "work_orders.csv"
    table = pd.DataFrame(orders.drop(columns="geometry"))
    for col in table.select_dtypes("float").columns:  # lon/lat to 1e-7 degrees (1 cm), the rest 1e-4
        table[col] = table[col].round(7 if col in ("lon", "lat") else 4)
    table.to_csv(csv, index=False)
    files["work_orders"] = csv
    gj = out / "work_orders.geojson"
    wgs = orders.to_crs(settings.MAP_CRS)
    gj.write_text(wgs.to_json(na="null", drop_id=True), encoding="utf-8")
    files["geojson"] = gj
    if vl is not None:
        vpath = out / "valves.geojson"
        closing = {}
        for oid, vs in zip(orders["order_id"], orders["valves_to_close"]):
            for v in split_ids(vs):
                closing.setdefault(v, []).append(str(oid))
        v4326 = vl.to_crs(settings.MAP_CRS).reset_index()
        v4326["closed_by"] = [join_ids(closing.get(v, [])) for v in v4326["valve_id"]]
        vpath.write_text(v4326.to_json(na="null", drop_id=True), encoding="utf-8")
        files["valves"] = vpath
    positions = _customer_points(network, join, meters)
    sheets = out / "sheets"
    sheets.mkdir(exist_ok=True)
    for i in range(len(orders)):
        row = orders.iloc[i]
        path = sheets / f"{row['order_id']}.html"
        path.write_text(order_sheet(row, network, valves=vl, customers=positions), encoding="utf-8")
        files[f"sheet:{row['order_id']}"] = path
    log.info("wrote %d work order(s) to %s", len(orders), out)
    return files


def read_plan(plan_dir: str | Path) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
    """Read the work orders and valve layer written by :func:`write_plan` (EPSG:4326)."""
    d = Path(plan_dir)
    gj = d / "work_orders.geojson"
    if not gj.exists():
        raise MissingFileError("no work_orders.geojson in the plan folder", path=d,
                               fix="give the --out folder of `twin plan`")
    orders = gpd.read_file(gj)
    for col in ("valves_to_close", "isolated_links", "order_id", "link_id"):
        if col in orders:
            orders[col] = orders[col].fillna("").astype(str)
    vpath = d / "valves.geojson"
    vl = None
    if vpath.exists():
        vl = gpd.read_file(vpath)
        vl["valve_id"] = vl["valve_id"].astype(str)
        vl = vl.set_index("valve_id")
    return orders, vl


def _customer_points(network: Network, join: pd.DataFrame | None, meters: pd.DataFrame | None) -> gpd.GeoSeries | None:
    if join is None or not len(join):
        return None
    j = join.copy()
    j.index = j.index.astype(str)
    if meters is not None and len(meters):
        pts = meters.to_crs(network.crs).geometry
        pts.index = pts.index.astype(str)
        return pts.reindex(j.index).dropna()
    if "matched" in j:
        j = j[j["matched"].fillna(False).astype(bool)]
    lk = j["link_id"].astype(str)
    ok = lk.isin(network.links.index.astype(str))
    j, lk = j[ok], lk[ok]
    pts = shapely.line_interpolate_point(network.links.loc[lk].geometry.values,
                                         j["position"].astype(float).clip(0, 1).to_numpy(),
                                         normalized=True)
    return gpd.GeoSeries(pts, index=j.index, crs=network.crs)


def _svg_map(row: pd.Series, network: Network, valves: gpd.GeoDataFrame | None,
             customers: gpd.GeoSeries | None, *, width: int = 640, height: int = 420,
             margin_m: float = 120.0) -> str:
    """Inline SVG of the isolated segment, valves to close and customers nearby."""
    seg_ids = split_ids(row["isolated_links"])
    links = network.links
    seg = links.loc[[s for s in seg_ids if s in links.index]]
    if seg.empty:
        return ""
    dry_ids = [s for s in split_ids(row.get("cut_off_links")) if s in links.index]
    x0, y0, x1, y1 = pd.concat([seg.geometry, links.loc[dry_ids].geometry]).total_bounds
    x0, y0, x1, y1 = x0 - margin_m, y0 - margin_m, x1 + margin_m, y1 + margin_m
    scale = min(width / max(x1 - x0, 1.0), height / max(y1 - y0, 1.0))
    # centre the drawing: widen the box to the sheet's aspect
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0, x1 = cx - width / scale / 2, cx + width / scale / 2
    y0, y1 = cy - height / scale / 2, cy + height / scale / 2
    box = shapely.box(x0, y0, x1, y1)

    def path(geom: Any) -> str:
        parts = []
        for line in getattr(geom, "geoms", [geom]):
            xy = np.asarray(line.coords)
            px = (xy[:, 0] - x0) * scale
            py = height - (xy[:, 1] - y0) * scale
            parts.append("M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py)))
        return " ".join(parts)

    def pt(p: Any) -> tuple[float, float]:
        return (p.x - x0) * scale, height - (p.y - y0) * scale

    near = links.iloc[links.sindex.query(box, predicate="intersects")]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" class="sheet-map">',
           f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#999"/>']
    for geom in shapely.clip_by_rect(near.geometry.values, x0, y0, x1, y1):
        if not geom.is_empty:
            out.append(f'<path d="{path(geom)}" stroke="#9e9e9e" stroke-width="1.5" fill="none"/>')
    for geom in shapely.clip_by_rect(links.loc[dry_ids].geometry.values, x0, y0, x1, y1):
        if not geom.is_empty:
            out.append(f'<path d="{path(geom)}" stroke="#ff6d00" stroke-width="4" fill="none" '
                       'stroke-dasharray="6 4" stroke-opacity="0.8"/>')
    for geom in seg.geometry.values:
        out.append(f'<path d="{path(geom)}" stroke="#ff6d00" stroke-width="6" fill="none" '
                   'stroke-opacity="0.8"/>')
    cand = links.loc[str(row["link_id"])].geometry if str(row["link_id"]) in links.index else None
    if cand is not None:
        out.append(f'<path d="{path(cand)}" stroke="#a50026" stroke-width="3" fill="none"/>')
    if customers is not None:
        ids = split_ids(row["customer_ids"])
        for p in customers.reindex(ids).dropna().values:
            if box.contains(p):
                cx, cy = pt(p)
                out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="#43a047"/>')
    if valves is not None:
        v = valves.to_crs(network.crs) if valves.crs != network.crs else valves
        for vid in split_ids(row["valves_to_close"]):
            if vid in v.index:
                cx, cy = pt(v.geometry[vid])
                out.append(f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" '
                           'fill="#d50000" stroke="#fff"/>')
                out.append(f'<text x="{cx + 7:.1f}" y="{cy - 6:.1f}" font-size="11" '
                           f'font-family="sans-serif" fill="#000">{html.escape(vid)}</text>')
    bar = next(b for b in (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0) if b * scale >= 60 or b == 2000.0)
    out.append(f'<line x1="10" y1="{height - 12}" x2="{10 + bar * scale:.1f}" y2="{height - 12}" '
               'stroke="#000" stroke-width="3"/>')
    out.append(f'<text x="10" y="{height - 18}" font-size="11" font-family="sans-serif">'
               f'{bar:.0f} m</text>')
    out.append("</svg>")
    return "".join(out)


def _sheet_number(v: Any, nd: int = 1) -> str:
    """A number for the sheet with ``nd`` decimals and thousands separators ("–" if missing)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "–" if not np.isfinite(f) else f"{f:,.{nd}f}"


def _sheet_valve_rows(close: Sequence[str], valves: gpd.GeoDataFrame | None) -> str:
    """HTML table rows of the valves to close, with where they are and tick boxes."""
    e = html.escape
    out = ""
    for i, vid in enumerate(close, 1):
        where = ""
        if valves is not None and vid in valves.index:
            v = valves.loc[vid]
            where = f"pipe {e(str(v.get('link_id', '')))}, next to node {e(str(v.get('node_id', '')))}"
        out += f"<tr><td>{i}</td><td><b>{e(vid)}</b></td><td>{where}</td><td>☐ closed</td><td>☐ reopened</td></tr>"
    return out


def _sheet_chance(p: Any) -> str:
    """A probability for a crew: a percentage, and a plain word when the job is unsure."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "not given"
    if not np.isfinite(p):
        return "not given"
    word = "likely" if p >= 0.8 else ("possible" if p >= 0.5 else "unsure: search the zone")
    return f"{100 * p:.0f} % ({word})"


def _sheet_facts(row: pd.Series) -> tuple[list[tuple[str, str]], set[str]]:
    """The sheet's (label, value) facts, and the labels whose value is HTML already."""
    e, num = html.escape, _sheet_number
    crit = ", ".join(split_ids(row.get("critical_customer_ids")))
    facts = [
        ("Priority", f"{row['priority']} ({row['priority_class']})"),
        ("Suspected pipe", f"{row['link_id']} (candidate rank {row['rank']})"),
        ("Chance the leak is within 300 m", _sheet_chance(row.get("p_within_300m"))),
        ("Other candidates in segment", ", ".join(split_ids(row["candidate_links"]))),
        ("Estimated leak flow", f"{num(row['leak_flow_lps'], 2)} L/s"),
        ("Water lost per day until repair", f"{num(row['water_lost_m3_per_day'], 1)} m³/day"),
        ("Expected loss (× score share)", f"{num(row['expected_loss_m3_per_day'], 1)} m³/day"),
        ("Isolated pipes", f"{len(split_ids(row['isolated_links']))} "
                           f"({num(row['isolated_length_m'], 0)} m)"),
        ("Customers without water", f"{row['customers_affected']}"),
        ("Critical customers", f"{row['critical_customers']} {e(crit)}"),
        ("Demand not served", f"{num(row['demand_not_served_lps'], 2)} L/s"),
        ("Largest pressure drop elsewhere", f"{num(row['max_pressure_drop_m'], 2)} m "
                                            f"(node {e(str(row.get('max_drop_node') or '–'))})"),
        ("Nodes falling below service pressure", num(row["nodes_below_service"], 0)),
    ]
    raw = {"Critical customers"}
    if pd.notna(row.get("lat")) and pd.notna(row.get("lon")):
        lat, lon = float(row["lat"]), float(row["lon"])
        glon, glat = wgs84_to_gcj02(np.array([lon]), np.array([lat]))
        facts.append(("Dig here (WGS84, GPS)",
                      f'<a href="geo:{lat:.6f},{lon:.6f}">{lat:.6f}, {lon:.6f}</a>'))
        facts.append(("Dig here (GCJ-02, Amap / Tencent)", f"{float(glat[0]):.6f}, {float(glon[0]):.6f}"))
        raw.add("Dig here (WGS84, GPS)")
    return facts, raw


def order_sheet(row: pd.Series, network: Network, *, valves: gpd.GeoDataFrame | None = None,
                customers: gpd.GeoSeries | None = None) -> str:
    """A printable HTML work-order sheet (A4) with an inline SVG map.

    Parameters
    ----------
    row : pandas.Series
        One row of :func:`plan_repairs`.
    network : twin.network.Network
    valves : geopandas.GeoDataFrame, optional
        The valve layer, to draw and locate the valves to close.
    customers : geopandas.GeoSeries, optional
        Customer meter positions (index ``meter_id``) in any CRS.

    Returns
    -------
    str
        A complete HTML document with no external resources.
    """
    if customers is not None and customers.crs is not None and customers.crs != network.crs:
        customers = customers.to_crs(network.crs)
    e = html.escape
    close = split_ids(row["valves_to_close"])
    valve_rows = _sheet_valve_rows(close, valves)
    facts, raw = _sheet_facts(row)
    fact_rows = "".join(f"<tr><th>{e(k)}</th><td>{v if k in raw else e(v)}</td></tr>"
                        for k, v in facts)
    customers_list = e(", ".join(split_ids(row["customer_ids"]))) or "none"
    svg = _svg_map(row, network, valves, customers)
    notice = ("<p class='warn'>Critical customers are affected: give advance notice and arrange "
              "alternative supply before closing.</p>" if bool(row.get("advance_notice")) else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Work order {e(str(row['order_id']))}</title>
<style>
body {{ font: 13px/1.4 sans-serif; margin: 16px; color: #000; }}
h1 {{ font-size: 20px; margin: 0 0 8px; }}
table {{ border-collapse: collapse; margin: 6px 0 12px; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; font-weight: normal; }}
.warn {{ border: 2px solid #d50000; padding: 6px; font-weight: bold; }}
.legend span {{ margin-right: 14px; }}
.sign {{ margin-top: 24px; }}
@media print {{ body {{ margin: 0; }} @page {{ size: A4; margin: 12mm; }} }}
</style></head><body>
<h1>Work order {e(str(row['order_id']))}: isolate and repair pipe {e(str(row['link_id']))}</h1>
{notice}
<table>{fact_rows}</table>
<h2>Valves to close ({len(close)})</h2>
<table><tr><th>#</th><th>valve</th><th>where</th><th>closed</th><th>reopened</th></tr>{valve_rows}</table>
<h2>Map</h2>
{svg}
<p class="legend"><span style="color:#ff6d00">━ isolated segment</span>
<span style="color:#ff6d00">┅ cut off by the closure</span>
<span style="color:#a50026">━ suspected pipe</span><span style="color:#d50000">■ valve to close</span>
<span style="color:#43a047">● customer affected</span></p>
<h2>Customers affected ({row['customers_affected']})</h2>
<p>{customers_list}</p>
<p class="sign">Crew: ____________________ Date/time closed: ____________ Reopened: ____________</p>
</body></html>
"""
