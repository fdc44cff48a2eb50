"""Units check: readings off from the data contract's units by a known factor.

The data contract (``DESIGN.md``) says pressure heads in m, flows in L/s and
customer registers in m³. A file in kPa, m³/h or litres is read without an
error and then gives a confident, wrong leak. This module compares every
series with what the network says is plausible and names those that look
off by a known factor:

- a pressure logger's median against the model's pressure head (m) at its
  node in a snapshot at the mean demand (kPa: x 9.80665), and only when the
  median is above any head the network can give there (:func:`highest_head`);
- a flow meter's mean absolute flow (the lower of its first and last thirds
  in time: a burst from mid-week is no unit) against the model's flow in its
  link in the same snapshot (m³/h: x 3.6), except pumps and tank links, whose
  flow the snapshot does not know (controls decide it);
- a customer's daily consumption (m³/day) against the typical use of its
  class, :data:`TYPICAL_DAILY_M3` (litres: x 1000).

A series is *off by* a factor ``f`` when ``ratio / f`` lies in the kind's
match band and ``ratio`` itself lies outside its plausible band (the bands
are :data:`BANDS`); series without a reference (no modelled flow, a
pressure below 2 m, no consumption) get no verdict. When at least
:data:`REFUSE_SHARE` of the series of a kind with a verdict are off by the
same factor, the whole file is taken to be in that unit and
:class:`twin.errors.ReadingsError` is raised (the CLI exits with status 2):
a job on such data would report a confident wrong leak.

:func:`twin.measure.measurements_from_readings` and
:func:`twin.measure.measurements_from_store` (the one measurement path of the
localisation) call :func:`check_sensor_units` and
:func:`check_register_units`; the water balance calls
:func:`check_sensor_units` on its flow series.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twin.errors import ReadingsError, SimulationError
from twin.network import Network

log = logging.getLogger(__name__)

#: Known wrong units per kind: name -> factor (wrong value / contract value).
KNOWN_FACTORS: dict[str, dict[str, float]] = {
    "pressure": {"kPa": 9.80665},
    "flow": {"m³/h": 3.6},
    "customer": {"litres": 1000.0},
}

#: The contract's unit and the fix per kind and wrong unit.
CONTRACT_UNIT = {"pressure": "m of pressure head", "flow": "L/s", "customer": "m³"}
FIXES = {
    ("pressure", "kPa"): "convert the pressure values to metres of head (kPa / 9.80665)",
    ("flow", "m³/h"): "convert the flow values to L/s (m³/h / 3.6)",
    ("customer", "litres"): "convert the customer registers to m³ (litres / 1000)",
}


@dataclass(frozen=True)
class Band:
    """Bands of the ratio measured / expected.

    Attributes
    ----------
    plausible : (float, float)
        Ratio of a series in the contract's unit.
    match : (float, float)
        Ratio / factor of a series off by that factor.
    """

    plausible: tuple[float, float]
    match: tuple[float, float]


#: Pressure heads and flows follow the model within a factor of two; daily
#: consumption per customer spreads over two orders of magnitude.
BANDS = {
    "pressure": Band(plausible=(0.5, 2.0), match=(0.75, 1.33)),
    "flow": Band(plausible=(0.5, 2.0), match=(0.7, 1.5)),
    "customer": Band(plausible=(0.0, 30.0), match=(0.1, 10.0)),
}

#: Typical daily consumption of one customer meter per class, m³/day (a
#: household uses about 0.5 m³/day); unknown classes use "".
TYPICAL_DAILY_M3 = {"residential": 0.5, "commercial": 5.0, "industrial": 50.0, "": 1.0}

#: Share of a kind's series (with a verdict) off by the same factor above
#: which the whole file is refused.
REFUSE_SHARE = 0.8

#: No verdict below these references: pressure head (m), flow (m³/s).
MIN_PRESSURE_M = 2.0
MIN_FLOW_M3S = 1e-4

#: Fewer consuming customer meters than this: no verdict on the registers
#: (daily use spreads too widely to judge a handful).
MIN_CUSTOMERS = 20

#: IDs named in a message before "and N more".
MAX_NAMED = 8


@dataclass
class UnitsCheck:
    """Series off from the contract's units.

    Attributes
    ----------
    suspects : DataFrame
        Index ``meter_id``; ``kind``, ``unit`` (the likely wrong unit),
        ``factor``, ``ratio`` (measured / expected).
    warnings : list of str
        One line per kind with suspects, naming the meters, factor and fix.
    """

    suspects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["kind", "unit", "factor", "ratio"], index=pd.Index([], name="meter_id")))
    warnings: list[str] = field(default_factory=list)

    def reason(self, meter_id: str) -> str:
        """The set-aside reason of one suspect meter."""
        s = self.suspects.loc[meter_id]
        return (f"units: values look like {s['unit']} (x{s['factor']:g} of {CONTRACT_UNIT[s['kind']]}); "
                f"{FIXES[(s['kind'], s['unit'])]}")


def off_by_factor(ratio: pd.Series, kind: str) -> pd.Series:
    """The known wrong unit each ratio points to ("" for none).

    Parameters
    ----------
    ratio : Series
        Measured / expected per series (NaN: no verdict).
    kind : {"pressure", "flow", "customer"}

    Returns
    -------
    Series
        Same index: the unit name of :data:`KNOWN_FACTORS` or "".
    """
    band = BANDS[kind]
    r = ratio.to_numpy(float)
    out = np.full(len(r), "", dtype=object)
    ok = np.isfinite(r) & (r > 0)
    as_is = ok & (r >= band.plausible[0]) & (r <= band.plausible[1])
    for name, f in KNOWN_FACTORS[kind].items():
        hit = ok & ~as_is & (r / f >= band.match[0]) & (r / f <= band.match[1])
        out[hit] = name
    return pd.Series(out, index=ratio.index, dtype=object)


def _named(ids: list[str]) -> str:
    """Up to :data:`MAX_NAMED` IDs, then "and N more"."""
    more = f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else ""
    return ", ".join(ids[:MAX_NAMED]) + more


#: What each kind is compared with, for the messages.
REFERENCE = {"pressure": "the model's pressure head at their nodes",
             "flow": "the model's flow in their links at the mean demand",
             "customer": "the typical daily use of their customer class"}


def _verdict(ratio: pd.Series, kind: str, what: str) -> UnitsCheck:
    """Suspects and warnings of one kind; raise when (nearly) all are off by one factor."""
    ratio = ratio[np.isfinite(ratio.to_numpy(float))]
    unit = off_by_factor(ratio, kind)
    check = UnitsCheck()
    if not len(ratio):
        return check
    rows = []
    for name, f in KNOWN_FACTORS[kind].items():
        ids = [str(i) for i in unit.index[unit.eq(name).to_numpy()]]
        if not ids:
            continue
        share = len(ids) / len(ratio)
        msg = (f"{len(ids)} of {len(ratio)} {what} read about {f:g} times {REFERENCE[kind]}: "
               f"they look like {name}, not {CONTRACT_UNIT[kind]}")
        if share >= REFUSE_SHARE:
            raise ReadingsError(f"{msg} ({_named(ids)}); the job would report a confident wrong leak",
                                element=f"{kind} readings", fix=FIXES[(kind, name)],
                                data={"kind": kind, "unit": name, "factor": f, "meter_ids": ids})
        check.warnings.append(f"units: {msg}: {_named(ids)} set aside. Fix: {FIXES[(kind, name)]}")
        rows += [{"meter_id": i, "kind": kind, "unit": name, "factor": f, "ratio": float(ratio[i])} for i in ids]
    if rows:
        check.suspects = pd.DataFrame(rows).set_index("meter_id")
    for w in check.warnings:
        log.warning("%s", w)
    return check


def mean_demands(network: Network) -> pd.Series:
    """Each junction's mean demand over its pattern, m³/s (index junction names)."""
    wn = network.wn
    default = wn.options.hydraulic.pattern
    mult = float(wn.options.hydraulic.demand_multiplier or 1.0)
    out = {}
    for name in wn.junction_name_list:
        total = 0.0
        for d in wn.get_node(name).demand_timeseries_list:
            pat = d.pattern if d.pattern is not None else (
                wn.get_pattern(default) if default and default in wn.pattern_name_list else None)
            total += d.base_value * (float(np.mean(pat.multipliers)) if pat is not None else 1.0)
        out[name] = total * mult
    return pd.Series(out, dtype=float)


