"""The network as a graph: node-link indices, components, incidence, pipe distances.

One place for the graph plumbing every stage needs, in two layers:

- *array level*, on integer vertices ``0..n-1`` and edge arrays ``i``, ``j``
  (for code that works before a :class:`~twin.model.Network` exists, such as
  the snapping of GIS line ends or the synthetic city's layout):
  :func:`edge_components`, :func:`spanning_tree`;
- *network level*, on a :class:`~twin.model.Network`: :func:`link_ends`,
  :func:`link_lengths`, :func:`components`, :func:`incidence`,
  :func:`pipe_distances`, :func:`middle_distances` and :func:`graph_from_network` (a networkx
  ``MultiGraph`` for exploration and tests).

Sparse matrices are built with scipy and searched with
``scipy.sparse.csgraph``, which is fast on a city of 100,000 links; the
networkx graph is for convenience only. Lengths are metres in the network's
projected CRS.

Examples
--------
>>> d = pipe_distances(net, "P12", 0.5)          # doctest: +SKIP
>>> d.sort_values().head(3)                      # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse import csgraph

from twin.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - the model imports this module for Network.to_graph
    from twin.model import Network

__all__ = [
    "components",
    "edge_components",
    "graph_from_network",
    "incidence",
    "link_ends",
    "link_lengths",
    "pipe_distances",
    "spanning_tree",
]

#: Added to every edge weight so that zero-length links stay edges of a sparse matrix, metres.
_EPS_M = 1e-9


# --------------------------------------------------------------------------- array level


def edge_components(n: int, i: np.ndarray, j: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of an undirected graph given by its edges.

    Parameters
    ----------
    n : int
        Number of vertices, numbered ``0..n-1``.
    i, j : array of int
        End vertices of each edge (parallel edges and loops are allowed).

    Returns
    -------
    count : int
        Number of components (an isolated vertex is one).
    labels : numpy.ndarray of int
        Component of each vertex, ``0..count-1``, as numbered by
        ``scipy.sparse.csgraph.connected_components``.
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    count, labels = csgraph.connected_components(adj, directed=False)
    return int(count), labels


def spanning_tree(n: int, i: np.ndarray, j: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Which edges form a minimum spanning forest.

    Parameters
    ----------
    n : int
        Number of vertices.
    i, j : array of int
        End vertices of each edge; one edge per vertex pair.
    weights : array of float
        Positive edge weights.

    Returns
    -------
    numpy.ndarray of bool
        One per edge: True where the edge is in the forest
        (``scipy.sparse.csgraph.minimum_spanning_tree``).
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    g = sp.coo_matrix((weights, (i, j)), shape=(n, n)).tocsr()
    tree = csgraph.minimum_spanning_tree(g).tocoo()
    pairs = set(zip(np.minimum(tree.row, tree.col).tolist(), np.maximum(tree.row, tree.col).tolist()))
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return np.array([(a, b) in pairs for a, b in zip(lo.tolist(), hi.tolist())], dtype=bool)


def _distance_matrix(n: int, i: np.ndarray, j: np.ndarray, length: np.ndarray) -> sp.csr_matrix:
    """Symmetric sparse matrix of edge lengths; of parallel edges the shortest."""
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    shortest = pd.Series(length).groupby([lo, hi]).min()
    a = shortest.index.get_level_values(0).to_numpy()
    b = shortest.index.get_level_values(1).to_numpy()
    w = shortest.to_numpy() + _EPS_M
    return sp.coo_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(n, n)).tocsr()


# --------------------------------------------------------------------------- network level


def link_ends(
    network: Network, *, links: pd.DataFrame | None = None, strict: bool = False
) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """Positions of every link's end nodes in the node table.

    Parameters
    ----------
    network : Network
    links : DataFrame, optional
        A subset of ``network.links`` (default: all links).
    strict : bool
        Raise :class:`~twin.errors.InputError` when a link names a node that
        is not in the table (default: mark it -1).

    Returns
    -------
    nodes : pandas.Index
        The unique node IDs (str), in the order of ``network.nodes``.
    start, end : numpy.ndarray of int
        Position in ``nodes`` of each link's start / end node; -1 where the
        link names a node that is not in the table.
    """
    links = network.links if links is None else links
    nodes = pd.Index(network.nodes.index.astype(str).unique())
    start = nodes.get_indexer(links["start_node"].astype(str))
    end = nodes.get_indexer(links["end_node"].astype(str))
    if strict and ((start < 0).any() or (end < 0).any()):
        raise InputError("a link names an end node that is not in the node table",
                         element="network", fix="validate the network (twin network check)")
    return nodes, start, end


def link_lengths(network: Network) -> pd.Series:
    """Walkable length of every link, metres.

    Returns
    -------
    pandas.Series
        index = link IDs; ``length_m`` where given (pipes), else the length
        of the link's geometry (pumps and valves, usually a few metres).
    """
    links = network.links
    length = links["length_m"].to_numpy(dtype=float)
    length = np.where(np.isfinite(length), length, links.geometry.length.to_numpy())
    return pd.Series(length, index=links.index, name="length_m")


def components(network: Network, *, links: pd.DataFrame | None = None) -> pd.Series:
    """Connected component of every node.

    Parameters
    ----------
    network : Network
    links : DataFrame, optional
        The links that connect (a subset of ``network.links``, e.g. the open
        links without the DMA inlets); default: all. Links that name an
        unknown node are left out.

    Returns
    -------
    pandas.Series
        index = node IDs (str, unique); component number (int), numbered as
        :func:`edge_components` does. Name ``component``.
    """
    nodes, start, end = link_ends(network, links=links)
    ok = (start >= 0) & (end >= 0)
    _, labels = edge_components(len(nodes), start[ok], end[ok])
    return pd.Series(labels, index=nodes, name="component")


def incidence(network: Network) -> sp.csr_matrix:
    """Node-link incidence matrix.

    Returns
    -------
    scipy.sparse.csr_matrix
        Shape (nodes, links), rows in the order of :func:`link_ends`'s
        ``nodes``, columns in the order of ``network.links``: -1 at a link's
        start node, +1 at its end node (a flow from start to end, positive,
        leaves the start node). A self-loop's column is empty.

    Raises
    ------
    InputError
        A link names a node that is not in the node table.
    """
    nodes, start, end = link_ends(network, strict=True)
    cols = np.arange(len(start))
    data = np.r_[-np.ones(len(start)), np.ones(len(end))]
    return sp.coo_matrix((data, (np.r_[start, end], np.r_[cols, cols])), shape=(len(nodes), len(start))).tocsr()


def pipe_distances(network: Network, link_id: str, position: float, *, to: str = "nearest") -> pd.Series:
    """Distance along the pipes from a point on ``link_id`` to every pipe (m).

    Parameters
    ----------
    network : Network
    link_id : str
        The pipe holding the point.
    position : float
        0..1 along the pipe from its start node.
    to : {"nearest", "middle"}
        Measure to the nearest point of each pipe, or to its middle (the
        point a crew is sent to: candidates carry their pipe's midpoint).
        ``"middle"`` is BattLeDIM's criterion as the independent validation
        scorer applies it (half the leak pipe + path + half the other pipe).

    Returns
    -------
    Series
        index = pipe link ids; shortest path length (m) from the point to the
        nearest point (or the middle) of each pipe; for ``link_id`` itself 0
        (or the distance from the point to its middle). Pumps and valves are
        walkable with their geometry length.
    """
    if to not in ("nearest", "middle"):
        raise InputError(f"unknown distance target {to!r}", fix='use to="nearest" or to="middle"')
    links = network.links
    if link_id not in links.index:
        raise InputError(f"pipe {link_id!r} is not in the network", element=link_id)
    nodes, si, ei = link_ends(network, strict=True)
    length = link_lengths(network).to_numpy()
    g = _distance_matrix(len(nodes), si, ei, length)
    k = links.index.get_loc(link_id)
    ls = float(length[k])
    d = csgraph.dijkstra(g, directed=False, indices=[si[k], ei[k]])
    to_node = np.minimum(d[0] + position * ls, d[1] + (1 - position) * ls)
    is_pipe = (links["link_type"] == "pipe").to_numpy()
    half = 0.5 * length[is_pipe] if to == "middle" else 0.0
    out = pd.Series(np.minimum(to_node[si[is_pipe]], to_node[ei[is_pipe]]) + half,
                    index=links.index[is_pipe].astype(str))
    out[link_id] = abs(position - 0.5) * ls if to == "middle" else 0.0
    return out


def middle_distances(network: Network, link_ids: Sequence[str], *, limit: float = np.inf) -> np.ndarray:
    """Distance along the pipes between the middles of ``link_ids`` and the middle of every pipe (m).

    The distance a crew walks from the middle of one pipe (where a candidate
    sends it) to the middle of another, as :func:`pipe_distances` with
    ``to="middle"`` measures it, for several pipes at once.

    Parameters
    ----------
    network : Network
    link_ids : sequence of str
        Pipes to measure from.
    limit : float
        Search radius (m): distances up to it are exact; longer ones are
        exact or ``inf`` (not searched).

    Returns
    -------
    ndarray
        Shape (len(link_ids), pipes), pipes in the order of
        ``network.links[link_type == "pipe"]``; 0 on a pipe itself.
    """
    links = network.links
    nodes, si, ei = link_ends(network, strict=True)
    length = link_lengths(network).to_numpy()
    g = _distance_matrix(len(nodes), si, ei, length)
    k = links.index.get_indexer([str(x) for x in link_ids])
    if (k < 0).any():
        missing = [str(x) for x, kk in zip(link_ids, k) if kk < 0]
        raise InputError(f"pipe(s) not in the network: {', '.join(missing[:5])}", element=missing[0])
    half = 0.5 * length[k]
    reach = np.where(np.isfinite(limit), limit + half.max(initial=0.0), np.inf)
    d = csgraph.dijkstra(g, directed=False, indices=np.concatenate([si[k], ei[k]]), limit=float(reach))
    to_node = np.minimum(d[: len(k)], d[len(k):]) + half[:, None]
    is_pipe = (links["link_type"] == "pipe").to_numpy()
    out = np.minimum(to_node[:, si[is_pipe]], to_node[:, ei[is_pipe]]) + 0.5 * length[is_pipe][None, :]
    pos = np.cumsum(is_pipe) - 1
    out[np.arange(len(k)), pos[k]] = np.where(is_pipe[k], 0.0, out[np.arange(len(k)), pos[k]])
    return out


def graph_from_network(network: Network) -> nx.MultiGraph:
    """Undirected multigraph of the network for pipe distances.

    Parameters
    ----------
    network : Network

    Returns
    -------
    networkx.MultiGraph
        Nodes are node IDs (attributes ``node_type``, ``x``, ``y`` in the
        network CRS); one edge per link, keyed by link ID, with ``link_id``,
        ``link_type`` and ``length_m`` (pipe length; pumps and valves get
        their geometry length, usually a few metres).
    """
    g = nx.MultiGraph(crs=network.crs.to_string())
    nodes = network.nodes
    xs = nodes.geometry.x.to_numpy()
    ys = nodes.geometry.y.to_numpy()
    g.add_nodes_from(
        (nid, {"node_type": t, "x": float(x), "y": float(y)})
        for nid, t, x, y in zip(nodes.index, nodes["node_type"], xs, ys)
    )
    links = network.links
    length = link_lengths(network).to_numpy()
    g.add_edges_from(
        (s, e, lid, {"link_id": lid, "link_type": t, "length_m": float(metres)})
        for lid, s, e, t, metres in zip(links.index.tolist(), links["start_node"].tolist(),
                                        links["end_node"].tolist(), links["link_type"].tolist(), length.tolist())
    )
    return g
