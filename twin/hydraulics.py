"""Hydraulic simulation (EPANET through WNTR) and analytic leak sensitivities.

Three tools:

* :func:`simulate` runs an EPANET extended-period simulation of a WNTR model in
  a temporary directory and raises :class:`~twin.errors.SimulationError` when
  EPANET fails or does not converge.
* :class:`SnapshotSolver` keeps one EPANET project open (through WNTR's toolkit
  wrapper) and solves many single-period *snapshots* of the same network with
  measured boundary conditions: junction demands, tank levels (tanks act as
  fixed heads in a snapshot) and link open/closed states. No input file is
  rewritten between snapshots, which makes it roughly 30 times faster than
  :func:`simulate` per snapshot.
* :func:`sensitivities` linearises the network equations at the operating
  point of one snapshot and returns, for every sensor, the change of its
  reading per m³/s of extra demand (a leak) at every junction, from one sparse
  LU factorisation and one solve per sensor.

Linearisation
-------------
For an open link ``k`` from node ``i`` to node ``j`` with flow ``q_k`` (m³/s)
and head loss ``h_k(q_k) = H_i - H_j`` (m), a small change obeys
``dq_k = c_k (dH_i - dH_j)`` with the conductance ``c_k = 1 / h_k'(q_k)``
(m²/s). Hazen-Williams pipes have ``h_k' = 1.852 r |q|^0.852 + 2 m |q|``
(``r`` the friction resistance, ``m`` the minor-loss coefficient); the flow
is floored at ``q_min`` (EPANET's own small-flow linearisation keeps the
derivative finite in the same way). Pumps use the slope of their head curve,
closed links and pumps that are off are dropped, active pressure-reducing
(sustaining) valves fix the head downstream (upstream) and carry their flow
as an extra unknown, active flow-control valves carry a fixed flow.
Reservoirs and tanks are fixed heads. Mass balance at the junctions gives the
sparse system ``M x = -e_d`` where ``x`` stacks the junction head changes
(m) and the valve flow changes (m³/s) and ``e_d`` is the extra demand. For
a linear sensor reading ``y = w^T x`` (a head, or a link flow
``c_k (dH_i - dH_j)``), ``dy/dd = -(M^{-T} w)``: one solve with the
transposed factors per sensor gives its sensitivity to a leak at every
junction at once.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import wntr

from twin.errors import SimulationError, UnknownElementError
from twin.scratch import epanet_scratch

log = logging.getLogger(__name__)

#: Gravitational acceleration, m/s².
G = 9.81
#: Flow below which a link's conductance is taken at this flow (m³/s).
Q_MIN = 1e-5
#: Flow below which a pump, check valve or valve counts as closed (m³/s).
Q_CLOSED = 1e-7

# EPANET toolkit codes
_EN_BASEDEMAND, _EN_TANKLEVEL, _EN_HEAD = 1, 8, 10
_EN_FLOW, _EN_INITSTATUS, _EN_INITSETTING, _EN_STATUS = 8, 4, 5, 11
_EN_NODECOUNT, _EN_LINKCOUNT = 0, 2
_EN_DEMANDMULT = 4


def simulate(
    wn: wntr.network.WaterNetworkModel,
    *,
    duration_s: float | None = None,
    hydraulic_step_s: float | None = None,
    report_step_s: float | None = None,
) -> wntr.sim.results.SimulationResults:
    """Run an EPANET hydraulic simulation of ``wn`` in a temporary directory.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The model (SI units inside). It is not modified.
    duration_s, hydraulic_step_s, report_step_s : float, optional
        Override the model's time options (seconds).

    Returns
    -------
    wntr.sim.results.SimulationResults
        ``node['head']``, ``node['pressure']`` (m), ``node['demand']``,
        ``link['flowrate']`` (m³/s); index = seconds from the start, columns =
        node or link names.

    Raises
    ------
    SimulationError
        EPANET stopped with an error, or the hydraulics did not converge.
    """
    if duration_s is not None or hydraulic_step_s is not None or report_step_s is not None:
        wn = copy.deepcopy(wn)
        if duration_s is not None:
            wn.options.time.duration = float(duration_s)
        if hydraulic_step_s is not None:
            wn.options.time.hydraulic_timestep = float(hydraulic_step_s)
        if report_step_s is not None:
            wn.options.time.report_timestep = float(report_step_s)
    with tempfile.TemporaryDirectory(prefix="twin-sim-") as tmp, epanet_scratch(tmp):
        sim = wntr.sim.EpanetSimulator(wn)
        try:
            results = sim.run_sim(file_prefix=str(Path(tmp) / "sim"), convergence_error=True)
        except Exception as exc:  # EpanetException and WNTR's own errors
            raise SimulationError(
                f"EPANET could not solve the network ({exc})",
                element=getattr(wn, "name", None) or None,
                fix="check for disconnected parts, closed supply links or impossible demands",
            ) from exc
    if getattr(results, "error_code", None):
        raise SimulationError(
            f"EPANET did not converge (code {results.error_code})",
            fix="check demands, pump curves and valve settings; try a smaller time step",
        )
    return results


# --------------------------------------------------------------------------- #
# Snapshots through the EPANET toolkit
# --------------------------------------------------------------------------- #


@dataclass
class SnapshotResult:
    """Heads and flows of one steady-state snapshot.

    Attributes
    ----------
    heads : pd.Series
        Hydraulic head (m above datum), index = node names.
    flows : pd.Series
        Link flow (m³/s, positive start to end node), index = link names.
    """

    heads: pd.Series
    flows: pd.Series

    def pressure(self, wn: wntr.network.WaterNetworkModel) -> pd.Series:
        """Pressure head (m) = head - elevation; for a tank its water level."""
        elev = pd.Series({n: wn.get_node(n).elevation for n in self.heads.index
                          if wn.get_node(n).node_type != "Reservoir"})
        return (self.heads - elev).reindex(self.heads.index)


class SnapshotSolver:
    """Solve many single-period snapshots of one network with EPANET.

    Tanks are fixed heads at their given level, every control, pattern and
    speed pattern of the model is removed: the caller sets demands, tank
    levels and link states per snapshot. Use as a context manager, or call
    :meth:`close`.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The model (SI). It is copied, never modified.

    Examples
    --------
    >>> with SnapshotSolver(wn) as solver:                      # doctest: +SKIP
    ...     snap = solver.solve(demands, tank_levels={"T1": 3.2})
    """

    def __init__(self, wn: wntr.network.WaterNetworkModel) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="twin-snap-")
        model = _snapshot_model(wn)
        self.wn = model
        self.junctions: list[str] = list(model.junction_name_list)
        self.tanks: list[str] = list(model.tank_name_list)
        self.node_names: list[str] = list(model.node_name_list)
        self.link_names: list[str] = list(model.link_name_list)
        self.base_demands = np.array(
            [model.get_node(j).demand_timeseries_list[0].base_value
             if model.get_node(j).demand_timeseries_list else 0.0 for j in self.junctions])
        inp = Path(self._tmp.name) / "snap.inp"
        wntr.network.io.write_inpfile(model, str(inp), units="LPS", version=2.2)
        self._en = wntr.epanet.toolkit.ENepanet(version=2.2)
        try:
            self._en.ENopen(str(inp), str(Path(self._tmp.name) / "snap.rpt"),
                            str(Path(self._tmp.name) / "snap.bin"))
            self._en.ENopenH()
        except Exception as exc:
            self._tmp.cleanup()
            raise SimulationError(f"EPANET could not open the network ({exc})",
                                  fix="validate the network with `twin network check`") from exc
        self._node_idx = {n: self._en.ENgetnodeindex(n) for n in self.node_names}
        self._link_idx = {n: self._en.ENgetlinkindex(n) for n in self.link_names}
        self._junction_idx = [self._node_idx[j] for j in self.junctions]
        self._init_status = {
            name: (0.0 if str(model.get_link(name).initial_status).lower() == "closed" else 1.0)
            for name in self.link_names}
        self._lib = self._en.ENlib
        self._ph = self._en._project
        self._last_demands: np.ndarray | None = None
        self._tank_limits = {t: (float(model.get_node(t).min_level), float(model.get_node(t).max_level))
                             for t in self.tanks}
        self.n_solved = 0

    def __enter__(self) -> "SnapshotSolver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the EPANET project and remove its temporary files."""
        if self._en is not None:
            try:
                self._en.ENcloseH()
                self._en.ENclose()
            except Exception:  # pragma: no cover - closing a broken project
                pass
            self._en = None
        self._tmp.cleanup()

    def _set_node(self, idx: int, code: int, value: float) -> None:
        err = self._lib.EN_setnodevalue(self._ph, ctypes.c_int(idx), ctypes.c_int(code), ctypes.c_double(value))
        if err >= 100:
            raise SimulationError(f"EPANET refused a node value (error {err})",
                                  fix="check the measured tank levels and demands")

    def _read(self, getter: Any, indices: Sequence[int], code: int) -> np.ndarray:
        out = np.empty(len(indices))
        val = ctypes.c_double()
        ref = ctypes.byref(val)
        c_code = ctypes.c_int(code)
        for k, idx in enumerate(indices):
            getter(self._ph, ctypes.c_int(idx), c_code, ref)
            out[k] = val.value
        return out

    def solve(
        self,
        demands: np.ndarray | pd.Series | None = None,
        *,
        scale: float = 1.0,
        tank_levels: Mapping[str, float] | None = None,
        link_status: Mapping[str, bool] | None = None,
        heads_of: Sequence[str] | None = None,
        flows_of: Sequence[str] | None = None,
    ) -> SnapshotResult:
        """Solve one steady state.

        Parameters
        ----------
        demands : array or Series, optional
            Junction demands (m³/s), in the order of :attr:`junctions` or a
            Series indexed by junction name (missing junctions: 0). Default:
            the model's base demands. Setting them costs one toolkit call per
            junction; they are only sent when they differ from the last ones.
        scale : float
            Multiplier of every demand (EPANET's demand multiplier): many
            snapshots with the same spatial shares cost one call each.
        tank_levels : mapping, optional
            Water level above the tank bottom (m) per tank; others keep their
            initial level. Levels outside the tank's limits are clipped.
        link_status : mapping, optional
            ``True`` (open) or ``False`` (closed) per link; links not named keep
            their initial status (valves keep their setting).
        heads_of, flows_of : sequence of str, optional
            Read only these nodes' heads and links' flows (default: all).

        Raises
        ------
        SimulationError
            EPANET reports an error or an unbalanced (non-converged) system.
        """
        en = self._en
        if demands is None:
            d = self.base_demands
        elif isinstance(demands, pd.Series):
            d = demands.reindex(self.junctions).fillna(0.0).to_numpy(float)
        else:
            d = np.asarray(demands, float)
            if d.shape != (len(self.junctions),):
                raise ValueError(f"demands must have {len(self.junctions)} values, got {d.shape}")
        if self._last_demands is None or not np.array_equal(d, self._last_demands):
            for idx, value in zip(self._junction_idx, d):
                self._set_node(idx, _EN_BASEDEMAND, float(value) * 1000.0)  # file in L/s
            self._last_demands = d.copy()
        err = self._lib.EN_setoption(self._ph, ctypes.c_int(_EN_DEMANDMULT), ctypes.c_double(float(scale)))
        if err >= 100:
            raise SimulationError(f"EPANET refused the demand multiplier {scale} (error {err})")
        for tank, level in (tank_levels or {}).items():
            if tank not in self._tank_limits:
                raise UnknownElementError(f"tank {tank!r} is not in the network", element=tank)
            lo, hi = self._tank_limits[tank]
            if not np.isfinite(level):
                raise SimulationError(f"tank {tank!r} has no level for this snapshot", element=tank,
                                      fix="fill the tank's level logger gaps")
            # a noisy logger may read a little outside the tank: EPANET refuses that
            self._set_node(self._node_idx[tank], _EN_TANKLEVEL, float(min(max(level, lo), hi)))
        for link, value in (link_status or {}).items():
            en.ENsetlinkvalue(self._link_idx[link], _EN_INITSTATUS, 1.0 if value else 0.0)
        en.errcode = 0
        en.errcodelist = []
        try:
            en.ENinitH(0)
            en.ENrunH()
        except Exception as exc:
            raise SimulationError(f"EPANET failed on a snapshot ({exc})",
                                  fix="check the measured tank levels and pump states") from exc
        finally:
            for link in (link_status or {}):  # back to the model's own status
                en.ENsetlinkvalue(self._link_idx[link], _EN_INITSTATUS, self._init_status[link])
        if en.errcodelist and any("unbalanced" in str(w).lower() or "negative" in str(w).lower()
                                  for w in en.errcodelist):
            raise SimulationError(
                f"EPANET did not converge on a snapshot ({en.errcodelist[-1]})",
                fix="check demands (a huge demand?), tank levels and pump states")
        nodes = self.node_names if heads_of is None else list(heads_of)
        links = self.link_names if flows_of is None else list(flows_of)
        heads = self._read(self._lib.EN_getnodevalue, [self._node_idx[n] for n in nodes], _EN_HEAD)
        flows = self._read(self._lib.EN_getlinkvalue, [self._link_idx[n] for n in links], _EN_FLOW) / 1000.0
        self.n_solved += 1
        return SnapshotResult(pd.Series(heads, index=nodes), pd.Series(flows, index=links))


