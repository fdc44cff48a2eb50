import json, sys
import numpy as np, pandas as pd
W = sys.argv[1]; name = W.rstrip("/").split("/")[-1]
cap = pd.read_pickle(f"/tmp/f-diag/cap_{name}.pkl")
truth = json.load(open(f"{W}/truth.json"))
base = pd.read_pickle(f"/tmp/f-diag/{name}_base.pkl"); leak = pd.read_pickle(f"/tmp/f-diag/{name}_leak.pkl")
t0 = pd.Timestamp("2026-03-02T00:00:00+08:00"); onset = (pd.Timestamp(truth["onset"]) - t0).total_seconds()
it = cap["internals"]; ps, fl = it["p_sensors"], it["flow_links"]
blocks = cap["report"]["calibration"]["hour_blocks"]; bh = 4
idx = base["pressure"].index.to_numpy()
hour = (idx % 86400) // 3600
after = idx >= onset
rows_true = []
for b in blocks:
    m = after & (hour >= b) & (hour < b + bh)
    dp = (leak["pressure"].loc[m, ps] - base["pressure"].loc[m, ps]).mean().to_numpy()
    dq = (leak["flow"].loc[m, fl] - base["flow"].loc[m, fl]).mean().to_numpy()
    rows_true.append(np.concatenate([dp, dq]))
true = np.concatenate(rows_true)
delta, sigma, sig = cap["delta"], cap["sigma"], cap["sig"]
n_s = len(ps) + len(fl); isp = np.tile(np.r_[np.ones(len(ps)), np.zeros(len(fl))].astype(bool), len(blocks))
k = cap["pipes"].index(truth["leak_pipe"]); g = sig[:, k] * truth["leak_lps"] / 1000
def c(a, b):
    return float(np.corrcoef(a, b)[0, 1])
print(f"== {name}: blocks {blocks}, {len(ps)} loggers, {len(fl)} flow meters, leak {truth['leak_lps']} L/s, job L={cap['L_prior']*1000:.2f}")
print("pressure rows (m):  true change mean %.4f sd %.4f | job delta mean %.4f sd %.4f | job sig(leak pipe)*L mean %.4f sd %.4f" % (
    true[isp].mean(), true[isp].std(), delta[isp].mean(), delta[isp].std(), g[isp].mean(), g[isp].std()))
print("  corr(delta, true) = %.3f ; after removing block common mode: %.3f" % (c(delta[isp], true[isp]),
      c(*[np.concatenate([x[isp][j*len(ps):(j+1)*len(ps)] - x[isp][j*len(ps):(j+1)*len(ps)].mean() for j in range(len(blocks))]) for x in (delta, true)])))
print("  corr(sig_leak, true) = %.3f ; corr(sig_leak, delta) = %.3f" % (c(g[isp], true[isp]), c(g[isp], delta[isp])))
for j, b in enumerate(blocks):
    sl = slice(j * n_s, j * n_s + len(ps))
    print(f"  block {b:2d}h: true mean {true[sl].mean()*100:6.2f} cm, range [{true[sl].min()*100:.2f},{true[sl].max()*100:.2f}]; delta mean {delta[sl].mean()*100:6.2f} cm sd {delta[sl].std()*100:.2f}; sig*L mean {g[sl].mean()*100:.3f} cm range [{g[sl].min()*100:.3f},{g[sl].max()*100:.3f}]; sigma median {np.median(sigma[sl])*100:.2f} cm")
fq = ~isp
print("flow rows (L/s): element, per block: true / delta / sig*L")
for i, l in enumerate(fl):
    rr = [len(ps) + i + j * n_s for j in range(len(blocks))]
    print("  %-10s true %s | delta %s | sig %s | sigma %s" % (l, np.round(true[rr]*1000, 2), np.round(delta[rr]*1000, 2), np.round(g[rr]*1000, 2), np.round(sigma[rr]*1000, 3)))
# rank by plain correlation of delta with signatures (pressure only / all rows standardised)
def rank_corr(d, S, rows):
    dd = d[rows]; SS = S[rows]
    cc = np.array([np.corrcoef(dd, SS[:, j])[0, 1] if SS[:, j].std() > 0 else -1 for j in range(S.shape[1])])
    cc = np.nan_to_num(cc, nan=-1)
    return int((cc > cc[k]).sum() + 1), cc[k]
print("rank of leak pipe by corr(job delta, job signature): pressure rows", rank_corr(delta, sig, isp), "; z-scaled all rows", rank_corr(delta / sigma, sig / sigma[:, None], np.ones_like(isp)))
print("rank by corr(TRUE change, job signature): pressure rows", rank_corr(true, sig, isp), "; all rows z", rank_corr(true / sigma, sig / sigma[:, None], np.ones_like(isp)))
np.save(f"/tmp/f-diag/true_{name}.npy", true)
