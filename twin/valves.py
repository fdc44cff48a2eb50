"""Isolation valves: the valve layer and the segments it cuts the network into.

A valve sits on a pipe next to one of its end nodes; closing it disconnects
that pipe from that node. The *segments* are the parts of the network that
stay connected when every (operable) valve is closed: a burst is isolated by
closing the valves on the boundary of the segment that holds the pipe.
The layer comes, in this order, from a GIS valve layer the user gives, from
the network's own valves, or is generated with a utility placement strategy
(N-1 "strategic": at every node all pipes but one get a valve, as in WNTR's
``generate_valve_layer``, but with a local random generator).

Segments are the connected components of a bipartite node/link graph whose
node-link edges are removed where a valve sits, computed with
``scipy.sparse.csgraph.connected_components`` (the partition equals WNTR's
``wntr.metrics.valve_segments``, much faster on a city).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import pyogrio
import numpy as np
import pandas as pd
import shapely

from twin.errors import InputError, UnknownElementError, require_file
from twin.graph import edge_components, link_ends
from twin.model import Network

log = logging.getLogger(__name__)

#: Distance of a generated valve from its node along the pipe, metres (at
#: most a tenth of the pipe's length).
VALVE_OFFSET_M = 2.0


def _pipe_ends(network: Network) -> pd.DataFrame:
    """Long table of (link_id, node_id, end) for every pipe end."""
    pipes = network.links[network.links["link_type"] == "pipe"]
    ends = pd.DataFrame(
        {
            "link_id": np.concatenate([pipes.index.to_numpy(), pipes.index.to_numpy()]).astype(str),
            "node_id": np.concatenate(
                [pipes["start_node"].to_numpy(), pipes["end_node"].to_numpy()]
            ).astype(str),
            "end": np.repeat(["start", "end"], len(pipes)),
        }
    )
    return ends


def valve_points(
    network: Network, link_ids: Iterable[str], node_ids: Iterable[str], *, offset_m: float = VALVE_OFFSET_M
) -> np.ndarray:
    """Point of a valve on ``link`` next to ``node``, in ``network.crs``.

    Parameters
    ----------
    network : twin.network.Network
        The network (link geometry in its projected CRS, metres).
    link_ids, node_ids : iterable of str
        The pipe each valve sits on and the end node it is next to.
    offset_m : float
        Distance from the node along the pipe, metres (at most 10 % of the pipe).

    Returns
    -------
    numpy.ndarray of shapely.Point
    """
    links = network.links
    lk = pd.Index(list(map(str, link_ids)))
    nd = np.asarray(list(map(str, node_ids)))
    geoms = links.loc[lk].geometry.values
    length = shapely.length(geoms)
    d = np.minimum(offset_m, 0.1 * length)
    at_end = links.loc[lk, "end_node"].astype(str).to_numpy() == nd
    return shapely.line_interpolate_point(geoms, np.where(at_end, length - d, d))


def generate_valves(
    network: Network,
    *,
    strategy: Literal["strategic", "random"] = "strategic",
    n: int = 1,
    seed: int | None = 0,
) -> gpd.GeoDataFrame:
    """Generate a valve layer with a utility placement strategy.

    Parameters
    ----------
    network : twin.network.Network
        The network; valves are placed on pipes only.
    strategy : {"strategic", "random"}
        ``"strategic"``: at every node, all incident pipes but ``n`` (chosen at
        random) get a valve next to the node (N-1 for ``n=1``).
        ``"random"``: ``n`` valves at random pipe ends.
    n : int
        See ``strategy``.
    seed : int or None
        Seed of ``numpy.random.default_rng``; the same seed gives the same layer.

    Returns
    -------
    geopandas.GeoDataFrame
        Index ``valve_id`` ("V1", "V2", ...), columns ``link_id``, ``node_id``,
        ``source`` ("generated:<strategy>"); Point geometry in ``network.crs``.
    """
    if n < 0:
        raise InputError(f"valve count n must be >= 0, got {n}", element="n")
    rng = np.random.default_rng(seed)
    ends = _pipe_ends(network)
    if strategy == "strategic":
        ends = ends.assign(key=rng.random(len(ends)))
        ends = ends.sort_values(["node_id", "key"], kind="stable")
        pos = ends.groupby("node_id", sort=False).cumcount().to_numpy()
        chosen = ends[pos >= n].drop(columns="key")
        chosen = chosen.sort_values(["link_id", "end"], kind="stable")
    elif strategy == "random":
        if n > len(ends):
            raise InputError(
                f"cannot place {n} random valves on {len(ends)} pipe ends", element="n",
                fix="ask for fewer valves",
            )
        chosen = ends.iloc[np.sort(rng.choice(len(ends), size=n, replace=False))]
    else:
        raise InputError(
            f"unknown valve placement strategy {strategy!r}", element="strategy",
            fix="use 'strategic' or 'random'",
        )
    out = _layer(network, chosen["link_id"], chosen["node_id"], f"generated:{strategy}")
    log.info("generated %d valves (%s, n=%d, seed=%s)", len(out), strategy, n, seed)
    return out


def _layer(network: Network, link_ids: pd.Series, node_ids: pd.Series, source: str,
           ids: Iterable[str] | None = None) -> gpd.GeoDataFrame:
    link_ids = pd.Series(link_ids).astype(str).to_numpy()
    node_ids = pd.Series(node_ids).astype(str).to_numpy()
    index = pd.Index(
        list(ids) if ids is not None else [f"V{i + 1}" for i in range(len(link_ids))], name="valve_id"
    ).astype(str)
    geom = valve_points(network, link_ids, node_ids) if len(link_ids) else []
    return gpd.GeoDataFrame(
        {"link_id": link_ids, "node_id": node_ids, "source": source},
        geometry=gpd.GeoSeries(geom, crs=network.crs, index=index) if len(link_ids) else [],
        index=index,
        crs=network.crs,
    )


def read_valves(path: str | Path, network: Network, *, max_distance_m: float = 5.0) -> gpd.GeoDataFrame:
    """Read a GIS valve layer and tie every valve to a pipe and an end node.

    Parameters
    ----------
    path : str or Path
        A GeoPackage / GeoJSON / Shapefile of valve points (any CRS). A
        ``valve_id`` column is used as the index when present. Columns
        ``link_id`` and ``node_id`` are used when present; otherwise each valve
        is snapped to the nearest pipe within ``max_distance_m`` and to that
        pipe's nearer end node.
    network : twin.network.Network
        The network.
    max_distance_m : float
        Largest valve-to-pipe distance, metres.

    Returns
    -------
    geopandas.GeoDataFrame
        As :func:`generate_valves`, ``source`` = the file name.
    """
    p = require_file(path, what="valve layer")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(p)]
        layer = "valves" if "valves" in layers else None  # a network GeoPackage holds several
        gdf = gpd.read_file(p, layer=layer)
    except Exception as exc:  # pyogrio raises several types
        raise InputError(f"cannot read the valve layer: {exc}", path=p,
                         fix="give a GeoPackage, GeoJSON or Shapefile of points") from exc
    kinds = set(gdf.geom_type.dropna().unique())
    if kinds - {"Point"}:
        raise InputError(
            f"the valve layer holds {', '.join(sorted(kinds))} geometries, not points"
            + (f" (layers in the file: {', '.join(layers)})" if len(layers) > 1 else ""),
            path=p, fix="give a layer of valve points, or a GeoPackage with a 'valves' layer",
        )
    if gdf.crs is None:
        raise InputError("the valve layer has no CRS", path=p,
                         fix="save it with its coordinate reference system")
    if "valve_id" in gdf.columns:
        ids = gdf["valve_id"].astype(str)
    else:
        ids = pd.Series([f"V{i + 1}" for i in range(len(gdf))])
    dup = ids.duplicated()
    if dup.any():
        raise InputError(f"duplicate valve_id {ids[dup].iloc[0]!r}", path=p, row=int(np.flatnonzero(dup)[0]) + 1,
                         fix="give every valve a unique valve_id")
    return valves_from_frame(gdf.assign(valve_id=ids.to_numpy()), network,
                             max_distance_m=max_distance_m, source=p.name)


def valves_from_frame(
    gdf: gpd.GeoDataFrame, network: Network, *, max_distance_m: float = 5.0, source: str = "valves"
) -> gpd.GeoDataFrame:
    """Tie a GeoDataFrame of valves (``valve_id`` column or index) to pipes and nodes.

    See :func:`read_valves`.
    """
    gdf = gdf.copy()
    if "valve_id" in gdf.columns:
        gdf = gdf.set_index("valve_id")
    gdf.index = gdf.index.astype(str)
    pipes = network.links[network.links["link_type"] == "pipe"]
    if {"link_id", "node_id"} <= set(gdf.columns):
        links = network.links  # isolation valves sit on pipes, and beside pumps and control valves
        link_ids = gdf["link_id"].astype(str)
        node_ids = gdf["node_id"].astype(str)
        bad = ~link_ids.isin(links.index)
        if bad.any():
            raise UnknownElementError(
                f"valve sits on {link_ids[bad].iloc[0]!r}, which is not a link of the network",
                path=source, element=str(gdf.index[bad][0]),
                fix="correct link_id or drop the column to snap valves to the nearest pipe",
            )
        ok_end = (links.loc[link_ids, "start_node"].astype(str).to_numpy() == node_ids.to_numpy()) | (
            links.loc[link_ids, "end_node"].astype(str).to_numpy() == node_ids.to_numpy()
        )
        if not ok_end.all():
            i = int(np.flatnonzero(~ok_end)[0])
            raise InputError(
                f"node {node_ids.iloc[i]!r} is not an end of pipe {link_ids.iloc[i]!r}",
                path=source, element=str(gdf.index[i]), fix="give the end node the valve is next to",
            )
        out = _layer(network, link_ids, node_ids, source, ids=gdf.index)
        if gdf.crs is not None:  # keep surveyed positions; compute the missing ones
            given = gdf.to_crs(network.crs).geometry.to_numpy()
            ok = ~(shapely.is_missing(given) | shapely.is_empty(given))
            out.loc[ok, "geometry"] = given[ok]
        return out
    pts = gdf.to_crs(network.crs)
    right = pipes[["start_node", "end_node", "geometry"]].assign(pipe_id=pipes.index.astype(str))
    joined = gpd.sjoin_nearest(
        pts[["geometry"]], right.reset_index(drop=True),
        how="left", max_distance=max_distance_m, distance_col="distance_m",
    )
    joined = joined.sort_values(["distance_m", "pipe_id"], kind="stable")
    joined = joined[~joined.index.duplicated(keep="first")].reindex(pts.index)
    far = joined["pipe_id"].isna()
    if far.any():
        raise InputError(
            f"{int(far.sum())} valve(s) lie farther than {max_distance_m:g} m from any pipe, "
            f"e.g. {joined.index[far][0]!r}",
            path=source, fix="check the valve layer's CRS or raise max_distance_m",
        )
    lk = joined["pipe_id"].astype(str)
    geoms = pipes.loc[lk].geometry.values
    along = shapely.line_locate_point(geoms, joined.geometry.values, normalized=True)
    node = np.where(along <= 0.5, pipes.loc[lk, "start_node"], pipes.loc[lk, "end_node"])
    out = _layer(network, lk, node, source, ids=joined.index)
    out["geometry"] = joined.geometry.to_numpy()
    log.info("tied %d valves to pipes (median %.1f m)", len(out), float(joined["distance_m"].median()))
    return out


def valve_layer(
    network: Network,
    *,
    valves: gpd.GeoDataFrame | str | Path | None = None,
    strategy: Literal["strategic", "random"] = "strategic",
    n: int = 1,
    seed: int | None = 0,
) -> gpd.GeoDataFrame:
    """The valve layer to plan with: given, the network's own, or generated.

    Parameters
    ----------
    network : twin.network.Network
    valves : GeoDataFrame or path, optional
        A GIS valve layer (see :func:`read_valves`). Default: ``network.valves``
        when not empty, else a layer generated with ``strategy``/``n``/``seed``
        (see :func:`generate_valves`).

    Returns
    -------
    geopandas.GeoDataFrame
        Index ``valve_id``; ``link_id``, ``node_id``, ``source``; Point in ``network.crs``.
    """
    if valves is not None:
        if isinstance(valves, (str, Path)):
            return read_valves(valves, network)
        return valves_from_frame(valves, network)
    own = getattr(network, "valves", None)
    if own is not None and len(own):
        return valves_from_frame(own, network, source=str(getattr(network, "source", "network")))
    return generate_valves(network, strategy=strategy, n=n, seed=seed)


def _unvalved_ends(valves: gpd.GeoDataFrame, nodes: pd.Index, links: pd.DataFrame, start: np.ndarray,
                   end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per link: is its start end / end end free of a valve (still joined to its node)?"""
    keep_start = np.ones(len(links), dtype=bool)
    keep_end = np.ones(len(links), dtype=bool)
    if len(valves):
        vl = pd.Series(np.arange(len(links)), index=links.index.astype(str)).reindex(
            valves["link_id"].astype(str)).to_numpy()
        vn = pd.Series(np.arange(len(nodes)), index=nodes).reindex(valves["node_id"].astype(str)).to_numpy()
        ok = ~(np.isnan(vl) | np.isnan(vn))
        vl, vn = vl[ok].astype(np.int64), vn[ok].astype(np.int64)
        keep_start[vl[start[vl] == vn]] = False
        keep_end[vl[end[vl] == vn]] = False
    return keep_start, keep_end


