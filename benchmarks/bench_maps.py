"""Benchmark: crew map of a 20,000-pipe city with 130,000 customer meters, and a repair plan.

Prints the map's size, the time to build and write it, the time headless
Chromium takes to open it offline (basemap none) and draw every layer
(clustering of all customer meters included), and the time to plan the top 10
candidates (PDD closure simulations included).

The city is either the synthetic Yingtan city (``--city yingtan-city.gpkg``,
from ``twin synth city --size city``: 22,047 pipes, 137 DMAs, 30,345 valves,
130,000 customers) or, by default, a deterministic grid (``--seed``): 100 x 100
junctions 80 m apart with bent pipes (about 19,800 pipes, 1,585 km), 16 DMAs,
one reservoir per corner, 130,000 customers within 20 m of a pipe. Run::

    .venv/bin/python benchmarks/bench_maps.py [--city yingtan-city.gpkg] [--side 100] [--customers 130000]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import wntr

from twin.crs import transform_xy
from twin.maps import crew_map, save_map
from twin.meters import join_meters, meters_from_frame
from twin.network import Network, empty_valves, tables_from_wn
from twin.repair import plan_repairs

CRS = "EPSG:4548"
X0, Y0 = 500_000.0, 3_125_000.0  # near Yingtan in CGCS2000 / GK CM 117E


def grid_city(side: int, *, spacing_m: float = 80.0, seed: int = 0) -> Network:
    """A side x side grid network with jittered junctions, one bend per pipe, 16 DMAs."""
    rng = np.random.default_rng(seed)
    wn = wntr.network.WaterNetworkModel()
    wn.add_pattern("diurnal", list(0.6 + 0.6 * np.sin(np.linspace(0, 2 * np.pi, 24, endpoint=False)) ** 2))
    jitter = rng.uniform(-10, 10, (side, side, 2))
    name = lambda i, j: f"J{i}_{j}"  # noqa: E731
    for i in range(side):
        for j in range(side):
            x = X0 + i * spacing_m + jitter[i, j, 0]
            y = Y0 + j * spacing_m + jitter[i, j, 1]
            node = name(i, j)
            wn.add_junction(node, base_demand=float(rng.uniform(0.0002, 0.0008)), demand_pattern="diurnal",
                            elevation=float(30 + 0.01 * i + rng.uniform(-1, 1)), coordinates=(x, y))
            wn.get_node(node).tag = f"D{4 * (i * 4 // side) + j * 4 // side + 1:02d}"
    k = 0
    for i in range(side):
        for j in range(side):
            for di, dj in ((1, 0), (0, 1)):
                if i + di >= side or j + dj >= side:
                    continue
                a, b = name(i, j), name(i + di, j + dj)
                diameter = 0.3 if (i % 10 == 0 or j % 10 == 0) else float(rng.choice([0.1, 0.15, 0.2]))
                wn.add_pipe(f"P{k}", a, b, length=float(spacing_m), diameter=diameter, roughness=110.0)
                pa, pb = wn.get_node(a).coordinates, wn.get_node(b).coordinates
                mid = ((pa[0] + pb[0]) / 2 + rng.uniform(-6, 6), (pa[1] + pb[1]) / 2 + rng.uniform(-6, 6))
                link = wn.get_link(f"P{k}")
                link.vertices = [mid]
                link.tag = wn.get_node(a).tag
                k += 1
    for c, (i, j) in enumerate([(0, 0), (0, side - 1), (side - 1, 0), (side - 1, side - 1)]):
        x, y = wn.get_node(name(i, j)).coordinates
        wn.add_reservoir(f"R{c}", base_head=75.0, coordinates=(x - 30, y - 30))
        wn.add_pipe(f"PR{c}", f"R{c}", name(i, j), length=50.0, diameter=0.6, roughness=120.0)
    crs = pyproj.CRS(CRS)
    nodes, links = tables_from_wn(wn, crs)
    links["material"] = pd.Series(rng.choice(["PE", "DI", "CI", "PVC"], len(links)), index=links.index,
                                  dtype="string")
    links["install_year"] = pd.Series(rng.integers(1965, 2024, len(links)), index=links.index, dtype="Int64")
    return Network(wn=wn, crs=crs, nodes=nodes, links=links, valves=empty_valves(crs), source="grid")


def customers(net: Network, n: int, *, seed: int = 0) -> pd.DataFrame:
    """n customer meters within 20 m of a random pipe, plus 60 loggers and 4 flow meters (WGS84)."""
    rng = np.random.default_rng(seed)
    pipes = net.pipes
    pick = rng.integers(0, len(pipes), n)
    pts = pipes.geometry.values[pick]
    import shapely

    on = shapely.line_interpolate_point(pts, rng.uniform(0, 1, n), normalized=True)
    xy = shapely.get_coordinates(on) + rng.normal(0, 8, (n, 2))
    lon, lat = transform_xy(xy[:, 0], xy[:, 1], from_crs=CRS, to_crs="EPSG:4326")
    cls = rng.choice(["residential", "commercial", "industrial", "hospital"], n, p=[0.9, 0.08, 0.019, 0.001])
    frame = pd.DataFrame({"meter_id": [f"C{i:06d}" for i in range(n)], "kind": "customer", "lon": lon,
                          "lat": lat, "node_id": None, "link_id": None, "customer_class": cls})
    junctions = net.nodes.index[net.nodes["node_type"] == "junction"]
    loggers = pd.DataFrame({"meter_id": [f"P{i:02d}" for i in range(60)], "kind": "pressure",
                            "lon": np.nan, "lat": np.nan, "node_id": rng.choice(junctions, 60, replace=False),
                            "link_id": None})
    flows = pd.DataFrame({"meter_id": [f"F{i}" for i in range(4)], "kind": "flow", "lon": np.nan,
                          "lat": np.nan, "node_id": None, "link_id": [f"PR{i}" for i in range(4)]})
    return pd.concat([frame, loggers, flows], ignore_index=True)


def open_in_chromium(html: Path, profile: Path, budget_ms: int = 30000,
                     screenshot: Path | None = None) -> tuple[float, dict, list[str]]:
    """Open a page offline in headless Chromium; (wall seconds, layer counts, console lines).

    With ``screenshot`` the page is rendered to a PNG (what a user waits for);
    without, the DOM is dumped to read the layer counts (serialising the
    inlined scripts of a city map adds a few seconds to the wall time).
    """
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return float("nan"), {}, ["chromium not installed"]
    mode = [f"--screenshot={screenshot}", "--window-size=1200,800"] if screenshot else ["--dump-dom"]
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--virtual-time-budget={budget_ms}", *mode,
            html.resolve().as_uri()]
    t = time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t
    stats = re.search(r'id="twin-stats" data-stats="([^"]*)"', run.stdout)
    counts = json.loads(stats.group(1).replace("&quot;", '"')) if stats else {}
    ms = re.search(r'data-ms="([^"]*)"', run.stdout)
    if ms:
        counts["_ms"] = json.loads(ms.group(1).replace("&quot;", '"'))
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return dt, counts, console


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--city", type=Path, default=None, help="yingtan-city.gpkg of `twin synth city`")
    ap.add_argument("--side", type=int, default=100, help="junctions per grid side (100: ~19,800 pipes)")
    ap.add_argument("--customers", type=int, default=130_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the map and plan in")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    dmas = None
    if args.city is not None:
        import geopandas as gpd

        from twin.network import read_network

        net = read_network(args.city)
        cust = gpd.read_file(args.city, layer="customers").to_crs("EPSG:4326")
        registry = customers(net, 0, seed=args.seed)  # loggers and flow meters only
        registry = pd.concat([pd.DataFrame({
            "meter_id": cust["meter_id"].astype(str), "kind": "customer", "lon": cust.geometry.x,
            "lat": cust.geometry.y, "node_id": None, "link_id": None,
            "customer_class": cust["customer_class"]}), registry], ignore_index=True)
        dmas = gpd.read_file(args.city, layer="dmas").set_index("dma")
        label = f"Yingtan synthetic city {args.city.name}"
    else:
        net = grid_city(args.side, seed=args.seed)
        registry = customers(net, args.customers, seed=args.seed)
        label = f"grid city {args.side}x{args.side}"
    print(f"{label}: {len(net.pipes):,} pipes, {net.pipes['length_m'].sum() / 1000:,.0f} km, "
          f"{(net.nodes['node_type'] == 'junction').sum():,} junctions, {len(net.valves):,} valves "
          f"(loaded in {time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    meters = meters_from_frame(registry)
    join = join_meters(meters, net)
    print(f"meters: {int((meters['kind'] == 'customer').sum()):,} customers, joined "
          f"{int(join['matched'].sum()):,} in {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(args.seed)
    cand_links = rng.choice(net.pipes.index, 200, replace=False)
    score = np.sort(rng.dirichlet(np.full(200, 0.3)))[::-1]
    cands = pd.DataFrame({"rank": np.arange(1, 201), "link_id": cand_links, "score": score,
                          "leak_flow_lps": 2.5, "in_candidate_zone": np.cumsum(score) - score < 0.9})
    zones = sorted(net.links["zone"].dropna().astype(str).unique())
    days = pd.date_range("2026-03-02", periods=7, freq="D").strftime("%Y-%m-%d")
    balance = pd.DataFrame([(z, d, float(rng.uniform(5, 35))) for z in zones for d in days],
                           columns=["dma", "date", "nrw_pct"])

    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="twin-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        plan = plan_repairs(net, candidates=cands, join=join, meters=meters, top_n=10, seed=args.seed)
        t_plan = time.perf_counter() - t
        print(f"plan: {len(plan)} work orders for the top 10 candidates in {t_plan:.2f} s "
              f"(valve layer: {len(plan.attrs['valves']):,} valves, {plan.attrs['valves']['source'].iloc[0]}; "
              "PDD closure simulations); "
              f"{int(plan['customers_affected'].sum()):,} customers affected")
        t = time.perf_counter()
        m = crew_map(net, candidates=cands, join=join, meters=meters, balance=balance, plan=plan,
                     valves=plan.attrs["valves"], dmas=dmas, basemap="none", title="bench")
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        html = save_map(m, out / "map.html")
        t_save = time.perf_counter() - t
        size = html.stat().st_size / 1e6
        print(f"map: built in {t_build:.1f} s, written in {t_save:.1f} s, {size:.1f} MB")
        empty = out / "empty.html"
        empty.write_text("<!DOCTYPE html><html><body>empty</body></html>")
        shot = out / "map.png"
        t0 = min(open_in_chromium(empty, out / "profile", screenshot=shot)[0] for _ in range(2))
        runs = [open_in_chromium(html, out / "profile", budget_ms=5000, screenshot=shot)[0] for _ in range(3)]
        dt = float(np.median(runs))
        t_dom, counts, console = open_in_chromium(html, out / "profile")
        page_ms = counts.get("_ms", {}).get("customers_clustered", float("nan"))
        print(f"chromium: {dt:.1f} s to open the page and render it with every layer (median of "
              f"{', '.join(f'{r:.1f}' for r in runs)} s; an empty page: {t0:.1f} s); page clock when the "
              f"last layer was done: {page_ms / 1000:.1f} s; with the DOM dump: {t_dom:.1f} s; "
              f"console messages: {len(console)}")
        ms = counts.pop("_ms", {})
        print("drawn: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        print("page clock when each layer was done (ms): " + ", ".join(f"{k} {v:,}" for k, v in ms.items()))
        for line in console[:5]:
            print("  " + line[-200:])
        ok = size <= 15 and dt - t0 < 5 and t_plan < 10 and not console
        print("targets (<= 15 MB, < 5 s to open, plan < 10 s): " + ("met" if ok else "NOT met"))
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
