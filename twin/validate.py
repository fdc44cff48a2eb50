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
closed_isolation      error   closed links cut demand junctions off from every source
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
from typing import Any

import numpy as np
import pandas as pd

from twin.crs import degrees_declared_as_metres, outside_area_of_use
from twin.errors import NetworkError
from twin.graph import edge_components, link_ends
from twin.model import Network

log = logging.getLogger(__name__)

__all__ = ["validate_network", "require_supplied_demands", "FINDING_COLUMNS"]

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
    rows += _closed_isolation(network)
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


def _closed_isolation(network: Network) -> list[Finding]:
    """``closed_isolation``: demand junctions that closed links cut off from every reservoir and tank.

    Links opened by a control or rule are counted as open. One finding per
    cut-off part, naming its demand junctions and the closed links around it.
    """
    node_ids, start, end = link_ends(network)
    links = network.links
    closed = (links["status"].astype(str).str.lower() == "closed").to_numpy()
    closed = closed & ~links.index.isin(_controlled_links(network))
    ok = (start >= 0) & (end >= 0)
    if not closed[ok].any():
        return []
    nodes = network.nodes[~network.nodes.index.duplicated()].reindex(node_ids)
    is_source = nodes["node_type"].isin(["reservoir", "tank"]).to_numpy()
    demand = (nodes["node_type"] == "junction").to_numpy() & (nodes["base_demand_m3s"].fillna(0) > 0).to_numpy()
    n = len(node_ids)
    _, all_labels = edge_components(n, start[ok], end[ok])
    n_open, labels = edge_components(n, start[ok & ~closed], end[ok & ~closed])
    fed_all = np.bincount(all_labels, weights=is_source, minlength=n)[all_labels] > 0
    fed_open = np.bincount(labels, weights=is_source, minlength=n_open)[labels] > 0
    cut = demand & fed_all & ~fed_open
    rows: list[Finding] = []
    for c in np.unique(labels[cut]):
        junctions = node_ids[cut & (labels == c)]
        inside = labels == c
        s_in = np.where(start >= 0, inside[np.clip(start, 0, None)], False)
        e_in = np.where(end >= 0, inside[np.clip(end, 0, None)], False)
        around = links.index[closed & ok & (s_in != e_in)]
        rows.append((
            "error", "closed_isolation", str(junctions[0]),
            f"{len(junctions)} demand junction(s) ({_sample(junctions)}) are cut off from every reservoir and "
            f"tank by closed link(s) {_sample(around)}",
        ))
    return rows


def _controlled_links(network: Network) -> set[str]:
    """Links a control or rule of the WNTR model acts on or reads (they may open during a run)."""
    names: set[str] = set()
    for _, control in network.wn.controls():
        names.update(str(obj.name) for obj in control.requires() if hasattr(obj, "start_node_name"))
    return names


def _sample(ids: Any, k: int = 5) -> str:
    """``a, b, c`` or ``a, b, c ... (12 in all)``."""
    ids = [str(i) for i in ids]
    return ", ".join(ids[:k]) + (f" ... ({len(ids)} in all)" if len(ids) > k else "")


def require_supplied_demands(network: Network) -> None:
    """Raise when a demand junction has no open path to a reservoir or tank.

    Cheap (two connected-component passes over the link table, milliseconds
    for L-Town), so a simulation job can call it before it starts instead of
    failing after hundreds of EPANET warnings.

    Raises
    ------
    NetworkError
        Naming the junctions and the closed links that cut them off (or the
        part of the network without any source), and the fix.
    """
    rows = [r for r in _closed_isolation(network) + _connectivity(network)
            if r[1] in ("closed_isolation", "unsupplied_component", "no_source")]
    if not rows:
        return
    level, code, element, message = rows[0]
    more = f" ({len(rows) - 1} more such finding(s): twin network check lists them)" if len(rows) > 1 else ""
    fix = ("open the link(s) (EPANET [STATUS] section, or the GIS status column) or set those junctions' demand "
           "to 0" if code == "closed_isolation" else "connect that part to a reservoir or tank, or remove it")
    raise NetworkError(f"{code}: {message}{more}", path=network.source or None, element=element or None, fix=fix,
                       data={"findings": [dict(zip(FINDING_COLUMNS, r)) for r in rows]})


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
    if not len(nodes) or network.crs is None:
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
