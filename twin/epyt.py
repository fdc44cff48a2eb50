"""Contract weeks from an independent generator: EPyT-Flow.

EPyT-Flow (``epyt-flow`` on PyPI, the ``bench`` extra; KIOS Research and
Innovation Center of Excellence, University of Cyprus) simulates a scenario
on an EPANET network with its own model of events and uncertainties. This
module runs one such scenario and writes it in the data contract of
``../shared/DESIGN.md``, so the harness can judge the job on weeks that
``twin synth`` did not make:

- the truth: EPyT-Flow's :class:`~epyt_flow.simulation.ScenarioSimulator`
  with :class:`~epyt_flow.uncertainty.ModelUncertainty` (every pipe's
  roughness and every node's base demand drawn within ±10 %), one leak
  (:class:`~epyt_flow.simulation.AbruptLeakage` or
  :class:`~epyt_flow.simulation.IncipientLeakage` growing to its full size
  over 6-24 h, sized for 1-6 % of the mean demand, onset after day 2, in the
  middle of the pipe where EPyT-Flow splits it) and
  :class:`~epyt_flow.uncertainty.SensorNoise` (Gaussian, 5 cm on pressure
  heads, 0.05 m³/h on flows);
- sensors: pressure loggers on about 4 % of the junctions (spread by
  farthest-point sampling) and on every tank; flow meters on the links of
  sources, tanks, pumps and valves and on links between zones (DMA inlets);
- the customer layer, made from EPyT-Flow's node demands (not the model's):
  each junction's demand split between customers beside its pipes (about 2 m³/day
  each, at most 40 per junction unless one would use over 100 m³/day), their
  registers read about twice a day at irregular times, 1 % missing, each
  meter under-registering by 2-5 %;
- timestamps in local time, UTC+08:00, from ``start``.

Files: ``network.inp`` (the utility's nominal model, a copy of the input),
``meters.csv``, ``readings.csv`` (or ``.parquet``) and ``truth.json`` in the
format of :func:`twin.synth.synth_readings` (``leak`` is a record or null,
with ``link_id``, ``position``, ``onset``, ``flow_lps``), plus the water
balance of the truth. The same seed gives the same files.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pyproj
import shapely
import wntr

from twin.crs import parse_crs
from twin.errors import InputError, MissingFileError, SimulationError
from twin.model import Network
from twin.network import read_network
from twin.synth.readings import UTC_OFFSET, farthest_points, iso_timestamp, iso_timestamps

log = logging.getLogger(__name__)

__all__ = ["epyt_week"]

#: Hydraulic and reporting step of the scenario, seconds.
STEP_S = 900
_STEPS_PER_DAY = 86400 // STEP_S
#: UTC offset of every timestamp written (Yingtan, China Standard Time).
#: Gravity in m/h², the unit EPyT-Flow's leak emitter uses for CMH networks.
_G_M_PER_H2 = 9.80665 * 3600.0 ** 2
#: Discharge coefficient of EPyT-Flow's leak emitter.
_DISCHARGE = 0.75
#: Mean daily use per customer meter used to split a node's demand, m³/day.
_CUSTOMER_M3_PER_DAY = 2.0
#: Most customers per junction, unless they would use more than the largest customer.
_MAX_CUSTOMERS_PER_NODE = 40
#: Largest mean use of one customer meter, m³/day (its register must stay below the store's 40 m³/h).
_LARGEST_CUSTOMER_M3_PER_DAY = 100.0


def _epyt() -> Any:
    """The EPyT-Flow classes this module uses, or an error naming the extra to install."""
    try:
        from epyt_flow.simulation import (AbruptLeakage, IncipientLeakage, ModelUncertainty, ScenarioSimulator,
                                          SensorNoise)
        from epyt_flow.uncertainty import AbsoluteGaussianUncertainty, RelativeUniformUncertainty
    except ImportError:
        raise InputError("EPyT-Flow is not installed", element="epyt-flow",
                         fix="pip install 'twin[bench]' (or pip install 'epyt-flow>=0.17,<0.18')") from None
    import epyt_flow

    return {"ScenarioSimulator": ScenarioSimulator, "AbruptLeakage": AbruptLeakage,
            "IncipientLeakage": IncipientLeakage, "ModelUncertainty": ModelUncertainty,
            "SensorNoise": SensorNoise, "AbsoluteGaussianUncertainty": AbsoluteGaussianUncertainty,
            "RelativeUniformUncertainty": RelativeUniformUncertainty,
            "version": getattr(epyt_flow, "VERSION", "")}


def _cmh_copy(network: Network, path: Path, tmp: Path) -> Path:
    """The ``.inp`` EPyT-Flow simulates: ``path`` itself in CMH, else a CMH copy (its leaks need CMH or CFS)."""
    if str(network.wn.options.hydraulic.inpfile_units).upper() == "CMH":
        return path
    out = tmp / "network-cmh.inp"
    wntr.network.write_inpfile(network.wn, str(out), units="CMH")
    return out


@dataclass
class _Run:
    """EPyT-Flow results on the 15-minute grid: times (s), pressure (m), flow (m³/h), demand (m³/h)."""

    t_s: np.ndarray
    pressure: pd.DataFrame
    flow: pd.DataFrame
    demand: pd.DataFrame


def _simulate(ep: dict, inp: Path, tmp: Path, *, duration_s: int, pressure_at: list[str], flow_at: list[str],
              leak: Any = None, seeds: tuple[int, int] | None = None) -> _Run:
    """One EPyT-Flow run: sensors where asked, demands at every node, noise-free demands."""
    sim = ep["ScenarioSimulator"](f_inp_in=str(inp), rpt_file_out=str(tmp / "epyt.rpt"))
    try:
        sim.set_general_parameters(simulation_duration=duration_s, hydraulic_time_step=STEP_S,
                                   reporting_time_step=STEP_S)
        sim.set_pressure_sensors(pressure_at)
        if flow_at:
            sim.set_flow_sensors(flow_at)
        sim.place_demand_sensors_everywhere()
        if seeds is not None:
            rel = ep["RelativeUniformUncertainty"]
            sim.set_model_uncertainty(ep["ModelUncertainty"](
                global_pipe_roughness_uncertainty=rel(low=0.9, high=1.1),
                global_base_demand_uncertainty=rel(low=0.9, high=1.1), seed=seeds[0]))
            sim.set_sensor_noise(ep["SensorNoise"](
                global_uncertainty=ep["AbsoluteGaussianUncertainty"](mean=0.0, scale=0.05), seed=seeds[1]))
        if leak is not None:
            sim.add_leakage(leak)
        res = sim.run_hydraulic_simulation(float_type=np.float64)
    except Exception as exc:
        raise SimulationError(f"EPyT-Flow failed ({type(exc).__name__}: {exc})", path=inp,
                              fix="check that EPANET solves the network") from None
    finally:
        sim.close()
    return _tables(ep, res)


def _tables(ep: dict, res: Any) -> _Run:
    """The SCADA data as tables: noisy pressures and flows, then the noise-free demands."""
    cfg = res.sensor_config
    t_s = np.asarray(res.sensor_readings_time, dtype=np.int64)
    pressure = pd.DataFrame(res.get_data_pressures(), columns=list(cfg.pressure_sensors))
    flow = pd.DataFrame(res.get_data_flows(), columns=list(cfg.flow_sensors)) if cfg.flow_sensors else \
        pd.DataFrame(index=range(len(t_s)))
    res.change_sensor_noise(ep["SensorNoise"](global_uncertainty=ep["AbsoluteGaussianUncertainty"](
        mean=0.0, scale=0.0), seed=0))
    demand = pd.DataFrame(res.get_data_demands(), columns=list(cfg.demand_sensors))
    return _Run(t_s, pressure, flow, demand)


def _flow_meter_links(network: Network) -> list[str]:
    """Links of sources, tanks, pumps and valves, and open links between two zones (DMA inlets)."""
    nodes, links = network.nodes, network.links
    kind_s = nodes["node_type"].reindex(links["start_node"]).to_numpy()
    kind_e = nodes["node_type"].reindex(links["end_node"]).to_numpy()
    zone = nodes["zone"].astype(object).where(nodes["zone"].notna(), "").astype(str)
    zone_s = zone.reindex(links["start_node"]).fillna("").to_numpy()
    zone_e = zone.reindex(links["end_node"]).fillna("").to_numpy()
    crossing = (zone_s != "") & (zone_e != "") & (zone_s != zone_e)
    storage = np.isin(kind_s, ["reservoir", "tank"]) | np.isin(kind_e, ["reservoir", "tank"])
    active = links["link_type"].isin(["pump", "valve"]).to_numpy()
    # a closed pipe is a boundary; a pump or valve closed at the start runs under the controls
    is_open = (links["status"].astype(str) != "closed").to_numpy() | active
    return [str(x) for x in links.index[is_open & (active | storage | crossing)]]


def _logger_nodes(network: Network, min_pressure: pd.Series, share: float, rng: np.random.Generator) -> list[str]:
    """Pressure loggers: ``share`` of the junctions spread out among those with 2 m of pressure at all
    times of the first day (``min_pressure``, m), and every tank."""
    junc = network.nodes.index[network.nodes["node_type"] == "junction"]
    ok = junc[min_pressure.reindex(junc).fillna(0).to_numpy() > 2.0]
    ok = ok if len(ok) else junc
    xy = np.column_stack([network.nodes.geometry.x.reindex(ok), network.nodes.geometry.y.reindex(ok)])
    pick = farthest_points(xy, max(1, round(share * len(junc))), int(rng.integers(len(xy)))) if len(xy) else []
    tanks = network.nodes.index[network.nodes["node_type"] == "tank"]
    return [*ok[np.sort(pick)].astype(str), *tanks.astype(str)]


@dataclass
class _Leak:
    """The planted leak: where, when, how big; ``event`` is EPyT-Flow's object."""

    link_id: str
    kind: str
    onset_s: int
    peak_s: int
    area_m2: float
    target_lps: float
    event: Any


