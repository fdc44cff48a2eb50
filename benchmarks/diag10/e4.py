"""E4: the demand-allocation error of the job's scheme alone. Snapshots with EPS tank levels / statuses, and
demands = each node's TRUE 12-h window volume spread over the window by the SYSTEM demand shape
(the job's allocation with perfect registers), against perfect demands. Leak-free base run."""
import os, sys, json, numpy as np, pandas as pd, wntr
os.environ.setdefault("FIX", "1")
import patchfix
from twin.hydraulics import SnapshotSolver
from twin.errors import SimulationError
W = sys.argv[1]; name = W.rstrip("/").split("/")[-1]
wn = wntr.network.WaterNetworkModel(f"{W}/network.inp")
base = pd.read_pickle(f"/tmp/f-diag/{name}_base.pkl")
m = pd.read_csv(f"{W}/meters.csv", dtype=str, index_col=0)
ps = [n for n in m.node_id.dropna() if n in wn.junction_name_list]
stt = base["status"]; ctrl = sorted(set(stt.columns[(stt.nunique() > 1)]) | {l for l, _ in wn.pumps()})
ctrl = [c for c in ctrl if wn.get_link(c).link_type != "Valve"]
J = list(wn.junction_name_list)
D = base["demand"][J]
win = (D.index.to_numpy() // 43200)
tot = D.sum(axis=1)
share = D.groupby(win).transform("sum").div(tot.groupby(win).transform("sum"), axis=0)  # node share of the window volume
D_job = share.mul(tot, axis=0)
el = np.array([wn.get_node(n).elevation for n in ps])
out = {}
with SnapshotSolver(wn) as sv:
    for label, DD in (("perfect", D), ("window x system shape", D_job)):
        res = []
        for t in D.index[::2]:
            tl = {tk: float(base["pressure"].at[t, tk]) for tk in wn.tank_name_list}
            st = {l: bool(abs(base["flow"].at[t, l]) > 1e-6) for l in ctrl}
            try:
                s = sv.solve(DD.loc[t, sv.junctions].to_numpy(float), tank_levels=tl, link_status=st, heads_of=ps)
            except SimulationError:
                continue
            res.append(base["pressure"].loc[t, ps].to_numpy() - (s.heads.to_numpy() - el))
        R = np.array(res); hour = None
        out[label] = R
        # what the job's hourly offsets cannot absorb: day-to-day scatter at the same time of day
        print(f"{name} {label}: {len(R)} snapshots; residual rms median {np.median(np.sqrt((R**2).mean(0)))*100:.2f} cm, max {np.abs(R).max()*100:.1f} cm")