def _snapshot_model(wn: wntr.network.WaterNetworkModel) -> wntr.network.WaterNetworkModel:
    """A copy of ``wn`` for single-period snapshots: no controls, patterns or speed patterns."""
    model = copy.deepcopy(wn)
    for name in list(model.control_name_list):
        model.remove_control(name)
    model.options.time.duration = 0.0
    model.options.time.pattern_start = 0.0
    model.options.hydraulic.pattern = None
    model.options.hydraulic.demand_multiplier = 1.0
    model.options.quality.parameter = "NONE"
    # centimetre signals need a tighter convergence than EPANET's default 0.001-0.01
    model.options.hydraulic.accuracy = min(model.options.hydraulic.accuracy, 1e-5)
    model.options.hydraulic.trials = max(model.options.hydraulic.trials, 200)
    for _, junction in model.junctions():
        total = sum(d.base_value * (d.pattern.at(0) if d.pattern is not None else 1.0)
                    for d in junction.demand_timeseries_list)
        while len(junction.demand_timeseries_list) > 0:
            del junction.demand_timeseries_list[0]
        junction.demand_timeseries_list.append((total, None, None))
    for _, reservoir in model.reservoirs():
        reservoir.head_timeseries.pattern_name = None
    for _, pump in model.pumps():
        pump.speed_pattern_name = None
    return model