def _plan_leak(ep: dict, network: Network, base: _Run, *, days: int, rng: np.random.Generator) -> _Leak:
    """A pipe (by length, pressure above 10 m at both ends), a kind, an onset after day 2, 1-6 % of demand."""
    pipes = network.links[(network.links["link_type"] == "pipe")
                          & (network.links["status"].astype(str) != "closed")]
    p_mean = base.pressure.mean()
    ps = p_mean.reindex(pipes["start_node"]).to_numpy()
    pe = p_mean.reindex(pipes["end_node"]).to_numpy()
    good = (np.nan_to_num(ps) > 10) & (np.nan_to_num(pe) > 10) & (pipes["length_m"].to_numpy() > 10)
    if not good.any():
        raise SimulationError("no pipe has 10 m of pressure at both ends for a leak", path=network.source,
                              fix="check the network's heads and elevations")
    w = np.where(good, pipes["length_m"].to_numpy(), 0.0)
    i = int(rng.choice(len(pipes), p=w / w.sum()))
    link_id = str(pipes.index[i])
    junctions = network.nodes.index[network.nodes["node_type"] == "junction"]
    q_sys_m3h = float(base.demand.reindex(columns=junctions).sum(axis=1).mean())
    target_m3h = float(rng.uniform(0.01, 0.06)) * q_sys_m3h
    area = target_m3h / (_DISCHARGE * math.sqrt(2.0 * _G_M_PER_H2 * 0.5 * (ps[i] + pe[i])))
    end_s = days * 86400
    onset = int(rng.uniform(2 * 86400 + 3600, max(end_s - 18 * 3600, 2 * 86400 + 7200)))
    onset -= onset % STEP_S
    kind = "incipient" if rng.random() < 0.5 else "abrupt"
    peak = min(onset + STEP_S * int(rng.integers(24, 97)), end_s - STEP_S)
    if kind == "incipient" and peak > onset:
        event = ep["IncipientLeakage"](link_id=link_id, area=float(area), start_time=onset, end_time=end_s,
                                       peak_time=peak)
    else:
        kind, peak = "abrupt", onset
        event = ep["AbruptLeakage"](link_id=link_id, area=float(area), start_time=onset, end_time=end_s)
    return _Leak(link_id, kind, onset, peak, float(area), target_m3h / 3.6, event)


