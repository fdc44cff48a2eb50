"""Benchmark of the meters / store / balance stage. Prints numbers, asserts nothing.

    python benchmarks/bench_store.py                 # join, city-week ingest, balance, year memory at 1/4 scale
    python benchmarks/bench_store.py --year-scale 1  # the full 95 M-row year (several GB on disk, minutes)

Everything is generated deterministically (``--seed``) in a temporary folder:

- a street-like city network: a jittered 100 x 100 street grid (19,800 pipes
  plus a source main, EPSG:4548, ~8 km x 8 km), 20 DMAs as zones, each fed by
  two metered inlets (the other zone-crossing pipes closed);
- 130,000 customer meters a few metres to ~40 m off their street (0.5 %
  farther than 50 m), 500 pressure loggers, a flow meter on every inlet;
- a week of readings (customers twice a day at irregular times, loggers
  every 15 minutes): ~2.2 M rows; the year file repeats that for 52 weeks.

Timings run each measured step in a fresh subprocess so that the peak
resident memory (``ru_maxrss``) is that of the step alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

N_SIDE = 100  # grid nodes per side: 2 * 100 * 99 = 19,800 street pipes
SPACING_M = 80.0
N_CUSTOMERS = 130_000
N_LOGGERS = 500
ZONES = (4, 5)  # 20 DMAs
X0, Y0 = 500_000.0, 3_120_000.0
START = pd.Timestamp("2026-03-02T00:00:00+08:00")


def make_network(out: Path, seed: int) -> Path:
    """Write the street grid as an EPANET .inp (zones in [TAGS])."""
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(N_SIDE), np.arange(N_SIDE), indexing="ij")
    x = X0 + ii * SPACING_M + rng.normal(0, 8, ii.shape)
    y = Y0 + jj * SPACING_M + rng.normal(0, 8, jj.shape)
    zi = np.minimum(ii * ZONES[0] // N_SIDE, ZONES[0] - 1)
    zj = np.minimum(jj * ZONES[1] // N_SIDE, ZONES[1] - 1)
    zone = zi * ZONES[1] + zj
    name = np.char.add("J", (ii * N_SIDE + jj).astype(str).astype("U6"))
    lines = ["[TITLE]", "bench street grid", "", "[JUNCTIONS]"]
    lines += [f" {n} 20 0.0002" for n in name.ravel()]
    lines += ["", "[RESERVOIRS]", " SRC 80", "", "[PIPES]"]
    pipes = []
    for di, dj in ((1, 0), (0, 1)):
        a = name[: N_SIDE - di, : N_SIDE - dj].ravel()
        b = name[di:, dj:].ravel()
        za = zone[: N_SIDE - di, : N_SIDE - dj].ravel()
        zb = zone[di:, dj:].ravel()
        pipes += list(zip(a, b, za, zb))
    inlets: dict[tuple[int, int], list[int]] = {}
    for k, (a, b, za, zb) in enumerate(pipes):
        if za != zb:
            inlets.setdefault((min(za, zb), max(za, zb)), []).append(k)
    keep_open = set()
    for ks in inlets.values():
        keep_open.update(ks[len(ks) // 3: len(ks) // 3 + 1] + ks[2 * len(ks) // 3: 2 * len(ks) // 3 + 1])
    metered = []
    for k, (a, b, za, zb) in enumerate(pipes):
        status = "Open"
        if za != zb:
            if k in keep_open:
                metered.append(f"P{k}")
            else:
                status = "Closed"
        lines.append(f" P{k} {a} {b} {SPACING_M:.1f} 150 110 0 {status}")
    lines.append(f" MAIN SRC {name[0, 0]} 200 600 120 0 Open")
    metered.append("MAIN")
    lines += ["", "[COORDINATES]"]
    lines += [f" {n} {xx:.2f} {yy:.2f}" for n, xx, yy in zip(name.ravel(), x.ravel(), y.ravel())]
    lines += [f" SRC {X0 - 200:.2f} {Y0 - 200:.2f}"]
    lines += ["", "[TAGS]"] + [f" NODE {n} Z{z:02d}" for n, z in zip(name.ravel(), zone.ravel())]
    lines += ["", "[OPTIONS]", " Units LPS", "", "[END]", ""]
    path = out / "city.inp"
    path.write_text("\n".join(lines))
    (out / "inlets.json").write_text(json.dumps(metered))
    return path


def make_meters(out: Path, seed: int) -> Path:
    """Customers near random pipes, loggers on random junctions, a flow meter per inlet."""
    from twin.crs import transform_xy
    from twin.network import read_network

    net = read_network(out / "city.inp", crs="EPSG:4548")
    rng = np.random.default_rng(seed + 1)
    pipes = net.links[net.links["link_type"] == "pipe"]
    pick = rng.integers(0, len(pipes), N_CUSTOMERS)
    geom = pipes.geometry.to_numpy()[pick]
    import shapely

    pos = rng.uniform(0.05, 0.95, N_CUSTOMERS)
    pts = shapely.line_interpolate_point(geom, pos, normalized=True)
    off = rng.uniform(3, 40, N_CUSTOMERS) * rng.choice([-1, 1], N_CUSTOMERS)
    far = rng.random(N_CUSTOMERS) < 0.005
    off[far] = rng.uniform(60, 150, far.sum())
    ang = rng.uniform(0, 2 * np.pi, N_CUSTOMERS)
    cx = shapely.get_x(pts) + np.where(far, off * np.cos(ang), 0)
    cy = shapely.get_y(pts) + np.where(far, off * np.sin(ang), off)
    lon, lat = transform_xy(cx, cy, from_crs="EPSG:4548", to_crs="EPSG:4326")
    junctions = net.nodes.index[net.nodes["node_type"] == "junction"].to_numpy()
    log_nodes = rng.choice(junctions, N_LOGGERS, replace=False)
    lx, ly = transform_xy(net.nodes.geometry.x[log_nodes].to_numpy(), net.nodes.geometry.y[log_nodes].to_numpy(),
                          from_crs="EPSG:4548", to_crs="EPSG:4326")
    inlets = json.loads((out / "inlets.json").read_text())
    mid = shapely.line_interpolate_point(net.links.geometry[inlets].to_numpy(), 0.5, normalized=True)
    fx, fy = transform_xy(shapely.get_x(mid), shapely.get_y(mid), from_crs="EPSG:4548", to_crs="EPSG:4326")
    m = pd.DataFrame({
        "meter_id": [f"C{k:06d}" for k in range(N_CUSTOMERS)] + [f"PRS-{n}" for n in log_nodes] + [f"FLW-{l}" for l in inlets],
        "kind": ["customer"] * N_CUSTOMERS + ["pressure"] * N_LOGGERS + ["flow"] * len(inlets),
        "lon": np.round(np.concatenate([lon, lx, fx]), 7),
        "lat": np.round(np.concatenate([lat, ly, fy]), 7),
        "node_id": [""] * N_CUSTOMERS + list(log_nodes) + [""] * len(inlets),
        "link_id": [""] * (N_CUSTOMERS + N_LOGGERS) + inlets,
    })
    path = out / "meters.csv"
    m.to_csv(path, index=False)
    return path


def _iso(t_s: np.ndarray) -> pa.Array:
    local = pa.array((t_s + START.value // 10**9 + 8 * 3600).astype("datetime64[s]"))
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(pc.strftime(local, format="%Y-%m-%dT%H:%M:%S"), "+08:00", "")


def write_week(path: Path, meters_csv: Path, seed: int, weeks: int = 1) -> int:
    """Readings for ``weeks`` weeks, written week by week; returns the row count."""
    m = pd.read_csv(meters_csv, dtype=str, keep_default_na=False)
    cust = m.loc[m["kind"] == "customer", "meter_id"].to_numpy()
    logs = m.loc[m["kind"] == "pressure", "meter_id"].to_numpy()
    flows = m.loc[m["kind"] == "flow", "meter_id"].to_numpy()
    rng = np.random.default_rng(seed + 2)
    rate = rng.lognormal(np.log(0.65 / 86400), 0.4, len(cust))  # m³/s
    reg0 = rng.gamma(2.0, 400.0, len(cust))
    offset = rng.uniform(0, 43200, len(cust))
    rows = 0
    writer = None
    week_s = 7 * 86400
    steps = np.arange(7 * 96) * 900.0
    for w in range(weeks):
        t0 = w * week_s
        k = np.arange(14)
        tc = t0 + k[None, :] * 43200.0 + offset[:, None] + rng.normal(0, 1200, (len(cust), 14))
        tc = np.floor(np.clip(tc, t0, t0 + week_s - 1))
        vc = np.floor((reg0[:, None] + rate[:, None] * tc) * 1000) / 1000
        ids = np.repeat(cust, 14)
        ts = tc.ravel()
        vals = vc.ravel()
        lt = np.tile(t0 + steps, len(logs))
        lid = np.repeat(logs, len(steps))
        lv = np.round(35 + 5 * np.sin(lt / 86400 * 2 * np.pi) + rng.normal(0, 0.05, len(lt)), 3)
        ft = np.tile(t0 + steps, len(flows))
        fid = np.repeat(flows, len(steps))
        fv = np.round(20 + 8 * np.sin(ft / 86400 * 2 * np.pi) + rng.normal(0, 0.1, len(ft)), 3)
        table = pa.table({
            "meter_id": pa.array(np.concatenate([ids, lid, fid])),
            "timestamp": _iso(np.concatenate([ts, lt, ft]).astype(np.int64)),
            "value": pa.array(np.concatenate([vals, lv, fv])),
        })
        if writer is None:
            writer = pcsv.CSVWriter(str(path), table.schema)
        writer.write_table(table)
        rows += table.num_rows
    writer.close()
    return rows


def _run(code: str, setup: str = "") -> dict:
    """Run a step in a fresh interpreter; it prints a JSON dict last.

    ``setup`` runs before and is not part of the step's timing (it is part
    of the peak memory and CPU time).
    """
    wrapper = (
        "import json, resource, time\n" + setup + "\n" + code +
        "\nru = resource.getrusage(resource.RUSAGE_SELF)\n"
        "res['peak_rss_mib'] = ru.ru_maxrss / 1024\n"
        "res['cpu_s'] = ru.ru_utime + ru.ru_stime\n"
        "print(json.dumps(res))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--year-scale", type=float, default=0.25, help="share of the 52-week year to ingest (0 skips)")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the files in")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    out = args.keep or Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(timings are wall clock; other work on the machine inflates them)")
    t = time.perf_counter()
    inp = make_network(out, args.seed)
    meters = make_meters(out, args.seed)
    readings = out / "week.csv"
    rows = write_week(readings, meters, args.seed)
    print(f"generated network, {N_CUSTOMERS:,} customers and {rows:,} readings rows in {time.perf_counter() - t:.1f} s "
          f"({readings.stat().st_size / 2**20:.0f} MiB CSV)")

    r = _run(f"""
