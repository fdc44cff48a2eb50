"""Evaluation harness of the leak-localisation job against synthetic truth.

For ``n`` scenarios, :func:`twin.synth.synth_readings` simulates a week on a
"true" network (roughness and demands differ from the file, realistic meter
and logger noise, loggers on about 4 % of junctions) with a leak of 1-6 % of
the demand at a random pipe, position and time; ``m`` more weeks have no
leak. The job (:func:`twin.localise.localise`) and the classic method
(:func:`twin.classic.classic_localise`) run on each, and the figures that
matter to a utility are computed:

- the share of scenarios whose top candidate lies within 300 m of *pipe*
  distance from the leak (BattLeDIM's criterion: shortest path along the
  pipes between the leak point and the candidate pipe);
- the rank of the leaking pipe;
- the pipe length a crew walks down the ranking until it has walked the
  leaking pipe (m and % of the network's pipe length);
- false alarms on leak-free weeks; run time.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from twin import settings
from twin.classic import classic_localise
from twin.graph import pipe_distances
from twin.localise import Localisation, localise
from twin.meters import join_meters, read_meters
from twin.model import Network
from twin.network import read_network
from twin.synth import synth_readings

log = logging.getLogger(__name__)

__all__ = ["BenchResult", "format_summary", "pipe_distances", "run_bench", "score_ranking", "summarise"]


def score_ranking(candidates: pd.DataFrame, distances: pd.Series, leak_link: str,
                  total_length_m: float, radius_m: float = settings.LOCALISATION_RADIUS_M) -> dict:
    """Figures of one ranking against the true leak.

    Returns
    -------
    dict
        ``top_distance_m`` (pipe distance of the top candidate), ``hit``
        (within ``radius_m``), ``rank`` of the leaking pipe (NaN if absent),
        ``walk_m`` (length of the pipes ranked above it plus its own),
        ``walk_pct`` (of ``total_length_m``).
    """
    if candidates.empty:
        return {"top_distance_m": np.nan, "hit": False, "rank": np.nan, "walk_m": np.nan, "walk_pct": np.nan}
    ids = candidates["link_id"].astype(str).to_numpy()
    top_d = float(distances.get(ids[0], np.nan))
    where = np.flatnonzero(ids == leak_link)
    if len(where):
        r = int(where[0])
        walk = float(candidates["length_m"].iloc[: r + 1].sum())
        rank = r + 1
    else:
        rank, walk = np.nan, np.nan
    return {"top_distance_m": round(top_d, 1), "hit": bool(top_d <= radius_m), "rank": rank,
            "walk_m": round(walk, 1) if np.isfinite(walk) else walk,
            "walk_pct": round(100 * walk / total_length_m, 3) if np.isfinite(walk) else walk}


@dataclass
class BenchResult:
    """Per-scenario rows and the summary of :func:`run_bench`."""

    scenarios: pd.DataFrame
    summary: dict


def _load(files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The meter table and the readings (UTC timestamps) that :func:`synth_readings` wrote."""
    meters = read_meters(files["meters"])
    readings = pd.read_csv(files["readings"], dtype={"meter_id": str, "timestamp": str})
    readings["timestamp"] = pd.to_datetime(readings["timestamp"], utc=True, format="ISO8601")
    return meters, readings


def run_bench(
    network_path: str | Path,
    *,
    crs: str,
    scenarios: int = 10,
    leak_free: int = 0,
    seed: int = 0,
    days: int = 7,
    classic: bool = True,
    work_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    localise_options: dict | None = None,
) -> BenchResult:
    """Generate scenarios, run both methods, compute the figures.

    Parameters
    ----------
    network_path : str or Path
        EPANET ``.inp`` of the utility.
    crs : str
        CRS of its coordinates (projected).
    scenarios : int
        Leak scenarios (seeds ``seed``, ``seed + 1``...).
    leak_free : int
        Leak-free weeks (seeds ``seed + 10_000``...) for false alarms.
    seed : int
        First seed.
    days : int
        Days per scenario.
    classic : bool
        Also run the classic method on the leak scenarios.
    work_dir : path, optional
        Where scenario files go (default: a temporary directory, removed).
    progress : callable, optional
        ``progress(stage, done, total)``.
    localise_options : dict, optional
        Keyword options for :func:`twin.localise.localise`.

    Returns
    -------
    BenchResult
    """
    network_path = Path(network_path)
    network = read_network(network_path, crs=crs)
    total_len = float(network.links.loc[network.links["link_type"] == "pipe", "length_m"].sum())
    rows: list[dict] = []
    tmp = tempfile.TemporaryDirectory(prefix="twin-bench-") if work_dir is None else None
    root = Path(work_dir) if work_dir is not None else Path(tmp.name)
    jobs = [(seed + i, "random") for i in range(scenarios)] + [(seed + 10_000 + i, "none") for i in range(leak_free)]
    try:
        for done, (sd, leak) in enumerate(jobs):
            out = root / f"{'leak' if leak == 'random' else 'free'}-{sd}"
            row = _run_scenario(network, network_path, out, crs=crs, days=days, seed=sd, leak=leak,
                                classic=classic, total_len=total_len, localise_options=localise_options or {})
            rows.append(row)
            if "error" in row:
                continue
            log.info("bench scenario %d/%d (seed %d): %s", done + 1, len(jobs), sd,
                     {k: row.get(k) for k in ("detected", "twin_rank", "twin_top_distance_m", "classic_rank")})
            if progress is not None:
                progress("scenarios", done + 1, len(jobs))
    finally:
        if tmp is not None:
            tmp.cleanup()
    df = pd.DataFrame(rows)
    return BenchResult(df, summarise(df, total_len, network_path.name))