def expected_state(network: Network) -> tuple[pd.Series, pd.Series] | None:
    """The model's pressure heads (m, by node) and flows (m³/s, by link) at the mean demand.

    One EPANET snapshot (:class:`twin.hydraulics.SnapshotSolver`, tanks at
    their initial level). Tanks get their level, junctions ``head -
    elevation``. None when the snapshot does not solve (no verdict then).
    """
    from twin.hydraulics import SnapshotSolver  # EPANET session: only when checking

    wn = network.wn
    try:
        with SnapshotSolver(wn) as solver:
            snap = solver.solve(mean_demands(network))
    except SimulationError as exc:
        log.info("units check: no model reference (%s)", exc)
        return None
    elev = pd.Series({n: wn.get_node(n).elevation for n in [*wn.junction_name_list, *wn.tank_name_list]})
    return snap.heads.reindex(elev.index) - elev, snap.flows


def highest_head(network: Network) -> float:
    """An upper bound of any node's hydraulic head, m: the highest source plus every pump's shut-off head.

    Sources: reservoir heads (times their largest head-pattern multiplier) and
    tank tops; pumps: 1.34 times the largest head of their curve (EPANET's
    shut-off head of a one-point curve is 1.33 h). Infinite with a
    constant-power pump (no shut-off head).
    """
    wn = network.wn
    tops = [wn.get_node(t).elevation + wn.get_node(t).max_level for t in wn.tank_name_list]
    for name in wn.reservoir_name_list:
        r = wn.get_node(name)
        pat = wn.get_pattern(r.head_pattern_name) if r.head_pattern_name in wn.pattern_name_list else None
        tops.append(r.base_head * (max(1.0, float(np.max(pat.multipliers))) if pat is not None else 1.0))
    lift = 0.0
    for name in wn.pump_name_list:
        pump = wn.get_link(name)
        if getattr(pump, "pump_type", "") != "HEAD" or pump.pump_curve_name not in wn.curve_name_list:
            return float("inf")
        lift += 1.34 * max(h for _, h in wn.get_curve(pump.pump_curve_name).points)
    return (max(tops) if tops else 0.0) + lift


