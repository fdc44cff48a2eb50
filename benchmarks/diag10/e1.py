"""E1: snapshots driven by PERFECT inputs (nominal demands, EPS tank levels, EPS pump states).
residual_a = leak-EPS - snapshot(no leak) at loggers: before onset = snapshot machinery error,
after onset = the leak's effect with tanks held (what the job can see at best)."""
import json, sys
import numpy as np, pandas as pd, wntr
import os
if os.environ.get("FIX"): import patchfix
from twin.hydraulics import SnapshotSolver
from twin.errors import SimulationError
W = sys.argv[1]; name = W.rstrip("/").split("/")[-1]
truth = json.load(open(f"{W}/truth.json"))
wn = wntr.network.WaterNetworkModel(f"{W}/network.inp")
base = pd.read_pickle(f"/tmp/f-diag/{name}_base.pkl"); leak = pd.read_pickle(f"/tmp/f-diag/{name}_leak.pkl")
m = pd.read_csv(f"{W}/meters.csv", index_col=0, dtype=str)
ps = [n for n in m.node_id.dropna() if n in wn.junction_name_list]
fl = [l for l in m.link_id.dropna()]
t0 = pd.Timestamp("2026-03-02T00:00:00+08:00"); onset = (pd.Timestamp(truth["onset"]) - t0).total_seconds()
ctrl = [l for l in fl if wn.get_link(l).link_type == "Pump" or any(e in wn.tank_name_list for e in (wn.get_link(l).start_node_name, wn.get_link(l).end_node_name)) or (wn.get_link(l).link_type=="Pipe" and wn.get_link(l).check_valve)]
mode = sys.argv[2] if len(sys.argv) > 2 else "metered"
if mode == "all":  # + every link whose status the model's controls change (from the EPS)
    stt = leak["status"]
    ctrl = sorted(set(ctrl) | set(stt.columns[(stt.nunique() > 1)]) )
    print("links with statuses set:", ctrl)
res, fails, reasons = [], 0, []
with SnapshotSolver(wn) as sv:
    J = sv.junctions
    for t in base["pressure"].index:
        d = base["demand"].loc[t, J].to_numpy(float)
        tl = {tk: float(leak["pressure"].at[t, tk]) for tk in wn.tank_name_list}
        st = {l: bool(abs(leak["flow"].at[t, l]) > 1e-4) for l in ctrl}
        try:
            s = sv.solve(d, tank_levels=tl, link_status=st, heads_of=ps, flows_of=fl)
        except SimulationError as e:
            fails += 1; reasons.append(str(e)[:80]); continue
        el = np.array([wn.get_node(n).elevation for n in ps])
        row = {("p", n): v for n, v in zip(ps, leak["pressure"].loc[t, ps].to_numpy() - (s.heads.to_numpy() - el))}
        row.update({("q", l): v for l, v in zip(fl, (leak["flow"].loc[t, fl].to_numpy() - s.flows.to_numpy()) * 1000)}); row["t"] = t
        res.append(row)
R = pd.DataFrame(res).set_index("t")
pd.to_pickle(R, f"/tmp/f-diag/e1_{name}_{mode}.pkl")
before, after = R[R.index < onset], R[R.index >= onset]
pc = [c for c in R.columns if c[0] == "p"]; qc = [c for c in R.columns if c[0] == "q"]
print(f"== {name} ({mode} statuses): {len(R)} solved, {fails} failed", pd.Series(reasons).value_counts().head(3).to_dict() if reasons else "")
print("pressure residual, leak-EPS minus snapshot(perfect demands, EPS tank levels/pump states), cm:")
print("  before onset: |mean| median %.2f, rms median %.2f, max abs %.2f" % (before[pc].mean().abs().median()*100, np.sqrt((before[pc]**2).mean()).median()*100, before[pc].abs().max().max()*100))
print("  after onset : mean over loggers %.2f, per-logger mean range [%.2f, %.2f]" % (after[pc].mean().mean()*100, after[pc].mean().min()*100, after[pc].mean().max()*100))
print("  after - before (per logger) range [%.2f, %.2f] cm" % ((after[pc].mean()-before[pc].mean()).min()*100, (after[pc].mean()-before[pc].mean()).max()*100))
print("flow residual L/s: before mean / rms, after mean:")
for c in qc:
    print("   %-10s %7.3f %7.3f  | after %7.3f" % (c[1], before[c].mean(), np.sqrt((before[c]**2).mean()), after[c].mean()))
