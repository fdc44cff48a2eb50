import sys, json
sys.path.insert(0, "/work/wt/f/benchmarks")
import numpy as np, pandas as pd, wntr
import diagnose_ideal as D
from pathlib import Path
week = Path(sys.argv[1]); truth = json.loads((week / "truth.json").read_text())
rep = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else None
onset = pd.Timestamp(rep["onset"] if rep else truth["onset"]).tz_convert("UTC"); L = (rep["leak_flow_lps"] if rep else truth["leak_lps"]) / 1000
score, info = D.prototype(week, onset, L, hours=24)
Lst = D.prototype.last
pd.to_pickle(dict(Lst=Lst, score=score), f"/tmp/f-diag/proto_{week.name}.pkl")
print(info, "rank", list(score.index).index(truth["leak_pipe"]) + 1, "top", score.index[:5].tolist())