@dataclass
class _Balance:
    """The truth's water balance per 15-minute step, m³/s."""

    supply: np.ndarray  # outflow of the reservoirs
    tank: np.ndarray  # tank filling
    consumption: np.ndarray  # junction demands
    leak: np.ndarray  # the planted leak: supply - tank - consumption


def _balance(network: Network, run: _Run) -> _Balance:
    """Supply, tank filling, consumption and the leak from EPyT-Flow's node demands (m³/h to m³/s)."""
    kinds = network.nodes["node_type"]
    d = run.demand / 3600.0
    supply = -d.reindex(columns=kinds.index[kinds == "reservoir"]).sum(axis=1).to_numpy()
    tank = d.reindex(columns=kinds.index[kinds == "tank"]).sum(axis=1).to_numpy()
    cons = d.reindex(columns=kinds.index[kinds == "junction"]).sum(axis=1).to_numpy()
    return _Balance(supply, tank, cons, supply - tank - cons)


def _customers(network: Network, demand: pd.DataFrame, rng: np.random.Generator,
               to_lonlat: pyproj.Transformer) -> pd.DataFrame:
    """Customers of every junction with demand: share of its demand, lon/lat beside one of its pipes."""
    junc = network.nodes.index[network.nodes["node_type"] == "junction"]
    mean_m3_day = demand.reindex(columns=junc).clip(lower=0).mean().fillna(0.0) * 24.0
    mean_m3_day = mean_m3_day[mean_m3_day > 0]
    daily = mean_m3_day.to_numpy()
    n_per = np.maximum(np.clip(np.rint(daily / _CUSTOMER_M3_PER_DAY), 1, _MAX_CUSTOMERS_PER_NODE),
                       np.ceil(daily / _LARGEST_CUSTOMER_M3_PER_DAY)).astype(int)
    home = np.repeat(mean_m3_day.index.to_numpy(), n_per)
    weight = np.exp(rng.normal(0.0, 0.5, len(home)))
    share = weight / pd.Series(weight).groupby(home).transform("sum").to_numpy()
    x, y = _beside_pipes(network, home, rng)
    lon, lat = to_lonlat.transform(x, y)
    width = max(6, len(str(len(home))))
    return pd.DataFrame({"meter_id": [f"C{i:0{width}d}" for i in range(1, len(home) + 1)], "home_node": home,
                         "share": share, "lon": np.round(lon, 7), "lat": np.round(lat, 7)})


