import os, sys, json, numpy as np, pandas as pd, wntr
os.environ.setdefault("FIX", "1")
import patchfix
from twin.hydraulics import SnapshotSolver
from twin.errors import SimulationError
import twin.localise as LZ
W = "/work/wt/shared/validation/ideal/Net3-401"; name = "Net3-401"
wn = wntr.network.WaterNetworkModel(f"{W}/network.inp")
leak = pd.read_pickle(f"/tmp/f-diag/{name}_leak.pkl"); base = pd.read_pickle(f"/tmp/f-diag/{name}_base.pkl")
m = pd.read_csv(f"{W}/meters.csv", dtype=str, index_col=0)
r = pd.read_parquet(f"{W}/readings.parquet"); r["timestamp"] = pd.to_datetime(r["timestamp"], utc=True, format="ISO8601")
pressure, flow, _ = LZ.sensor_series(r, m.assign(node_id=m.node_id, link_id=m.link_id), wn)
times = pressure.index
status, tanks, notes = LZ._snapshot_inputs(times, pressure, flow, wn)   # patched: controls + relative thresholds
print("statuses set:", list(status.columns), notes[:3])
def trial(label, use_eps_demand=True, status_src="job", tank_src="meas"):
    fails = 0; res = []
    ps = [n for n in m.node_id.dropna() if n in wn.junction_name_list]; el = np.array([wn.get_node(n).elevation for n in ps])
    with SnapshotSolver(wn) as sv:
        J = sv.junctions
        for k, t in enumerate(base["pressure"].index):
            d = base["demand"].loc[t, J].to_numpy(float) if use_eps_demand else None
            tl = {tk: float(tanks[tk].iloc[k]) if tank_src == "meas" else float(leak["pressure"].at[t, tk]) for tk in wn.tank_name_list}
            if status_src == "job":
                st = {l: bool(status[l].iloc[k]) for l in status.columns}
            else:
                st = {l: bool(leak["status"].at[t, l] > 0) for l in status.columns}
            try:
                sn = sv.solve(d, tank_levels=tl, link_status=st, heads_of=ps)
                res.append(base["pressure"].loc[t, ps].to_numpy() - (sn.heads.to_numpy() - el))
            except SimulationError:
                fails += 1
    R = np.array(res); print(f"{label}: {fails} of {len(base['pressure'])} fail; residual vs EPS: rms median {np.median(np.sqrt((R**2).mean(0)))*100:.2f} cm, max {np.abs(R).max()*100:.0f} cm, steps with >10 cm anywhere: {(np.abs(R).max(1) > 0.1).sum()}")
trial("EPS demands, job statuses, measured levels")
trial("EPS demands, EPS statuses, measured levels", status_src="eps")
trial("EPS demands, EPS statuses, EPS levels", status_src="eps", tank_src="eps")
import twin.localise as LZ2
status_pumps_only = status.copy()
for l in ["20", "40", "50"]:
    del status[l]
trial("EPS demands, job statuses without the tank pipes (EPANET decides)")
for l in status.columns:
    a = status[l].to_numpy(); b = leak["status"][l].to_numpy() > 0
    print("  status", l, "job vs EPS agree %.3f" % (a == b).mean(), "job open %.2f EPS open %.2f" % (a.mean(), b.mean()))
