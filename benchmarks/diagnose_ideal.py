"""Prototype (issue 10): localise with the network's mass balance over time.

Diagnosis script, not part of the package. For every week folder given (the
``ideal/`` validation weeks by default) it prints the rank of the leaking pipe

* ``job``: ``twin.localise.localise`` as it is (tanks as fixed heads per
  snapshot);
* ``job+fix``: the six bugs found in the diagnosis were first patched here at
  run time; they are fixed in the package now, so this column equals ``job``;
  ``job+fix-dma`` is the job without the
  per-DMA demand shaping and DMA prior;
* ``eps``: the prototype below.

The prototype is a method a utility can run (truth only for scoring):

1. onset ``τ`` and leak flow ``L̂`` from the job's water-balance detection;
2. an extended-period simulation (EPANET toolkit, 15-min steps) started at
   the measured tank levels, demands = the model's own demand shapes scaled
   every step to the measured system input minus ``L̂`` after ``τ``, metered
   pumps and tank links switched from their flow meters, every other control
   of the model left to EPANET (so tanks *move*: a leak drains them);
3. residual change ``Δ = (meas − EPS)[τ, τ+H) − (meas − EPS)[τ−24h, τ−24h+H)``
   (the same run a day earlier, before the onset, removes the model's
   repeating errors) at every pressure logger, tank level logger and flow meter;
4. leak signature of junction ``n``: the same EPS with ``L̂`` at ``n`` from ``τ``
   minus the leak-free EPS; a pipe's signature is the mean of its end nodes;
5. each sensor scaled by its own day-to-day scatter (two reference days), the
   pipes ranked by the least-squares fit of ``Δ`` with a non-negative leak
   size (the cosine between ``Δ`` and the signature).

Usage::

    .venv/bin/python benchmarks/diagnose_ideal.py [WEEK_DIR ...] [--hours 24] [--no-job]
"""

from __future__ import annotations

import argparse
import ctypes
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import wntr

import twin.localise as LZ

HERE = Path(__file__).resolve().parent
DEFAULT_WEEKS = [HERE.parent.parent / "shared" / "validation" / "ideal" / w
                 for w in ("ky4-201", "ky10-301", "Net3-401", "L-TOWN-106")]
STEP_S = 900
# EPANET toolkit codes
EN_PRESSURE, EN_TANKLEVEL = 11, 8
EN_FLOW, EN_STATUS = 8, 11
EN_DURATION, EN_HYDSTEP, EN_PATSTEP, EN_PATSTART, EN_RPTSTEP = 0, 1, 3, 4, 5
EN_DEMANDMULT = 4


# --------------------------------------------------------------------------- the job, as is and patched

def run_job(week: Path, patched: bool, **options) -> dict:
    """Run the package's job on a week; optionally with the diagnosed bugs patched at run time."""
    from twin.meters import join_meters  # noqa: F401  (import check)
    from twin.pipeline import localise_files
    del patched  # the six fixes are in the package now (docs/localise.md, "Root causes")
    try:
        with tempfile.TemporaryDirectory() as out:
            res = localise_files(week / "network.inp", crs="EPSG:32650", meters_path=week / "meters.csv",
                                 readings_path=week / "readings.parquet", out_dir=out, write_map=False, **options)
            return {"report": res["report_dict"], "candidates": res["result"].candidates}
    except Exception as exc:  # a patched job may still fail: say so
        return {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}


def rank_of(cand: pd.DataFrame, pipe: str) -> int | None:
    if cand is None or cand.empty:
        return None
    hit = cand.index[cand["link_id"].astype(str) == pipe]
    return int(cand.loc[hit[0], "rank"]) if len(hit) else None


# --------------------------------------------------------------------------- the EPS prototype