def _beside_pipes(network: Network, home: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x, y (network CRS, m) of customers: along a pipe of their junction, 2-30 % of its length out, 5-20 m aside."""
    links = network.links[network.links["link_type"] == "pipe"]
    ends = pd.concat([pd.DataFrame({"node": links["start_node"], "link": links.index, "from_start": True}),
                      pd.DataFrame({"node": links["end_node"], "link": links.index, "from_start": False})])
    by_node = {n: g[["link", "from_start"]].to_numpy() for n, g in ends.groupby("node", sort=True)}
    geoms, pos = [], []
    for node in home:
        options = by_node.get(node)
        if options is None:
            geoms.append(None)
            pos.append(0.0)
            continue
        link, from_start = options[int(rng.integers(len(options)))]
        f = float(rng.uniform(0.02, 0.3))
        geoms.append(links.geometry.loc[link])
        pos.append(f if from_start else 1.0 - f)
    return _offset_points(network, home, np.array(geoms, dtype=object), np.array(pos), rng)


def _offset_points(network: Network, home: np.ndarray, geoms: np.ndarray, pos: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points at ``pos`` along ``geoms`` moved 5-20 m to a random side; beside the home node where no pipe."""
    x = network.nodes.geometry.x.reindex(home).to_numpy().copy()
    y = network.nodes.geometry.y.reindex(home).to_numpy().copy()
    side = rng.choice([-1.0, 1.0], len(home)) * rng.uniform(5.0, 20.0, len(home))
    has = np.array([g is not None for g in geoms])
    if has.any():
        lines = geoms[has]
        a = shapely.line_interpolate_point(lines, np.clip(pos[has] - 0.01, 0, 1), normalized=True)
        b = shapely.line_interpolate_point(lines, np.clip(pos[has] + 0.01, 0, 1), normalized=True)
        p = shapely.line_interpolate_point(lines, pos[has], normalized=True)
        tx, ty = shapely.get_x(b) - shapely.get_x(a), shapely.get_y(b) - shapely.get_y(a)
        norm = np.hypot(tx, ty)
        norm[norm == 0] = 1.0
        x[has] = shapely.get_x(p) - ty / norm * side[has]
        y[has] = shapely.get_y(p) + tx / norm * side[has]
    x[~has] += side[~has]
    return x, y


def _register_rows(cust: pd.DataFrame, run: _Run, *, days: int,
                   rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Customer registers (m³) about twice a day at irregular times, 1 % missing; and the under-registration."""
    n = len(cust)
    end_s = days * 86400
    grid = run.t_s[run.t_s <= end_s].astype(float)
    q = run.demand.reindex(columns=pd.unique(cust["home_node"])).iloc[: len(grid)].clip(lower=0) / 3600.0
    cum = np.vstack([np.zeros(q.shape[1]), np.cumsum(q.to_numpy()[:-1] * np.diff(grid)[:, None], axis=0)])
    col = pd.Index(q.columns).get_indexer(cust["home_node"])
    under = rng.uniform(0.02, 0.05, n)
    start = np.round(rng.gamma(2.0, 400.0, n), 3)
    per = 2 * days
    t = (np.arange(per)[None, :] * 43200.0 + rng.uniform(0, 43200.0, n)[:, None]
         + rng.normal(0, 1200.0, (n, per))).clip(0, end_s - 1)
    t = np.floor(t)
    vol = np.empty_like(t)
    for j in np.unique(col):
        rows = col == j
        vol[rows] = np.interp(t[rows], grid, cum[:, j])
    reg = np.floor((start[:, None] + vol * cust["share"].to_numpy()[:, None] * (1.0 - under[:, None])) * 1000) / 1000
    keep = rng.random(t.shape) >= 0.01
    ids = np.repeat(cust["meter_id"].to_numpy()[:, None], per, axis=1)
    return pd.DataFrame({"meter_id": ids[keep], "t_s": t[keep], "value": reg[keep]}), under


def _sensor_rows(run: _Run, loggers: list[str], flow_links: list[str], *, days: int,
                 rng: np.random.Generator) -> pd.DataFrame:
    """Pressure heads (m) and flows (L/s) every 15 minutes, 0.2 % missing."""
    n_t = int(np.searchsorted(run.t_s, days * 86400, side="left"))
    parts = []
    for prefix, table, scale in (("PRS", run.pressure.reindex(columns=loggers), 1.0),
                                 ("FLW", run.flow.reindex(columns=flow_links), 1.0 / 3.6)):
        if table.shape[1] == 0:
            continue
        vals = table.to_numpy()[:n_t] * scale
        keep = rng.random(vals.shape) >= 0.002
        ids = np.array([f"{prefix}-{c}" for c in table.columns], dtype=object)
        ti, ci = np.nonzero(keep)
        parts.append(pd.DataFrame({"meter_id": ids[ci], "t_s": run.t_s[ti].astype(float),
                                   "value": np.round(vals[ti, ci], 3)}))
    return pd.concat(parts, ignore_index=True)


def _meters_table(network: Network, cust: pd.DataFrame, loggers: list[str], flow_links: list[str],
                  to_lonlat: pyproj.Transformer) -> pd.DataFrame:
    """``meters.csv``: customers, pressure loggers on their nodes, flow meters at the middle of their links."""
    nodes = network.nodes.geometry.reindex(loggers)
    mid = shapely.line_interpolate_point(network.links.geometry.reindex(flow_links).to_numpy(), 0.5,
                                         normalized=True) if flow_links else np.array([])
    xs = np.concatenate([nodes.x.to_numpy(), shapely.get_x(mid)]) if len(mid) else nodes.x.to_numpy()
    ys = np.concatenate([nodes.y.to_numpy(), shapely.get_y(mid)]) if len(mid) else nodes.y.to_numpy()
    lon, lat = to_lonlat.transform(xs, ys)
    n_p, n_f = len(loggers), len(flow_links)
    sensors = pd.DataFrame({
        "meter_id": [*(f"PRS-{n}" for n in loggers), *(f"FLW-{l}" for l in flow_links)],
        "kind": ["pressure"] * n_p + ["flow"] * n_f, "lon": np.round(lon, 7), "lat": np.round(lat, 7),
        "node_id": list(loggers) + [""] * n_f, "link_id": [""] * n_p + list(flow_links)})
    customers = pd.DataFrame({"meter_id": cust["meter_id"], "kind": "customer", "lon": cust["lon"],
                              "lat": cust["lat"], "node_id": "", "link_id": ""})
    return pd.concat([customers, sensors], ignore_index=True)


def _write_readings(rows: pd.DataFrame, path: Path, start: pd.Timestamp, rng: np.random.Generator) -> None:
    """Readings in any order (shuffled), timestamps with offset, CSV or Parquet by the suffix."""
    rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
    table = pa.table({"meter_id": pa.array(rows["meter_id"].astype(str).to_numpy()),
                      "timestamp": iso_timestamps(rows["t_s"].to_numpy(), start),
                      "value": pa.array(rows["value"].to_numpy(dtype=float))})
    if path.suffix == ".parquet":
        pq.write_table(table, path, compression="zstd")
    else:
        pcsv.write_csv(table, path, pcsv.WriteOptions(quoting_style="none"))


def _leak_record(leak: _Leak | None, network: Network, bal: _Balance, t_s: np.ndarray,
                 start: pd.Timestamp) -> dict[str, Any] | None:
    """``truth.json``'s ``leak``: as :func:`twin.synth.synth_readings` writes it, plus the kind and peak."""
    if leak is None:
        return None
    row = network.links.loc[leak.link_id]
    after = t_s >= leak.onset_s
    # EPANET's node demands at the reporting instants leave a small residual without a leak (~0.1 % of supply)
    residual = float(bal.leak[~after].mean()) if (~after).any() else 0.0
    return {"link_id": leak.link_id, "position": 0.5, "node_start": str(row["start_node"]),
            "node_end": str(row["end_node"]), "onset": iso_timestamp(leak.onset_s, start),
            "onset_s": leak.onset_s, "kind": leak.kind,
            "peak": iso_timestamp(leak.peak_s, start),
            "area_m2": float(f"{leak.area_m2:.6g}"), "target_flow_lps": round(leak.target_lps, 4),
            "flow_lps": round(float(bal.leak[after].mean() - residual) * 1000.0, 4) if after.any() else 0.0,
            "final_flow_lps": round(float(bal.leak[-1] - residual) * 1000.0, 4),
            "balance_residual_lps": round(residual * 1000.0, 4)}


def _m3(flow_m3s: np.ndarray) -> float:
    """Volume of a series of 15-minute flows (m³/s), m³."""
    return round(float(flow_m3s.sum() * STEP_S), 3)


def _truth_document(*, leak: dict | None, seed: int, days: int, crs: pyproj.CRS, network_path: Path,
                    start: pd.Timestamp, bal: _Balance, cust: pd.DataFrame, under: np.ndarray, registered_m3: float,
                    loggers: list[str], flow_links: list[str], n_rows: int, version: str) -> dict[str, Any]:
    """The content of ``truth.json`` (key order is part of the file)."""
    return {
        "leak": leak, "seed": int(seed), "days": days, "crs": crs.to_string(), "network": network_path.name,
        "generator": "epyt-flow", "generator_version": version,
        "start": iso_timestamp(0, start), "timezone_offset": UTC_OFFSET, "step_s": STEP_S,
        "system_input_m3_per_day": round(float((bal.supply - bal.tank).sum() * STEP_S / days), 3),
        "source_input_m3": _m3(bal.supply), "tank_filling_m3": _m3(bal.tank), "consumption_m3": _m3(bal.consumption),
        "leak_m3": _m3(bal.leak),
        "per_day": [{"date": (start + pd.Timedelta(days=d)).strftime("%Y-%m-%d"),
                     **{f"{k}_m3": _m3(getattr(bal, k)[d * _STEPS_PER_DAY:(d + 1) * _STEPS_PER_DAY])
                        for k in ("supply", "tank", "consumption", "leak")}} for d in range(days)],
        "balance_note": "source_input_m3 = tank_filling_m3 + consumption_m3 + leak_m3 (EPyT-Flow node demands "
                        "at 15-min steps; per_day: supply = tank + consumption + leak); customers register "
                        "consumption times (1 - under-registration)",
        "customers": {"count": len(cust), "source": "split from EPyT-Flow node demands",
                      "under_registration_mean": round(float(under.mean()), 5),
                      "registered_m3": round(registered_m3, 3)},
        "pressure_loggers": len(loggers), "flow_meters": len(flow_links), "readings_rows": int(n_rows),
        "uncertainty": {"pipe_roughness": "uniform x[0.9, 1.1] per pipe (EPyT-Flow ModelUncertainty)",
                        "base_demand": "uniform x[0.9, 1.1] per node (EPyT-Flow ModelUncertainty)",
                        "sensor_noise": "Gaussian, sd 0.05 m on pressure heads, 0.05 m3/h on flows "
                                        "(EPyT-Flow SensorNoise)"},
    }


def _registered_m3(cust: pd.DataFrame, run: _Run, under: np.ndarray, days: int) -> float:
    """What the customers' registers add up to over the whole period, m³ (before rounding and gaps)."""
    grid = run.t_s[run.t_s <= days * 86400]
    q = run.demand.reindex(columns=cust["home_node"]).iloc[: len(grid)].clip(lower=0).to_numpy() / 3600.0
    vol = (q[:-1] * np.diff(grid)[:, None]).sum(axis=0)
    return float((vol * cust["share"].to_numpy() * (1.0 - under)).sum())


def epyt_week(network_path: str | Path, *, crs: str | pyproj.CRS, days: int = 7, leak: bool = True, seed: int = 0,
              out_dir: str | Path, start: str = "2026-03-02", readings_format: str = "csv",
              logger_share: float = 0.04) -> dict[str, Path]:
    """Simulate a week with EPyT-Flow and write it as a contract week.

    Parameters
    ----------
    network_path : str or Path
        The utility's EPANET ``.inp`` (any flow units; simulated in CMH).
    crs : str or pyproj.CRS
        Projected CRS of the ``.inp`` coordinates (meters' lon/lat are its inverse).
    days : int
        Whole local days (>= 3 with a leak, whose onset falls after day 2).
    leak : bool
        Plant one leak (abrupt or incipient, 1-6 % of the mean demand).
    seed : int
        Seed of every random draw (EPyT-Flow's uncertainties included).
    out_dir : str or Path
        Folder (created): ``network.inp``, ``meters.csv``,
        ``readings.csv``/``.parquet``, ``truth.json``.
    start : str
        Local date of the first day; timestamps carry +08:00.
    readings_format : {"csv", "parquet"}
        Format of the readings file.
    logger_share : float
        Share of junctions with a pressure logger.

    Returns
    -------
    dict of str to Path
        ``network``, ``meters``, ``readings``, ``truth``.

    Raises
    ------
    InputError
        EPyT-Flow is not installed, or bad arguments.
    SimulationError
        EPyT-Flow / EPANET fails on the network.
    """
    network_path = Path(network_path)
    if not network_path.exists():
        raise MissingFileError("network file does not exist", path=network_path, fix="check the path")
    if int(days) != days or days < (3 if leak else 1):
        raise InputError(f"days must be a whole number >= {3 if leak else 1}, got {days}", element="days",
                         fix="give e.g. days=7")
    if readings_format not in ("csv", "parquet"):
        raise InputError(f"unknown readings format {readings_format!r}", element="readings_format",
                         fix="use csv or parquet")
    ep = _epyt()
    proj = parse_crs(crs)
    network = read_network(network_path, crs=proj)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    r_sensors, r_leak, r_cust, r_read, r_noise = rng.spawn(5)
    with tempfile.TemporaryDirectory(prefix="twin-epyt-") as tmp_name:
        tmp = Path(tmp_name)
        inp = _cmh_copy(network, network_path, tmp)
        junctions = list(network.nodes.index[network.nodes["node_type"] == "junction"].astype(str))
        base = _simulate(ep, inp, tmp, duration_s=86400, pressure_at=junctions, flow_at=[])
        loggers = _logger_nodes(network, base.pressure.min(), logger_share, r_sensors)
        flow_links = _flow_meter_links(network)
        planted = _plan_leak(ep, network, base, days=days, rng=r_leak) if leak else None
        seeds = tuple(int(s) for s in r_noise.integers(0, 2**31 - 1, 2))
        run = _simulate(ep, inp, tmp, duration_s=days * 86400, pressure_at=loggers, flow_at=flow_links,
                        leak=planted.event if planted else None, seeds=seeds)
    return _write_week(out, network, network_path, run, planted, loggers, flow_links, proj, days=days,
                       seed=seed, start=pd.Timestamp(start).normalize(), readings_format=readings_format,
                       rngs=(r_cust, r_read), version=str(ep["version"]))


def _write_week(out: Path, network: Network, network_path: Path, run: _Run, planted: _Leak | None,
                loggers: list[str], flow_links: list[str], proj: pyproj.CRS, *, days: int, seed: int,
                start: pd.Timestamp, readings_format: str, rngs: tuple[np.random.Generator, ...],
                version: str) -> dict[str, Path]:
    """The customer layer, the readings and the truth of one run, written as the contract's files."""
    r_cust, r_read = rngs
    to_lonlat = pyproj.Transformer.from_crs(proj, "EPSG:4326", always_xy=True)
    n_t = int(np.searchsorted(run.t_s, days * 86400, side="left"))
    bal = _balance(network, _Run(run.t_s[:n_t], run.pressure.iloc[:n_t], run.flow.iloc[:n_t],
                                 run.demand.iloc[:n_t]))
    cust = _customers(network, run.demand.iloc[:n_t], r_cust, to_lonlat)
    registers, under = _register_rows(cust, run, days=days, rng=r_read)
    rows = pd.concat([registers, _sensor_rows(run, loggers, flow_links, days=days, rng=r_read)], ignore_index=True)
    paths = {"network": out / "network.inp", "meters": out / "meters.csv",
             "readings": out / f"readings.{readings_format}", "truth": out / "truth.json"}
    if paths["network"].resolve() != network_path.resolve():
        shutil.copyfile(network_path, paths["network"])
    meters = _meters_table(network, cust, loggers, flow_links, to_lonlat)
    pcsv.write_csv(pa.Table.from_pandas(meters, preserve_index=False), paths["meters"],
                   pcsv.WriteOptions(quoting_style="needed"))
    _write_readings(rows, paths["readings"], start, r_read)
    truth = _truth_document(leak=_leak_record(planted, network, bal, run.t_s[:n_t], start), seed=seed, days=days,
                            crs=proj, network_path=network_path, start=start, bal=bal, cust=cust, under=under,
                            registered_m3=_registered_m3(cust, run, under, days), loggers=loggers,
                            flow_links=flow_links, n_rows=len(rows), version=version)
    paths["truth"].write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    log.info("EPyT-Flow week on %s: %d days, %d customers, %d loggers, %d flow meters, leak %s",
             network_path.name, days, len(cust), len(loggers), len(flow_links),
             f"{truth['leak']['flow_lps']:.2f} L/s on {planted.link_id}" if planted else "none")
    return paths