from twin.network import read_network
from twin.meters import read_meters, join_meters
net = read_network({str(inp)!r}, crs='EPSG:4548')
m = read_meters({str(meters)!r})
t = time.perf_counter()
j = join_meters(m, net, max_distance_m=50)
res = dict(seconds=time.perf_counter() - t, pipes=int((net.links.link_type == 'pipe').sum()),
           meters=len(j), matched=int(j.matched.sum()))
""")
    print(f"join: {r['meters']:,} meters to {r['pipes']:,} pipes in {r['seconds']:.2f} s "
          f"({r['matched']:,} within 50 m)  [target < 5 s]")
    print(f"   (process CPU incl. reading the network: {r['cpu_s']:.1f} s)")

    db = out / "week.duckdb"
    r = _run(f"""
from twin.store import Store
t = time.perf_counter()
with Store({str(db)!r}) as st:
    s = st.ingest({str(meters)!r}, {str(readings)!r}, now='2027-01-01T00:00:00+08:00', network=net)
res = dict(seconds=time.perf_counter() - t, rows=s.rows_in, accepted=s.accepted, adds_up=s.adds_up,
           quarantined=s.quarantined, joined=s.joined)
""", setup=f"""
from twin.network import read_network
net = read_network({str(inp)!r}, crs='EPSG:4548')
""")
    print(f"ingest week (registry checked against the network and joined, then readings): "
          f"{r['rows']:,} rows in {r['seconds']:.1f} s ({r['rows'] / r['seconds'] / 1e6:.2f} M rows/s), "
          f"peak RSS {r['peak_rss_mib']:.0f} MiB, adds up: {r['adds_up']}  [target < 20 s]")
    print(f"   (process CPU {r['cpu_s']:.1f} s on {os.cpu_count()} cores)")
    r = _run(f"""