# --------------------------------------------------------------------------- #
# Analytic sensitivities
# --------------------------------------------------------------------------- #


@dataclass
class Sensitivity:
    """Sensor responses to a unit extra demand at every junction.

    Attributes
    ----------
    pressure : pd.DataFrame
        index = pressure-sensor node names, columns = junction names; change of
        head (m) per m³/s of extra demand (negative: a leak lowers pressure).
    flow : pd.DataFrame
        index = metered link names, columns = junction names; change of link
        flow (m³/s, positive start to end node) per m³/s of extra demand.
    seconds : float
        Wall time of the factorisation and solves.
    """

    pressure: pd.DataFrame
    flow: pd.DataFrame
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


def link_conductances(
    wn: wntr.network.WaterNetworkModel,
    heads: pd.Series,
    flows: pd.Series,
    *,
    q_min: float = Q_MIN,
) -> pd.DataFrame:
    """Linearised conductance and role of every link at an operating point.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The model (SI).
    heads : pd.Series
        Node heads (m), index = node names.
    flows : pd.Series
        Link flows (m³/s), index = link names.
    q_min : float
        Flow floor (m³/s) for the conductance of nearly idle links.

    Returns
    -------
    pd.DataFrame
        index = link names; ``start``, ``end`` (node names), ``role`` in
        {"open", "closed", "prv", "psv", "fcv"}, ``c`` (conductance m²/s,
        ``dq = c (dH_start - dH_end)``; 0 unless role is "open").
    """
    names = list(wn.link_name_list)
    rows_start, rows_end, roles, cs = [], [], [], []
    hw = wn.options.hydraulic.headloss.upper().startswith("H")
    for name in names:
        link = wn.get_link(name)
        i, j = link.start_node_name, link.end_node_name
        q = float(flows.get(name, 0.0))
        aq = max(abs(q), q_min)
        role, c = "open", 0.0
        ltype = link.link_type
        if ltype == "Pipe":
            closed = str(link.initial_status).lower() == "closed" or (link.check_valve and q <= Q_CLOSED)
            if closed:
                role = "closed"
            else:
                d, length = link.diameter, link.length
                area = np.pi * d * d / 4.0
                minor = link.minor_loss / (2 * G * area * area)
                if hw:
                    r = 10.667 * length / (link.roughness ** 1.852 * d ** 4.871)
                    slope = 1.852 * r * aq ** 0.852 + 2 * minor * aq
                else:  # Darcy-Weisbach / Chezy-Manning: quadratic law from the head difference
                    dh = abs(float(heads[i]) - float(heads[j]))
                    slope = max(2.0 * dh / aq, 2 * minor * aq, 1e-9)
                c = 1.0 / slope
        elif ltype == "Pump":
            if abs(q) <= Q_CLOSED or str(link.initial_status).lower() == "closed" and abs(q) <= Q_CLOSED:
                role = "closed"
            else:
                speed = float(getattr(link, "base_speed", 1.0) or 1.0)
                if link.pump_type == "HEAD":
                    a, b, cc = link.get_head_curve_coefficients()
                    # H = s^2 A - B s^(2-C) q^C  ->  dH/dq = -B C s^(2-C) q^(C-1)
                    slope = b * cc * speed ** (2 - cc) * aq ** (cc - 1)
                else:  # constant power: H = P / (rho g q)
                    head_gain = abs(float(heads[j]) - float(heads[i]))
                    slope = head_gain / aq
                c = 1.0 / max(slope, 1e-9)
        else:  # valves
            vtype = link.valve_type
            hi, hj = float(heads[i]), float(heads[j])
            if abs(q) <= Q_CLOSED:
                role = "closed"
            elif vtype == "PRV" and abs(hj - (wn.get_node(j).elevation + link.initial_setting)) < 1e-3:
                role = "prv"
            elif vtype == "PSV" and abs(hi - (wn.get_node(i).elevation + link.initial_setting)) < 1e-3:
                role = "psv"
            elif vtype == "FCV" and abs(abs(q) - link.initial_setting) < 1e-6:
                role = "fcv"
            else:  # open valve: a short link with its minor loss (or a near-zero one)
                d = link.diameter
                area = np.pi * d * d / 4.0
                k = link.initial_setting if vtype == "TCV" else link.minor_loss
                minor = max(k, 0.0) / (2 * G * area * area)
                slope = max(2 * minor * aq, abs(hi - hj) * 2.0 / aq, 1e-6)
                c = 1.0 / slope
        rows_start.append(i)
        rows_end.append(j)
        roles.append(role)
        cs.append(c)
    return pd.DataFrame({"start": rows_start, "end": rows_end, "role": roles, "c": cs},
                        index=pd.Index(names, name="link_id"))


