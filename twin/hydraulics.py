"""Hydraulic simulation (EPANET through WNTR) and analytic leak sensitivities.

Four tools:

* :class:`EpanetSession` is the one place of the project that drives EPANET
  (2.2, through WNTR's toolkit wrapper): it owns the temporary folder, the
  scratch-file guard, the toolkit handle and the setters (junction demands in
  bulk, link states, tank levels), with three configurations: demand-driven
  snapshots, pressure-driven closures (:mod:`twin.repair`) and
  extended-period runs (:func:`simulate`, :mod:`twin.synth.readings`).
  WNTR's private API (the ctypes project, the ``.inp`` writer's pattern
  hook) is touched here only.
* :func:`simulate` runs an EPANET extended-period simulation of a WNTR model in
  a temporary directory and raises :class:`~twin.errors.SimulationError` when
  EPANET fails or does not converge.
* :class:`SnapshotSolver` keeps one snapshot session open and solves many
  single-period *snapshots* of the same network with measured boundary
  conditions: junction demands, tank levels (tanks act as fixed heads in a
  snapshot) and link open/closed states. No input file is rewritten between
  snapshots, which makes it roughly 30 times faster than :func:`simulate` per
  snapshot.
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
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import wntr
from wntr.epanet.io import BinFile, InpFile

from twin.errors import SimulationError, UnknownElementError
from twin.scratch import epanet_scratch

log = logging.getLogger(__name__)

#: Gravitational acceleration, m/s².
G = 9.81
#: Flow below which a link's conductance is taken at this flow (m³/s).
Q_MIN = 1e-5
#: Flow below which a pump, check valve or valve counts as closed (m³/s).
Q_CLOSED = 1e-7
#: Pressure head (m) below which a snapshot with EPANET's warning 6 has failed: a
#: junction cut off from every source gets a head of about -1e7 m, while a real
#: network under suction stays within tens of metres (ky10: -50 m).
P_DISCONNECTED_M = -1000.0

# EPANET toolkit codes
_EN_BASEDEMAND, _EN_TANKLEVEL, _EN_DEMAND, _EN_HEAD, _EN_PRESSURE = 1, 8, 9, 10, 11
_EN_FLOW, _EN_INITSTATUS, _EN_INITSETTING, _EN_STATUS = 8, 4, 5, 11
_EN_ROUGHNESS = 2
_EN_NODECOUNT, _EN_LINKCOUNT = 0, 2
_EN_DEMANDMULT = 4
_EN_TRIALS, _EN_ACCURACY = 0, 1
_EN_PATTERN, _EN_LINKPATTERN = 2, 15
_EN_CONTROLCOUNT, _EN_RULECOUNT = 5, 6
_EN_DURATION, _EN_PATTERNSTART = 0, 4


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
    overrides = {"duration": duration_s, "hydraulic_timestep": hydraulic_step_s, "report_timestep": report_step_s}
    overrides = {k: float(v) for k, v in overrides.items() if v is not None}
    times = wn.options.time
    saved = {k: getattr(times, k) for k in overrides}
    # the overrides only reach the session's input file: set them for its writing, then restore (no model copy)
    try:
        for k, v in overrides.items():
            setattr(times, k, v)
        session = EpanetSession.period(wn)
    finally:
        for k, v in saved.items():
            setattr(times, k, v)
    results = session.run_period(convergence_error=True)
    if getattr(results, "error_code", None):
        raise SimulationError(
            f"EPANET did not converge (code {results.error_code})",
            fix="check demands, pump curves and valve settings; try a smaller time step",
        )
    return results


# --------------------------------------------------------------------------- #
# The EPANET session: the one place that drives the toolkit
# --------------------------------------------------------------------------- #

#: Configurations of :class:`EpanetSession` (see its docstring).
SessionMode = Literal["snapshot", "closure", "period"]

#: Litres per cubic metre: snapshot and closure files are written in L/s.
_LPS = 1000.0

_FAILURE = {  # message and fix of a failed solve, per configuration
    "snapshot": ("EPANET failed on a snapshot", "check the measured tank levels and pump states"),
    "closure": ("EPANET failed on the closure", "check the valve layer and the network's connectivity"),
    "period": ("EPANET could not solve the network",
               "check for disconnected parts, closed supply links or impossible demands"),
}


class _InpWriter(InpFile):
    """WNTR's .inp writer with a vectorised ``[PATTERNS]`` section.

    WNTR formats each multiplier with its own ``str.format`` and ``write``; a
    week of 15-minute patterns for 14,000 junctions is 9 M numbers, which
    takes longer than EPANET's own solution. Same text, same ``%f`` format;
    ``pattern_len`` truncates every pattern (enough for a short run).
    """

    def __init__(self, pattern_len: int | None = None) -> None:
        super().__init__()
        self.pattern_len = pattern_len

    def _write_patterns(self, f: Any, wn: wntr.network.WaterNetworkModel) -> None:  # WNTR's hook
        enc = sys.getdefaultencoding()
        f.write("[PATTERNS]\n".encode(enc))
        f.write("{:10s} {:10s}\n".format(";ID", "Multipliers").encode(enc))
        for name in wn.pattern_name_list:
            vals = list(wn.get_pattern(name).multipliers)
            if self.pattern_len is not None:
                vals = vals[: self.pattern_len]
            full, rest = divmod(len(vals), 6)
            text = (f"\n{name}" + " %f" * 6) * full + ((f"\n{name}" + " %f" * rest) if rest else "")
            f.write((text % tuple(vals)).encode(enc))
            f.write(b"\n")
        f.write(b"\n")


#: Relative difference within which demands count as scaled by one common factor (1e-12: far below
#: any measurement; EPANET then applies ``base * factor``, equal to the demand asked to that precision).
GROUP_RTOL = 1e-12
#: Fewest junctions moving together that get a demand pattern of their own.
GROUP_MIN = 8


class _GroupedDemands:
    """Junction demands of a snapshot session as ``base × pattern value``, sent with few toolkit calls.

    EPANET 2.2 sets one junction's demand per call (about 1-4 µs each from
    Python; 13,862 calls per snapshot on the city). The localisation's
    demands are metered rates per window times one factor per DMA and
    instant, so between two snapshots most junctions change by their DMA's
    common factor. Junctions seen changing by a common factor (within
    :data:`GROUP_RTOL`) get a demand pattern of their own (a single value);
    later changes by a common factor cost one ``EN_setpatternvalue`` per group.
    Junctions that move on their own get their base demand set as before.
    All values in the file's units (L/s).
    """

    def __init__(self, session: EpanetSession, base: np.ndarray) -> None:
        self.s = session
        self.base = np.asarray(base, float).copy()  # what EPANET holds per junction (category 1)
        self.group = np.zeros(len(self.base), dtype=np.int64)  # pattern index; 0: EPANET's unit pattern
        self.value = [1.0]  # pattern index -> its value
        self.free: list[int] = []  # patterns no junction uses any more

    def effective(self) -> np.ndarray:
        """The demands EPANET applies now (file units, before the demand multiplier)."""
        return self.base * np.asarray(self.value)[self.group]

    def send(self, pos: np.ndarray, values: np.ndarray) -> int:
        """Make junctions ``pos`` demand ``values`` (file units); return the number of toolkit calls."""
        now = self.effective()
        want = now.copy()
        want[pos] = values
        calls = 0
        loose = ~(want == now)
        if not loose.any():
            return 0
        calls += self._rescale_groups(want, loose)
        calls += self._regroup(want, now, loose)
        idx = np.flatnonzero(loose)
        calls += self._set_bases(idx, want[idx])
        return calls

    def _rescale_groups(self, want: np.ndarray, loose: np.ndarray) -> int:
        """One new value per pattern whose junctions all changed by a common factor; clears them in ``loose``."""
        n_pat = len(self.value)
        touched = np.zeros(n_pat, dtype=bool)
        touched[self.group[loose]] = True
        touched[0] = False  # EPANET's unit pattern never changes
        idx = np.flatnonzero(touched[self.group])
        if idx.size == 0:
            return 0
        g, b, w = self.group[idx], self.base[idx], want[idx]
        nz = np.flatnonzero(b != 0)
        groups, first = np.unique(g[nz], return_index=True)
        factor = np.full(n_pat, np.nan)
        factor[groups] = w[nz[first]] / b[nz[first]]
        f = factor[g]
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(f) & (np.abs(w - b * f) <= GROUP_RTOL * np.abs(w))
        broken = np.zeros(n_pat, dtype=bool)
        broken[g[~ok]] = True
        whole = groups[~broken[groups]]
        calls = sum(self._set_pattern_value(k, factor[k]) for k in whole.tolist())
        loose[idx[~broken[g]]] = False
        return calls

    def _regroup(self, want: np.ndarray, now: np.ndarray, loose: np.ndarray) -> int:
        """Junctions of ``loose`` changing by a common factor get a new pattern (base = demand, value 1)."""
        idx = np.flatnonzero(loose & (now > 0) & (want > 0))
        if idx.size < GROUP_MIN:
            return 0
        key = np.rint(np.log(want[idx] / now[idx]) / GROUP_RTOL * 0.5).astype(np.int64)
        uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        calls = 0
        for k in np.flatnonzero(counts >= GROUP_MIN).tolist():
            members = idx[inverse == k]
            g, made = self._new_pattern()
            calls += made + self._set_bases(members, want[members], pattern=g)
            loose[members] = False
        return calls

    def _set_bases(self, idx: np.ndarray, values: np.ndarray, *, pattern: int | None = None) -> int:
        """Set the base demand of junctions ``idx`` (their pattern's value divides out), or move them to ``pattern``."""
        s = self.s
        if idx.size == 0:
            return 0
        groups = self.group[idx] if pattern is None else np.full(idx.size, pattern)
        scale = np.asarray(self.value)[groups]
        dead = ~(np.isfinite(scale) & (scale != 0))
        groups = np.where(dead, 0, groups)
        bases = np.where(dead, values, values / np.where(dead, 1.0, scale))
        setter, ph, code, c_double, c_int = s._lib.EN_setnodevalue, s._ph, ctypes.c_int(_EN_BASEDEMAND), \
            ctypes.c_double, ctypes.c_int
        set_pattern, one = s._lib.EN_setdemandpattern, c_int(1)
        toolkit = s._junction_idx_list
        moved = groups != self.group[idx]
        calls = 0
        for p, value, g, move in zip(idx.tolist(), bases.tolist(), groups.tolist(), moved.tolist()):
            err = setter(ph, toolkit[p], code, c_double(value))
            if move:
                err = max(err, set_pattern(ph, toolkit[p], one, c_int(g)))
                calls += 1
            if err >= 100:
                raise SimulationError(f"EPANET refused a node demand (error {err})",
                                      fix="check the demands (a NaN or a huge value?)")
        calls += idx.size
        old = np.unique(self.group[idx][moved])
        self.base[idx] = bases
        self.group[idx] = groups
        used = np.bincount(self.group, minlength=len(self.value))
        self.free.extend(int(g) for g in old.tolist() if g != 0 and used[g] == 0 and g not in self.free)
        return calls

    def _new_pattern(self) -> tuple[int, int]:
        """A pattern of value 1 (a free one, else a new one in EPANET's project) and the toolkit calls made."""
        calls = 0
        if self.free:
            g = self.free.pop()
        else:
            calls += 2
            s = self.s
            name = f"TWIN_G{len(self.value)}".encode()
            s._call("addpattern", name)
            index = ctypes.c_int()
            s._call("getpatternindex", name, ctypes.byref(index))
            g = index.value
            while len(self.value) <= g:
                self.value.append(1.0)
        return g, calls + self._set_pattern_value(g, 1.0)

    def _set_pattern_value(self, g: int, value: float) -> int:
        """Give pattern ``g`` the value ``value``; return the toolkit calls made (0 if it had it)."""
        if self.value[g] == value:
            return 0
        self.s._call("setpatternvalue", ctypes.c_int(g), ctypes.c_int(1), ctypes.c_double(float(value)))
        self.value[g] = float(value)
        return 1


class EpanetSession:
    """One EPANET 2.2 project, the only place of the project that drives EPANET.

    The session owns a temporary folder (the input file, report and binary
    output), the scratch-file guard (:func:`twin.scratch.epanet_scratch`
    around the calls that write EPANET's ``enXXXXXX`` scratch file), the
    toolkit handle (WNTR's ``ENepanet`` wrapper and its private ctypes
    project) and the setters. Three configurations:

    ``"snapshot"`` (:meth:`snapshots`)
        Demand-driven single-period steady states of the model without
        controls, patterns or speed patterns (removed in EPANET's project, the
        model itself is not copied); tanks are fixed heads at
        the level given per solve. The caller sets junction demands (in bulk),
        the demand multiplier, tank levels and link states, then
        :meth:`solve`. Used by :class:`SnapshotSolver`.
    ``"closure"`` (:meth:`closures`)
        Pressure-driven steady states of the model as it is, with every
        junction's demand frozen at its value at ``time_s`` (all categories
        summed into the first) and the reservoir head patterns at that time;
        each solve changes link states and demands only. Used by
        :class:`twin.repair.ClosureSimulator`.
    ``"period"`` (:meth:`period`)
        One extended-period run of the model as it is (its own time options
        and flow units), read back from EPANET's binary output by
        :meth:`run_period`. Used by :func:`simulate` and the synthetic readings.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The model (SI). Every session writes it to its input file and never
        changes it.
    mode : {"snapshot", "closure", "period"}
    time_s : int
        Closure: time of the snapshot, seconds after the patterns' start.
    required_pressure_m, minimum_pressure_m : float
        Closure: pressure-driven demand is full at and above
        ``required_pressure_m`` and none at or below ``minimum_pressure_m``
        (pressure head, m).
    pattern_len : int, optional
        Period: write only the first ``pattern_len`` values of each pattern.

    Notes
    -----
    Snapshot and closure files are written in L/s; every value crossing the
    session's interface is SI (m³/s, m). EPANET 2.2 draws its scratch names
    (``enXXXXXX``, created and removed at once) in the working directory when
    it opens a project, and writes its hydraulics scratch file there in an
    extended-period run: the session opens projects and runs periods inside
    the guard, which makes its temporary folder the working directory of the
    whole process for that time (under a lock). A steady solve
    (``ENinitH(0)``, ``ENrunH``) writes no file. A session opened in a worker
    thread therefore needs the main thread not to use relative paths
    meanwhile (:func:`twin.repair.plan_repairs` reads its files first). EPANET 2.2
    has no bulk setter (``EN_setnodevalue`` takes one node): :meth:`set_demands`
    sends only the values that changed since the last call, through
    pre-resolved indices.

    Examples
    --------
    >>> with EpanetSession.snapshots(wn) as session:            # doctest: +SKIP
    ...     session.set_demands(demands_m3s)
    ...     session.solve()
    ...     heads = session.node_values("head")
    """

    def __init__(
        self,
        wn: wntr.network.WaterNetworkModel,
        *,
        mode: SessionMode = "snapshot",
        time_s: int = 0,
        required_pressure_m: float = 20.0,
        minimum_pressure_m: float = 0.0,
        pattern_len: int | None = None,
    ) -> None:
        if mode not in _FAILURE:
            raise ValueError(f"mode must be one of {', '.join(_FAILURE)}, got {mode!r}")
        self.mode = mode
        self.wn = wn  # never copied nor changed: a snapshot session configures EPANET's project instead
        self.junctions: list[str] = list(self.wn.junction_name_list)
        self._tank_limits = {t: (float(self.wn.get_node(t).min_level), float(self.wn.get_node(t).max_level))
                             for t in self.wn.tank_name_list}
        self._tmp = tempfile.TemporaryDirectory(prefix=f"twin-{mode}-")
        self._files = [str(Path(self._tmp.name) / f"{mode}.{ext}") for ext in ("inp", "rpt", "bin")]
        self._en: Any = None
        units = self.wn.options.hydraulic.inpfile_units if mode == "period" else "LPS"
        with warnings.catch_warnings():  # WNTR warns about options EPANET 2.2 ignores
            warnings.simplefilter("ignore")
            # a snapshot replaces every pattern by EPANET's unit pattern 0: their first values suffice
            _InpWriter(1 if mode == "snapshot" else pattern_len).write(self._files[0], self.wn, units=units,
                                                                      version=2.2)
        if mode != "period":
            self._open_steady(time_s, required_pressure_m, minimum_pressure_m)

    # ------------------------------------------------------------------ set-up

    @classmethod
    def snapshots(cls, wn: wntr.network.WaterNetworkModel) -> EpanetSession:
        """A demand-driven snapshot session (see the class docstring)."""
        return cls(wn, mode="snapshot")

    @classmethod
    def closures(cls, wn: wntr.network.WaterNetworkModel, *, time_s: int,
                 required_pressure_m: float = 20.0, minimum_pressure_m: float = 0.0) -> EpanetSession:
        """A pressure-driven closure session at ``time_s`` (see the class docstring)."""
        return cls(wn, mode="closure", time_s=time_s, required_pressure_m=required_pressure_m,
                   minimum_pressure_m=minimum_pressure_m)

    @classmethod
    def period(cls, wn: wntr.network.WaterNetworkModel, *, pattern_len: int | None = None) -> EpanetSession:
        """An extended-period session; call :meth:`run_period` once."""
        return cls(wn, mode="period", pattern_len=pattern_len)

    def _open_steady(self, time_s: int, required_m: float, minimum_m: float) -> None:
        """Open the project for steady solves (snapshot or closure configuration)."""
        en = wntr.epanet.toolkit.ENepanet(version=2.2)
        self._en = en
        self._lib, self._ph = en.ENlib, en._project
        try:
            with epanet_scratch(self._tmp.name):  # ENopen tries scratch names in the working directory
                en.ENopen(*self._files)
                self._index_elements()
                if self.mode == "closure":
                    self._freeze_demands(int(time_s), required_m, minimum_m)
                else:
                    self._configure_snapshot()
                en.ENopenH()
        except SimulationError:
            self.close()
            raise
        except Exception as exc:  # EpanetException
            self.close()
            raise SimulationError(f"EPANET could not open the network ({exc})",
                                  fix="validate the network with `twin network check`") from exc
        # current junction base demands in the file's units; NaN: not known exactly (sent on first set)
        self._demand_file = np.full(len(self.junctions), np.nan)
        self._demand_initial = np.full(len(self.junctions), np.nan)
        if self.mode == "closure":
            self._demand_initial = self._read(self._lib.EN_getnodevalue, self._junction_idx_list, _EN_BASEDEMAND)
            self._demand_file = self._demand_initial.copy()
        if self.mode == "snapshot":
            self._grouped = _GroupedDemands(self, self.snapshot_demands * _LPS)
        self._status_initial: dict[int, float] = {}
        #: solves that ended with EPANET's warning 6 (negative pressures): solved, not failed
        self.n_negative_pressure = 0

    def _index_elements(self) -> None:
        en = self._en
        #: node and link names in the toolkit's order, and their toolkit indices
        self.node_ids = [en.ENgetnodeid(i) for i in range(1, en.ENgetcount(_EN_NODECOUNT) + 1)]
        self.node_index = {n: i + 1 for i, n in enumerate(self.node_ids)}
        self.link_index = {n: en.ENgetlinkindex(n) for n in self.wn.link_name_list}
        self.link_ids = sorted(self.link_index, key=self.link_index.__getitem__)
        self._junction_pos = {n: k for k, n in enumerate(self.junctions)}
        self._junction_idx = np.array([self.node_index[j] for j in self.junctions], dtype=np.int64)
        self._junction_idx_list = self._junction_idx.tolist()

    def _call(self, fn: str, *args: Any) -> None:
        code = getattr(self._lib, f"EN_{fn}")(self._ph, *args)
        if code and code >= 100:
            raise SimulationError(f"EPANET error {code} in {fn}")

    def _freeze_demands(self, time_s: int, required_m: float, minimum_m: float) -> None:
        """Closure set-up: PDD, one period at ``time_s``, demands frozen at their value then."""
        totals = np.array([sum(ts.at(time_s) for ts in self.wn.get_node(n).demand_timeseries_list)
                           for n in self.junctions], dtype=float) * _LPS
        self._call("setdemandmodel", ctypes.c_int(1), ctypes.c_double(minimum_m),
                   ctypes.c_double(required_m), ctypes.c_double(0.5))
        self._en.ENsettimeparam(0, 0)  # duration
        self._en.ENsettimeparam(4, time_s)  # pattern start (reservoir head patterns)
        ndem = ctypes.c_int()
        for idx, total in zip(self._junction_idx, totals):
            c_idx = ctypes.c_int(int(idx))
            self._call("getnumdemands", c_idx, ctypes.byref(ndem))
            for cat in range(1, max(ndem.value, 1) + 1):
                self._call("setbasedemand", c_idx, ctypes.c_int(cat),
                           ctypes.c_double(total if cat == 1 else 0.0))
                self._call("setdemandpattern", c_idx, ctypes.c_int(cat), ctypes.c_int(0))

    def _configure_snapshot(self) -> None:
        """Snapshot set-up in EPANET's project: no controls, patterns or speed patterns, fixed demands.

        What a copy of the model once did (7.5 s of ``deepcopy`` on a
        22,000-pipe network), done in the toolkit after the model's own file
        is opened: controls and rules deleted, one period starting at the
        patterns' start, every junction's demand categories summed into the
        first at their patterns' first value, with EPANET's unit pattern 0
        (never the default pattern, issue 10), reservoir head and pump speed
        patterns removed, water quality off, convergence tightened for
        centimetre signals. :attr:`snapshot_demands` holds those demands (m³/s).
        """
        count = ctypes.c_int()
        for code, delete in ((_EN_RULECOUNT, "deleterule"), (_EN_CONTROLCOUNT, "deletecontrol")):
            self._call("getcount", ctypes.c_int(code), ctypes.byref(count))
            for index in range(count.value, 0, -1):
                self._call(delete, ctypes.c_int(index))
        self._en.ENsettimeparam(_EN_DURATION, 0)
        self._en.ENsettimeparam(_EN_PATTERNSTART, 0)
        hydraulic = self.wn.options.hydraulic
        # centimetre signals need a tighter convergence than EPANET's default 0.001-0.01
        for option, value in ((_EN_DEMANDMULT, 1.0), (_EN_ACCURACY, min(hydraulic.accuracy, 1e-5)),
                              (_EN_TRIALS, max(hydraulic.trials, 200))):
            self._call("setoption", ctypes.c_int(option), ctypes.c_double(float(value)))
        self._call("setqualtype", ctypes.c_int(0), b"", b"", b"")
        self.snapshot_demands = np.array(
            [sum(d.base_value * _first_multiplier(d.pattern) for d in self.wn.get_node(n).demand_timeseries_list)
             for n in self.junctions], dtype=float)
        ndem = ctypes.c_int()
        for idx, total in zip(self._junction_idx_list, (self.snapshot_demands * _LPS).tolist()):
            c_idx = ctypes.c_int(idx)
            self._call("getnumdemands", c_idx, ctypes.byref(ndem))
            for cat in range(1, max(ndem.value, 1) + 1):
                self._call("setbasedemand", c_idx, ctypes.c_int(cat), ctypes.c_double(total if cat == 1 else 0.0))
                self._call("setdemandpattern", c_idx, ctypes.c_int(cat), ctypes.c_int(0))
        for name in self.wn.reservoir_name_list:
            self._set_node(self.node_index[name], _EN_PATTERN, 0.0)
        for name in self.wn.pump_name_list:
            self._call("setlinkvalue", ctypes.c_int(self.link_index[name]), ctypes.c_int(_EN_LINKPATTERN),
                       ctypes.c_double(0.0))

    def __enter__(self) -> EpanetSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the EPANET project and remove the temporary folder (idempotent)."""
        self._close_project()
        self._tmp.cleanup()

    def _close_project(self) -> None:
        if self._en is not None:
            for fn in ("ENcloseH", "ENclose"):
                try:
                    getattr(self._en, fn)()
                except Exception:  # closing what did not open (ENcloseH after a period run)
                    pass
            self._en = None

    def _require(self, *modes: str) -> None:
        if self.mode not in modes:
            raise RuntimeError(f"a {self.mode} session cannot do this (only {' or '.join(modes)})")
        if self._en is None:
            raise RuntimeError("the EPANET session is closed")

    # ------------------------------------------------------------------ setters

    def _set_node(self, idx: int, code: int, value: float) -> None:
        err = self._lib.EN_setnodevalue(self._ph, ctypes.c_int(idx), ctypes.c_int(code), ctypes.c_double(value))
        if err >= 100:
            raise SimulationError(f"EPANET refused a node value (error {err})",
                                  fix="check the measured tank levels and demands")

    def _send_demands(self, pos: np.ndarray, file_values: np.ndarray) -> int:
        """Send the base demands (file units) of junctions ``pos`` that changed; return how many."""
        changed = np.flatnonzero(~(self._demand_file[pos] == file_values))
        setter, ph, code, c_double = self._lib.EN_setnodevalue, self._ph, ctypes.c_int(_EN_BASEDEMAND), ctypes.c_double
        idx = self._junction_idx_list
        for p, value in zip(pos[changed].tolist(), file_values[changed].tolist()):
            err = setter(ph, idx[p], code, c_double(value))
            if err >= 100:
                raise SimulationError(f"EPANET refused a node demand (error {err})",
                                      fix="check the demands (a NaN or a huge value?)")
        self._demand_file[pos[changed]] = file_values[changed]
        return len(changed)

    def set_demands(self, values: np.ndarray | Sequence[float], nodes: Sequence[str] | None = None) -> int:
        """Set the base demand of junctions, in bulk.

        Parameters
        ----------
        values : array of float
            Demand per junction, m³/s.
        nodes : sequence of str, optional
            Junction names (default: all of :attr:`junctions`, in that order).

        Returns
        -------
        int
            Number of toolkit calls made: only the values that differ from the
            ones EPANET holds are sent. In a snapshot session, junctions whose
            demands keep moving together (a DMA's demands scaled by its inflow)
            share a demand pattern, and a change common to them costs one call
            (:class:`_GroupedDemands`).
        """
        self._require("snapshot", "closure")
        pos = (np.arange(len(self.junctions)) if nodes is None
               else np.array([self._junction_pos[str(n)] for n in nodes], dtype=np.int64))
        file_values = np.asarray(values, float) * _LPS
        if file_values.shape != pos.shape:
            raise ValueError(f"demands must have {len(pos)} values, got {file_values.shape}")
        if self.mode == "snapshot":
            return self._grouped.send(pos, file_values)
        return self._send_demands(pos, file_values)

    def reset_demands(self, nodes: Sequence[str]) -> None:
        """Give ``nodes`` back the base demand they had when the closure session opened."""
        self._require("closure")
        pos = np.array([self._junction_pos[str(n)] for n in nodes], dtype=np.int64)
        self._send_demands(pos, self._demand_initial[pos])

    def set_demand_multiplier(self, scale: float) -> None:
        """EPANET's global demand multiplier (one call for every junction)."""
        self._require("snapshot", "closure")
        err = self._lib.EN_setoption(self._ph, ctypes.c_int(_EN_DEMANDMULT), ctypes.c_double(float(scale)))
        if err >= 100:
            raise SimulationError(f"EPANET refused the demand multiplier {scale} (error {err})")

    def set_tank_levels(self, levels: Mapping[str, float]) -> None:
        """Water level above the tank bottom (m) per tank, clipped to the tank's limits."""
        self._require("snapshot", "closure")
        for tank, level in levels.items():
            if tank not in self._tank_limits:
                raise UnknownElementError(f"tank {tank!r} is not in the network", element=tank)
            if not np.isfinite(level):
                raise SimulationError(f"tank {tank!r} has no level for this snapshot", element=tank,
                                      fix="fill the tank's level logger gaps")
            lo, hi = self._tank_limits[tank]
            # a noisy logger may read a little outside the tank: EPANET refuses that
            clipped = min(max(level, lo), hi)
            self._set_node(self.node_index[tank], _EN_TANKLEVEL, float(clipped))

    def set_link_status(self, status: Mapping[str, bool]) -> None:
        """Open (``True``) or close (``False``) links until :meth:`reset_link_status`."""
        self._require("snapshot", "closure")
        for link, value in status.items():
            idx = self.link_index[str(link)]
            if idx not in self._status_initial:  # first touch: the file's own status
                self._status_initial[idx] = self._en.ENgetlinkvalue(idx, _EN_INITSTATUS)
            self._en.ENsetlinkvalue(idx, _EN_INITSTATUS, 1.0 if value else 0.0)

    def set_roughness(self, roughness: Mapping[str, float]) -> None:
        """Roughness coefficient of pipes (Hazen-Williams C, or the file's own unit), until set again.

        EPANET recomputes each pipe's resistance from it; nothing else changes.
        """
        self._require("snapshot", "closure")
        for link, value in roughness.items():
            if not np.isfinite(value) or value <= 0:
                raise SimulationError(f"pipe {link!r}: roughness {value} is not a positive number", element=link)
            err = self._lib.EN_setlinkvalue(self._ph, ctypes.c_int(self.link_index[str(link)]),
                                            ctypes.c_int(_EN_ROUGHNESS), ctypes.c_double(float(value)))
            if err >= 100:
                raise SimulationError(f"EPANET refused the roughness of pipe {link!r} (error {err})", element=link)

    def reset_link_status(self, links: Iterable[str]) -> None:
        """Give ``links`` back the status of the input file."""
        for link in links:
            idx = self.link_index[str(link)]
            if idx in self._status_initial:
                self._en.ENsetlinkvalue(idx, _EN_INITSTATUS, self._status_initial[idx])

    # ------------------------------------------------------------------ solving and reading

    def solve(self) -> None:
        """Solve one steady state with the values set.

        EPANET's warning 6 ("system has negative pressures") is not a
        failure: the network is solved, some nodes are below their elevation
        (ky10's own extended-period run has negative pressures at every step).
        Such solves are counted in :attr:`n_negative_pressure`; a snapshot
        fails only when a junction is below :data:`P_DISCONNECTED_M` (cut off
        from every source).

        Raises
        ------
        SimulationError
            EPANET stops with an error; in a snapshot session also when it
            reports an unbalanced (non-converged) system or junctions cut off
            from every source.
        """
        self._require("snapshot", "closure")
        en = self._en
        en.errcode = 0
        en.errcodelist = []
        try:
            en.ENinitH(0)  # flag 0: no hydraulics file, no scratch file
            en.ENrunH()
        except Exception as exc:
            message, fix = _FAILURE[self.mode]
            raise SimulationError(f"{message} ({exc})", fix=fix) from exc
        warned = [str(w).lower() for w in en.errcodelist]
        negative = any("negative" in w for w in warned)
        self.n_negative_pressure += negative
        if self.mode == "snapshot" and negative and (
                self._read(self._lib.EN_getnodevalue, self._junction_idx_list, _EN_PRESSURE).min()
                < P_DISCONNECTED_M):
            raise SimulationError("EPANET solved a snapshot with junctions cut off from every source",
                                  fix="check the link states (closed supply links?) and tank levels")
        if self.mode == "snapshot" and any("unbalanced" in w for w in warned):
            raise SimulationError(f"EPANET did not converge on a snapshot ({en.errcodelist[-1]})",
                                  fix="check demands (a huge demand?), tank levels and pump states")

    def _read(self, getter: Any, indices: Sequence[int], code: int) -> np.ndarray:
        out = np.empty(len(indices))
        val = ctypes.c_double()
        ref = ctypes.byref(val)
        c_code = ctypes.c_int(code)
        ph, err = self._ph, 0
        for k, idx in enumerate(indices):  # a Python int crosses ctypes as a C int
            err |= getter(ph, idx, c_code, ref) >= 100
            out[k] = val.value
        if err:
            raise SimulationError(f"EPANET cannot report the values (code {code})")
        return out

    def node_values(self, quantity: str, nodes: Sequence[str] | None = None) -> np.ndarray:
        """``"head"`` (m), ``"pressure"`` (m) or ``"demand"`` (m³/s, delivered) of nodes.

        ``"demand_lps"`` is the demand in L/s exactly as EPANET reports it (no
        conversion round trip). ``nodes`` default: every node in the toolkit's
        order (:attr:`node_ids`).
        """
        self._require("snapshot", "closure")
        code = {"head": _EN_HEAD, "pressure": _EN_PRESSURE, "demand": _EN_DEMAND,
                "demand_lps": _EN_DEMAND}[quantity]
        idx = range(1, len(self.node_ids) + 1) if nodes is None else [self.node_index[n] for n in nodes]
        values = self._read(self._lib.EN_getnodevalue, idx, code)
        return values / _LPS if quantity == "demand" else values

    def link_flows(self, links: Sequence[str] | None = None) -> np.ndarray:
        """Flow (m³/s, positive start to end node) of links (default: all, toolkit order)."""
        self._require("snapshot", "closure")
        idx = range(1, len(self.link_ids) + 1) if links is None else [self.link_index[n] for n in links]
        return self._read(self._lib.EN_getlinkvalue, idx, _EN_FLOW) / _LPS

    def link_status(self, links: Sequence[str] | None = None) -> np.ndarray:
        """EPANET's status of links after the last solve: ``True`` open (or active), ``False`` closed.

        This is the status the solution holds, not the input file's: a full
        tank's inlet, a check valve with reverse head or a pump shut off by
        EPANET is closed here (``EN_STATUS``). ``links`` default: all, toolkit order.
        """
        self._require("snapshot", "closure")
        idx = range(1, len(self.link_ids) + 1) if links is None else [self.link_index[n] for n in links]
        return self._read(self._lib.EN_getlinkvalue, idx, _EN_STATUS) > 0.5

    def run_period(self, *, convergence_error: bool = True) -> wntr.sim.results.SimulationResults:
        """Run the extended period and read EPANET's binary output (SI units).

        The session is closed afterwards. Raises :class:`SimulationError` when
        EPANET stops with an error or (``convergence_error``) does not converge.
        """
        if self.mode != "period":
            raise RuntimeError(f"a {self.mode} session has no extended-period run")
        try:
            with epanet_scratch(self._tmp.name):  # ENsolveH writes its scratch file here
                try:
                    self._en = wntr.epanet.toolkit.ENepanet(version=2.2)
                    self._en.ENopen(*self._files)
                    self._en.ENsolveH()
                    self._en.ENsolveQ()  # writes the binary results (quality is off or computed)
                finally:
                    self._close_project()
            dw = self.wn.options.hydraulic.headloss == "D-W"
            return BinFile().read(self._files[2], convergence_error, dw)
        except Exception as exc:  # EpanetException and WNTR's own errors
            message, fix = _FAILURE["period"]
            raise SimulationError(f"{message} ({type(exc).__name__}: {exc})",
                                  element=getattr(self.wn, "name", None) or None, fix=fix) from exc
        finally:
            self.close()


# --------------------------------------------------------------------------- #
# Snapshots with measured boundary conditions
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
    status : pd.Series, optional
        EPANET's link status after the solve (``True`` open or active,
        ``False`` closed), index = the links of ``flows``: the status to
        linearise at (:class:`LinearModel`).
    """

    heads: pd.Series
    flows: pd.Series
    status: pd.Series | None = None

    def pressure(self, wn: wntr.network.WaterNetworkModel) -> pd.Series:
        """Pressure head (m) = head - elevation; for a tank its water level."""
        elev = pd.Series({n: wn.get_node(n).elevation for n in self.heads.index
                          if wn.get_node(n).node_type != "Reservoir"})
        return (self.heads - elev).reindex(self.heads.index)


class SnapshotSolver:
    """Solve many single-period snapshots of one network with EPANET.

    A snapshot configuration of :class:`EpanetSession`: tanks are fixed heads
    at their given level, every control, pattern and speed pattern of the
    model is removed, and the caller sets demands, tank levels and link
    states per snapshot. Use as a context manager, or call :meth:`close`.

    Parameters
    ----------
    wn : wntr.network.WaterNetworkModel
        The model (SI). It is neither copied nor modified: EPANET's project is
        configured for snapshots instead (:class:`EpanetSession`).

    Attributes
    ----------
    wn : wntr.network.WaterNetworkModel
        The model the session solves (for :class:`LinearModel`): the caller's,
        or after :meth:`set_roughness` a view of it with the new roughness.
    junctions : list of str
        Junction names, the order of a demand array.
    base_demands : numpy.ndarray
        Junction demands (m³/s) at the patterns' start, every category
        summed: the default of :meth:`solve`.
    n_solved : int
        Snapshots solved so far.

    Examples
    --------
    >>> with SnapshotSolver(wn) as solver:                      # doctest: +SKIP
    ...     snap = solver.solve(demands, tank_levels={"T1": 3.2})
    """

    def __init__(self, wn: wntr.network.WaterNetworkModel) -> None:
        self.session = EpanetSession.snapshots(wn)
        self.wn: Any = wn
        self.junctions: list[str] = self.session.junctions
        self.tanks: list[str] = list(wn.tank_name_list)
        self.node_names: list[str] = list(wn.node_name_list)
        self.link_names: list[str] = list(wn.link_name_list)
        self.base_demands = self.session.snapshot_demands.copy()
        self.n_solved = 0

    def __enter__(self) -> SnapshotSolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the EPANET project and remove its temporary files."""
        self.session.close()

    def _demand_array(self, demands: np.ndarray | pd.Series | None) -> np.ndarray:
        if demands is None:
            return self.base_demands
        if isinstance(demands, pd.Series):
            return demands.reindex(self.junctions).fillna(0.0).to_numpy(float)
        d = np.asarray(demands, float)
        if d.shape != (len(self.junctions),):
            raise ValueError(f"demands must have {len(self.junctions)} values, got {d.shape}")
        return d

    def solve(
        self,
        demands: np.ndarray | pd.Series | None = None,
        *,
        scale: float = 1.0,
        tank_levels: Mapping[str, float] | None = None,
        link_status: Mapping[str, bool] | None = None,
        heads_of: Sequence[str] | None = None,
        flows_of: Sequence[str] | None = None,
        with_status: bool = True,
    ) -> SnapshotResult:
        """Solve one steady state.

        Parameters
        ----------
        demands : array or Series, optional
            Junction demands (m³/s), in the order of :attr:`junctions` or a
            Series indexed by junction name (missing junctions: 0). Default:
            the model's base demands. Only the values that differ from the
            last snapshot's are sent to EPANET.
        scale : float
            Multiplier of every demand (EPANET's demand multiplier): many
            snapshots with the same spatial shares cost one call each.
        tank_levels : mapping, optional
            Water level above the tank bottom (m) per tank; others keep their
            last level. Levels outside the tank's limits are clipped.
        link_status : mapping, optional
            ``True`` (open) or ``False`` (closed) per link, for this snapshot
            only; links not named keep their initial status (valves keep their
            setting).
        heads_of, flows_of : sequence of str, optional
            Read only these nodes' heads and links' flows (default: all).
        with_status : bool
            Also read EPANET's status of the links read (False: ``status``
            is None, a third fewer toolkit calls).

        Returns
        -------
        SnapshotResult
            Heads, flows and EPANET's link statuses after the solve.

        Raises
        ------
        SimulationError
            EPANET reports an error or an unbalanced (non-converged) system
            (negative pressures are not an error: :attr:`n_negative_pressure`).
        """
        session = self.session
        session.set_demands(self._demand_array(demands))
        session.set_demand_multiplier(scale)
        session.set_tank_levels(tank_levels or {})
        session.set_link_status(link_status or {})
        try:
            session.solve()
        finally:
            session.reset_link_status(link_status or {})
        nodes = self.node_names if heads_of is None else list(heads_of)
        links = self.link_names if flows_of is None else list(flows_of)
        heads = session.node_values("head", nodes)
        flows = session.link_flows(links)
        status = pd.Series(session.link_status(links), index=links) if with_status else None
        self.n_solved += 1
        return SnapshotResult(pd.Series(heads, index=nodes), pd.Series(flows, index=links), status)

    def set_roughness(self, roughness: Mapping[str, float]) -> None:
        """Give pipes a new roughness coefficient, for every later snapshot.

        Both EPANET's project and :attr:`wn` change, so a :class:`LinearModel`
        built on :attr:`wn` linearises the same network the snapshots solve
        (model calibration, :mod:`twin.calibrate`). The caller's model is not
        changed: :attr:`wn` becomes a view of it whose ``get_link`` gives the
        changed pipes with their new roughness.

        Parameters
        ----------
        roughness : mapping
            Pipe name -> roughness (Hazen-Williams C, dimensionless; the
            file's own unit under another head-loss formula).
        """
        self.session.set_roughness(roughness)
        if not isinstance(self.wn, _RoughnessView):
            self.wn = _RoughnessView(self.wn)
        for link, value in roughness.items():
            self.wn.set_roughness(str(link), float(value))

    @property
    def n_negative_pressure(self) -> int:
        """Snapshots solved with EPANET's warning 6 (negative pressures somewhere)."""
        return self.session.n_negative_pressure


def _first_multiplier(pattern: Any) -> float:
    """A pattern's multiplier at the patterns' start (1 without a pattern or multipliers)."""
    if pattern is None or len(pattern.multipliers) == 0:
        return 1.0
    return float(pattern.multipliers[0])


class _RoughnessView:
    """A model seen with new roughness on some pipes, without copying or changing the model.

    Every attribute is the model's, except :meth:`get_link` of a changed pipe,
    which returns a shallow copy of that pipe carrying the new roughness. Made
    by :meth:`SnapshotSolver.set_roughness` for :class:`LinearModel` and
    calibration, which read links by name (``get_link``).
    """

    def __init__(self, wn: wntr.network.WaterNetworkModel) -> None:
        self._wn = wn
        self._links: dict[str, Any] = {}

    def set_roughness(self, name: str, value: float) -> None:
        link = self._links.get(name)
        if link is None:
            link = copy.copy(self._wn.get_link(name))
            self._links[name] = link
        link.roughness = value

    def get_link(self, name: str) -> Any:
        link = self._links.get(name)
        return link if link is not None else self._wn.get_link(name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._wn, attr)


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
    status: pd.Series | Mapping[str, bool] | None = None,
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
    status : Series or mapping of bool, optional
        The links' status in the solved operating point (``True`` open,
        :attr:`SnapshotResult.status`); a link named ``False`` is closed. Links
        not named (or ``status`` None) fall back on the input file's status
        (a pipe) or a zero flow (pumps, valves, check valves). Linearise at
        the statuses of the snapshot solved: a full tank's closed inlet or a
        bypass its controls opened differ from the file.

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
    # plain dicts: a pandas lookup per link costs more than the conductance itself
    heads, flows = dict(heads.items()), dict(flows.items())
    status = None if status is None else dict(status.items())
    for name in names:
        link = wn.get_link(name)
        i, j = link.start_node_name, link.end_node_name
        q = float(flows.get(name, 0.0))
        aq = max(abs(q), q_min)
        is_open = None if status is None else status.get(name)
        if is_open is not None and not bool(is_open):
            role, c = "closed", 0.0
        elif link.link_type == "Pipe":
            role, c = _pipe_conductance(link, q, aq, heads, hazen_williams=hw, known_open=is_open is not None)
        elif link.link_type == "Pump":
            role, c = _pump_conductance(link, q, aq, heads)
        else:
            role, c = _valve_conductance(wn, link, q, aq, float(heads[i]), float(heads[j]))
        rows_start.append(i)
        rows_end.append(j)
        roles.append(role)
        cs.append(c)
    return pd.DataFrame({"start": rows_start, "end": rows_end, "role": roles, "c": cs},
                        index=pd.Index(names, name="link_id"))


