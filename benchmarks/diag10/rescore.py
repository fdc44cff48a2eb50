import sys, json, numpy as np, pandas as pd, wntr
name = sys.argv[1]; W = f"/work/wt/shared/validation/ideal/{name}"
d = pd.read_pickle(f"/tmp/f-diag/proto_{name}.pkl"); Lst = d["Lst"]
truth = json.load(open(f"{W}/truth.json")); wn = wntr.network.WaterNetworkModel(f"{W}/network.inp")
J = Lst["junctions"]; G = np.nan_to_num(Lst["G"]); delta = np.nan_to_num(Lst["delta"]); sd = Lst["sd"]; names = Lst["p_nodes"] + Lst["f_links"]
tanks = [n for n in Lst["p_nodes"] if n in wn.tank_name_list]
is_log = np.array([c < len(Lst["p_nodes"]) and names[c] not in tanks for c in range(len(names))])
pipes = [l for l, _ in wn.pipes()]
col = {j: i for i, j in enumerate(J)}
ends = [[col[x] for x in (wn.get_link(p).start_node_name, wn.get_link(p).end_node_name) if x in col] for p in pipes]
def rank(z, Gz):
    Gp = np.array([Gz[e].mean(0) if e else np.zeros_like(Gz[0]) for e in ends])
    zz = z.ravel(); Gf = Gp.reshape(len(pipes), -1)
    cos = Gf @ zz / np.sqrt((Gf**2).sum(1) * (zz @ zz) + 1e-30)
    k = pipes.index(truth["leak_pipe"]); return int((cos > cos[k]).sum() + 1), pipes[int(np.argmax(cos))]
z = delta / sd; Gz = G / sd
print(name, "plain cosine:", rank(z, Gz))
# common mode of the loggers removed per time step (weights 1/sd^2)
def centre(x):
    x = x.copy(); w = 1 / sd[is_log] ** 2
    m = (x[..., is_log] * w).sum(-1, keepdims=True) / w.sum(); x[..., is_log] -= m; return x
print(name, "logger common mode removed:", rank(centre(delta) / sd, centre(G) / sd))
# loggers' common mode removed and each sensor group given equal weight (loggers / tank levels / flows)
grp = np.where(is_log, 0, np.where(np.arange(len(names)) < len(Lst["p_nodes"]), 1, 2))
wg = np.ones(len(names))
zc = centre(delta) / sd
for g_ in range(3):
    m = grp == g_
    if m.any(): wg[m] = 1 / np.sqrt(max(np.sum(zc[:, m] ** 2), 1e-12))
print(name, "cm removed + group-balanced:", rank(zc * wg, centre(G) / sd * wg))
print(name, "flows + tank levels only:", rank((delta / sd)[:, ~is_log], (G / sd)[:, :, ~is_log]))
print(name, "loggers only, cm removed:", rank(zc[:, is_log], (centre(G) / sd)[:, :, is_log]))
