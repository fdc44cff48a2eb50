"""Run the job with hooks: capture delta_all, sigma_all, signatures of the first _loglik call."""
import json, sys
import numpy as np, pandas as pd
import os
if os.environ.get("FIX"): import patchfix
import twin.localise as L
from twin.pipeline import localise_files
cap = {}
_orig = L._loglik
def hook(delta, sigma, sig, L_prior, L_sd, alpha, nu=None):
    if "delta" not in cap:
        cap.update(delta=delta.copy(), sigma=sigma.copy(), sig=sig.copy(), alpha=np.asarray(alpha).copy(), L_prior=L_prior)
    return _orig(delta, sigma, sig, L_prior, L_sd, alpha, nu)
L._loglik = hook
W = sys.argv[1]; name = W.rstrip("/").split("/")[-1]
out = localise_files(f"{W}/network.inp", crs="EPSG:32650", meters_path=f"{W}/meters.csv",
                     readings_path=f"{W}/readings.parquet", out_dir=f"/tmp/f-diag/out-{name}", write_map=False, **({"dma_shape": False} if os.environ.get("NODMA") else {}))
res = out["result"]; net = out["network"]
pipes = net.links[net.links["link_type"] == "pipe"]
cap["pipes"] = list(pipes.index); cap["internals"] = res.internals; cap["report"] = out["report_dict"]
pd.to_pickle(cap, f"/tmp/f-diag/cap_{name}.pkl")
print(name, "captured", cap["delta"].shape, cap["sig"].shape)
