import json, sys, numpy as np, pandas as pd
name = sys.argv[1]; cap = pd.read_pickle(sys.argv[2]); e1 = pd.read_pickle(sys.argv[3])
W = f"/work/wt/shared/validation/ideal/{name}"; truth = json.load(open(f"{W}/truth.json"))
t0 = pd.Timestamp("2026-03-02T00:00:00+08:00"); onset = (pd.Timestamp(truth["onset"]) - t0).total_seconds()
it = cap["internals"]; ps, fl = it["p_sensors"], it["flow_links"]; blocks = cap["report"]["calibration"]["hour_blocks"]
idx = e1.index.to_numpy(); hour = (idx % 86400) // 3600; after = idx >= onset
loc = []
for b in blocks:
    m = after & (hour >= b) & (hour < b + 4)
    row = [e1[("p", n)].to_numpy()[m].mean() for n in ps] + [e1[("q", l)].to_numpy()[m].mean() / 1000 for l in fl]
    loc.append(row)
loc = np.concatenate(loc)
delta, sigma, sig = cap["delta"], cap["sigma"], cap["sig"]
n_s = len(ps) + len(fl); isp = np.tile(np.r_[np.ones(len(ps)), np.zeros(len(fl))].astype(bool), len(blocks))
k = cap["pipes"].index(truth["leak_pipe"]); g = sig[:, k] * truth["leak_lps"] / 1000
c = lambda a, b: float(np.corrcoef(a, b)[0, 1])
print(f"== {name}: job residual change vs the leak's TRUE local effect (tanks held; snapshots with perfect inputs)")
print("  pressure rows: local effect mean %.2f cm (range %.2f..%.2f); job delta mean %.2f cm, sd %.2f; job sig*L mean %.2f cm" % (loc[isp].mean()*100, loc[isp].min()*100, loc[isp].max()*100, delta[isp].mean()*100, delta[isp].std()*100, g[isp].mean()*100))
print("  corr(delta, local effect) pressures %.2f, flows %.2f | corr(sig*L, local effect) pressures %.2f, flows %.2f" % (c(delta[isp], loc[isp]), c(delta[~isp], loc[~isp]), c(g[isp], loc[isp]), c(g[~isp], loc[~isp])))
err = delta - loc
print("  error of delta (delta - local effect): pressures rms %.2f cm, mean %.2f cm; flows rms %.3f L/s" % (np.sqrt((err[isp]**2).mean())*100, err[isp].mean()*100, np.sqrt((err[~isp]**2).mean())*1000))
print("  median sigma: pressures %.2f cm, flows %.3f L/s; z of local effect: median |loc/sigma| pressures %.2f, flows %.2f" % (np.median(sigma[isp])*100, np.median(sigma[~isp])*1000, np.median(np.abs(loc[isp]/sigma[isp])), np.median(np.abs(loc[~isp]/sigma[~isp]))))
chi_true = ((delta - loc) ** 2 / sigma ** 2).sum() / (len(delta) - 1)
print("  reduced chi2 of delta against the exact local effect: %.1f" % chi_true)
for i, l in enumerate(fl):
    rr = [len(ps) + i + j * n_s for j in range(len(blocks))]
    print("   flow %-8s local %s | delta %s | sigma %s" % (l, np.round(loc[rr]*1000, 2), np.round(delta[rr]*1000, 2), np.round(sigma[rr]*1000, 3)))