@dataclass(frozen=True)
class Segments:
    """The valve segments of a network.

    Attributes
    ----------
    node_segment : pandas.Series
        Index ``node_id`` → segment number (int).
    link_segment : pandas.Series
        Index ``link_id`` → segment number (int); pumps and control valves
        belong to the segment of their nodes.
    valves : geopandas.GeoDataFrame
        The operable valves that define the segments.
    """

    node_segment: pd.Series
    link_segment: pd.Series
    valves: gpd.GeoDataFrame

    def boundary(self, segment: int) -> pd.Index:
        """Valve IDs to close to isolate ``segment`` (one side in it, the other not)."""
        v = self.valves
        in_link = self.link_segment.reindex(v["link_id"].astype(str)).to_numpy() == segment
        in_node = self.node_segment.reindex(v["node_id"].astype(str)).to_numpy() == segment
        return v.index[in_link != in_node]


def valve_segments(
    network: Network, valves: gpd.GeoDataFrame, *, inoperable: Iterable[str] = ()
) -> Segments:
    """Cut the network into valve segments.

    Parameters
    ----------
    network : twin.network.Network
    valves : geopandas.GeoDataFrame
        Valve layer (index ``valve_id``; ``link_id``, ``node_id``).
    inoperable : iterable of str
        Valve IDs that cannot be closed (seized, buried, missing); they are left
        out, so the segments grow to the next valves out.

    Returns
    -------
    Segments
    """
    inoperable = [str(v) for v in inoperable]
    unknown = [v for v in inoperable if v not in valves.index]
    if unknown:
        raise UnknownElementError(
            f"inoperable valve(s) {', '.join(unknown[:5])} not in the valve layer",
            element=unknown[0], fix="use valve IDs of the valve layer (valves.geojson of the plan)",
        )
    ops = valves.drop(index=inoperable)
    links = network.links
    nodes, start, end = link_ends(network, strict=True)
    nn, nl = len(nodes), len(links)
    li = np.arange(nl)
    keep_start, keep_end = _unvalved_ends(ops, nodes, links, start, end)
    # bipartite graph: vertices 0..nn-1 are nodes, nn.. are links; a valve cuts its link from its node
    _, label = edge_components(nn + nl, np.concatenate([nn + li[keep_start], nn + li[keep_end]]),
                               np.concatenate([start[keep_start], end[keep_end]]))
    # renumber segments by first appearance among links, then nodes (stable, small numbers)
    order = pd.unique(np.concatenate([label[nn:], label[:nn]]))
    remap = np.empty(label.max() + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    label = remap[label]
    return Segments(
        node_segment=pd.Series(label[:nn], index=nodes, name="segment"),
        link_segment=pd.Series(label[nn:], index=links.index.astype(str), name="segment"),
        valves=ops,
    )
