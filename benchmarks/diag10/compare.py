import json, sys
import numpy as np, pandas as pd
sys.path.insert(0, "/tmp/f-diag")
W = sys.argv[1]; name = W.rstrip("/").split("/")[-1]
truth = json.load(open(f"{W}/truth.json"))
m = pd.read_csv(f"{W}/meters.csv", index_col=0, dtype=str)
r = pd.read_parquet(f"{W}/readings.parquet")
s = r[r.meter_id.isin(m.index[m.kind != "customer"])].copy()
t0 = pd.Timestamp("2026-03-02T00:00:00+08:00")
s["t"] = ((pd.to_datetime(s.timestamp) - t0).dt.total_seconds()).round().astype(int)
wide = s.pivot_table(index="t", columns="meter_id", values="value")
base = pd.read_pickle(f"/tmp/f-diag/{name}_base.pkl"); leak = pd.read_pickle(f"/tmp/f-diag/{name}_leak.pkl")
onset = (pd.Timestamp(truth["onset"]) - t0).total_seconds()
rows = []
for mid, row in m[m.kind != "customer"].iterrows():
    if row.kind == "pressure":
        el = row.node_id; kb, kl = base["pressure"][el], leak["pressure"][el]
        unit = 1.0
    else:
        el = row.link_id; kb, kl = base["flow"][el] * 1000, leak["flow"][el] * 1000
    meas = wide[mid].reindex(kb.index)
    after = kb.index >= onset
    dtrue = (kl - kb)[after]
    rows.append(dict(meter=mid, kind=row.kind, el=el, is_tank=str(el).startswith("T") and row.kind=="pressure",
                     rmse_meas_vs_leaksim=float(np.sqrt(np.nanmean((meas - kl) ** 2))),
                     max_abs_meas_vs_leaksim=float(np.nanmax(np.abs(meas - kl))),
                     true_change_mean=float(dtrue.mean()), true_change_min=float(dtrue.min()), true_change_max=float(dtrue.max())))
df = pd.DataFrame(rows)
pd.set_option("display.width", 200)
print(name, "leak", truth["leak_pipe"], truth["leak_lps"], "onset_s", onset)
print(df.to_string(float_format=lambda x: f"{x:.3f}"))
df.to_csv(f"/tmp/f-diag/{name}_truechange.csv")