def _judged_links(network: Network) -> set[str]:
    """Links whose snapshot flow is a fair reference: not pumps, not into tanks (controls decide those)."""
    wn = network.wn
    tanks = set(wn.tank_name_list)
    return {n for n in wn.link_name_list
            if n not in wn.pump_name_list
            and wn.get_link(n).start_node_name not in tanks and wn.get_link(n).end_node_name not in tanks}


def check_sensor_units(series: pd.DataFrame, elements: pd.Series, meters: pd.DataFrame,
                       network: Network) -> UnitsCheck:
    """Pressure loggers and flow meters whose values look off by a known factor.

    Parameters
    ----------
    series : DataFrame
        Per meter on the grid, the file's values (pressure m, flow L/s),
        columns meter IDs.
    elements : Series
        Meter ID -> node ID (pressure loggers) or link ID (flow meters).
    meters : DataFrame
        Registry (index ``meter_id``; ``kind``).
    network : Network

    Returns
    -------
    UnitsCheck

    Raises
    ------
    ReadingsError
        At least :data:`REFUSE_SHARE` of the loggers (or of the flow meters)
        are off by the same factor: the file is in another unit.
    """
    ids = [m for m in elements.index if m in series.columns]
    if not ids:
        return UnitsCheck()
    ref = expected_state(network)
    if ref is None:
        return UnitsCheck()
    pressure_ref, flow_ref = ref
    kind = meters["kind"].astype(str).reindex(ids)
    el = elements.reindex(ids).astype(str)
    checks = []
    for k, what in (("pressure", "pressure loggers"), ("flow", "flow meters")):
        sel = [m for m in ids if kind[m] == k]
        if not sel:
            continue
        if k == "pressure":
            measured = series[sel].median()
            expected = pressure_ref.reindex(el[sel]).to_numpy()
            expected = np.where(expected >= MIN_PRESSURE_M, expected, np.nan)
            ratio = measured / expected
            # a value the network can reach is metres whatever the ratio says
            ratio = ratio.where(measured.to_numpy() > _pressure_ceiling(network, el[sel]), 1.0)
        else:
            measured = _steady_flow(series[sel]) * 1e-3  # L/s -> m³/s
            expected = np.abs(flow_ref.reindex(el[sel]).to_numpy())
            judged = el[sel].isin(_judged_links(network)).to_numpy()
            ratio = measured / np.where((expected >= MIN_FLOW_M3S) & judged, expected, np.nan)
        checks.append(_verdict(ratio, k, what))
    return UnitsCheck(pd.concat([c.suspects for c in checks]) if checks else UnitsCheck().suspects,
                      [w for c in checks for w in c.warnings])


