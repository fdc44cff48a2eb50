"""Hidden leaks of the synthetic truth: which pipes, when, how large, how they grow.

:func:`twin.synth.synth_readings` plants ``N`` leaks in the true model before
it is simulated. Each leak is an EPANET emitter ``q = C sqrt(p)`` on a node
inserted along a pipe, with its own onset (after the second day), size (1-6 %
of its district's mean inflow) and growth:

- *abrupt*: the emitter hangs behind a 1 m pipe that is closed until the
  onset, then opened (a burst);
- *growing*: the emitter hangs behind a throttle control valve (TCV) whose
  loss coefficient a control lowers every 15 minutes, so that the effective
  emitter coefficient rises linearly from 0 at the onset to ``C`` after a
  ramp of 6-48 hours (a crack that widens). EPANET has no pattern on
  emitters; a TCV of area ``A = C / sqrt(2 g)`` with loss coefficient
  ``K = 1 / r**2 - 1`` passes ``r C sqrt(p)`` whatever the pressure ``p``.

Leaks drawn at random lie on distinct open pipes with pressure, more than
``separation_m`` apart along the pipes (middle to middle,
:func:`twin.graph.middle_distances`), in different DMAs, one DMA, or anywhere.
DMAs are the network's zones, else the parts behind its flow-metered links
(:func:`twin.dma.assign_dmas`), as the balance forms them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import wntr
from wntr.network.controls import Control, ControlAction, SimTimeCondition

from twin.errors import InputError, SimulationError, UnknownElementError

log = logging.getLogger(__name__)

#: Where random leaks go: anywhere, one per DMA, or all in one DMA.
LEAK_DISTRICTS = ("any", "different", "same")
#: How leaks start: all at once, growing linearly over a ramp, or some of each.
LEAK_GROWTH = ("abrupt", "growing", "mixed")
#: Default shortest distance between two random leaks along the pipes, m.
LEAK_SEPARATION_M = 500.0
#: A DMA takes random leaks when it holds at least this many candidate pipes.
MIN_DISTRICT_PIPES = 10
#: Range of a growing leak's ramp, hours (rounded to the 15-minute step).
RAMP_H = (6.0, 48.0)
#: Leak size drawn as this share of the district's mean inflow (or of the system demand for one leak).
SIZE_SHARE = (0.01, 0.06)
#: Caps on the drawn sizes: all leaks together, share of the system demand; leaks of one DMA, share of its inflow.
MAX_TOTAL_SHARE = 0.10
MAX_DISTRICT_SHARE = 0.15

_STEP_S = 900
_G = 9.81


@dataclass(frozen=True)
class LeakSpec:
    """The leaks asked for, checked.

    Attributes
    ----------
    pipes : tuple of str
        Named leak pipes (empty: random pipes).
    n : int
        Number of leaks (0: none).
    districts : {"any", "different", "same"}
    growth : {"abrupt", "growing", "mixed"}
    flow_lps : float or None
        Size of every leak, L/s (None: drawn).
    separation_m : float
        Shortest pipe distance between two random leaks, m.
    """

    pipes: tuple[str, ...]
    n: int
    districts: str = "any"
    growth: str = "abrupt"
    flow_lps: float | None = None
    separation_m: float = LEAK_SEPARATION_M

    @property
    def legacy(self) -> bool:
        """One leak, anywhere, abrupt: drawn exactly as the single-leak generator always did."""
        return self.n == 1 and self.districts == "any" and self.growth == "abrupt"


@dataclass
class PlantedLeak:
    """One leak inserted into the true model (SI units, seconds from the start)."""

    link_id: str
    position: float  # 0-1 along the pipe from its start node
    node_start: str
    node_end: str
    onset_s: int
    coef: float  # final emitter coefficient, m3/s per m^0.5
    target_q: float  # final flow at the first day's mean pressure, m3/s
    kind: str  # "abrupt" or "growing"
    ramp_s: int  # 0 for an abrupt leak
    dma: str | None
    node: str = ""  # the emitter node in the true model


def _names(leak: str | Sequence[str] | None) -> list[str]:
    """``--leak`` values: one string, a comma list, or several of either."""
    if leak is None:
        return ["none"]
    items = [leak] if isinstance(leak, str) else list(leak)
    out = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    return out or ["random"]


def check_leaks(wn: wntr.network.WaterNetworkModel, leak: str | Sequence[str] | None, leaks: int | None, *,
                districts: str, growth: str, flow_lps: float | None, separation_m: float, days: int,
                network_path: str | Path) -> LeakSpec:
    """The leak options of :func:`twin.synth.synth_readings`, checked together.

    Raises
    ------
    InputError
        An option out of range, options that contradict each other, a link
        that is not a pipe, or fewer than 3 days with a leak.
    UnknownElementError
        A named pipe is not in the network.
    """
    names = _names(leak)
    if flow_lps is not None and not (flow_lps > 0 and math.isfinite(flow_lps)):
        raise InputError(f"leak flow {flow_lps} L/s is not positive", element="leak_flow_lps",
                         fix="give a positive flow in L/s, or leave it out for a random size")
    _check_choice(districts, LEAK_DISTRICTS, "leak_districts")
    _check_choice(growth, LEAK_GROWTH, "leak_growth")
    if not (separation_m >= 0 and math.isfinite(separation_m)):
        raise InputError(f"leak separation {separation_m} m is not a distance", element="leak_separation_m",
                         fix="give a distance in metres, e.g. 500")
    n = _check_count(leaks)
    if names == ["none"]:
        if n:
            raise InputError(f"--leak none contradicts --leaks {n}", element="leaks",
                             fix="leave out --leak none, or --leaks")
        n, pipes = 0, ()
    elif names == ["random"]:
        n, pipes = (1 if n is None else n), ()
    else:
        pipes = _check_pipes(wn, names, network_path)
        if n is not None and n != len(pipes):
            raise InputError(f"--leaks {n} but {len(pipes)} pipes named with --leak", element="leaks",
                             fix=f"give --leaks {len(pipes)} or leave it out")
        if districts != "any":
            raise InputError(f"--leak-districts {districts} chooses random pipes, but pipes are named",
                             element="leak_districts",
                             fix="leave out --leak-districts, or use --leak random --leaks N")
        n = len(pipes)
    if n and days < 3:
        raise InputError(f"a leak starts after the second day, but only {days} days are simulated",
                         element="days", fix="use --days 3 or more, or --leak none")
    return LeakSpec(pipes, n, districts, growth, flow_lps, float(separation_m))


def _check_choice(value: str, allowed: tuple[str, ...], element: str) -> None:
    if value not in allowed:
        raise InputError(f"--{element.replace('_', '-')} {value!r} is not one of {', '.join(allowed)}",
                         element=element, fix=f"use one of {', '.join(allowed)}")


def _check_count(leaks: Any) -> int | None:
    if leaks is None:
        return None
    try:
        n = int(leaks)
    except (TypeError, ValueError):
        n = -1
    if n != leaks or n < 0:
        raise InputError(f"--leaks {leaks!r} is not a whole number of leaks", element="leaks",
                         fix="give e.g. --leaks 3 (0 for none)")
    return n


def _check_pipes(wn: wntr.network.WaterNetworkModel, names: list[str], network_path: str | Path) -> tuple[str, ...]:
    if {"random", "none"} & set(names):
        raise InputError(f"--leak {','.join(names)} mixes pipe IDs with 'random' or 'none'", element="leak",
                         fix="name pipes only, or give --leak random --leaks N")
    for name in names:
        if name not in wn.link_name_list:
            raise UnknownElementError(f"pipe {name!r} is not in the network", path=network_path,
                                      fix="give a pipe ID from the [PIPES] section, 'random' or 'none'")
        kind = wn.get_link(name).link_type.lower()
        if kind != "pipe":
            raise InputError(f"link {name!r} is a {kind}, not a pipe", path=network_path, element=name,
                             fix="give a pipe ID from the [PIPES] section, 'random' or 'none'")
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise InputError(f"pipe {dup[0]!r} is named twice for --leak", element=dup[0],
                         fix="name each leaking pipe once")
    return tuple(names)


# ----------------------------------------------------------------------------
# districts and distances on the generator's tables
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _GraphView:
    """The generator's node and link tables seen as a :class:`twin.network.Network` by twin.graph and twin.dma."""

    nodes: pd.DataFrame
    links: pd.DataFrame
    source: str


