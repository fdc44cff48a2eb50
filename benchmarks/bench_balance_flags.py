"""False alarms and power of the water balance's flags on simulated district weeks. Prints numbers, asserts nothing.

    python benchmarks/bench_balance_flags.py            # 200 leak-free runs, power at 7 / 14 / 28 days
    python benchmarks/bench_balance_flags.py --runs 50  # quicker

Each run is ``--districts`` zones whose daily NRW and night leakage scatter
by 0.1-2 % of their inflow (lognormal, tenfold spread: real districts differ
that much, e.g. pumped ones), the first and last day partial. The leak-free
runs count how often :func:`twin.balance.flag_days` flags anything (the
design rate is ``FALSE_ALARM_RATE`` = 1 %); the power runs plant one leak of
3 % or 5 % of a district's inflow, mid-day, four days before the end, in 20
districts across the noise ranks, one at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
import pandas as pd

from twin.balance import BALANCE_COLUMNS, FALSE_ALARM_RATE, flag_days


def district_rows(rng: np.random.Generator, *, districts: int, days: int,
                  leak: tuple[int, int, float] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Balance rows; ``leak`` = (district, onset day, share of its inflow). Returns the rows and the noise levels."""
    size = rng.uniform(200.0, 3000.0, districts)  # m³/day through the inlet
    rel_sd = np.exp(rng.normal(np.log(0.004), 0.8, districts))
    rows = []
    for d in range(districts):
        onset, share = (leak[1], leak[2]) if leak and leak[0] == d else (days, 0.0)
        for k in range(days):
            step = share * size[d]
            rows.append({
                "dma": f"D{d:03d}", "date": dt.date(2026, 3, 2) + dt.timedelta(days=k),
                "nrw_m3": 0.12 * size[d] + rng.normal(0.0, rel_sd[d] * size[d])
                + step * (0.5 if k == onset else float(k > onset)),
                "night_leakage_lps": (0.1 * size[d] + rng.normal(0.0, rel_sd[d] * size[d]) + step * float(k > onset))
                / 86.4,
                "inflow_in_m3": size[d], "inflow_out_m3": 0.0, "meters": 100, "meters_missing": 0,
                "meters_extrapolated": 50 if k in (0, days - 1) else 0, "unmetered_boundaries": 0,
            })
    out = pd.DataFrame(rows)
    for c in BALANCE_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out, rel_sd


def main() -> None:
    """Print the false-alarm rate and the power table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--districts", type=int, default=40)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    alarms = sum(bool(flag_days(district_rows(rng, districts=a.districts, days=7)[0])["flag"].str.contains("jump").any())
                 for _ in range(a.runs))
    print(f"leak-free 7-day runs of {a.districts} districts: {alarms} of {a.runs} flag anything "
          f"({100 * alarms / a.runs:.1f} %; design {100 * FALSE_ALARM_RATE:g} %)")
    print("days  leak share  found  false alarms")
    for days in (7, 14, 28):
        _, rel_sd = district_rows(np.random.default_rng(a.seed), districts=a.districts, days=days)
        for share in (0.03, 0.05):
            found = false = 0
            for d in np.argsort(rel_sd)[::2][:20]:
                rows, _ = district_rows(np.random.default_rng(a.seed), districts=a.districts, days=days,
                                        leak=(int(d), days - 4, share))
                flagged = set(flag_days(rows).query("flag.str.contains('jump')", engine="python")["dma"])
                found += f"D{d:03d}" in flagged
                false += len(flagged - {f"D{d:03d}"})
            print(f"{days:4d}  {100 * share:9.0f} %  {found:2d}/20  {false}")


if __name__ == "__main__":
    main()