class EPS:
    """EPANET toolkit runs of the utility's model driven by measured boundary conditions."""

    def __init__(self, wn, metered_switch: list[str]):
        model = copy.deepcopy(wn)
        for name in list(model.control_name_list):  # metered links follow their meters instead
            c = model.get_control(name)
            targets = {a._target_obj.name for a in getattr(c, "_then_actions", [])
                       + getattr(c, "_else_actions", [])}
            if targets & set(metered_switch):
                model.remove_control(name)
        if "LEAK_ONE" not in model.pattern_name_list:
            model.add_pattern("LEAK_ONE", [1.0])
        self.leak_cat = {}
        for name, j in model.junctions():  # one more demand category per junction for the leak
            j.add_demand(0.0, "LEAK_ONE")
            self.leak_cat[name] = len(j.demand_timeseries_list)
        model.options.time.hydraulic_timestep = STEP_S
        model.options.time.report_timestep = STEP_S
        model.options.quality.parameter = "NONE"
        self.tmp = tempfile.TemporaryDirectory()
        inp = Path(self.tmp.name) / "eps.inp"
        wntr.network.io.write_inpfile(model, str(inp), units="LPS", version=2.2)
        self.en = wntr.epanet.toolkit.ENepanet(version=2.2)
        self.en.ENopen(str(inp), str(Path(self.tmp.name) / "eps.rpt"), str(Path(self.tmp.name) / "eps.bin"))
        self.en.ENopenH()
        self.lib, self.ph = self.en.ENlib, self.en._project
        self.node = {n: self.en.ENgetnodeindex(n) for n in model.node_name_list}
        self.link = {n: self.en.ENgetlinkindex(n) for n in model.link_name_list}
        self.wn = model

    def _set_time(self, code, v):
        self.lib.EN_settimeparam(self.ph, ctypes.c_int(code), ctypes.c_long(int(v)))

    def run(self, start_s: float, n_steps: int, tank0: dict, mult: np.ndarray, status: dict,
            nodes: list[str], links: list[str], leak_node: str | None = None, leak_m3s: float = 0.0):
        """``n_steps`` 15-min values from ``start_s`` (s since the model's time 0).

        Returns (n_steps, len(nodes)) pressures/levels (m) and (n_steps, len(links)) flows (m³/s).
        """
        self._set_time(EN_DURATION, (n_steps - 1) * STEP_S)
        self._set_time(EN_PATSTART, start_s)
        for t, lv in tank0.items():
            tank = self.wn.get_node(t)  # EPANET refuses a level outside the tank (a logger rounds up)
            lv = min(max(lv, tank.min_level), tank.max_level)
            self.lib.EN_setnodevalue(self.ph, ctypes.c_int(self.node[t]), ctypes.c_int(EN_TANKLEVEL),
                                     ctypes.c_double(lv))
        li = self.node.get(leak_node) if leak_node else None
        cat = self.leak_cat.get(leak_node, 0) if leak_node else 0
        pumps = {self.link[x] for x in status if self.wn.get_link(x).link_type == "Pump"}
        last: dict = {}
        n_idx = [self.node[n] for n in nodes]
        l_idx = [self.link[x] for x in links]
        st_idx = {self.link[x]: v for x, v in status.items()}
        P = np.full((n_steps, len(nodes)), np.nan)
        Q = np.full((n_steps, len(links)), np.nan)
        val = ctypes.c_double()
        t = ctypes.c_long()
        tstep = ctypes.c_long()
        self.en.ENinitH(0)
        while True:
            k_now = None
            # boundary conditions of the step about to be solved
            self.lib.EN_gettimeparam(self.ph, ctypes.c_int(11), ctypes.byref(t))  # EN_HTIME
            k = int(t.value // STEP_S)
            if k < n_steps:
                self.lib.EN_setoption(self.ph, ctypes.c_int(EN_DEMANDMULT), ctypes.c_double(mult[k]))
                for i, s in st_idx.items():
                    # pumps follow their meter; a tank pipe is only closed when its meter reads ~0
                    # (EPANET closes the pipes of full or empty tanks itself)
                    want = bool(s[k])
                    if i not in pumps and want and last.get(i, True):
                        continue
                    if last.get(i) is None or last.get(i) != want or i in pumps:
                        self.lib.EN_setlinkvalue(self.ph, ctypes.c_int(i), ctypes.c_int(EN_STATUS),
                                                 ctypes.c_double(1.0 if want else 0.0))
                        last[i] = want
                if li is not None:
                    base = leak_m3s * 1000.0 / max(mult[k], 1e-6)
                    self.lib.EN_setbasedemand(self.ph, ctypes.c_int(li), ctypes.c_int(cat), ctypes.c_double(base))
            self.lib.EN_runH(self.ph, ctypes.byref(t))
            if t.value % STEP_S == 0 and t.value // STEP_S < n_steps:
                k_now = int(t.value // STEP_S)
                for c, i in enumerate(n_idx):
                    self.lib.EN_getnodevalue(self.ph, ctypes.c_int(i), ctypes.c_int(EN_PRESSURE), ctypes.byref(val))
                    P[k_now, c] = val.value
                for c, i in enumerate(l_idx):
                    self.lib.EN_getlinkvalue(self.ph, ctypes.c_int(i), ctypes.c_int(EN_FLOW), ctypes.byref(val))
                    Q[k_now, c] = val.value / 1000.0
            self.lib.EN_nextH(self.ph, ctypes.byref(tstep))
            if tstep.value <= 0:
                break
        if li is not None:
            self.lib.EN_setbasedemand(self.ph, ctypes.c_int(li), ctypes.c_int(cat), ctypes.c_double(0.0))
        return P, Q

    def close(self):
        try:
            self.en.ENcloseH()
            self.en.ENclose()
        finally:
            self.tmp.cleanup()


def prototype(week: Path, onset: pd.Timestamp, leak_m3s: float, hours: float = 24.0,
              n_ref: int = 2, verbose: bool = True) -> tuple[pd.Series, dict]:
    """Score every pipe by the EPS signature fit; returns (score per pipe, info)."""
    from twin.dma import system_input
    from twin.measure import measurements_from_readings
    from twin.network import read_network
    net = read_network(week / "network.inp", crs="EPSG:32650")
    wn = net.wn
    meters = pd.read_csv(week / "meters.csv", dtype=str).set_index("meter_id")
    readings = pd.read_parquet(week / "readings.parquet")
    readings["timestamp"] = pd.to_datetime(readings["timestamp"], utc=True, format="ISO8601")
    meas = measurements_from_readings(readings, meters, net)
    pressure, flow = meas.pressure, meas.flow
    grid = pressure.index
    t0 = grid[0]  # the model's time 0 is the first local midnight of the week (the readings start there)
    supply, _ = system_input(net, flow, pressure)
    p_nodes = [n for n in pressure.columns]              # junction loggers and tank levels
    f_links = list(flow.columns)
    switch = [x for x in f_links if wn.get_link(x).link_type == "Pump"
              or any(e in wn.tank_name_list for e in (wn.get_link(x).start_node_name, wn.get_link(x).end_node_name))
              or (wn.get_link(x).link_type == "Pipe" and wn.get_link(x).check_valve)]
    # pumps follow their meters; "running" from a threshold relative to the pump's own flow: a
    # closed link reads up to 0.2 L/s of meter noise, above the job's fixed 0.1 L/s (OPEN_FLOW_M3S)
    switch = [x for x in switch if wn.get_link(x).link_type == "Pump"]
    status_all = {x: (flow[x].abs() > max(LZ.OPEN_FLOW_M3S, 0.05 * float(flow[x].abs().quantile(0.95))))
                  .to_numpy() for x in switch}
    # nominal demand of the model's own shapes, per 15 min
    exp = wntr.metrics.expected_demand(wn)  # index seconds, junction columns (m³/s)
    exp = exp[[c for c in exp.columns if c in wn.junction_name_list]]
    secs = ((grid - t0).total_seconds()).astype(int)
    d_nom = exp.sum(axis=1).reindex(secs, method="nearest").to_numpy(float)
    leak_on = grid >= onset
    mult = (supply.to_numpy(float) - leak_m3s * leak_on) / d_nom
    mult = pd.Series(mult).interpolate(limit_direction="both").to_numpy()
    k_on = int(np.searchsorted(grid, onset))
    n = int(min(hours * 3600 / STEP_S, len(grid) - k_on))
    refs = [k_on - 96 * (r + 1) for r in range(n_ref) if k_on - 96 * (r + 1) >= 0]
    if not refs:
        raise SystemExit(f"{week.name}: no full day before the onset for a reference run")
    eps = EPS(wn, switch)
    meas_p, meas_q = pressure[p_nodes].to_numpy(float), flow[f_links].to_numpy(float)

    def run_from(k0, leak_node=None):
        tank0 = {t: float(pressure[t].iloc[k0]) for t in wn.tank_name_list if t in pressure.columns}
        st = {x: v[k0:k0 + n] for x, v in status_all.items()}
        return eps.run(float(secs[k0]), n, tank0, mult[k0:k0 + n], st, p_nodes, f_links, leak_node, leak_m3s)

    tt = time.perf_counter()
    P0, Q0 = run_from(k_on)
    res_post = np.hstack([meas_p[k_on:k_on + n] - P0, meas_q[k_on:k_on + n] - Q0])
    res_ref = []
    for k0 in refs:
        Pr, Qr = run_from(k0)
        res_ref.append(np.hstack([meas_p[k0:k0 + n] - Pr, meas_q[k0:k0 + n] - Qr]))
    ref_mean = np.nanmean(res_ref, axis=0)
    delta = res_post - ref_mean
    # noise scale per sensor: two reference days against each other (or the reference's own scatter)
    floor = np.r_[np.full(len(p_nodes), 0.005), np.full(len(f_links), 5e-5)]
    if len(res_ref) >= 2:
        sd = np.nanstd(res_ref[0] - res_ref[1], axis=0) / np.sqrt(2)
    else:
        sd = np.nanstd(res_ref[0], axis=0)
    sd = np.maximum(np.nan_to_num(sd, nan=1.0), floor)
    # signatures of every junction
    junctions = list(wn.junction_name_list)
    G = np.zeros((len(junctions),) + delta.shape)
    for i, j in enumerate(junctions):
        Pj, Qj = run_from(k_on, leak_node=j)
        G[i] = np.hstack([Pj - P0, Qj - Q0])
    secs_sig = time.perf_counter() - tt
    eps.close()
    ok = np.isfinite(delta).all(axis=1)
    z = (delta[ok] / sd).ravel()
    Gz = (G[:, ok, :] / sd).reshape(len(junctions), -1)
    Gz = np.nan_to_num(Gz)
    # pipes: mean of their junction ends' signatures
    pipes = net.links[net.links["link_type"] == "pipe"]
    col = {j: i for i, j in enumerate(junctions)}
    scores = {}
    for pid, s_node, e_node in zip(pipes.index, pipes["start_node"], pipes["end_node"]):
        ends = [col[x] for x in (s_node, e_node) if x in col]
        if not ends:
            scores[pid] = -np.inf
            continue
        g = Gz[ends].mean(axis=0)
        gg = float(g @ g)
        scores[pid] = float(g @ z) / np.sqrt(gg * float(z @ z)) if gg > 0 else -np.inf  # cosine: LS with L >= 0
    score = pd.Series(scores).sort_values(ascending=False)
    prototype.last = dict(delta=delta, sd=sd, G=G, junctions=junctions, p_nodes=p_nodes, f_links=f_links,
                          res_ref=res_ref, res_post=res_post, ok=ok)
    info = {"steps": n, "reference_runs": len(refs), "eps_runs": len(junctions) + 1 + len(refs),
            "seconds": round(secs_sig, 1), "sensors": len(p_nodes) + len(f_links),
            "delta_rms_z": float(np.sqrt(np.mean(z ** 2)))}
    return score, info


def _scorer(week: Path):
    """``score(scenario, candidates_csv)`` of the validation folder's score.py, if there is one."""
    import importlib.util
    for path in (week.parent / "score.py", week.parent.parent / "score.py"):
        if path.exists():
            spec = importlib.util.spec_from_file_location("validation_score", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod.score
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weeks", nargs="*", type=Path, default=DEFAULT_WEEKS)
    ap.add_argument("--hours", type=float, default=24.0, help="hours after the onset used (default 24)")
    ap.add_argument("--no-job", action="store_true", help="skip the unpatched job")
    args = ap.parse_args(argv)
    rows = []
    for week in args.weeks:
        truth = json.loads((week / "truth.json").read_text())
        pipe = truth["leak_pipe"]
        row = {"week": week.name, "pipes": None}
        if not args.no_job:
            j0 = run_job(week, patched=False)
            row["job"] = rank_of(j0.get("candidates"), pipe) if "error" not in j0 else j0["error"][:40]
        j1 = run_job(week, patched=True)
        row["job+fix"] = rank_of(j1.get("candidates"), pipe) if "error" not in j1 else j1["error"][:40]
        j2 = run_job(week, patched=True, dma_shape=False, dma_prior=1.0)
        row["job+fix-dma"] = rank_of(j2.get("candidates"), pipe) if "error" not in j2 else j2["error"][:40]
        rep = (j1 if "error" not in j1 else run_job(week, patched=False))["report"]
        if not rep.get("detected"):
            row["eps"] = "not detected"
            rows.append(row)
            continue
        onset = pd.Timestamp(rep["onset"]).tz_convert("UTC")
        score, info = prototype(week, onset, rep["leak_flow_lps"] / 1000.0, hours=args.hours)
        row["pipes"] = len(score)
        row["eps"] = int(score.index.get_loc(pipe)) + 1 if pipe in score.index else None
        row["eps_top"] = score.index[0]
        scorer = _scorer(week)
        if scorer is not None:  # the validation scorer: distance of the top candidate, crew walk
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "candidates.csv"
                pd.DataFrame({"rank": np.arange(1, len(score) + 1), "link_id": score.index,
                              "score": score.to_numpy()}).to_csv(csv, index=False)
                sc = scorer(week, csv)
            row["eps_top_m"] = round(sc["top1_dist_m"], 1)
            row["eps_walk"] = round(sc["walk_share"], 4)
        row.update({k: info[k] for k in ("eps_runs", "seconds")})
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
