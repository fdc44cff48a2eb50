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
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import InputError, UnknownElementError
from twin.graph import components
from twin.network import Network

log = logging.getLogger(__name__)


def _open_links(network: Network) -> pd.DataFrame:
    links = network.links
    status = links["status"].astype("string").str.lower() if "status" in links.columns else None
    if status is None:
        return links
    return links.loc[~status.eq("closed").fillna(False).to_numpy()]


def assign_dmas(network: Network, *, inlet_links: Iterable[str] | None = None, use_zones: bool = True) -> pd.Series:
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
    return _dmas_behind_inlets(network, inlets, is_res)


def _dmas_behind_inlets(network: Network, inlets: list[str], is_res: np.ndarray) -> pd.Series:
    """DMAs as the parts of the graph cut at the inlets and closed links, without a reservoir."""
    nodes = network.nodes
    links = _open_links(network)
    links = links.loc[~links.index.isin(inlets)]
    comp_of = components(network, links=links).to_dict()
    comps: dict[int, set[str]] = {}
    for n, k in comp_of.items():
        comps.setdefault(k, set()).add(n)
    trunk = {comp_of[str(n)] for n in nodes.index[is_res]}
    # parts made only of tanks (a tank behind its metered feed) are storage, not DMAs
    junction_ids = set(nodes.index[nodes["node_type"].astype(str).eq("junction").to_numpy()].astype(str))
    trunk |= {k for k, c in comps.items() if not (c & junction_ids)}
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
    isolated = sum(len(c) for k, c in comps.items() if k not in trunk and k not in first_inlet)
    if isolated:
        log.warning("%d nodes are cut off from every source and inlet (closed links?): in no DMA", isolated)
    out.attrs["method"] = "inlets"
    log.info("DMAs inferred behind %d metered inlets: %d DMAs, %d nodes in the trunk", len(inlets), len(name), int(sum(len(comps[k]) for k in trunk)))
    return out


def dma_inlets(network: Network, assignment: pd.Series, inlet_links: Iterable[str]) -> pd.DataFrame:
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


def unmetered_boundaries(network: Network, assignment: pd.Series, inlet_links: Iterable[str]) -> pd.DataFrame:
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


def _grid_step_s(index: pd.Index) -> float:
    """Spacing of a regular time grid, seconds (the logger interval when unknown)."""
    if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
        return float((index[1] - index[0]).total_seconds())
    return float(settings.LOGGER_INTERVAL_S)


def storage_outflow(
    level_m: pd.Series,
    diameter_m: float,
    *,
    smooth: int = settings.TANK_SMOOTH_SAMPLES,
) -> pd.Series:
    """Water drawn from a cylindrical tank, from its level logger.

    The one tank rule of the twin: the level is smoothed by a centred moving
    mean of ``smooth`` samples (raw where the window is incomplete, at the
    ends), and sample ``t`` holds ``-A (h(t+1) - h(t)) / Δt``, the mean
    outflow over ``[t, t + Δt)``; the last sample is NaN.

    Parameters
    ----------
    level_m : Series
        Tank level (m) on a regular UTC grid.
    diameter_m : float
        Tank diameter (m); area ``A = π d² / 4``.
    smooth : int, default ``settings.TANK_SMOOTH_SAMPLES``
        Samples of the moving mean (1: none).

    Returns
    -------
    Series
        Outflow from storage (m³/s, negative while filling), index as ``level_m``.
    """
    lev = level_m.astype(float)
    if smooth > 1:
        lev = lev.rolling(smooth, center=True, min_periods=smooth).mean().fillna(lev)
    area = math.pi * float(diameter_m) ** 2 / 4.0
    return -area * lev.diff().shift(-1) / _grid_step_s(level_m.index)


def source_outflow(network: Network, node: str, flow: pd.DataFrame, levels: pd.DataFrame) -> pd.Series | None:
    """Net outflow of a reservoir or tank (m³/s), from its meters.

    From its links' flow meters when every link of the node is metered;
    for a tank, else from its level logger (:func:`storage_outflow`); None
    when neither is measured.

    Parameters
    ----------
    network : Network
    node : str
        Reservoir or tank ID.
    flow : DataFrame
        Flow per metered link (m³/s, start to end node), index the grid (UTC).
    levels : DataFrame
        Levels (m) by node ID (tank loggers; other columns are ignored), same grid.
    """
    wn = network.wn
    links = wn.get_links_for_node(node)
    if links and all(lid in flow.columns for lid in links):
        return sum(flow[lid] * (1.0 if wn.get_link(lid).start_node_name == node else -1.0) for lid in links)
    if node in wn.tank_name_list and node in levels.columns:
        return storage_outflow(levels[node].reindex(flow.index) if len(flow.columns) else levels[node],
                               wn.get_node(node).diameter)
    return None


