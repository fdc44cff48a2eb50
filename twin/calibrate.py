"""Model calibration on the leak-free days: roughness per pipe group, demand per DMA.

The localisation job compares measured pressures and flows with snapshots of
the network model. Per-sensor offsets absorb what a wrong model does the same
way every day; what changes with the flows (a pipe group rougher than the
file says, a DMA that uses more than its meters tell) stays in the residuals
and blurs the leak's signature. This module fits, on the leak-free
snapshots, by regularised Gauss-Newton (Levenberg-Marquardt step control):

- a roughness multiplier per **pipe group**: diameter class x material and
  decade of installation when the network has them, else x nominal
  roughness (:func:`pipe_groups`);
- a demand multiplier per **DMA whose balance is not fully metered** (the
  others already follow their measured inflow); the multipliers only move
  demand between those DMAs, whose total stays pinned to the measured
  supply.

Parameters are log-multipliers with Gaussian priors (sd
:data:`ROUGHNESS_SD`, :data:`DEMAND_SD`). Residuals are the pressure heads at
the loggers (each logger's constant offset, its datum error, fitted with
them) and the flows at the meters, weighted by each sensor's measurement
noise (widened per kind by the misfit the model starts from). The Jacobians
are analytic, from the linearisation the leak signatures use
(:class:`twin.hydraulics.LinearModel`): a change ``dθ`` of a pipe group's
log-roughness changes the flow of each of its pipes at fixed heads by
``δq_k = 1.852 r_k |q_k|^1.852 sgn(q_k) / h_k'(q_k)`` (Hazen-Williams), which
enters mass balance as an extra demand ``+δq_k`` at its start node and
``−δq_k`` at its end node; the sensor responses to extra demands give
``dy/dθ = S (B δq)`` (plus ``δq_k`` itself at a meter on pipe ``k``). A
DMA's demand multiplier moves demand ``d_i (1[i ∈ m] − share_m)`` and
``dy/dφ_m = S`` times that.

**The gate.** The fit is applied only if it predicts days it has not seen:
leave one leak-free day out, fit on the others, solve the held-out day's
snapshots with that fit and compare their misfit with the model's as it
was: applied when the held-out misfit falls by at least
:data:`GATE_MIN_GAIN` and a one-sided paired t-test of the per-snapshot log
ratio (its variance widened by the lag-1 autocorrelation) gives p <
:data:`GATE_P`. Otherwise the calibration is refused and the model stays as
it was (:class:`ModelCalibration`).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from twin.errors import SimulationError
from twin.hydraulics import Q_MIN, LinearModel, SnapshotSolver
from twin.network import Network

log = logging.getLogger(__name__)

#: Prior sd of a pipe group's log-roughness multiplier (about ±15 %).
ROUGHNESS_SD = 0.15
#: Prior sd of a DMA's log-demand multiplier (about ±10 %).
DEMAND_SD = 0.10
#: Upper edges of the diameter classes, mm (the last class is open).
DIAMETER_EDGES_MM = (110.0, 210.0, 310.0)
#: A pipe group with fewer pipes or a smaller share of the pipe length is merged into a neighbour.
MIN_GROUP_PIPES = 10
MIN_GROUP_SHARE = 0.02
#: A DMA gets its own demand multiplier with at least this many junctions.
MIN_DMA_NODES = 5
#: Largest |log-multiplier| a fit may reach (x0.5 to x2).
MAX_LOG_MULTIPLIER = float(np.log(2.0))
#: Gauss-Newton iterations at most.
MAX_ITERATIONS = 2
#: The sensor responses are linearised again once a log-multiplier moved this far from where they were taken.
RELINEARISE = 0.25
#: Gate: one-sided p-value of the held-out improvement, and the smallest relative gain.
GATE_P = 0.01
GATE_MIN_GAIN = 0.10
#: Floors of the measurement noise: pressure head (m), flow (m³/s).
NOISE_FLOOR_P = 0.005
NOISE_FLOOR_Q = 1e-5


@dataclass(frozen=True)
class PipeGroups:
    """Pipes grouped for one roughness multiplier each.

    Attributes
    ----------
    names : list of str
        Group names, e.g. ``"DN 111-210 mm, C 140"``.
    pipes : list of str
        Pipe IDs (the network's pipes).
    index : ndarray of int
        Group of each pipe (position in ``names``).
    roughness : ndarray
        Nominal roughness of each pipe (Hazen-Williams C).
    length_m : ndarray
        Length of each pipe, m.
    basis : str
        What the groups are made of.
    """

    names: list[str]
    pipes: list[str]
    index: np.ndarray
    roughness: np.ndarray
    length_m: np.ndarray
    basis: str

    def table(self) -> list[dict[str, Any]]:
        """Per group: ``name``, ``pipes`` (count) and ``km``."""
        return [{"name": n, "pipes": int((self.index == g).sum()),
                 "km": round(float(self.length_m[self.index == g].sum()) / 1000.0, 2)}
                for g, n in enumerate(self.names)]


def _diameter_class(d_mm: np.ndarray, edges: tuple[float, ...]) -> list[str]:
    """Label of each diameter's class (``"DN ≤110 mm"``, ``"DN 111-210 mm"``, ``"DN >310 mm"``)."""
    labels = [f"DN ≤{edges[0]:.0f} mm"] + [f"DN {a + 1:.0f}-{b:.0f} mm" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f"DN >{edges[-1]:.0f} mm")
    return [labels[k] for k in np.searchsorted(np.asarray(edges), d_mm, side="left")]


def pipe_groups(
    network: Network,
    *,
    diameter_edges_mm: tuple[float, ...] = DIAMETER_EDGES_MM,
    min_pipes: int = MIN_GROUP_PIPES,
    min_share: float = MIN_GROUP_SHARE,
) -> PipeGroups:
    """Group the pipes by diameter class and material/decade (or nominal roughness).

    Material and decade of installation are used when most pipes have them
    (a GIS network); an EPANET file has neither, and its nominal roughness
    (rounded to 10) stands for the material. Groups with fewer than
    ``min_pipes`` pipes or less than ``min_share`` of the pipe length are
    merged into the nearest diameter class of the same material (else into
    the largest group).

    Parameters
    ----------
    network : Network
        ``links`` with ``link_type``, ``diameter_m``, ``length_m``,
        ``roughness`` and optionally ``material``, ``install_year``.
    diameter_edges_mm : tuple of float
        Upper edges of the diameter classes, mm.
    min_pipes : int
    min_share : float

    Returns
    -------
    PipeGroups
    """
    links = network.links
    pipes = links[links["link_type"] == "pipe"]
    d_mm = pipes["diameter_m"].to_numpy(float) * 1000.0
    length = np.nan_to_num(pipes["length_m"].to_numpy(float), nan=0.0)
    rough = pipes["roughness"].to_numpy(float)
    diam = _diameter_class(np.nan_to_num(d_mm, nan=0.0), diameter_edges_mm)
    mat = pipes["material"].astype("string") if "material" in pipes else pd.Series(pd.NA, index=pipes.index)
    year = pipes["install_year"] if "install_year" in pipes else pd.Series(pd.NA, index=pipes.index)
    if mat.notna().mean() > 0.5:
        decade = pd.to_numeric(year, errors="coerce")
        key = [f"{m if pd.notna(m) else 'unknown material'}"
               + (f", {int(y) // 10 * 10}s" if pd.notna(y) else "") for m, y in zip(mat, decade)]
        basis = "diameter class x material and decade"
    else:
        key = [f"C {r:.0f}" if np.isfinite(r) else "C ?" for r in np.round(rough, -1)]
        basis = "diameter class x nominal roughness"
    order = [f"DN ≤{diameter_edges_mm[0]:.0f} mm"] + [
        f"DN {a + 1:.0f}-{b:.0f} mm" for a, b in zip(diameter_edges_mm[:-1], diameter_edges_mm[1:])]
    order.append(f"DN >{diameter_edges_mm[-1]:.0f} mm")
    groups = _merge_small([(order.index(dc), k) for dc, k in zip(diam, key)], length, min_pipes, min_share)
    names_sorted = sorted(set(groups), key=lambda g: (g[1], g[0]))
    names = [f"{order[g[0]]}, {g[1]}" for g in names_sorted]
    pos = {g: k for k, g in enumerate(names_sorted)}
    index = np.array([pos[g] for g in groups], dtype=int)
    return PipeGroups(names, [str(p) for p in pipes.index], index, rough, length, basis)


def _merge_small(groups: list[tuple[int, str]], length: np.ndarray, min_pipes: int,
                 min_share: float) -> list[tuple[int, str]]:
    """Merge (diameter class, key) groups that are too small into their nearest neighbour."""
    groups = list(groups)
    total = max(float(length.sum()), 1e-9)
    while True:
        count: dict[tuple[int, str], int] = {}
        km: dict[tuple[int, str], float] = {}
        for g, ln in zip(groups, length):
            count[g] = count.get(g, 0) + 1
            km[g] = km.get(g, 0.0) + float(ln)
        small = [g for g in count if count[g] < min_pipes or km[g] / total < min_share]
        if not small or len(count) == 1:
            return groups
        g = min(small, key=lambda x: km[x])
        same_key = [h for h in count if h != g and h[1] == g[1]]
        target = (min(same_key, key=lambda h: (abs(h[0] - g[0]), -km[h])) if same_key
                  else max((h for h in count if h != g), key=lambda h: km[h]))
        groups = [target if x == g else x for x in groups]


@dataclass
class FitData:
    """The leak-free snapshots a calibration fits.

    Attributes
    ----------
    demands : ndarray
        Snapshots x junctions (the solver's order): demands of the model as
        it stands, m³/s.
    boundary : list of dict
        Per snapshot, the keyword arguments of :meth:`SnapshotSolver.solve`
        (``tank_levels``, ``link_status``).
    observed : ndarray
        Snapshots x sensors: measured head (m above datum: pressure head plus
        elevation) at each pressure logger, then flow (m³/s) at each flow
        meter; NaN where missing.
    day : ndarray of int
        Local day of each snapshot (the gate leaves one out at a time).
    block : ndarray of int
        Operating-point group of each snapshot (e.g. 4-hour block of the
        day): the sensor responses are linearised once per group.
    p_sensors, flow_links : list of str
        The sensors, in the columns' order.
    noise : ndarray
        Measurement noise sd per sensor (m, m³/s).
    dma : ndarray of int
        Per junction: index in ``dma_names`` of its demand multiplier; −1
        without one.
    adjustable : ndarray of bool
        Per junction: its demand follows the system input (not a fully
        metered DMA), so demand moved between DMAs stays among these nodes.
    dma_names : list of str
    """

    demands: np.ndarray
    boundary: list[dict]
    observed: np.ndarray
    day: np.ndarray
    block: np.ndarray
    p_sensors: list[str]
    flow_links: list[str]
    noise: np.ndarray
    dma: np.ndarray
    adjustable: np.ndarray
    dma_names: list[str] = field(default_factory=list)

    @property
    def n_p(self) -> int:
        """Pressure loggers."""
        return len(self.p_sensors)


@dataclass
class ModelCalibration:
    """Result of :func:`calibrate_model`.

    Attributes
    ----------
    applied : bool
        The gate accepted the fit; the caller should use ``roughness`` and
        ``node_multiplier``.
    reason : str
        Why it was applied or refused.
    roughness : dict
        Pipe ID -> calibrated roughness (only when applied; pipes whose group
        moved).
    node_multiplier : ndarray
        Per junction, its DMA's demand multiplier (1 without one), before the
        renormalisation that keeps the adjustable nodes' total
        (:func:`scale_demands`).
    adjustable : ndarray of bool
        Per junction, as :attr:`FitData.adjustable`.
    report : dict
        ``model_calibration`` entry of ``report.json``.
    """

    applied: bool
    reason: str
    roughness: dict[str, float]
    node_multiplier: np.ndarray
    adjustable: np.ndarray
    report: dict


def scale_demands(demands: np.ndarray, node_multiplier: np.ndarray, adjustable: np.ndarray) -> np.ndarray:
    """Apply DMA demand multipliers, keeping the adjustable nodes' total per row.

    Parameters
    ----------
    demands : ndarray
        Rows x junctions, m³/s (one snapshot, or one row per 12-hour window).
    node_multiplier : ndarray
        Per junction multiplier.
    adjustable : ndarray of bool
        Junctions among which demand moves (their total is kept).

    Returns
    -------
    ndarray
        The scaled demands (a copy), same shape.
    """
    d = np.array(demands, dtype=float, copy=True)
    if not adjustable.any():
        return d
    sub = d[..., adjustable]
    scaled = sub * node_multiplier[adjustable]
    before, after = sub.sum(axis=-1, keepdims=True), scaled.sum(axis=-1, keepdims=True)
    norm = np.where(after > 0, before / np.where(after > 0, after, 1.0), 1.0)
    d[..., adjustable] = scaled * norm
    return d


def measurement_noise(series: pd.DataFrame, floor: float) -> np.ndarray:
    """Noise sd per column of 15-minute series, from second differences (robust).

    ``(y[t+1] − 2 y[t] + y[t−1]) / sqrt(6)`` removes what varies slowly (the
    demand cycle) and keeps white measurement noise; its scale is taken as
    1.4826 x the median absolute value. Never below ``floor``.
    """
    y = series.to_numpy(float)
    if len(y) < 3:
        return np.full(y.shape[1], floor)
    d2 = (y[2:] - 2 * y[1:-1] + y[:-2]) / np.sqrt(6.0)
    with warnings.catch_warnings():  # a sensor without readings: NaN, then the floor
        warnings.simplefilter("ignore", RuntimeWarning)
        mad = 1.4826 * np.nanmedian(np.abs(d2), axis=0)
    return np.maximum(np.nan_to_num(mad, nan=floor), floor)


class _Problem:
    """The fit's model: residuals and analytic Jacobians at given parameters."""

    def __init__(self, solver: SnapshotSolver, data: FitData, groups: PipeGroups | None) -> None:
        self.solver, self.data, self.groups = solver, data, groups
        wn = solver.wn
        jpos = {n: k for k, n in enumerate(solver.junctions)}
        self.n_rough = len(groups.names) if groups is not None else 0
        self.n_dma = len(data.dma_names)
        self.pipes = groups.pipes if groups is not None else []
        links = [wn.get_link(p) for p in self.pipes]
        self.start = np.array([jpos.get(lk.start_node_name, -1) for lk in links], dtype=int)
        self.end = np.array([jpos.get(lk.end_node_name, -1) for lk in links], dtype=int)
        d = np.array([lk.diameter for lk in links])
        self.c0 = np.array([lk.roughness for lk in links], dtype=float)
        self.r0 = 10.667 * np.array([lk.length for lk in links]) / (self.c0 ** 1.852 * d ** 4.871) if links else d
        area = np.pi * d * d / 4.0
        self.minor = np.array([lk.minor_loss for lk in links]) / (2 * 9.81 * area * area) if links else d
        self.meter_pipe = {k: self.pipes.index(f) for k, f in enumerate(data.flow_links) if f in set(self.pipes)}
        self.read_links = self.pipes + [f for f in data.flow_links]
        self.S: dict[int, np.ndarray] = {}
        self.S_theta = np.zeros(self.n_params)
        self._set_theta = np.zeros(self.n_rough)

    @property
    def n_params(self) -> int:
        return self.n_rough + self.n_dma

    def prior_sd(self) -> np.ndarray:
        return np.concatenate([np.full(self.n_rough, ROUGHNESS_SD), np.full(self.n_dma, DEMAND_SD)])

    def node_multiplier(self, theta: np.ndarray) -> np.ndarray:
        mult = np.ones(len(self.solver.junctions))
        has = self.data.dma >= 0
        mult[has] = np.exp(theta[self.n_rough:][self.data.dma[has]])
        return mult

    def roughness(self, theta: np.ndarray) -> np.ndarray:
        return self.c0 * np.exp(theta[:self.n_rough][self.groups.index]) if self.n_rough else self.c0

    def _set_roughness(self, theta: np.ndarray) -> None:
        th = theta[:self.n_rough]
        if self.n_rough and not np.array_equal(th, self._set_theta):
            self.solver.set_roughness(dict(zip(self.pipes, self.roughness(theta))))
            self._set_theta = th.copy()

    def solve(self, theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residuals (rows x sensors), pipe flows (rows x pipes) and demands used, at ``theta``.

        A snapshot that does not converge gives NaN rows.
        """
        data = self.data
        self._set_roughness(theta)
        dem = scale_demands(data.demands[rows], self.node_multiplier(theta), data.adjustable)
        n_s = data.n_p + len(data.flow_links)
        res = np.full((len(rows), n_s), np.nan)
        flows = np.zeros((len(rows), len(self.pipes)))
        for k, row in enumerate(rows):
            try:
                snap = self.solver.solve(dem[k], heads_of=data.p_sensors, flows_of=self.read_links,
                                         with_status=False, **data.boundary[row])
            except SimulationError:
                continue
            q = snap.flows.to_numpy()
            flows[k] = q[:len(self.pipes)]
            model = np.concatenate([snap.heads.to_numpy(), q[len(self.pipes):]])
            res[k] = data.observed[row] - model
        return res, flows, dem

    def responses(self, rows: np.ndarray, theta: np.ndarray) -> None:
        """Sensor responses to extra demands, linearised once per operating-point block at ``theta``.

        The snapshot of a block nearest its median total demand is the
        operating point; :attr:`S_theta` records where they were taken.
        """
        data = self.data
        self.S, self.S_theta = {}, theta.copy()
        self._set_roughness(theta)
        mult = self.node_multiplier(theta)
        for b in np.unique(data.block[rows]):
            members = rows[data.block[rows] == b]
            tot = data.demands[members].sum(axis=1)
            self.S[int(b)] = self._response_near(members[np.argsort(np.abs(tot - np.median(tot)))], mult)

    def _response_near(self, candidates: np.ndarray, mult: np.ndarray) -> np.ndarray:
        """Sensor responses (sensors x junctions) at the first candidate snapshot that linearises.

        A snapshot whose linearisation is singular (a part cut off from every
        fixed head by the statuses EPANET chose) gives way to the next one.

        Raises
        ------
        SimulationError
            None of the first three candidates linearises.
        """
        data = self.data
        error: SimulationError | None = None
        for row in candidates[:3]:
            dem = scale_demands(data.demands[row], mult, data.adjustable)
            try:
                base = self.solver.solve(dem, **data.boundary[int(row)])
                lin = LinearModel(self.solver.wn, base.heads, base.flows, status=base.status)
            except SimulationError as exc:
                error = exc
                continue
            return np.vstack([lin.response(data.p_sensors, "pressure").to_numpy(),
                              lin.response(data.flow_links, "flow").to_numpy()])
        raise error if error is not None else SimulationError("no snapshot to linearise the calibration at")

    def flow_change(self, theta: np.ndarray, flows: np.ndarray) -> np.ndarray:
        """d q_k / d θ of each pipe at fixed heads (rows x pipes), m³/s per unit log-roughness."""
        r = self.r0 * np.exp(-1.852 * theta[:self.n_rough][self.groups.index])
        a = np.maximum(np.abs(flows), Q_MIN)
        return 1.852 * r * np.abs(flows) ** 1.852 * np.sign(flows) / (1.852 * r * a ** 0.852 + 2 * self.minor * a)

    def jacobian(self, theta: np.ndarray, rows: np.ndarray, flows: np.ndarray, dem: np.ndarray) -> np.ndarray:
        """d(model reading)/d(parameters): rows x sensors x parameters."""
        data = self.data
        n_j = len(self.solver.junctions)
        J = np.zeros((len(rows), data.n_p + len(data.flow_links), self.n_params))
        dq = self.flow_change(theta, flows) if self.n_rough else np.zeros((len(rows), 0))
        onehot = np.zeros((len(self.pipes), self.n_rough))
        onehot[np.arange(len(self.pipes)), self.groups.index if self.n_rough else []] = 1.0
        for k, row in enumerate(rows):
            S = self.S[int(data.block[row])]
            if self.n_rough:
                E = np.zeros((n_j + 1, self.n_rough))  # last row: fixed-head nodes, dropped
                contrib = dq[k][:, None] * onehot
                np.add.at(E, np.where(self.start >= 0, self.start, n_j), contrib)
                np.add.at(E, np.where(self.end >= 0, self.end, n_j), -contrib)
                J[k, :, :self.n_rough] = S @ E[:n_j]
                for col, p in self.meter_pipe.items():
                    J[k, data.n_p + col, self.groups.index[p]] += dq[k, p]
            if self.n_dma:
                adj = data.adjustable
                share = np.zeros(self.n_dma)
                total = dem[k, adj].sum()
                has = data.dma >= 0
                np.add.at(share, data.dma[has], dem[k, has])
                share = share / total if total > 0 else share
                D = np.zeros((n_j, self.n_dma))
                D[has, data.dma[has]] = dem[k, has]
                D[adj] -= dem[k, adj][:, None] * share[None, :]
                J[k, :, self.n_rough:] = S @ D
        return J


# --------------------------------------------------------------------------- the fit


def _centre(res: np.ndarray, J: np.ndarray, n_p: int, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residuals and Jacobian with each pressure logger's mean over the rows ``use`` removed.

    The mean is the logger's constant offset (its datum error) fitted with
    the parameters; flows keep theirs. Returns centred residuals (NaN -> 0),
    centred Jacobian and the validity mask (rows x sensors).
    """
    valid = np.isfinite(res) & use[:, None]
    r = np.where(valid, res, 0.0)
    Jv = J * valid[:, :, None]
    n = np.maximum(valid.sum(axis=0), 1)
    r_mean = r.sum(axis=0) / n
    J_mean = Jv.sum(axis=0) / n[:, None]
    r_mean[n_p:] = 0.0
    J_mean[n_p:] = 0.0
    rc = np.where(valid, r - r_mean[None, :], 0.0)
    Jc = (J - J_mean[None, :, :]) * valid[:, :, None]
    return rc, Jc, valid


def _normal_equations(res: np.ndarray, J: np.ndarray, w: np.ndarray, n_p: int,
                      use: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``JᵀWJ``, ``JᵀWr`` and the weighted sum of squares over the rows ``use`` (offsets eliminated)."""
    rc, Jc, valid = _centre(res, J, n_p, use)
    W = w[None, :] * valid
    A = np.einsum("tsp,ts,tsq->pq", Jc, W, Jc)
    b = np.einsum("tsp,ts,ts->p", Jc, W, rc)
    return A, b, float((W * rc ** 2).sum())


def _data_cost(res: np.ndarray, w: np.ndarray, n_p: int, use: np.ndarray) -> float:
    """Weighted sum of squares of the residuals after the pressure offsets."""
    return _normal_equations(res, np.zeros(res.shape + (0,)), w, n_p, use)[2]


@dataclass
class _FitState:
    theta: np.ndarray
    res: np.ndarray
    flows: np.ndarray
    dem: np.ndarray
    J: np.ndarray
    iterations: int = 0


def _gauss_newton(problem: _Problem, rows: np.ndarray, w: np.ndarray, start: _FitState,
                  max_iterations: int) -> _FitState:
    """Regularised Gauss-Newton with step halving (a Levenberg-Marquardt safeguard)."""
    n_p = problem.data.n_p
    prec = 1.0 / problem.prior_sd() ** 2
    use = np.ones(len(rows), dtype=bool)
    state = start
    failed0 = ~np.isfinite(state.res).any(axis=1)
    cost = _data_cost(state.res, w, n_p, use) + float((prec * state.theta ** 2).sum())
    for it in range(max_iterations):
        A, b, _ = _normal_equations(state.res, state.J, w, n_p, use)
        step = np.linalg.solve(A + np.diag(prec), b - prec * state.theta)
        for _ in range(3):
            theta = np.clip(state.theta + step, -MAX_LOG_MULTIPLIER, MAX_LOG_MULTIPLIER)
            res, flows, dem = problem.solve(theta, rows)
            failed = ~np.isfinite(res).any(axis=1)
            new_cost = _data_cost(res, w, n_p, use) + float((prec * theta ** 2).sum())
            if not (failed & ~failed0).any() and new_cost < cost:
                break
            step = step / 2.0
        else:
            return state
        if np.abs(theta - problem.S_theta).max() > RELINEARISE:  # far from where S was taken: take it again
            problem.responses(rows, theta)
        state = _FitState(theta, res, flows, dem, problem.jacobian(theta, rows, flows, dem), it + 1)
        done = cost - new_cost < 1e-3 * cost or np.abs(step).max() < 2e-3
        cost = new_cost
        if done:
            break
    return state


def _reduced_chi2(res: np.ndarray, w: np.ndarray, n_p: int, use: np.ndarray, n_params: int) -> float:
    """Weighted sum of squares per degree of freedom (offsets and parameters counted)."""
    valid = np.isfinite(res) & use[:, None]
    n_off = int((valid[:, :n_p].sum(axis=0) > 0).sum())
    dof = max(int(valid.sum()) - n_off - n_params, 1)
    return _data_cost(res, w, n_p, use) / dof


def _kind_inflation(res: np.ndarray, w: np.ndarray, n_p: int) -> np.ndarray:
    """Per sensor, the factor (≥ 1) that widens its noise variance to its kind's misfit.

    The residuals hold model error as well as measurement noise; fitted with
    the noise alone, a few flow meters of tiny noise would decide every
    parameter and the priors would mean nothing.
    """
    out = np.ones(len(w))
    use = np.ones(len(res), dtype=bool)
    for cols in (slice(0, n_p), slice(n_p, len(w))):
        sub = res[:, cols]
        if sub.shape[1] == 0 or not np.isfinite(sub).any():
            continue
        n_pp = n_p if cols.start == 0 else 0
        out[cols] = max(1.0, _reduced_chi2(sub, w[cols], n_pp, use, 0))
    return out


def _held_out(problem: _Problem, rows: np.ndarray, w_fit: np.ndarray, w: np.ndarray, base: _FitState,
              fit: _FitState) -> dict[str, Any]:
    """Leave one day out: fit on the others, solve the day with that fit, compare its misfit.

    Returns the mean per-snapshot misfit before/after (held out), the gain
    (relative reduction of their sum), the paired t statistic of the
    per-snapshot log ratio ``log(before/after)`` (its variance widened by
    the lag-1 autocorrelation within days) and its one-sided p-value.
    """
    data = problem.data
    n_p = data.n_p
    prec = 1.0 / problem.prior_sd() ** 2
    day = data.day[rows]
    before, after, diffs_by_day = [], [], []
    for d in np.unique(day):
        train, held = day != d, day == d
        A, b, _ = _normal_equations(fit.res, fit.J, w_fit, n_p, train)
        theta_d = np.clip(fit.theta + np.linalg.solve(A + np.diag(prec), b - prec * fit.theta),
                          -MAX_LOG_MULTIPLIER, MAX_LOG_MULTIPLIER)
        pred_train = fit.res - np.einsum("tsp,p->ts", fit.J, theta_d - fit.theta)
        res_h = problem.solve(theta_d, rows[held])[0]
        m_b = _snapshot_misfit(base.res[held], _offsets(base.res[train], n_p), w, n_p, also=res_h)
        m_a = _snapshot_misfit(res_h, _offsets(pred_train[train], n_p), w, n_p, also=base.res[held])
        ok = np.isfinite(m_b) & np.isfinite(m_a)
        before.append(m_b[ok])
        after.append(m_a[ok])
        # each snapshot counts alike: a few snapshots far off the model must not decide the test alone
        diffs_by_day.append(np.log(m_b[ok] / np.maximum(m_a[ok], 1e-300)))
    mb, ma = np.concatenate(before), np.concatenate(after)
    diff = np.concatenate(diffs_by_day)
    n = len(diff)
    if n < 3:
        return {"snapshots": n, "before": None, "after": None, "gain": 0.0, "t": 0.0, "p": 1.0}
    lag = [(x[1:] - diff.mean(), x[:-1] - diff.mean()) for x in diffs_by_day if len(x) > 1]
    num = sum(float((a * b).sum()) for a, b in lag)
    rho = float(np.clip(num / max(float(((diff - diff.mean()) ** 2).sum()), 1e-300), 0.0, 0.9))
    se = diff.std(ddof=1) / np.sqrt(n) * np.sqrt((1 + rho) / (1 - rho))
    t_stat = float(diff.mean() / se) if se > 0 else (np.inf if diff.mean() > 0 else 0.0)
    p = float(student_t.sf(t_stat, n - 1)) if np.isfinite(t_stat) else 0.0
    gain = 1.0 - float(ma.sum()) / max(float(mb.sum()), 1e-300)
    return {"snapshots": n, "days": int(len(np.unique(day))), "before": float(mb.mean()), "after": float(ma.mean()),
            "gain": gain, "t": t_stat, "p": p, "lag1_autocorrelation": rho}


def _offsets(res: np.ndarray, n_p: int) -> np.ndarray:
    """Each pressure logger's mean residual over the rows (0 for flows)."""
    with warnings.catch_warnings():  # a sensor without readings: offset 0
        warnings.simplefilter("ignore", RuntimeWarning)
        o = np.nan_to_num(np.nanmean(res, axis=0), nan=0.0)
    o[n_p:] = 0.0
    return o


def _snapshot_misfit(res: np.ndarray, offsets: np.ndarray, w: np.ndarray, n_p: int,
                     also: np.ndarray | None = None) -> np.ndarray:
    """Per snapshot, the mean of ``w (r − offset)²`` over its sensors with a reading (also in ``also``)."""
    valid = np.isfinite(res) if also is None else np.isfinite(res) & np.isfinite(also)
    z2 = np.where(valid, w[None, :] * (np.where(valid, res, 0.0) - offsets[None, :]) ** 2, 0.0)
    n = valid.sum(axis=1)
    return np.where(n > 0, z2.sum(axis=1) / np.maximum(n, 1), np.nan)


def calibrate_model(
    solver: SnapshotSolver,
    data: FitData,
    groups: PipeGroups | None,
    *,
    gate_p: float = GATE_P,
    min_gain: float = GATE_MIN_GAIN,
    max_iterations: int = MAX_ITERATIONS,
) -> ModelCalibration:
    """Fit roughness and DMA demand multipliers on leak-free snapshots, behind a held-out gate.

    Parameters
    ----------
    solver : SnapshotSolver
        The job's snapshot solver (the network as it stands). Its roughness
        is changed while fitting and restored before returning; apply
        ``roughness`` yourself when the result is ``applied``.
    data : FitData
        The leak-free snapshots and sensors.
    groups : PipeGroups, optional
        Roughness groups (:func:`pipe_groups`); None fits demand multipliers only.
    gate_p : float
        Largest one-sided p-value of the held-out improvement.
    min_gain : float
        Smallest relative reduction of the held-out misfit.
    max_iterations : int
        Gauss-Newton iterations at most.

    Returns
    -------
    ModelCalibration
        ``applied`` or refused with the reason; the report entry lists the
        groups (pipes, km, multiplier ± sd), the DMA multipliers and the
        reduced chi-square before and after, in-sample and held out
        (weights: the sensors' measurement noise).
    """
    t0 = time.perf_counter()
    problem = _Problem(solver, data, groups)
    rows = np.arange(len(data.day))
    n_days = len(np.unique(data.day))
    if problem.n_params == 0 or len(rows) < 4 or n_days < 2:
        why = ("nothing to calibrate (no pipe group, no DMA with an unmetered balance)" if problem.n_params == 0
               else "fewer than two leak-free days: no day can be held out to test a fit")
        return _refused(problem, why, {"snapshots": int(len(rows)), "days": int(n_days)}, t0)
    try:
        zero = np.zeros(problem.n_params)
        problem.responses(rows, zero)
        res0, flows0, dem0 = problem.solve(zero, rows)
        base = _FitState(zero, res0, flows0, dem0, problem.jacobian(zero, rows, flows0, dem0))
        w = 1.0 / data.noise ** 2
        w_fit = w / _kind_inflation(res0, w, data.n_p)
        fit = _gauss_newton(problem, rows, w_fit, base, max_iterations)
        gate = _held_out(problem, rows, w_fit, w, base, fit)
    except SimulationError as exc:
        return _refused(problem, f"a snapshot failed while fitting ({exc})", {"snapshots": int(len(rows))}, t0)
    finally:
        problem._set_roughness(np.zeros(problem.n_params))  # the solver leaves as it came
    A, _, _ = _normal_equations(fit.res, fit.J, w_fit, data.n_p, np.ones(len(rows), dtype=bool))
    sd = np.sqrt(np.diag(np.linalg.inv(A + np.diag(1.0 / problem.prior_sd() ** 2))))
    use = np.ones(len(rows), dtype=bool)
    misfit = {"in_sample": {"before": round(_reduced_chi2(base.res, w, data.n_p, use, 0), 3),
                            "after": round(_reduced_chi2(fit.res, w, data.n_p, use, problem.n_params), 3)},
              "held_out": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in gate.items()}}
    applied = bool(gate["p"] < gate_p and gate["gain"] >= min_gain)
    reason = (f"held-out misfit {gate['gain']:+.1%} (p = {gate['p']:.2g}); "
              + ("applied" if applied else f"refused: needs a gain of at least {min_gain:.0%} at p < {gate_p}"))
    report = {"applied": applied, "decision": "applied" if applied else "refused", "reason": reason,
              "snapshots": int(len(rows)), "days": int(n_days), "iterations": fit.iterations,
              "groups_basis": groups.basis if groups is not None else None,
              "groups": _group_table(problem, fit.theta, sd),
              "dma_demand": _dma_table(problem, fit.theta, sd), "misfit_reduced_chi2": misfit,
              "seconds": round(time.perf_counter() - t0, 3)}
    rough = dict(zip(problem.pipes, problem.roughness(fit.theta))) if applied and problem.n_rough else {}
    mult = problem.node_multiplier(fit.theta) if applied else np.ones(len(solver.junctions))
    log.info("model calibration %s: %s", report["decision"], reason)
    return ModelCalibration(applied, reason, rough, mult, data.adjustable, report)


def _refused(problem: _Problem, why: str, extra: dict, t0: float) -> ModelCalibration:
    """A calibration that was not attempted or failed: the model stays as it was."""
    report = {"applied": False, "decision": "refused", "reason": why, **extra,
              "seconds": round(time.perf_counter() - t0, 3)}
    log.info("model calibration refused: %s", why)
    return ModelCalibration(False, why, {}, np.ones(len(problem.solver.junctions)), problem.data.adjustable, report)


def _group_table(problem: _Problem, theta: np.ndarray, sd: np.ndarray) -> list[dict[str, Any]]:
    """Per roughness group: name, pipes, km, multiplier and its sd."""
    if problem.groups is None:
        return []
    rows = problem.groups.table()
    for g, row in enumerate(rows):
        m = float(np.exp(theta[g]))
        row.update({"multiplier": round(m, 4), "sd": round(m * float(sd[g]), 4)})
    return rows


def _dma_table(problem: _Problem, theta: np.ndarray, sd: np.ndarray) -> list[dict[str, Any]]:
    """Per DMA with a demand multiplier: name, junctions, multiplier and its sd."""
    data, out = problem.data, []
    for k, name in enumerate(data.dma_names):
        g = problem.n_rough + k
        m = float(np.exp(theta[g]))
        out.append({"dma": name, "junctions": int((data.dma == k).sum()), "multiplier": round(m, 4),
                    "sd": round(m * float(sd[g]), 4)})
    return out
