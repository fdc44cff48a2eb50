"""District metered areas (DMAs): membership, inlets and inflow.

A DMA is a part of the network whose inflow is metered. When the network
carries a zone attribute (EPANET ``[TAGS]`` or a GIS ``zone`` column, in
``Network.nodes.zone``) that is the DMA. Otherwise the DMAs are inferred: the
network graph is cut at the metered inlet links and at closed links, and each
connected part that holds no reservoir is a DMA (the parts with a reservoir
are the trunk, the source side, and belong to no DMA).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import networkx as nx
import numpy as np
import pandas as pd

from twin.errors import InputError, UnknownElementError

log = logging.getLogger(__name__)


def _open_links(network) -> pd.DataFrame:
    links = network.links
    status = links["status"].astype("string").str.lower() if "status" in links.columns else None
    if status is None:
        return links
    return links.loc[~status.eq("closed").fillna(False).to_numpy()]


def assign_dmas(network, *, inlet_links: Iterable[str] | None = None, use_zones: bool = True) -> pd.Series:
    """Which DMA each node belongs to.

    Parameters
    ----------
    network : Network
    inlet_links : iterable of str, optional
        Links with a flow meter on the DMA boundaries (needed when the
        network has no zones).
    use_zones : bool, default True
        Use ``network.nodes["zone"]`` when any node has one; False forces the
        inference from ``inlet_links``.

    Returns
    -------
    Series
        Index ``node_id`` (every node), values DMA name (string) or NA for
        nodes in no DMA (trunk, isolated parts). Inferred DMAs are named
        ``DMA01``, ``DMA02``... in the order of the smallest inlet link ID
        that feeds them. ``attrs["method"]`` is ``"zones"`` or ``"inlets"``.

    Raises
    ------
    InputError
        No zones and no inlet links.
    UnknownElementError
        An inlet link is not in the network.
    """
    nodes = network.nodes
    zone = nodes["zone"].astype("string") if "zone" in nodes.columns else pd.Series(pd.NA, index=nodes.index, dtype="string")
    zone = zone.str.strip().mask(lambda z: z == "")
    is_res = nodes["node_type"].astype(str).eq("reservoir").to_numpy()
    if use_zones and zone.notna().any():
        # a reservoir is a source, never inside a DMA: its outlet is an inlet
        out = zone.mask(is_res).rename("dma")
        out.index = out.index.astype(str)
        out.index.name = "node_id"
        out.attrs["method"] = "zones"
        log.info("DMAs from zones: %d DMAs, %d of %d nodes in none", out.nunique(), int(out.isna().sum()), len(out))
        return out
    inlets = sorted({str(x) for x in (inlet_links or [])})
    if not inlets:
        raise InputError(
            "the network has no zones and no metered inlet links, so DMAs cannot be formed",
            path=getattr(network, "source", None),
            fix="tag nodes with zones ([TAGS] / a zone column) or register flow meters on the DMA inlets",
        )
    unknown = [l for l in inlets if l not in network.links.index]
    if unknown:
        raise UnknownElementError(
            f"inlet link(s) not in the network: {', '.join(unknown[:5])}",
            path=getattr(network, "source", None),
            fix="check the flow meters' link_id",
        )
    links = _open_links(network)
    links = links.loc[~links.index.isin(inlets)]
    g = nx.Graph()
    g.add_nodes_from(nodes.index.astype(str))
    g.add_edges_from(zip(links["start_node"].astype(str), links["end_node"].astype(str)))
    comp_of: dict[str, int] = {}
    comps = list(nx.connected_components(g))
    for k, c in enumerate(comps):
        for n in c:
            comp_of[n] = k
    trunk = {comp_of[str(n)] for n in nodes.index[is_res]}
    # parts made only of tanks (a tank behind its metered feed) are storage, not DMAs
    junction_ids = set(nodes.index[nodes["node_type"].astype(str).eq("junction").to_numpy()].astype(str))
    trunk |= {k for k, c in enumerate(comps) if not (c & junction_ids)}
    il = network.links.loc[inlets]
    first_inlet: dict[int, str] = {}
    for lid, s, e in zip(il.index.astype(str), il["start_node"].astype(str), il["end_node"].astype(str)):
        for n in (s, e):
            k = comp_of[n]
            if k not in trunk and (k not in first_inlet or lid < first_inlet[k]):
                first_inlet[k] = lid
    order = sorted(first_inlet, key=lambda k: (first_inlet[k], min(comps[k])))
    name = {k: f"DMA{i + 1:02d}" for i, k in enumerate(order)}
    out = pd.Series(
        [name.get(comp_of[str(n)], pd.NA) for n in nodes.index], index=pd.Index(nodes.index.astype(str), name="node_id"),
        dtype="string", name="dma",
    )
    isolated = sum(len(c) for k, c in enumerate(comps) if k not in trunk and k not in first_inlet)
    if isolated:
        log.warning("%d nodes are cut off from every source and inlet (closed links?): in no DMA", isolated)
    out.attrs["method"] = "inlets"
    log.info("DMAs inferred behind %d metered inlets: %d DMAs, %d nodes in the trunk", len(inlets), len(name), int(sum(len(comps[k]) for k in trunk)))
    return out


def dma_inlets(network, assignment: pd.Series, inlet_links: Iterable[str]) -> pd.DataFrame:
    """Metered links on DMA boundaries and the sign of their flow for each DMA.

    Parameters
    ----------
    network : Network
    assignment : Series
        From :func:`assign_dmas`.
    inlet_links : iterable of str
        Links with a flow meter.

    Returns
    -------
    DataFrame
        Columns ``dma``, ``link_id``, ``sign``: +1 where a positive link flow
        (start to end node) enters the DMA, -1 where it leaves. A link between
        two DMAs appears once for each. Metered links inside one DMA are left out.
    """
    rows = []
    for lid in sorted({str(x) for x in inlet_links}):
        if lid not in network.links.index:
            raise UnknownElementError(f"flow-meter link {lid!r} is not in the network", fix="check the meters' link_id")
        s = assignment.get(str(network.links.at[lid, "start_node"]), pd.NA)
        e = assignment.get(str(network.links.at[lid, "end_node"]), pd.NA)
        if (pd.isna(s) and pd.isna(e)) or (not pd.isna(s) and not pd.isna(e) and s == e):
            continue
        if not pd.isna(e):
            rows.append((str(e), lid, 1))
        if not pd.isna(s):
            rows.append((str(s), lid, -1))
    return pd.DataFrame(rows, columns=["dma", "link_id", "sign"]).astype({"sign": np.int64})


def unmetered_boundaries(network, assignment: pd.Series, inlet_links: Iterable[str]) -> pd.DataFrame:
    """Open links that cross a DMA boundary without a flow meter.

    Returns
    -------
    DataFrame
        ``link_id``, ``from_dma``, ``to_dma`` (NA for the trunk). A DMA with
        any of these has an incomplete balance.
    """
    links = _open_links(network)
    a = assignment.reindex(links["start_node"].astype(str)).to_numpy()
    b = assignment.reindex(links["end_node"].astype(str)).to_numpy()
    diff = np.array([(pd.isna(x) != pd.isna(y)) or (not pd.isna(x) and not pd.isna(y) and x != y) for x, y in zip(a, b)], dtype=bool)
    metered = links.index.isin([str(x) for x in inlet_links])
    sel = diff & ~metered
    return pd.DataFrame({"link_id": links.index[sel].astype(str), "from_dma": a[sel], "to_dma": b[sel]})


def dma_inflow(flow: pd.DataFrame, inlets: pd.DataFrame, flow_meters: pd.DataFrame) -> pd.DataFrame:
    """Net inflow of each DMA from its inlet flow meters.

    Parameters
    ----------
    flow : DataFrame
        ``Store.series("flow")``: index UTC, columns flow-meter IDs, L/s.
    inlets : DataFrame
        From :func:`dma_inlets`.
    flow_meters : DataFrame
        Registry rows of the flow meters: index ``meter_id``, column ``link_id``.

    Returns
    -------
    DataFrame
        Index as ``flow``, columns DMAs, net inflow L/s (NaN where an inlet
        has no reading). Several meters on one link are averaged.
    """
    fm = flow_meters.loc[flow_meters.index.astype(str).isin(flow.columns.astype(str)), "link_id"].astype(str)
    by_link = flow[fm.index].T.groupby(fm.to_numpy()).mean().T if len(fm) else pd.DataFrame(index=flow.index)
    out = {}
    for dma, grp in inlets.groupby("dma", sort=True):
        cols = []
        for lid, sign in zip(grp["link_id"], grp["sign"]):
            if lid in by_link.columns:
                cols.append(by_link[lid] * float(sign))
            else:
                cols.append(pd.Series(np.nan, index=flow.index))
        out[dma] = pd.concat(cols, axis=1).sum(axis=1, min_count=len(cols))
    res = pd.DataFrame(out, index=flow.index)
    res.columns.name = "dma"
    return res