class LinearModel:
    """The factorised linearisation of a network at one operating point.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The model (SI).
    heads, flows : pd.Series
        Operating point: node heads (m) and link flows (m³/s), e.g. from
        :meth:`SnapshotSolver.solve` or one time step of :func:`simulate`.
    q_min : float
        Flow floor for conductances (m³/s).
    """

    def __init__(
        self,
        wn: wntr.network.WaterNetworkModel,
        heads: pd.Series,
        flows: pd.Series,
        *,
        q_min: float = Q_MIN,
    ) -> None:
        t0 = time.perf_counter()
        self.junctions = list(wn.junction_name_list)
        jidx = {n: k for k, n in enumerate(self.junctions)}
        links = link_conductances(wn, heads, flows, q_min=q_min)
        self.links = links
        n = len(self.junctions)
        valves = links.index[links["role"].isin(["prv", "psv", "fcv"])].tolist()
        self.valve_row = {v: n + k for k, v in enumerate(valves)}
        size = n + len(valves)
        si = links["start"].map(jidx)
        ei = links["end"].map(jidx)
        open_ = (links["role"] == "open").to_numpy()
        c = links["c"].to_numpy()
        s_ok = si.notna().to_numpy()
        e_ok = ei.notna().to_numpy()
        si_a = si.fillna(-1).astype(int).to_numpy()
        ei_a = ei.fillna(-1).astype(int).to_numpy()
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        # Laplacian of open links: balance row i gets c (dh_i - dh_j)
        m = open_ & s_ok
        rows.append(si_a[m]); cols.append(si_a[m]); vals.append(c[m])
        m = open_ & e_ok
        rows.append(ei_a[m]); cols.append(ei_a[m]); vals.append(c[m])
        m = open_ & s_ok & e_ok
        rows.append(si_a[m]); cols.append(ei_a[m]); vals.append(-c[m])
        rows.append(ei_a[m]); cols.append(si_a[m]); vals.append(-c[m])
        # valves: flow unknown x_v leaves start, enters end; constraint row
        for v, r in self.valve_row.items():
            s, e, role = links.at[v, "start"], links.at[v, "end"], links.at[v, "role"]
            if s in jidx:
                rows.append(np.array([jidx[s]])); cols.append(np.array([r])); vals.append(np.array([1.0]))
            if e in jidx:
                rows.append(np.array([jidx[e]])); cols.append(np.array([r])); vals.append(np.array([-1.0]))
            fixed = e if role == "prv" else s if role == "psv" else None
            if fixed is not None and fixed in jidx:  # dh_fixed = 0
                rows.append(np.array([r])); cols.append(np.array([jidx[fixed]])); vals.append(np.array([1.0]))
            else:  # FCV (or PRV onto a fixed-head node): dq_v = 0
                rows.append(np.array([r])); cols.append(np.array([r])); vals.append(np.array([1.0]))
        mat = sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size))
        # junctions cut off from every fixed head (closed valves) get a tiny leak to ground
        diag = mat.diagonal()
        isolated = np.flatnonzero(np.abs(diag[:n]) == 0)
        if isolated.size:
            mat = mat + sp.csc_matrix((np.full(isolated.size, 1e-9), (isolated, isolated)), shape=(size, size))
        self.size = size
        self.n_isolated = int(isolated.size)
        try:
            self._lu = spla.splu(mat.tocsc())
        except RuntimeError as exc:
            raise SimulationError(
                f"the linearised network is singular ({exc}): part of it has no fixed head",
                fix="check that every zone is connected to a reservoir or tank through open links",
            ) from exc
        self._jidx = jidx
        self.matrix = mat
        self.seconds_factor = time.perf_counter() - t0

    def _functional(self, sensor: str, kind: str) -> np.ndarray:
        w = np.zeros(self.size)
        if kind == "pressure":
            if sensor in self._jidx:
                w[self._jidx[sensor]] = 1.0
            return w  # fixed-head nodes (tanks, reservoirs): zero response
        if sensor not in self.links.index:
            raise UnknownElementError(f"link {sensor!r} is not in the network", element=sensor)
        row = self.links.loc[sensor]
        if sensor in self.valve_row:
            w[self.valve_row[sensor]] = 1.0
        elif row["role"] == "open":
            if row["start"] in self._jidx:
                w[self._jidx[row["start"]]] += row["c"]
            if row["end"] in self._jidx:
                w[self._jidx[row["end"]]] -= row["c"]
        return w

    def response(self, sensors: Sequence[str], kind: str) -> pd.DataFrame:
        """Sensitivity rows of ``sensors`` (``kind`` "pressure" or "flow").

        Returns
        -------
        pd.DataFrame
            index = sensors, columns = junction names; d(reading)/d(extra demand)
            in m per m³/s (pressure) or m³/s per m³/s (flow).
        """
        n = len(self.junctions)
        if len(sensors) == 0:
            return pd.DataFrame(np.zeros((0, n)), columns=self.junctions)
        w = np.column_stack([self._functional(s, kind) for s in sensors])
        y = self._lu.solve(w, trans="T")  # M^T y = w  -> rows of M^{-1} combos
        return pd.DataFrame(-y[:n].T, index=list(sensors), columns=self.junctions)

    def head_change(self, extra_demand: pd.Series) -> pd.Series:
        """Head change (m) of every junction for an extra demand (m³/s) per junction."""
        rhs = np.zeros(self.size)
        d = extra_demand.reindex(self.junctions).fillna(0.0).to_numpy(float)
        rhs[: len(self.junctions)] = -d
        x = self._lu.solve(rhs)
        return pd.Series(x[: len(self.junctions)], index=self.junctions)