from twin.store import Store
t = time.perf_counter()
with Store({str(db)!r}) as st:
    s = st.ingest(None, {str(readings)!r}, now='2027-01-01T00:00:00+08:00')
res = dict(seconds=time.perf_counter() - t, skipped=s.duplicates_skipped, accepted=s.accepted)
""")
    print(f"re-ingest same week: {r['seconds']:.1f} s, {r['accepted']} added, {r['skipped']:,} skipped")

    r = _run(f"""
from twin.network import read_network
from twin.store import Store
from twin.balance import water_balance
net = read_network({str(inp)!r}, crs='EPSG:4548')
with Store({str(db)!r}) as st:
    t = time.perf_counter()
    b = water_balance(net, st)
res = dict(seconds=time.perf_counter() - t, rows=len(b), dmas=int(b.dma.nunique()))
""")
    print(f"balance of the city week (join stored at ingest): {r['dmas']} DMAs x days = {r['rows']} rows "
          f"in {r['seconds']:.1f} s, "
          f"peak RSS {r['peak_rss_mib']:.0f} MiB  [target < 10 s]")
    print(f"   (process CPU incl. reading the network: {r['cpu_s']:.1f} s)")

    if args.year_scale > 0:
        weeks = max(1, int(round(52 * args.year_scale)))
        year = out / "year.csv"
        t = time.perf_counter()
        yrows = write_week(year, meters, args.seed + 10, weeks=weeks)
        print(f"generated {weeks} weeks: {yrows:,} rows ({year.stat().st_size / 2**30:.2f} GiB CSV) "
              f"in {time.perf_counter() - t:.0f} s")
        ydb = out / "year.duckdb"
        r = _run(f"""
from twin.store import Store
t = time.perf_counter()
with Store({str(ydb)!r}, memory_limit='1GB') as st:
    s = st.ingest({str(meters)!r}, {str(year)!r}, now='2028-01-01T00:00:00+08:00')
res = dict(seconds=time.perf_counter() - t, rows=s.rows_in, accepted=s.accepted, adds_up=s.adds_up)
""")
        print(f"ingest {weeks} weeks: {r['rows']:,} rows in {r['seconds']:.0f} s "
              f"({r['rows'] / r['seconds'] / 1e6:.2f} M rows/s), peak RSS {r['peak_rss_mib']:.0f} MiB, "
              f"adds up: {r['adds_up']}  [target: a 95 M-row year under 2 GiB]")
        year.unlink()
    tmp.cleanup()


if __name__ == "__main__":
    main()