def _view(nodes: pd.DataFrame, links: pd.DataFrame, network_path: str | Path) -> _GraphView:
    lk = links.assign(status=np.where(links.closed.to_numpy(), "closed", "open"))
    return _GraphView(nodes, lk, str(network_path))


def districts_of_nodes(nodes: pd.DataFrame, links: pd.DataFrame, inlet_links: list[str],
                       network_path: str | Path) -> pd.Series:
    """DMA of every node (NA outside DMAs): the zones, else the parts behind ``inlet_links``."""
    from twin.dma import assign_dmas  # the balance's own definition of a DMA

    try:
        return assign_dmas(_view(nodes, links, network_path), inlet_links=inlet_links)
    except InputError:  # no zones and no metered inlets: one network, no DMA
        return pd.Series(pd.NA, index=nodes.index.astype(str), dtype="string", name="dma")


def _near_function(nodes: pd.DataFrame, links: pd.DataFrame, pipes: pd.Index, separation_m: float,
                   network_path: str | Path) -> Callable[[int], np.ndarray]:
    """``near(i)``: pipes within ``separation_m`` of pipe ``i``'s middle (both in the order of ``pipes``)."""
    import geopandas as gpd  # link lengths fall back on geometry; loaded only for several leaks

    from twin.graph import middle_distances

    view = _view(nodes, links, network_path)
    view = _GraphView(nodes, gpd.GeoDataFrame(view.links, geometry=gpd.GeoSeries(links.geometry.to_numpy(),
                                                                                 index=links.index)), view.source)

    def near(i: int) -> np.ndarray:
        return middle_distances(view, [str(pipes[i])], limit=separation_m)[0] <= separation_m

    return near