def sensitivities(
    wn: wntr.network.WaterNetworkModel,
    heads: pd.Series,
    flows: pd.Series,
    *,
    pressure_nodes: Iterable[str] = (),
    flow_links: Iterable[str] = (),
    q_min: float = Q_MIN,
) -> Sensitivity:
    """Sensor sensitivities to an extra demand (leak) at every junction.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The model (SI).
    heads, flows : pd.Series
        Operating point: node heads (m), link flows (m³/s).
    pressure_nodes : iterable of str
        Nodes carrying a pressure logger (a tank's row is zero: fixed head).
    flow_links : iterable of str
        Links carrying a flow meter.
    q_min : float
        Flow floor for conductances (m³/s).

    Returns
    -------
    Sensitivity
        ``pressure`` (m per m³/s) and ``flow`` (m³/s per m³/s) tables,
        columns = junction names.

    Examples
    --------
    >>> snap = solver.solve()                                    # doctest: +SKIP
    >>> s = sensitivities(wn, snap.heads, snap.flows, pressure_nodes=["n1"])
    >>> s.pressure.loc["n1", "n5"] * 0.001   # head change (m) for a 1 L/s leak at n5
    """
    t0 = time.perf_counter()
    model = LinearModel(wn, heads, flows, q_min=q_min)
    p_nodes = [str(n) for n in pressure_nodes]
    f_links = [str(k) for k in flow_links]
    for n in p_nodes:
        if n not in heads.index:
            raise UnknownElementError(f"pressure sensor node {n!r} is not in the network", element=n)
    pressure = model.response(p_nodes, "pressure")
    flow = model.response(f_links, "flow")
    seconds = time.perf_counter() - t0
    log.debug("sensitivities of %d pressure and %d flow sensors to %d junctions in %.3f s",
              len(p_nodes), len(f_links), len(model.junctions), seconds)
    return Sensitivity(pressure=pressure, flow=flow, seconds=seconds,
                       info={"valves_active": len(model.valve_row), "isolated": model.n_isolated})