def _steady_flow(flows: pd.DataFrame) -> pd.Series:
    """Mean absolute flow (L/s) per meter, the lower of its first and last thirds in time.

    A unit scales the whole series; a leak or a burst behind the meter adds
    to it from its onset. A 31.7 L/s burst tripled a district inlet's mean
    over a city week, which then read as m³/h and was set aside, hiding the
    burst from the balance. The first third before a step keeps the
    meter's own level; a series off by a unit is off in both thirds.
    """
    third = max(len(flows) // 3, 1)
    first = flows.iloc[:third].abs().mean()
    last = flows.iloc[-third:].abs().mean()
    return pd.concat([first, last], axis=1).min(axis=1, skipna=True)


def _pressure_ceiling(network: Network, nodes: pd.Series) -> np.ndarray:
    """Highest pressure head (m) the network can give at each node: :func:`highest_head` minus elevation, + 5 m."""
    wn = network.wn
    elev = np.array([wn.get_node(n).elevation if n in wn.node_name_list else np.nan for n in nodes])
    return highest_head(network) - elev + 5.0


def daily_use(customer: pd.DataFrame) -> pd.Series:
    """Mean daily consumption per customer meter, m³/day (file units).

    The sum of the register's non-negative steps (a reset counts nothing)
    over the span of its readings; NaN below half a day or two readings.
    """
    c = customer[["meter_id", "timestamp", "value"]].dropna().sort_values(["meter_id", "timestamp"])
    step = c.groupby("meter_id", sort=False)["value"].diff().clip(lower=0.0)
    used = step.groupby(c["meter_id"]).sum()
    t = c.groupby("meter_id")["timestamp"].agg(["min", "max"])
    span = (t["max"] - t["min"]).dt.total_seconds() / 86400.0
    return (used / span.where(span >= 0.5)).rename("m3_per_day")


def check_register_units(customer: pd.DataFrame, meters: pd.DataFrame) -> UnitsCheck:
    """Customer meters whose registers look off by a known factor (litres).

    Parameters
    ----------
    customer : DataFrame
        Long registers: ``meter_id``, ``timestamp`` (tz-aware), ``value``.
    meters : DataFrame
        Registry (index ``meter_id``; optional ``customer_class``).

    Returns
    -------
    UnitsCheck

    Raises
    ------
    ReadingsError
        At least :data:`REFUSE_SHARE` of the consuming meters are off by 1000
        (no verdict below :data:`MIN_CUSTOMERS` consuming meters).
    """
    if customer.empty:
        return UnitsCheck()
    use = daily_use(customer)
    use = use[use > 0]
    if len(use) < MIN_CUSTOMERS:
        return UnitsCheck()
    if "customer_class" in meters.columns:
        cls = meters["customer_class"].astype("string").fillna("").str.strip().str.lower().reindex(use.index)
    else:
        cls = pd.Series("", index=use.index)
    typical = cls.fillna("").map(lambda c: TYPICAL_DAILY_M3.get(c, TYPICAL_DAILY_M3[""])).astype(float)
    return _verdict(use / typical, "customer", "customer meters")