# ----------------------------------------------------------------------------
# choosing the pipes
# ----------------------------------------------------------------------------


def _candidate_weights(pipes: pd.DataFrame, jp: pd.Series, network_path: str | Path) -> np.ndarray:
    """Draw weight of every pipe: its length if open, > 10 m, with > 10 m pressure at both ends."""
    ps = jp.reindex(pipes.start_node).to_numpy()
    pe = jp.reindex(pipes.end_node).to_numpy()
    open_ = ~pipes.closed.to_numpy()
    good = (np.nan_to_num(ps) > 10) & (np.nan_to_num(pe) > 10) & (pipes.length_m.to_numpy() > 10) & open_
    if not good.any():
        good = (np.nan_to_num(ps) > 0) & (np.nan_to_num(pe) > 0) & open_
    w = np.where(good, pipes.length_m.to_numpy(), 0.0)
    if w.sum() <= 0:
        raise SimulationError("no pipe has positive pressure at both ends for a leak",
                              path=network_path, fix="name a pipe with --leak")
    return w


def _draw_apart(w: np.ndarray, masks: list[np.ndarray], near: Callable[[int], np.ndarray] | None,
                rng: np.random.Generator) -> list[int] | None:
    """One pipe per mask, by weight ``w``, each away from those drawn before; None when one cannot be placed."""
    w = w.copy()
    chosen: list[int] = []
    for k, mask in enumerate(masks):
        wk = np.where(mask, w, 0.0)
        if wk.sum() <= 0:
            return None
        i = int(rng.choice(len(w), p=wk / wk.sum()))
        chosen.append(i)
        if k + 1 < len(masks) and near is not None:
            w[near(i)] = 0.0
    return chosen