def _pipe_conductance(link: Any, q: float, aq: float, heads: pd.Series, *,
                      hazen_williams: bool, known_open: bool = False) -> tuple[str, float]:
    """Role and conductance (m²/s) of a pipe with flow ``q`` (floored ``aq``, m³/s); ``heads`` in m.

    ``known_open``: the solved snapshot has the pipe open (else its file status decides).
    """
    if not known_open and (str(link.initial_status).lower() == "closed" or (link.check_valve and q <= Q_CLOSED)):
        return "closed", 0.0
    d, length = link.diameter, link.length
    area = np.pi * d * d / 4.0
    minor = link.minor_loss / (2 * G * area * area)
    if hazen_williams:
        r = 10.667 * length / (link.roughness ** 1.852 * d ** 4.871)
        slope = 1.852 * r * aq ** 0.852 + 2 * minor * aq
    else:  # Darcy-Weisbach / Chezy-Manning: quadratic law from the head difference
        dh = abs(float(heads[link.start_node_name]) - float(heads[link.end_node_name]))
        slope = max(2.0 * dh / aq, 2 * minor * aq, 1e-9)
    return "open", 1.0 / slope


def _pump_conductance(link: Any, q: float, aq: float, heads: pd.Series) -> tuple[str, float]:
    """Role and conductance (m²/s) of a pump: the slope of its head curve at the flow."""
    if abs(q) <= Q_CLOSED or str(link.initial_status).lower() == "closed" and abs(q) <= Q_CLOSED:
        return "closed", 0.0
    speed = float(getattr(link, "base_speed", 1.0) or 1.0)
    if link.pump_type == "HEAD":
        a, b, cc = link.get_head_curve_coefficients()
        # H = s^2 A - B s^(2-C) q^C  ->  dH/dq = -B C s^(2-C) q^(C-1)
        slope = b * cc * speed ** (2 - cc) * aq ** (cc - 1)
    else:  # constant power: H = P / (rho g q)
        slope = abs(float(heads[link.end_node_name]) - float(heads[link.start_node_name])) / aq
    return "open", 1.0 / max(slope, 1e-9)