def system_input(network: Network, flow: pd.DataFrame, levels: pd.DataFrame) -> tuple[pd.Series | None, list[str]]:
    """System input (m³/s): the net outflow of every reservoir and tank.

    Parameters
    ----------
    network : Network
    flow, levels : DataFrame
        As :func:`source_outflow`.

    Returns
    -------
    Series or None
        Input on the grid (m³/s); None when some source is neither metered
        nor level-logged.
    list of str
        Notes for a report.
    """
    wn = network.wn
    notes: list[str] = []
    total = pd.Series(0.0, index=flow.index if len(flow.columns) else levels.index)
    for name in [*wn.reservoir_name_list, *wn.tank_name_list]:
        out = source_outflow(network, name, flow, levels)
        if out is None:
            notes.append(f"source {name} is not metered: no water-balance detection")
            return None, notes
        if name in wn.tank_name_list and not all(l in flow.columns for l in wn.get_links_for_node(name)):
            notes.append(f"tank {name}: outflow from its level logger (links not all metered)")
        total = total + out.reindex(total.index)
    return total, notes


@dataclass
class DmaInflow:
    """Measured inflow of the DMAs, from :func:`dma_net_inflow`.

    Attributes
    ----------
    assignment : Series
        DMA of every node (index node ID; NA outside every DMA).
    inlet : DataFrame
        Flow through each DMA's metered boundary links, signed into the DMA
        (m³/s), index the grid (UTC), columns DMAs; NaN where a boundary
        meter has no value.
    storage : DataFrame
        Water drawn from the tanks inside each DMA (m³/s; 0 without a tank,
        NaN where a tank's outflow is unknown).
    unmetered : DataFrame
        Open links crossing a DMA boundary without a meter
        (:func:`unmetered_boundaries`).
    unlogged : list of str
        DMAs holding a tank that is neither metered nor level-logged.
    """

    assignment: pd.Series
    inlet: pd.DataFrame
    storage: pd.DataFrame
    unmetered: pd.DataFrame
    unlogged: list[str] = field(default_factory=list)

    @property
    def net(self) -> pd.DataFrame:
        """Net inflow (m³/s): metered inlets plus tank draw."""
        return self.inlet + self.storage

    def incomplete(self) -> list[str]:
        """DMAs without a complete metered balance (unmetered boundary or tank), sorted."""
        open_b = set(self.unmetered["from_dma"].dropna().astype(str)) | set(self.unmetered["to_dma"].dropna().astype(str))
        return sorted(open_b | set(self.unlogged))


def dma_net_inflow(
    network: Network,
    flow: pd.DataFrame,
    levels: pd.DataFrame,
    *,
    assignment: pd.Series | None = None,
) -> DmaInflow:
    """Net inflow of every DMA with a metered inlet, tank storage included.

    The one inflow rule of the twin (the water balance and the localisation
    both use it): the flow through the DMA's metered boundary links, each
    signed into the DMA (:func:`dma_inlets`), plus the outflow of every tank
    inside it (:func:`source_outflow`: from the tank's link meters, else
    from its level logger).

    Parameters
    ----------
    network : Network
    flow : DataFrame
        Flow per metered link (m³/s, start to end node), index the grid (UTC),
        columns link IDs.
    levels : DataFrame
        Tank levels (m) by node ID on the same grid (other columns ignored).
    assignment : Series, optional
        Node -> DMA (default :func:`assign_dmas` with the metered links as inlets).

    Returns
    -------
    DmaInflow

    Raises
    ------
    InputError
        Without an assignment: the network has no zones and no metered link.
    """
    links = [str(x) for x in flow.columns if str(x) in network.links.index]
    if assignment is None:
        assignment = assign_dmas(network, inlet_links=links)
    inlets = dma_inlets(network, assignment, links)
    dmas = sorted(inlets["dma"].unique()) if len(inlets) else []
    inlet = pd.DataFrame({d: _signed_sum(flow, grp) for d, grp in inlets.groupby("dma", sort=True)},
                         index=flow.index, columns=dmas)
    storage = pd.DataFrame(0.0, index=flow.index, columns=dmas)
    unlogged: set[str] = set()
    for tank in network.wn.tank_name_list:
        d = assignment.get(tank, pd.NA)
        if pd.isna(d) or str(d) not in storage.columns:
            continue
        out = source_outflow(network, tank, flow, levels)
        if out is None:
            unlogged.add(str(d))
            continue
        storage[str(d)] = storage[str(d)] + out.reindex(flow.index)
    if unlogged:
        log.warning("DMAs with a tank neither metered nor logged (storage change unknown): %s",
                    ", ".join(sorted(unlogged)))
    for frame in (inlet, storage):
        frame.columns.name = "dma"
    return DmaInflow(assignment, inlet, storage, unmetered_boundaries(network, assignment, links), sorted(unlogged))


def _signed_sum(flow: pd.DataFrame, inlets: pd.DataFrame) -> pd.Series:
    """Sum of the inlet links' flows times their sign (NaN where any is NaN)."""
    cols = [flow[lid] * float(sign) for lid, sign in zip(inlets["link_id"], inlets["sign"])]
    return pd.concat(cols, axis=1).sum(axis=1, min_count=len(cols))
