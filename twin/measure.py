"""Measurements of one period, ready for the localisation job.

One path from readings to the job's inputs, whatever holds the readings (a
:class:`twin.store.Store` or a long readings frame):

- logger and flow-meter series on the 15-minute grid with the store's one
  gap rule (:func:`twin.store.grid_series`, :func:`twin.store.fill_gaps`);
- sensors that cannot be used (not in the network, silent, stuck) set aside
  with a reason (:func:`screen_sensors`);
- series per network element in SI: pressure heads and tank levels by node
  (m), flows by link (m³/s, the mean of the meters on a link)
  (:func:`element_series`);
- the customers' registers, long, for :func:`twin.demand.window_demand`;
- series that look off from the contract's units by a known factor (kPa,
  m³/h, litres) set aside with a warning, or the whole file refused
  (:mod:`twin.units`).

The system input and the DMA net inflows are computed from these by
:func:`twin.dma.system_input` and :func:`twin.dma.dma_net_inflow`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from twin import settings
from twin.network import Network
from twin.store import Store, fill_gaps, grid_series
from twin.units import check_register_units, check_sensor_units

log = logging.getLogger(__name__)

REJECTED_COLUMNS = ["meter_id", "kind", "element", "reason"]

#: Smallest share of the grid's steps a logger or flow meter must report.
MIN_COVERAGE = 0.5


@dataclass
class Measurements:
    """Sensor series and customer registers of one period.

    Attributes
    ----------
    pressure : DataFrame
        Index the grid (UTC), columns node IDs: pressure head (m) at
        junctions, level (m) at tanks.
    flow : DataFrame
        Same index, columns link IDs: flow (m³/s, start to end node).
    rejected : DataFrame
        Sensors not used: ``meter_id``, ``kind``, ``element``, ``reason``.
    customer : DataFrame
        Customer registers, long: ``meter_id``, ``timestamp`` (UTC),
        ``value`` (m³), optionally ``flag``.
    rows : int
        Readings rows behind these measurements (all kinds).
    warnings : list of str
        Problems the job's report must show (series off from the contract's
        units, :mod:`twin.units`).
    """

    pressure: pd.DataFrame
    flow: pd.DataFrame
    rejected: pd.DataFrame
    customer: pd.DataFrame
    rows: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def grid(self) -> pd.DatetimeIndex:
        """The 15-minute grid (UTC)."""
        return self.pressure.index if not self.pressure.empty else self.flow.index


def _registry(meters: pd.DataFrame) -> pd.DataFrame:
    """Registry with a string ``meter_id`` index and string ``kind``."""
    reg = meters.copy()
    if "meter_id" in reg.columns:
        reg = reg.set_index("meter_id")
    reg.index = reg.index.astype(str)
    reg["kind"] = reg["kind"].astype(str)
    return reg


def screen_sensors(
    raw: pd.DataFrame,
    meters: pd.DataFrame,
    network: Network,
    *,
    min_coverage: float = MIN_COVERAGE,
) -> tuple[pd.Series, pd.DataFrame]:
    """Which loggers and flow meters can be used, and why the others cannot.

    Parameters
    ----------
    raw : DataFrame
        Series per meter on the grid, gaps NOT filled (index UTC, columns meter IDs).
    meters : DataFrame
        Registry: index ``meter_id``; ``kind``, ``node_id``, ``link_id``.
    network : Network
    min_coverage : float
        Smallest share of grid steps a sensor must report.

    Returns
    -------
    Series
        Index the usable meter IDs, values their element (node ID for
        pressure loggers, link ID for flow meters), in registry order.
    DataFrame
        ``meter_id``, ``kind``, ``element``, ``reason`` of the others.
    """
    reg = _registry(meters)
    sensors = reg[reg["kind"].isin(["pressure", "flow"])]
    wn = network.wn
    nodes, links = set(wn.node_name_list), set(wn.link_name_list)
    kept: dict[str, str] = {}
    rejected: list[dict] = []
    for mid, row in sensors.iterrows():
        kind = row["kind"]
        element = str(row["node_id"] if kind == "pressure" else row["link_id"])
        reason = _sensor_problem(raw, mid, kind, element, nodes if kind == "pressure" else links, min_coverage)
        if reason:
            rejected.append({"meter_id": mid, "kind": kind, "element": "" if reason.endswith("_id") else element,
                             "reason": reason})
        else:
            kept[mid] = element
    return pd.Series(kept, dtype=object), pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def _sensor_problem(raw: pd.DataFrame, mid: str, kind: str, element: str, elements: set[str],
                    min_coverage: float) -> str:
    """Why a sensor cannot be used ("" when it can)."""
    if element in ("", "nan", "<NA>", "None"):
        return f"{kind} meter without {'node_id' if kind == 'pressure' else 'link_id'}"
    if element not in elements:
        return "not in the network"
    if raw.empty:
        return "no readings"
    if mid not in raw.columns or not raw[mid].notna().any():
        return "silent: no readings"
    cover = float(raw[mid].notna().mean())
    if cover < min_coverage:
        return f"silent: {cover:.0%} of the 15-min steps reported"
    if kind == "pressure" and raw[mid].nunique() <= 1:
        return "stuck: constant value"
    return ""


def element_series(series: pd.DataFrame, elements: pd.Series, meters: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Meter series as series per network element, in SI.

    Parameters
    ----------
    series : DataFrame
        Per meter on the grid (pressure m, flow L/s), columns meter IDs.
    elements : Series
        Meter ID -> node ID (pressure loggers) or link ID (flow meters).
    meters : DataFrame
        Registry (``kind``) of those meters.

    Returns
    -------
    pressure : DataFrame
        Columns node IDs, m (the mean of the loggers on a node).
    flow : DataFrame
        Columns link IDs, m³/s (the mean of the meters on a link).
    """
    kind = _registry(meters)["kind"].reindex(elements.index)
    out = []
    for k, scale in (("pressure", 1.0), ("flow", 1e-3)):
        ids = elements.index[kind.eq(k).to_numpy()]
        names = list(dict.fromkeys(elements[ids]))
        if len(ids):
            by = series[ids].T.groupby(elements[ids].to_numpy(), sort=False).mean().T * scale
        else:
            by = pd.DataFrame(index=series.index)
        out.append(by.reindex(columns=names))
    return out[0], out[1]


