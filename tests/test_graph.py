"""The graph module: pipe distances against networkx, components, incidence, spanning trees."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import wntr

from twin.errors import InputError
from twin.graph import (
    components,
    edge_components,
    graph_from_network,
    incidence,
    link_ends,
    link_lengths,
    middle_distances,
    pipe_distances,
    spanning_tree,
)
from twin.network import read_network


@pytest.fixture
def loop_network(tmp_path):
    """R - a, a loop a-b-c-d-a, a spur c-e, two parallel pipes d=f then f-k, a pump b-g; plus an island h-i."""
    wn = wntr.network.WaterNetworkModel()
    wn.add_reservoir("R", base_head=50, coordinates=(-20, 0))
    xy = {"a": (0, 0), "b": (100, 0), "c": (100, 100), "d": (0, 100), "e": (200, 100), "f": (0, 200),
          "g": (100, -10), "h": (500, 500), "i": (600, 500), "k": (0, 300)}
    for name, p in xy.items():
        wn.add_junction(name, base_demand=0.001, elevation=0, coordinates=p)
    pipes = {"P0": ("R", "a", 20), "P1": ("a", "b", 100), "P2": ("b", "c", 100), "P3": ("c", "d", 100),
             "P4": ("d", "a", 100), "P5": ("c", "e", 100), "P6": ("d", "f", 100), "P7": ("f", "d", 130),
             "P8": ("h", "i", 100), "P9": ("f", "k", 100)}
    for name, (s, e, length) in pipes.items():
        wn.add_pipe(name, s, e, length=length, diameter=0.1, roughness=100)
    wn.add_pump("PU", "b", "g", pump_type="POWER", pump_parameter=1000.0)
    path = tmp_path / "loop.inp"
    wntr.network.io.write_inpfile(wn, str(path))
    return read_network(path, crs="EPSG:32650")


def _point_distances_by_hand(net, link_id: str, position: float) -> dict[str, float]:
    """Shortest path (networkx, shortest parallel edge) from a point on a pipe to the nearest point of each pipe."""
    g = nx.Graph()
    for lid, s, e, length in zip(net.links.index, net.links["start_node"], net.links["end_node"],
                                 link_lengths(net)):
        if not g.has_edge(s, e) or g[s][e]["w"] > length:
            g.add_edge(s, e, w=float(length))
    s, e = net.links.loc[link_id, ["start_node", "end_node"]]
    length = float(net.links.loc[link_id, "length_m"])
    ds = nx.single_source_dijkstra_path_length(g, s, weight="w")
    de = nx.single_source_dijkstra_path_length(g, e, weight="w")
    to_node = {n: min(ds.get(n, np.inf) + position * length, de.get(n, np.inf) + (1 - position) * length)
               for n in g.nodes}
    out = {}
    for lid, row in net.pipes.iterrows():
        out[lid] = 0.0 if lid == link_id else min(to_node[row["start_node"]], to_node[row["end_node"]])
    return out


@pytest.mark.parametrize("link_id, position", [("P2", 0.25), ("P6", 0.5), ("P0", 1.0), ("P5", 0.9)])
def test_pipe_distances_match_networkx_shortest_paths(loop_network, link_id, position):
    d = pipe_distances(loop_network, link_id, position)
    expected = _point_distances_by_hand(loop_network, link_id, position)
    assert list(d.index) == list(loop_network.pipes.index)
    for lid, value in expected.items():
        assert d[lid] == pytest.approx(value, abs=1e-6), lid


def test_pipe_distances_by_hand(loop_network):
    d = pipe_distances(loop_network, "P2", 0.25)  # 25 m from b towards c
    assert d["P2"] == 0
    assert d["P1"] == pytest.approx(25.0)  # reach b
    assert d["P5"] == pytest.approx(75.0)  # reach c
    assert d["P4"] == pytest.approx(125.0)  # its nearer end a: 25 + 100 by b
    assert d["P6"] == pytest.approx(175.0)  # d: via c (75 + 100) rather than via a (125 + 100)
    assert d["P0"] == pytest.approx(125.0)  # reach a
    assert np.isinf(d["P8"])  # the island is not reachable


def test_parallel_pipes_walk_the_shorter_one(loop_network):
    # f is 100 m from d by P6 and 130 m by P7: a walk from P4's middle reaches f (and P9) after 50 + 100 m
    d = pipe_distances(loop_network, "P4", 0.5)
    assert d["P6"] == pytest.approx(50.0) and d["P7"] == pytest.approx(50.0)
    assert d["P9"] == pytest.approx(150.0)
    assert pipe_distances(loop_network, "P0", 0.0)["P9"] == pytest.approx(20.0 + 100.0 + 100.0)


def test_pipe_distances_to_the_middle_as_the_validation_scorer(loop_network):
    # BattLeDIM as ../shared/validation/score.py applies it: half the leak pipe + path + half the other pipe
    d = pipe_distances(loop_network, "P2", 0.25, to="middle")
    nearest = pipe_distances(loop_network, "P2", 0.25)
    lengths = link_lengths(loop_network).reindex(d.index)
    others = d.index != "P2"
    assert np.allclose(d[others], nearest[others] + lengths[others] / 2)
    assert d["P2"] == pytest.approx(0.25 * lengths["P2"])  # from the point to its own pipe's middle
    assert d["P1"] == pytest.approx(25.0 + lengths["P1"] / 2)
    with pytest.raises(InputError, match="distance target"):
        pipe_distances(loop_network, "P2", 0.5, to="centre")


def test_middle_distances_agree_with_pipe_distances(loop_network):
    pipes = loop_network.links.index[loop_network.links["link_type"] == "pipe"].astype(str)
    D = middle_distances(loop_network, list(pipes))
    for k, lid in enumerate(pipes):
        ref = pipe_distances(loop_network, lid, 0.5, to="middle").reindex(pipes).to_numpy()
        assert np.allclose(D[k], ref)
    assert np.allclose(np.diag(D), 0.0) and np.allclose(D, D.T)
    # within the limit exact; beyond it exact or not searched (infinite)
    near = middle_distances(loop_network, list(pipes), limit=60.0)
    assert np.array_equal(near <= 60.0, D <= 60.0) and np.isinf(near).any()
    assert np.allclose(near[np.isfinite(near)], D[np.isfinite(near)])
    with pytest.raises(InputError, match="not in the network"):
        middle_distances(loop_network, ["nope"])


def test_pipe_distances_unknown_pipe(loop_network):
    with pytest.raises(InputError, match="not in the network"):
        pipe_distances(loop_network, "nope", 0.5)


def test_bench_reexports_pipe_distances():
    from twin import bench, graph

    assert bench.pipe_distances is graph.pipe_distances


def test_components_split_the_island(loop_network):
    comp = components(loop_network)
    assert set(comp.index) == set(loop_network.nodes.index)
    assert comp["h"] == comp["i"]
    assert comp["h"] != comp["a"]
    assert comp.nunique() == 2
    assert comp.loc[["R", "a", "b", "c", "d", "e", "f", "g", "k"]].nunique() == 1
    # without the spur c-e, e stands alone
    cut = components(loop_network, links=loop_network.links.drop(index="P5"))
    assert cut.nunique() == 3 and cut["e"] != cut["c"]


def test_incidence_shape_and_signs(loop_network):
    nodes, start, end = link_ends(loop_network)
    a = incidence(loop_network)
    links = loop_network.links
    assert a.shape == (len(loop_network.nodes), len(links))
    dense = a.toarray()
    for k, lid in enumerate(links.index):
        assert dense[nodes.get_loc(links.at[lid, "start_node"]), k] == -1
        assert dense[nodes.get_loc(links.at[lid, "end_node"]), k] == 1
        assert np.count_nonzero(dense[:, k]) == 2
    # mass balance: a flow pattern with no sources leaves every node balanced
    loop_flow = np.zeros(len(links))
    for lid in ("P1", "P2", "P3", "P4"):  # a -> b -> c -> d -> a
        loop_flow[links.index.get_loc(lid)] = 0.01
    assert np.allclose(a @ loop_flow, 0.0)


def test_incidence_refuses_unknown_nodes(loop_network):
    links = loop_network.links.copy()
    links.loc["P5", "end_node"] = "ghost"
    broken = type(loop_network)(wn=loop_network.wn, crs=loop_network.crs, nodes=loop_network.nodes,
                                links=links, valves=loop_network.valves, source="broken")
    assert link_ends(broken)[2][links.index.get_loc("P5")] == -1
    with pytest.raises(InputError, match="not in the node table"):
        incidence(broken)


def test_edge_components_and_spanning_tree():
    # a square 0-1-2-3-0 with a diagonal, and an isolated vertex 4
    i = np.array([0, 1, 2, 3, 0])
    j = np.array([1, 2, 3, 0, 2])
    count, labels = edge_components(5, i, j)
    assert count == 2
    assert len(set(labels[:4])) == 1 and labels[4] != labels[0]
    tree = spanning_tree(5, i, j, np.array([1.0, 1.0, 1.0, 5.0, 4.0]))
    assert tree.tolist() == [True, True, True, False, False]  # the three cheapest edges span the square


def test_graph_from_network_lengths(loop_network):
    g = graph_from_network(loop_network)
    assert g.number_of_edges() == len(loop_network.links)
    assert g.number_of_edges("d", "f") == 2  # parallel pipes stay separate edges
    assert g.edges["b", "g", "PU"]["length_m"] == pytest.approx(10.0)  # the pump walks its geometry
