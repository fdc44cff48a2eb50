"""The network data model: a :class:`Network` and the tables it holds.

This module holds the data, not the stages: the dataclass that every stage
(meters, demand, hydraulics, localisation, repair, maps) receives, the column
contracts of its tables and the helpers that build those tables from a WNTR
model. It imports no stage module, so both readers (:mod:`twin.network` for
EPANET files, :mod:`twin.gis` for GIS layers) depend on it and not on each
other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pyproj
import shapely
import wntr

from twin.crs import transform_xy
from twin.graph import graph_from_network

__all__ = [
    "LINK_COLUMNS",
    "NODE_COLUMNS",
    "Network",
    "VALVE_COLUMNS",
    "empty_valves",
    "lonlat_bounds",
    "tables_from_wn",
]

#: Columns of ``Network.nodes`` besides the geometry (see :class:`Network`).
NODE_COLUMNS = ["node_type", "elevation_m", "base_demand_m3s", "zone"]
#: Columns every ``Network.links`` holds besides the geometry.
LINK_COLUMNS = [
    "link_type",
    "start_node",
    "end_node",
    "length_m",
    "diameter_m",
    "roughness",
    "material",
    "install_year",
    "zone",
    "status",
]
#: Columns of ``Network.valves`` (isolation valves) besides the geometry.
VALVE_COLUMNS = ["link_id", "node_id"]


@dataclass(frozen=True)
class Network:
    """A water network in a projected metric CRS.

    Attributes
    ----------
    wn : wntr.network.WaterNetworkModel
        The hydraulic model, SI units (m, m³/s); node coordinates and link
        vertices in ``crs``.
    crs : pyproj.CRS or None
        Projected CRS in metres of every geometry here. None only for an
        ``.inp`` read without a CRS to inspect it
        (``read_network(..., require_crs=False)``): coordinates as in the file.
    nodes : geopandas.GeoDataFrame
        Index ``node_id`` (str). Columns ``node_type`` ("junction", "tank",
        "reservoir"), ``elevation_m`` (junction/tank elevation, reservoir
        head; NaN where the source had none), ``base_demand_m3s``, ``zone``
        (str or NA); Point geometry.
    links : geopandas.GeoDataFrame
        Index ``link_id`` (str). Columns ``link_type`` ("pipe", "pump",
        "valve"), ``start_node``, ``end_node``, ``length_m`` (pipes; NaN for
        pumps and valves), ``diameter_m``, ``roughness`` (Hazen-Williams C,
        or as the model's headloss formula says), ``material``,
        ``install_year`` (Int64), ``zone``, ``status`` ("open", "closed",
        "active", "cv"); extra columns ``valve_type``, ``setting``,
        ``minor_loss``. LineString geometry from the start node through the
        vertices to the end node.
    valves : geopandas.GeoDataFrame
        Isolation valves: index ``valve_id``; ``link_id`` (the pipe it sits
        on), ``node_id`` (the nearer end node); Point. Empty for ``.inp``.
    source : str
        The file the network was read from.
    """

    wn: wntr.network.WaterNetworkModel
    crs: pyproj.CRS | None
    nodes: gpd.GeoDataFrame
    links: gpd.GeoDataFrame
    valves: gpd.GeoDataFrame
    source: str

    def to_graph(self) -> nx.MultiGraph:
        """Undirected multigraph with ``length_m`` on edges; see :func:`graph_from_network`."""
        return graph_from_network(self)

    @property
    def pipes(self) -> gpd.GeoDataFrame:
        """The links that are pipes."""
        return self.links[self.links["link_type"] == "pipe"]

    def summary(self) -> dict[str, Any]:
        """Counts, total pipe length (km), lon/lat bounding box and zones, JSON-friendly.

        ``crs`` and ``bbox_lonlat`` are None for a network read without a CRS.
        """
        node_counts = self.nodes["node_type"].value_counts()
        link_counts = self.links["link_type"].value_counts()
        bbox = lonlat_bounds(self) if self.crs is not None else None
        zones = sorted({str(z) for z in pd.concat([self.nodes["zone"], self.links["zone"]]).dropna()})
        return {
            "source": self.source,
            "crs": self.crs.to_string() if self.crs is not None else None,
            "junctions": int(node_counts.get("junction", 0)),
            "reservoirs": int(node_counts.get("reservoir", 0)),
            "tanks": int(node_counts.get("tank", 0)),
            "pipes": int(link_counts.get("pipe", 0)),
            "pumps": int(link_counts.get("pump", 0)),
            "valves": int(link_counts.get("valve", 0)),
            "isolation_valves": int(len(self.valves)),
            "pipe_length_km": float(self.pipes["length_m"].sum() / 1000.0),
            "bbox_lonlat": bbox,
            "zones": zones,
        }


def _status_name(link: Any) -> str:
    if getattr(link, "link_type", "") == "Pipe" and getattr(link, "check_valve", False):
        return "cv"
    status = getattr(link, "initial_status", None)
    name = getattr(status, "name", str(status))
    return str(name).lower()


def tables_from_wn(
    wn: wntr.network.WaterNetworkModel, crs: pyproj.CRS
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Node and link GeoDataFrames (see :class:`Network`) from a WNTR model whose coordinates are in ``crs``.

    ``material`` and ``install_year`` are NA: EPANET has no field for them.
    """
    node_rows = []
    for name, node in wn.nodes():
        kind = node.node_type.lower()
        if kind == "junction":
            elev = node.elevation
            demand = float(sum(ts.base_value for ts in node.demand_timeseries_list))
        elif kind == "tank":
            elev = node.elevation
            demand = 0.0
        else:
            elev = node.base_head
            demand = 0.0
        x, y = node.coordinates
        node_rows.append((name, kind, float(elev), demand, node.tag, float(x), float(y)))
    nodes_df = pd.DataFrame(
        node_rows, columns=["node_id", "node_type", "elevation_m", "base_demand_m3s", "zone", "x", "y"]
    ).set_index("node_id")
    nodes_df["zone"] = nodes_df["zone"].astype("string")
    nodes = gpd.GeoDataFrame(
        nodes_df[NODE_COLUMNS],
        geometry=gpd.points_from_xy(nodes_df["x"], nodes_df["y"]),
        crs=crs,
    )
    pos = {n: (x, y) for n, x, y in zip(nodes_df.index, nodes_df["x"], nodes_df["y"])}

    link_rows = []
    coord_list = []
    for name, link in wn.links():
        ltype = link.link_type.lower()
        length = float(link.length) if ltype == "pipe" else np.nan
        diameter = float(link.diameter) if ltype in ("pipe", "valve") else np.nan
        rough = float(link.roughness) if ltype == "pipe" else np.nan
        minor = float(getattr(link, "minor_loss", np.nan)) if ltype in ("pipe", "valve") else np.nan
        vtype = link.valve_type if ltype == "valve" else None
        setting = float(link.initial_setting) if ltype == "valve" and link.initial_setting is not None else np.nan
        link_rows.append(
            (name, ltype, link.start_node_name, link.end_node_name, length, diameter, rough, link.tag,
             _status_name(link), vtype, setting, minor)
        )
        coord_list.append([pos[link.start_node_name], *link.vertices, pos[link.end_node_name]])
    links_df = pd.DataFrame(
        link_rows,
        columns=["link_id", "link_type", "start_node", "end_node", "length_m", "diameter_m", "roughness",
                 "zone", "status", "valve_type", "setting", "minor_loss"],
    ).set_index("link_id")
    links_df["material"] = pd.Series(pd.NA, index=links_df.index, dtype="string")
    links_df["install_year"] = pd.Series(pd.NA, index=links_df.index, dtype="Int64")
    links_df["zone"] = links_df["zone"].astype("string")
    links_df["valve_type"] = links_df["valve_type"].astype("string")
    geoms = shapely.linestrings(np.concatenate([np.asarray(c, dtype=float) for c in coord_list]) if coord_list
                                else np.empty((0, 2)),
                                indices=np.repeat(np.arange(len(coord_list)), [len(c) for c in coord_list]))
    links = gpd.GeoDataFrame(
        links_df[LINK_COLUMNS + ["valve_type", "setting", "minor_loss"]],
        geometry=geoms if len(coord_list) else [],
        crs=crs,
    )
    return nodes, links


def empty_valves(crs: pyproj.CRS) -> gpd.GeoDataFrame:
    """An empty isolation-valve layer with the contract's columns."""
    df = pd.DataFrame(
        {"link_id": pd.Series(dtype="string"), "node_id": pd.Series(dtype="string")},
        index=pd.Index([], name="valve_id", dtype="object"),
    )
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def lonlat_bounds(network: Network) -> tuple[float, float, float, float]:
    """Bounding box of the nodes in WGS84 lon/lat degrees: (west, south, east, north)."""
    if network.nodes.empty:
        return (np.nan, np.nan, np.nan, np.nan)
    x0, y0, x1, y1 = network.nodes.total_bounds
    xs = np.array([x0, x1, x1, x0])
    ys = np.array([y0, y0, y1, y1])
    lon, lat = transform_xy(xs, ys, from_crs=network.crs, to_crs="EPSG:4326")
    return (float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat)))