def _run_scenario(network: Network, network_path: Path, out: Path, *, crs: str, days: int, seed: int, leak: str,
                  classic: bool, total_len: float, localise_options: dict) -> dict[str, Any]:
    """Simulate one week, localise, and score against the truth: one row of the scenario table."""
    t0 = time.perf_counter()
    files = synth_readings(network_path, crs=crs, days=days, leak=leak, seed=seed, out_dir=out)
    t_syn = time.perf_counter() - t0
    truth = json.loads(Path(files["truth"]).read_text())
    meters, readings = _load(files)
    join = join_meters(meters, network)
    t1 = time.perf_counter()
    row: dict[str, Any] = {"seed": seed, "leak": leak != "none", "synth_s": round(t_syn, 2)}
    try:
        loc = localise(network, meters=meters, join=join, readings=readings, **localise_options)
    except Exception as exc:  # a failed scenario is a result, not a crash
        row.update({"error": f"{type(exc).__name__}: {exc}"})
        return row
    row["twin_s"] = round(time.perf_counter() - t1, 2)
    row["detected"] = loc.report["detected"]
    row["leak_flow_est_lps"] = loc.report["leak_flow_lps"]
    if truth.get("leak"):
        row.update(_score_leak(network, loc, truth["leak"], total_len=total_len, classic=classic,
                               twin_s=row["twin_s"]))
    return row


def _score_leak(network: Network, loc: Localisation, lk: dict, *, total_len: float, classic: bool,
                twin_s: float) -> dict[str, Any]:
    """Figures of the twin's ranking (and the classic method's) against the true leak ``lk``."""
    row: dict[str, Any] = {"leak_link": lk["link_id"], "leak_flow_lps": lk["flow_lps"],
                           "onset_true": lk["onset"], "onset_est": loc.report["onset"]}
    dist = pipe_distances(network, lk["link_id"], float(lk["position"]))
    row.update({f"twin_{k}": v for k, v in score_ranking(loc.candidates, dist, lk["link_id"], total_len).items()})
    row["twin_zone_pipes"] = loc.report.get("candidate_zone", {}).get("pipes")
    row["twin_zone_has_leak"] = bool(
        loc.candidates.loc[loc.candidates["link_id"] == lk["link_id"], "in_candidate_zone"].any())
    if classic and loc.internals:
        t2 = time.perf_counter()
        ccand, cinfo = classic_localise(network, loc.internals)
        row["classic_s"] = round(time.perf_counter() - t2 + twin_s
                                 - loc.report["timings_s"].get("signatures_s", 0)
                                 - loc.report["timings_s"].get("refine_s", 0), 2)
        row["classic_simulations"] = cinfo["simulations"]
        row.update({f"classic_{k}": v for k, v in score_ranking(ccand, dist, lk["link_id"], total_len).items()})
    return row


def summarise(df: pd.DataFrame, total_length_m: float, name: str = "") -> dict:
    """The harness's figures from the per-scenario table."""
    out: dict[str, Any] = {"network": name, "pipe_length_km": round(total_length_m / 1000, 2)}
    leak = df[df["leak"]] if "leak" in df else df.iloc[0:0]
    free = df[~df["leak"]] if "leak" in df else df.iloc[0:0]
    out["leak_scenarios"] = int(len(leak))
    out["errors"] = int(df["error"].notna().sum()) if "error" in df else 0
    if len(leak):
        out["detected_share"] = round(float(leak["detected"].fillna(False).astype(bool).mean()), 3)
        for m in ("twin", "classic"):
            if f"{m}_hit" not in leak:
                continue
            hit = leak[f"{m}_hit"].fillna(False).astype(bool)
            out[m] = {
                "within_300m_share": round(float(hit.mean()), 3),
                "median_rank": float(np.nanmedian(leak[f"{m}_rank"].astype(float))) if leak[f"{m}_rank"].notna().any() else None,
                "median_walk_m": float(np.nanmedian(leak[f"{m}_walk_m"].astype(float))) if leak[f"{m}_walk_m"].notna().any() else None,
                "median_walk_pct": float(np.nanmedian(leak[f"{m}_walk_pct"].astype(float))) if leak[f"{m}_walk_pct"].notna().any() else None,
                "median_top_distance_m": float(np.nanmedian(leak[f"{m}_top_distance_m"].astype(float))) if leak[f"{m}_top_distance_m"].notna().any() else None,
                "median_run_s": float(np.nanmedian(leak[f"{m}_s"].astype(float))) if f"{m}_s" in leak and leak[f"{m}_s"].notna().any() else None,
            }
    out["leak_free_weeks"] = int(len(free))
    out["false_alarms"] = int(free["detected"].fillna(False).astype(bool).sum()) if len(free) else 0
    return out


def format_summary(summary: dict) -> str:
    """Plain-text table of a summary for the CLI and benchmarks."""
    lines = [f"network {summary.get('network')} ({summary.get('pipe_length_km')} km of pipe): "
             f"{summary.get('leak_scenarios')} leak scenarios, {summary.get('leak_free_weeks')} leak-free weeks, "
             f"{summary.get('errors')} errors"]
    if "detected_share" in summary:
        lines.append(f"leaks detected: {summary['detected_share']:.0%}")
    for m in ("twin", "classic"):
        if m in summary:
            s = summary[m]
            lines.append(
                f"{m:8s} top within 300 m: {s['within_300m_share']:.0%}  median rank: {s['median_rank']}  "
                f"median walk: {s['median_walk_m']} m ({s['median_walk_pct']} % of network)  "
                f"median top distance: {s['median_top_distance_m']} m  median run: {s['median_run_s']} s")
    lines.append(f"false alarms: {summary.get('false_alarms')} in {summary.get('leak_free_weeks')} leak-free weeks")
    return "\n".join(lines)
