"""The localisation job on a folder of contract weeks, scored against their truth.

Usage::

    python benchmarks/bench_validation.py ../shared/validation [--json OUT.json]

Every sub-folder (searched recursively) holding ``network.inp``, ``meters.csv``,
``readings.csv``/``.parquet`` and ``truth.json`` is one week; network
coordinates are taken as EPSG:32650 unless ``--crs`` says otherwise. The job
runs exactly as ``twin localise`` does (files in, candidates out); the
candidates are scored by the folder's own ``score.py`` when it has one (the
independent scorer of ``../shared/validation``), by :func:`twin.bench`'s
pipe distances otherwise. Prints one line per week and a summary per
network: rank of the leaking pipe, pipe distance from the top candidate to
the leak (BattLeDIM's 300 m), crew walk, the claimed probability of the top
candidate, run time. Misses (no leak reported) are listed, not dropped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path


def _weeks(root: Path) -> list[Path]:
    found = []
    for truth in sorted(root.rglob("truth.json")):
        week = truth.parent
        if (week / "network.inp").exists() and (week / "meters.csv").exists():
            found.append(week)
    return found


def _readings(week: Path) -> Path:
    for name in ("readings.parquet", "readings.csv"):
        if (week / name).exists():
            return week / name
    raise FileNotFoundError(f"{week}: no readings.parquet or readings.csv")


def _scorer(root: Path):
    path = root / "score.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("week_scorer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.score


def _own_score(week: Path, cand_csv: Path, crs: str) -> dict:
    import pandas as pd

    from twin.bench import score_ranking
    from twin.graph import pipe_distances
    from twin.network import read_network

    truth = json.loads((week / "truth.json").read_text())
    net = read_network(week / "network.inp", crs=crs)
    cands = pd.read_csv(cand_csv, dtype={"link_id": str})
    dist = pipe_distances(net, truth["leak_pipe"], 0.5)
    s = score_ranking(cands, dist, truth["leak_pipe"], float(net.pipes["length_m"].sum()))
    return {"scenario": week.name, "leak_pipe": truth["leak_pipe"], "leak_lps": truth.get("leak_lps"),
            "rank": s.get("rank"), "top1_dist_m": s.get("top_distance_m"),
            "hit300": bool(s.get("hit")), "walk_share": float(s.get("walk_pct", 100.0)) / 100.0}


def run_week(week: Path, crs: str, scorer, out: Path, group: str = "") -> dict:
    from twin.pipeline import localise_files

    t0 = time.perf_counter()
    try:
        res = localise_files(week / "network.inp", crs=crs, meters_path=week / "meters.csv",
                             readings_path=_readings(week), out_dir=out, write_map=False)
        report = res["report_dict"]
        error = None
    except Exception as exc:  # a benchmark reports a failed week, it does not stop
        report, error = {}, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    cand = out / "candidates.csv"
    row: dict = {"week": str(week), "network": group + week.name.rsplit("-", 1)[0], "seconds": round(seconds, 1),
                 "detected": bool(report.get("detected")), "error": error,
                 "leak_lps_est": report.get("leak_flow_lps"), "onset_est": report.get("onset")}
    truth = json.loads((week / "truth.json").read_text())
    row["leak_lps"], row["onset"] = truth.get("leak_lps"), truth.get("onset")
    if row["detected"] and cand.exists():
        s = scorer(week, cand) if scorer is not None else _own_score(week, cand, crs)
        import pandas as pd

        top = pd.read_csv(cand, nrows=1)
        row.update(rank=s["rank"], top1_dist_m=s["top1_dist_m"], hit300=bool(s["hit300"]),
                   walk_share=s["walk_share"], top_score=float(top["score"].iat[0]) if len(top) else None)
    else:
        row.update(rank=None, top1_dist_m=None, hit300=False, walk_share=1.0, top_score=None)
    return row


def summarise(rows: list[dict]) -> str:
    lines = []
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["network"], []).append(r)
    groups["all"] = rows
    for name, rs in groups.items():
        ranks = [r["rank"] if r["rank"] is not None else float("inf") for r in rs]
        walks = [r["walk_share"] for r in rs]
        lines.append(
            f"{name:10s} weeks {len(rs):2d}  reported {sum(r['detected'] for r in rs):2d}  "
            f"top within 300 m {sum(r['hit300'] for r in rs):2d}  "
            f"median rank {statistics.median(ranks):g}  median walk {100 * statistics.median(walks):.2f} %  "
            f"median time {statistics.median(r['seconds'] for r in rs):.1f} s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--crs", default="EPSG:32650")
    ap.add_argument("--json", type=Path, default=None, help="write the per-week rows here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("wntr").setLevel(logging.ERROR)  # EPANET's per-snapshot warnings
    scorer = _scorer(args.root)
    rows = []
    with tempfile.TemporaryDirectory(prefix="twin-validation-") as tmp:
        for i, week in enumerate(_weeks(args.root)):
            rel = week.relative_to(args.root)
            group = "" if rel.parent == Path(".") else f"{rel.parent.as_posix()}/"
            row = run_week(week, args.crs, scorer, Path(tmp) / f"w{i}", group)
            rows.append(row)
            print(f"{str(week.relative_to(args.root)):22s} detected {row['detected']!s:5s} "
                  f"rank {row['rank']!s:>5s}  top {row['top1_dist_m']!s:>7s} m  "
                  f"p_top {row['top_score'] if row['top_score'] is None else round(row['top_score'], 3)!s:>6s}  "
                  f"flow {row['leak_lps_est']!s:>6s}/{row['leak_lps']} L/s  {row['seconds']} s"
                  + (f"  ERROR {row['error']}" if row["error"] else ""), flush=True)
    print(summarise(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
