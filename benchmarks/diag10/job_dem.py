import os, sys, numpy as np, pandas as pd
os.environ.setdefault("FIX", "1")
import patchfix
import twin.hydraulics as H
calls = []
_s = H.SnapshotSolver.solve
def solve(self, demands=None, **kw):
    if kw.get("heads_of") is not None:
        calls.append((np.array(demands, float), dict(kw.get("tank_levels") or {}), dict(kw.get("link_status") or {})))
    return _s(self, demands, **kw)
H.SnapshotSolver.solve = solve
from twin.pipeline import localise_files
W = sys.argv[1]; name = W.rstrip("/").split("/")[-1]
import tempfile, wntr
with tempfile.TemporaryDirectory() as out:
    localise_files(f"{W}/network.inp", crs="EPSG:32650", meters_path=f"{W}/meters.csv", readings_path=f"{W}/readings.parquet",
                   out_dir=out, write_map=False, dma_shape=not os.environ.get("NODMA"))
base = pd.read_pickle(f"/tmp/f-diag/{name}_leak.pkl")
wn = wntr.network.WaterNetworkModel(f"{W}/network.inp"); J = list(wn.junction_name_list)
Dj = np.array([c[0] for c in calls]); n = min(len(Dj), len(base["demand"]))
De = base["demand"][J].to_numpy()[:n]
# the leak node is not a junction of the job's model: leak demand excluded from De by construction (J only)
tot_j, tot_e = Dj[:n].sum(1), De.sum(1)
print(name, "snapshots", len(Dj), "| total demand job vs truth: mean %.2f vs %.2f L/s, rms diff %.2f L/s" % (tot_j.mean()*1000, tot_e.mean()*1000, np.sqrt(((tot_j-tot_e)**2).mean())*1000))
err = np.abs(Dj[:n] - De).sum(1) / 2
print("   demand on the wrong node per snapshot (half L1): median %.2f L/s, p90 %.2f L/s, max %.2f" % (np.median(err)*1000, np.quantile(err, .9)*1000, err.max()*1000))
rel = (Dj[:n] / np.maximum(tot_j[:, None], 1e-9)) - (De / tot_e[:, None])
dd = pd.DataFrame(Dj[:n] - De)
hour = (np.arange(n) // 4) % 24
# day-to-day variation of the node demand error at a given hour (what the hourly offsets cannot absorb)
v = dd.groupby(hour).std().mean(1).mean()
print("   node demand error: mean |err| %.4f L/s; its day-to-day sd at a fixed hour (avg over nodes) %.4f L/s" % (np.abs(dd.to_numpy()).mean()*1000, v*1000))