def measurements_from_readings(
    readings: pd.DataFrame,
    meters: pd.DataFrame,
    network: Network,
    *,
    min_coverage: float = MIN_COVERAGE,
    max_gap: int = settings.GAP_FILL_SAMPLES,
) -> Measurements:
    """Measurements from a long readings frame (the data contract's units).

    Parameters
    ----------
    readings : DataFrame
        ``meter_id``, ``timestamp`` (tz-aware or ISO 8601 with offset), ``value``
        (m³ registers, m pressure heads, L/s flows).
    meters : DataFrame
        Registry: index ``meter_id``; ``kind``, ``node_id``, ``link_id``.
    network : Network
    min_coverage : float
        See :func:`screen_sensors`.
    max_gap : int
        Longest gap filled, samples (:func:`twin.store.fill_gaps`).
    """
    reg = _registry(meters)
    ids = readings["meter_id"].astype(str)
    loggers = reg.index[reg["kind"].isin(["pressure", "flow"])]
    customers = reg.index[reg["kind"].eq("customer")]
    r = readings[ids.isin(loggers)]
    raw = grid_series(r, max_gap=0) if len(r) else pd.DataFrame()
    customer = readings[ids.isin(customers)].copy()
    customer["meter_id"] = customer["meter_id"].astype(str)
    if not isinstance(customer["timestamp"].dtype, pd.DatetimeTZDtype):
        customer["timestamp"] = pd.to_datetime(customer["timestamp"], utc=True, format="ISO8601")
    customer["timestamp"] = customer["timestamp"].dt.tz_convert("UTC")
    customer["value"] = pd.to_numeric(customer["value"], errors="coerce")
    return _assemble(raw, customer, reg, network, len(readings), min_coverage, max_gap)


def measurements_from_store(
    store: Store,
    network: Network,
    *,
    meters: pd.DataFrame | None = None,
    min_coverage: float = MIN_COVERAGE,
    max_gap: int = settings.GAP_FILL_SAMPLES,
    start: Any = None,
    end: Any = None,
) -> Measurements:
    """Measurements from the store's series and customer readings.

    Parameters
    ----------
    store : Store
    network : Network
    meters : DataFrame, optional
        Registry (default the store's).
    min_coverage, max_gap :
        As :func:`measurements_from_readings`.
    start, end : tz-aware time, optional
        Read only the readings of ``[start, end)`` (default: all stored), e.g.
        the week of a nightly run from a store filled day by day.
    """
    reg = _registry(meters if meters is not None else store.meter_table())
    parts = [store.series(kind, max_gap=0, start=start, end=end) for kind in ("pressure", "flow")]
    parts = [p for p in parts if len(p.columns)]
    raw = pd.DataFrame()
    if parts:
        raw = pd.concat(parts, axis=1)
        step = pd.Timedelta(seconds=settings.LOGGER_INTERVAL_S)
        raw = raw.reindex(pd.date_range(raw.index.min(), raw.index.max(), freq=step, name="timestamp"))
    customer = store.readings(kind="customer", start=start, end=end)
    rows = store.reading_count() if start is None and end is None else store.reading_count(start=start, end=end)
    return _assemble(raw, customer, reg, network, rows, min_coverage, max_gap)


def _assemble(raw: pd.DataFrame, customer: pd.DataFrame, reg: pd.DataFrame, network: Network, rows: int,
              min_coverage: float, max_gap: int) -> Measurements:
    """Screen the sensors and their units, fill the gaps, convert to element series.

    Raises
    ------
    ReadingsError
        A whole kind of readings looks off from the contract's units by a
        known factor (:mod:`twin.units`).
    """
    elements, rejected = screen_sensors(raw, reg, network, min_coverage=min_coverage)
    customer, warnings = _screen_registers(customer, reg)
    if raw.empty or elements.empty:
        empty = pd.DataFrame()
        return Measurements(empty, empty, rejected, customer, rows, warnings)
    units = check_sensor_units(raw, elements, reg, network)
    if len(units.suspects):
        off = [m for m in elements.index if m in units.suspects.index]
        rejected = pd.concat([rejected, pd.DataFrame(
            [{"meter_id": m, "kind": reg.at[m, "kind"], "element": elements[m], "reason": units.reason(m)}
             for m in off], columns=REJECTED_COLUMNS)], ignore_index=True)
        elements = elements.drop(off)
        warnings = warnings + units.warnings
    series = fill_gaps(raw[elements.index], max_gap=max_gap)
    pressure, flow = element_series(series, elements, reg)
    log.info("measurements: %d pressure loggers, %d flow meters on %d steps; %d sensors set aside; "
             "%s customer readings", pressure.shape[1], flow.shape[1], len(series), len(rejected),
             f"{len(customer):,}")
    return Measurements(pressure, flow, rejected, customer, rows, warnings)


def _screen_registers(customer: pd.DataFrame, reg: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Customer registers without the meters whose values look off by a known factor, and the warnings."""
    units = check_register_units(customer, reg)
    if not len(units.suspects):
        return customer, []
    keep = ~customer["meter_id"].astype(str).isin(units.suspects.index)
    return customer.loc[keep.to_numpy()], units.warnings
