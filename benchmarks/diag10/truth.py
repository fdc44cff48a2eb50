"""Simulate an ideal week's truth with WNTR: nominal EPS with and without the leak."""
import json, sys, copy
import numpy as np, pandas as pd, wntr

def load(W):
    truth = json.load(open(f"{W}/truth.json"))
    meters = pd.read_csv(f"{W}/meters.csv", index_col=0)
    r = pd.read_parquet(f"{W}/readings.parquet")
    return truth, meters, r

def run(W, leak=True, pipe=None, lps=None, onset_s=None, prefix="tmp"):
    wn = wntr.network.WaterNetworkModel(f"{W}/network.inp")
    truth = json.load(open(f"{W}/truth.json"))
    if leak:
        pipe = pipe or truth["leak_pipe"]; lps = lps or truth["leak_lps"]
        if onset_s is None:
            on = pd.Timestamp(truth["onset"]); start = on.normalize() - pd.Timedelta(days=(on.normalize() - pd.Timestamp("2026-03-02T00:00:00+08:00")).days)
            onset_s = (on - pd.Timestamp("2026-03-02T00:00:00+08:00")).total_seconds()
        wn = wntr.morph.split_pipe(wn, pipe, pipe + "_B", pipe + "_LEAK")
        n = int(wn.options.time.duration // wn.options.time.pattern_timestep) + 2
        step = wn.options.time.pattern_timestep
        mult = [0.0 if k * step < onset_s else 1.0 for k in range(n)]
        wn.add_pattern("LEAKPAT", mult)
        wn.get_node(pipe + "_LEAK").add_demand(lps / 1000.0, "LEAKPAT")
    sim = wntr.sim.EpanetSimulator(wn)
    res = sim.run_sim(file_prefix=f"/tmp/f-diag/{prefix}")
    return wn, res

if __name__ == "__main__":
    W = sys.argv[1]; name = W.rstrip("/").split("/")[-1]
    for leak in (False, True):
        wn, res = run(W, leak, prefix=f"{name}_{int(leak)}")
        out = {"pressure": res.node["pressure"], "head": res.node["head"], "flow": res.link["flowrate"], "demand": res.node["demand"],
               "status": res.link["status"]}
        pd.to_pickle(out, f"/tmp/f-diag/{name}_{'leak' if leak else 'base'}.pkl")
        print(name, leak, res.node["pressure"].shape)