def _valve_conductance(wn: wntr.network.WaterNetworkModel, link: Any, q: float, aq: float,
                       hi: float, hj: float) -> tuple[str, float]:
    """Role of a valve (active PRV/PSV/FCV, closed, or open with a conductance in m²/s)."""
    vtype = link.valve_type
    if abs(q) <= Q_CLOSED:
        return "closed", 0.0
    if vtype == "PRV" and abs(hj - (wn.get_node(link.end_node_name).elevation + link.initial_setting)) < 1e-3:
        return "prv", 0.0
    if vtype == "PSV" and abs(hi - (wn.get_node(link.start_node_name).elevation + link.initial_setting)) < 1e-3:
        return "psv", 0.0
    if vtype == "FCV" and abs(abs(q) - link.initial_setting) < 1e-6:
        return "fcv", 0.0
    # open valve: a short link with its minor loss (or a near-zero one)
    d = link.diameter
    area = np.pi * d * d / 4.0
    k = link.initial_setting if vtype == "TCV" else link.minor_loss
    minor = max(k, 0.0) / (2 * G * area * area)
    return "open", 1.0 / max(2 * minor * aq, abs(hi - hj) * 2.0 / aq, 1e-6)


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
    status : Series or mapping of bool, optional
        Link statuses of the operating point (see :func:`link_conductances`),
        e.g. :attr:`SnapshotResult.status`.
    """

    def __init__(
        self,
        wn: wntr.network.WaterNetworkModel,
        heads: pd.Series,
        flows: pd.Series,
        *,
        q_min: float = Q_MIN,
        status: pd.Series | Mapping[str, bool] | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.junctions = list(wn.junction_name_list)
        jidx = {n: k for k, n in enumerate(self.junctions)}
        links = link_conductances(wn, heads, flows, q_min=q_min, status=status)
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
    status: pd.Series | Mapping[str, bool] | None = None,
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
    status : Series or mapping of bool, optional
        Link statuses of the operating point (:attr:`SnapshotResult.status`).

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
    model = LinearModel(wn, heads, flows, q_min=q_min, status=status)
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
