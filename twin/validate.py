"""Checks of an imported network, reported as a table of findings.

:func:`validate_network` never raises for a problem in the data; it lists
every problem it finds, one row per element (or one summary row when a
problem concerns the whole network), so that a user sees all of them at once.
Import itself raises only for what makes a network unusable (unparseable
files, degrees declared as metres, broken topology in GIS layers).

Finding codes
-------------
===================== ======= ==================================================
code                  level   meaning
===================== ======= ==================================================
duplicate_id          error   two nodes, links or valves share an ID
unknown_node          error   a link ends at a node that does not exist
self_loop             error   a link starts and ends at the same node
no_source             error   the network has no reservoir or tank
unsupplied_component  error   a connected part has no reservoir or tank
disconnected          warning the network falls into several connected parts
orphan_node           warning a node no link touches
bad_length            error   pipe length zero, negative or missing
bad_diameter          error   pipe/valve diameter zero, negative or missing
length_mismatch       warning stated length far from the drawn length
schematic_coordinates warning coordinates are not to scale (lengths disagree)
no_elevation          warning junction without elevation
outside_crs_area      warning coordinates outside the CRS's area of use
degrees_as_metres     error   coordinates look like lon/lat in a metric CRS
===================== ======= ==================================================
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from twin.crs import degrees_declared_as_metres, outside_area_of_use
from twin.graph import edge_components, link_ends
from twin.model import Network

log = logging.getLogger(__name__)

__all__ = ["validate_network", "FINDING_COLUMNS"]

FINDING_COLUMNS = ["level", "code", "element", "message"]

#: A stated pipe length more than this factor away from the drawn length is flagged.
LENGTH_FACTOR = 2.0
#: ... when it also differs by more than this, metres.
LENGTH_MIN_DIFF_M = 10.0


Finding = tuple[str, str, str, str]


def validate_network(network: Network) -> pd.DataFrame:
    """List the problems of a network.

    Parameters
    ----------
    network : Network
        As returned by :func:`twin.network.read_network`.

    Returns
    -------
    pandas.DataFrame
        Columns ``level`` ("error" or "warning"), ``code`` (see the module
        docstring), ``element`` (node/link/valve ID, or "" for the whole
        network) and ``message``; errors first. Empty when all is well.
    """
    rows: list[Finding] = []
    rows += _duplicate_ids(network)
    rows += _link_ends(network)
    rows += _connectivity(network)
    rows += _pipe_attributes(network)
    rows += _drawn_lengths(network)
    rows += _elevations(network)
    rows += _coordinates(network)
    out = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    out["_order"] = (out["level"] != "error").astype(int)
    out = out.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    log.debug("validation: %d errors, %d warnings", int((out["level"] == "error").sum()),
              int((out["level"] == "warning").sum()))
    return out


def _duplicate_ids(network: Network) -> list[Finding]:
    """``duplicate_id``: node, link and valve IDs used more than once."""
    rows: list[Finding] = []
    for name, index in (("node", network.nodes.index), ("link", network.links.index),
                        ("valve", network.valves.index)):
        for e in index[index.duplicated()].unique():
            rows.append(("error", "duplicate_id", str(e), f"{name} ID {e!r} is used {int((index == e).sum())} times"))
    return rows


def _link_ends(network: Network) -> list[Finding]:
    """``unknown_node`` and ``self_loop``: links whose ends are not two known nodes."""
    rows: list[Finding] = []
    links = network.links
    _, start, end = link_ends(network)
    bad = (start < 0) | (end < 0)
    for lid, s, e, sb, eb in zip(links.index[bad], links["start_node"][bad], links["end_node"][bad],
                                 start[bad] < 0, end[bad] < 0):
        missing = [n for n, b in ((s, sb), (e, eb)) if b]
        rows.append(("error", "unknown_node", str(lid), f"link {lid} ends at unknown node(s) {missing}"))
    loops = (links["start_node"] == links["end_node"]).to_numpy()
    for lid in links.index[loops]:
        rows.append(("error", "self_loop", str(lid), f"link {lid} starts and ends at the same node"))
    return rows


def _connectivity(network: Network) -> list[Finding]:
    """``orphan_node``, ``no_source``, ``unsupplied_component`` and ``disconnected``."""
    rows: list[Finding] = []
    node_ids, start, end = link_ends(network)
    n = len(node_ids)
    if not n:
        return rows
    nodes = network.nodes
    is_source = nodes["node_type"].isin(["reservoir", "tank"]).groupby(nodes.index.astype(str)).any()
    is_source = is_source.reindex(node_ids).to_numpy()
    ok = (start >= 0) & (end >= 0)
    n_comp, labels = edge_components(n, start[ok], end[ok])
    orphan = np.bincount(np.concatenate([start[ok], end[ok]]), minlength=n) == 0
    for nid in node_ids[orphan]:
        rows.append(("warning", "orphan_node", str(nid), f"node {nid} is not connected to any link"))
    if not is_source.any():
        rows.append(("error", "no_source", "", "the network has no reservoir or tank to supply it"))
    else:
        comp_has_source = np.bincount(labels, weights=is_source.astype(float), minlength=n_comp) > 0
        comp_size = np.bincount(labels, minlength=n_comp)
        for c in np.flatnonzero(~comp_has_source):
            members = node_ids[labels == c]
            if comp_size[c] == 1 and orphan[labels == c].all():
                continue  # already reported as an orphan
            rows.append((
                "error", "unsupplied_component", str(members[0]),
                f"{comp_size[c]} connected nodes (e.g. {', '.join(map(str, members[:3]))}) "
                "have no reservoir or tank",
            ))
    multi = n_comp - int(orphan.sum())
    if multi > 1:
        rows.append(("warning", "disconnected", "", f"the network falls into {multi} connected parts"))
    return rows


def _pipe_attributes(network: Network) -> list[Finding]:
    """``bad_length`` and ``bad_diameter``: lengths and diameters that are not positive."""
    rows: list[Finding] = []
    links = network.links
    length = pd.to_numeric(network.pipes["length_m"], errors="coerce")
    for lid, v in length[~(length > 0)].items():
        rows.append(("error", "bad_length", str(lid), f"pipe {lid} has length {v} m; it must be positive"))
    has_diam = links[links["link_type"].isin(["pipe", "valve"])]
    diam = pd.to_numeric(has_diam["diameter_m"], errors="coerce")
    for lid, v in diam[~(diam > 0)].items():
        rows.append(("error", "bad_diameter", str(lid), f"{lid} has diameter {v} m; it must be positive"))
    return rows


def _drawn_lengths(network: Network) -> list[Finding]:
    """``schematic_coordinates`` or ``length_mismatch``: stated pipe lengths against drawn ones."""
    rows: list[Finding] = []
    pipes = network.pipes
    geom_len = pipes.geometry.length.to_numpy()
    lv = pd.to_numeric(pipes["length_m"], errors="coerce").to_numpy(dtype=float)
    usable = (geom_len > 0) & (lv > 0) & np.isfinite(lv)
    if usable.sum() < 3:
        return rows
    ratio = lv[usable] / geom_len[usable]
    median = float(np.median(ratio))
    if not (1.0 / LENGTH_FACTOR <= median <= LENGTH_FACTOR):
        rows.append((
            "warning", "schematic_coordinates", "",
            f"stated pipe lengths are {median:.3g} times the drawn lengths (median): coordinates are "
            "not to scale or not in the declared CRS",
        ))
        return rows
    all_ratio = np.full(len(pipes), np.nan)
    all_ratio[usable] = ratio
    far = usable & ((all_ratio > LENGTH_FACTOR) | (all_ratio < 1.0 / LENGTH_FACTOR))
    far &= np.abs(lv - geom_len) > LENGTH_MIN_DIFF_M
    for lid, a, b in zip(pipes.index[far], lv[far], geom_len[far]):
        rows.append(("warning", "length_mismatch", str(lid), f"pipe {lid} is {a:.1f} m long but drawn {b:.1f} m"))
    return rows


def _elevations(network: Network) -> list[Finding]:
    """``no_elevation``: one row per junction, or one summary row when most lack it."""
    nodes = network.nodes
    junction_elev = nodes.loc[nodes["node_type"] == "junction", "elevation_m"]
    no_elev = junction_elev.index[junction_elev.isna()]
    if len(no_elev) > max(10, len(junction_elev) // 2):
        return [("warning", "no_elevation", "",
                 f"{len(no_elev)} of {len(junction_elev)} junctions have no elevation (0 m assumed): "
                 "pressures will be heads above datum")]
    return [("warning", "no_elevation", str(nid), f"junction {nid} has no elevation (0 m assumed)")
            for nid in no_elev]


def _coordinates(network: Network) -> list[Finding]:
    """``degrees_as_metres`` or ``outside_crs_area``: node coordinates against the CRS."""
    nodes = network.nodes
    if not len(nodes):
        return []
    x = nodes.geometry.x.to_numpy()
    y = nodes.geometry.y.to_numpy()
    if degrees_declared_as_metres(x, y, network.crs):
        return [("error", "degrees_as_metres", "",
                 f"node coordinates look like lon/lat degrees but {network.crs.to_string()} is in metres")]
    outside = outside_area_of_use(x, y, network.crs)
    if not outside.any():
        return []
    area = network.crs.area_of_use
    span = f"lon {area.west:g}..{area.east:g}, lat {area.south:g}..{area.north:g}" if area else "unknown"
    return [(
        "warning", "outside_crs_area", str(nodes.index[np.argmax(outside)]),
        f"{int(outside.sum())} of {len(nodes)} nodes lie outside the area of use of "
        f"{network.crs.to_string()} ({span}): local or wrong coordinates?",
    )]