def _random_pipes(spec: LeakSpec, pipes: pd.DataFrame, w: np.ndarray, pipe_dma: np.ndarray,
                  near: Callable[[int], np.ndarray] | None, rng: np.random.Generator,
                  network_path: str | Path) -> list[int]:
    """Positions in ``pipes`` of ``spec.n`` random leak pipes placed as ``spec.districts`` asks."""
    n = spec.n
    if spec.districts == "any":
        chosen = _draw_apart(w, [np.ones(len(w), dtype=bool)] * n, near, rng)
        if chosen is None:
            raise InputError(f"the network has no room for {n} leaks {spec.separation_m:.0f} m apart along the "
                             "pipes", path=network_path, element="leaks",
                             fix="plant fewer leaks, or give a smaller leak separation")
        return chosen
    counts = pd.Series(pipe_dma[(w > 0) & (pipe_dma != "")]).value_counts()
    eligible = np.array(sorted(counts.index[counts >= MIN_DISTRICT_PIPES].astype(str)))
    if spec.districts == "different":
        if len(eligible) < n:
            raise InputError(f"{n} leaks in different districts need {n} DMAs with at least {MIN_DISTRICT_PIPES} "
                             f"pipes under pressure; the network has {len(eligible)}", path=network_path,
                             element="leak_districts", fix="plant fewer leaks, or use --leak-districts same or any")
        picked = eligible[np.sort(rng.choice(len(eligible), size=n, replace=False))]
        chosen = _draw_apart(w, [pipe_dma == d for d in picked], near, rng)
        if chosen is not None:
            return chosen
    else:
        for d in eligible[rng.permutation(len(eligible))]:
            chosen = _draw_apart(w, [pipe_dma == d] * n, near, rng)
            if chosen is not None:
                return chosen
    raise InputError(f"no {'set of DMAs' if spec.districts == 'different' else 'DMA'} of the network has room for "
                     f"{n} leaks {spec.separation_m:.0f} m apart along the pipes", path=network_path,
                     element="leak_districts", fix="plant fewer leaks, or use another --leak-districts")


# ----------------------------------------------------------------------------
# planting
# ----------------------------------------------------------------------------


def plant_leaks(wn: wntr.network.WaterNetworkModel, spec: LeakSpec, *, nodes: pd.DataFrame, links: pd.DataFrame,
                jp: pd.Series, node_inflow: pd.Series, q_sys: float, inlet_links: list[str], days: int,
                rng: np.random.Generator, network_path: str | Path) -> list[PlantedLeak]:
    """Choose, size and insert ``spec.n`` leaks into ``wn`` (changed in place).

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The true model (SI), before its simulation.
    spec : LeakSpec
    nodes, links : DataFrame
        The network's tables as the generator holds them (before any leak).
    jp : Series
        Mean pressure head of the first day at every junction, m.
    node_inflow : Series
        Mean consumption plus background leakage of every junction, m3/s
        (summed per DMA: the DMA's mean inflow).
    q_sys : float
        Mean system demand, m3/s.
    inlet_links : list of str
        Flow-metered links (the DMA inlets when the network has no zones).
    days : int
    rng : numpy.random.Generator
        The leak stream: one leak anywhere, abrupt, draws exactly as before
        (pipe, position, onset, size).

    Returns
    -------
    list of PlantedLeak
        In the order drawn (named pipes: the order given).
    """
    if spec.n == 0:
        return []
    pipes = links[links.link_type == "pipe"]
    dma = districts_of_nodes(nodes, links, inlet_links, network_path)
    label = dma.fillna("").astype(str)  # "": in no DMA
    ds = label.reindex(pipes.start_node.astype(str)).fillna("").to_numpy(dtype=str)
    de = label.reindex(pipes.end_node.astype(str)).fillna("").to_numpy(dtype=str)
    pipe_dma = np.where((ds != "") & (ds == de), ds, "")  # pipes with both ends in one DMA
    if spec.pipes:
        _refuse_closed(spec.pipes, pipes, network_path)
        idx = [int(pipes.index.get_loc(p)) for p in spec.pipes]
    else:
        w = _candidate_weights(pipes, jp, network_path)
        near = (_near_function(nodes, links, pipes.index, spec.separation_m, network_path)
                if spec.n > 1 and spec.separation_m > 0 else None)
        idx = _random_pipes(spec, pipes, w, pipe_dma, near, rng, network_path)
    draws = _draws(spec, days, rng)
    rows = pipes.iloc[idx]
    leak_dma = [_dma_at(a, b, pos) for a, b, pos in zip(ds[idx], de[idx], draws["position"])]
    target_q = _sizes(spec, draws["share"], leak_dma, dma, node_inflow, q_sys)
    planted = []
    for k, (link_id, row) in enumerate(rows.iterrows()):
        pos = float(draws["position"][k])
        p_est = _pressure_at(jp, row.start_node, row.end_node, pos, str(link_id))
        lk = PlantedLeak(str(link_id), pos, str(row.start_node), str(row.end_node), int(draws["onset_s"][k]),
                         float(target_q[k] / math.sqrt(p_est)), float(target_q[k]), str(draws["kind"][k]),
                         int(draws["ramp_s"][k]), leak_dma[k])
        lk.node = _insert(wn, lk, pipe_diameter=float(row.diameter_m))
        planted.append(lk)
    log.info("planted %d leak(s): %s", len(planted), ", ".join(
        f"{p.link_id} ({p.kind}, {p.target_q * 1000:.2f} L/s, DMA {p.dma})" for p in planted))
    return planted


def _refuse_closed(names: tuple[str, ...], pipes: pd.DataFrame, network_path: str | Path) -> None:
    for leak in names:
        if bool(pipes.closed[leak]):
            raise InputError(f"pipe {leak!r} is closed in the network (a boundary valve), so it cannot leak "
                             "into a flowing system", path=network_path, element=leak,
                             fix="choose an open pipe, or --leak random")


def _draws(spec: LeakSpec, days: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per leak: position, onset (s, whole minutes), size share; then kind and ramp (s)."""
    n = spec.n
    position, onset, share = np.empty(n), np.empty(n, dtype=np.int64), np.empty(n)
    for k in range(n):  # the single leak's draws, in their historical order
        position[k] = float(rng.uniform(0.15, 0.85))
        o = int(rng.uniform(2 * 86400 + 3600, max(days * 86400 - 18 * 3600, 2 * 86400 + 7200)))
        onset[k] = o - o % 60
        share[k] = float(rng.uniform(*SIZE_SHARE))
    if spec.growth == "abrupt":
        kind = np.full(n, "abrupt")
        ramp_h = np.zeros(n)
    else:
        if spec.growth == "growing":
            kind = np.full(n, "growing")
        else:  # alternate from a random first kind, then shuffle: both kinds as soon as n >= 2
            first = int(rng.integers(2))
            kind = np.array(["abrupt", "growing"])[(first + np.arange(n)) % 2][rng.permutation(n)]
        ramp_h = rng.uniform(*RAMP_H, n)
    steps = np.where(kind == "growing", np.maximum(1, np.rint(ramp_h * 3600 / _STEP_S)), 0).astype(np.int64)
    return {"position": position, "onset_s": onset, "share": share, "kind": kind, "ramp_s": steps * _STEP_S}


def _dma_at(start_dma: str, end_dma: str, position: float) -> str | None:
    """DMA of the leak point: its nearer end's, else the other end's ("" is no DMA)."""
    a, b = (start_dma, end_dma) if position < 0.5 else (end_dma, start_dma)
    return str(a or b) or None


def _sizes(spec: LeakSpec, share: np.ndarray, leak_dma: list[str | None], dma: pd.Series,
           node_inflow: pd.Series, q_sys: float) -> np.ndarray:
    """Final flow of every leak, m3/s: given, or a share of its district's mean inflow, capped."""
    n = len(share)
    if spec.flow_lps is not None:
        return np.full(n, spec.flow_lps / 1000.0)
    if spec.legacy:  # one leak in the whole network: a share of the system demand, as ever
        return share * q_sys
    inflow = node_inflow.groupby(dma.reindex(node_inflow.index.astype(str)).fillna("").to_numpy()).sum()
    basis = np.array([float(inflow.get(d, 0.0)) if d is not None else q_sys for d in leak_dma])
    basis = np.where(basis > 0, basis, q_sys)
    q = share * basis
    group = np.array([d if d is not None else "" for d in leak_dma], dtype=object)
    for d in pd.unique(group):
        m = group == d
        cap = MAX_DISTRICT_SHARE * basis[m][0]
        if q[m].sum() > cap and d != "":
            q[m] *= cap / q[m].sum()
    if q.sum() > MAX_TOTAL_SHARE * q_sys:
        q *= MAX_TOTAL_SHARE * q_sys / q.sum()
    return q


def _pressure_at(jp: pd.Series, start: str, end: str, position: float, link_id: str) -> float:
    """Pressure head at the leak point (m), interpolated between the pipe's ends' first-day means."""
    p0 = jp.get(start, np.nan)
    p1 = jp.get(end, np.nan)
    if np.isfinite(p0) and np.isfinite(p1):
        p_est = (1.0 - position) * p0 + position * p1
    else:  # a pipe from a tank or reservoir: the junction end's pressure
        p_est = float(np.nanmax([p0, p1]))
    if not np.isfinite(p_est) or p_est <= 1.0:
        raise InputError(f"pipe {link_id!r} has no positive pressure for a leak", element=link_id,
                         fix="choose a pipe with positive pressure, or --leak random")
    return float(p_est)


# ----------------------------------------------------------------------------
# inserting into the model
# ----------------------------------------------------------------------------


def unique_name(wn: wntr.network.WaterNetworkModel, base: str) -> str:
    """``base``, or ``base2``, ``base3``... the first that names no node, link or control of ``wn``."""
    names = set(wn.node_name_list) | set(wn.link_name_list) | set(wn.control_name_list)
    name, k = base, 1
    while name in names:
        k += 1
        name = f"{base}{k}"
    return name


def _split(wn: wntr.network.WaterNetworkModel, lk: PlantedLeak) -> tuple[str, str]:
    """Split the leak's pipe at its position; add the (still unconnected) emitter node; their names."""
    split = unique_name(wn, "twin_leak_split")
    new_pipe = unique_name(wn, f"{lk.link_id}_twin_b")
    wntr.morph.split_pipe(wn, lk.link_id, new_pipe, split, split_at_point=lk.position, return_copy=False)
    node = wn.get_node(split)
    out = unique_name(wn, "twin_leak")
    wn.add_junction(out, base_demand=0.0, elevation=node.elevation, coordinates=node.coordinates)
    wn.get_node(out).emitter_coefficient = float(lk.coef)
    return split, out


def _insert(wn: wntr.network.WaterNetworkModel, lk: PlantedLeak, *, pipe_diameter: float) -> str:
    """Insert ``lk`` into ``wn``: abrupt behind a gate pipe, growing behind a throttled valve; the emitter node."""
    split, out = _split(wn, lk)
    if lk.kind == "abrupt":
        gate = unique_name(wn, "twin_leak_gate")
        wn.add_pipe(gate, split, out, length=1.0, diameter=max(pipe_diameter, 0.05), roughness=140.0,
                    minor_loss=0.0, initial_status="CLOSED")
        cond = SimTimeCondition(wn, "=", int(lk.onset_s))
        wn.add_control(unique_name(wn, "twin_leak_onset"),
                       Control(cond, ControlAction(wn.get_link(gate), "status", wntr.network.LinkStatus.Open)))
        return out
    _add_ramp(wn, split, out, lk)
    return out


def _add_ramp(wn: wntr.network.WaterNetworkModel, split: str, out: str, lk: PlantedLeak) -> None:
    """A TCV from ``split`` to the emitter ``out``, closed until the onset, then opened in 15-minute steps.

    With valve area ``A = C / sqrt(2 g)`` and loss coefficient ``K`` the
    valve and the emitter in series pass ``C sqrt(p) / sqrt(1 + K)``; step
    ``k`` of ``n`` sets ``K = 1 / r**2 - 1`` with ``r = (k + 0.5) / n`` (the
    ramp's value mid-step), the last ``K = 0``.
    """
    area = lk.coef / math.sqrt(2 * _G)
    diameter = math.sqrt(4 * area / math.pi)
    valve = unique_name(wn, "twin_leak_valve")
    wn.add_valve(valve, split, out, diameter=diameter, valve_type="TCV", minor_loss=0.0, initial_setting=0.0,
                 initial_status="CLOSED")
    link = wn.get_link(valve)
    n = lk.ramp_s // _STEP_S
    r = np.append((np.arange(n) + 0.5) / n, 1.0)
    for k, rk in enumerate(r):
        cond = SimTimeCondition(wn, "=", int(lk.onset_s + k * _STEP_S))
        wn.add_control(f"{valve}_ramp{k:03d}", Control(cond, ControlAction(link, "setting", float(1.0 / rk**2 - 1.0))))
