"""Evaluation harness of the leak-localisation job against a known truth.

Three sources of weeks, each scored the same way and reported per generator
and per network, misses included:

- ``twin``: :func:`run_bench` generates weeks with :func:`twin.synth.synth_readings`;
- ``epyt-flow``: :func:`run_bench` with ``generator="epyt-flow"`` generates
  contract weeks with EPyT-Flow (:func:`twin.epyt.epyt_week`, the ``bench``
  extra) and runs the job on their files;
- a folder of contract weeks (:func:`run_weeks`), such as
  ``../shared/validation``: every sub-folder with ``network.inp``,
  ``meters.csv``, ``readings.csv``/``.parquet`` and ``truth.json``.

For the ``twin`` generator and ``n`` scenarios, :func:`twin.synth.synth_readings` simulates a week on a
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
- false alarms on leak-free weeks; onset and leak-flow errors; run time;
- the reliability of the scores: the claimed probability of the top
  candidate in bins against how often it lies within 300 m, and how often
  the 90 % candidate zone holds the leaking pipe.

A week where no leak is reported counts as a miss in every figure: not
within 300 m, rank and walk beyond the whole network.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from twin import settings
from twin.classic import classic_localise
from twin.epyt import epyt_week  # imports EPyT-Flow (the ``bench`` extra) only when a week is made
from twin.errors import InputError
from twin.graph import pipe_distances
from twin.localise import Localisation, localise
from twin.meters import join_meters, read_meters
from twin.model import Network
from twin.network import read_network
from twin.scale import dask_client, map_tasks, share, use_cluster
from twin.synth import synth_readings

log = logging.getLogger(__name__)

__all__ = ["BenchResult", "GENERATORS", "RELIABILITY_BINS", "contract_weeks", "format_report", "format_summary",
           "pipe_distances", "reliability", "run_bench", "run_week", "run_weeks", "score_ranking", "summarise",
           "summarise_groups", "week_truth"]

#: Generators of :func:`run_bench`.
GENERATORS = ("twin", "epyt-flow")
#: Bin edges of the claimed probability of the top candidate (the last bin is closed).
RELIABILITY_BINS = (0.0, 0.2, 0.5, 0.8, 0.95, 1.0)
#: CRS of the coordinates of a folder of contract weeks when none is given.
WEEKS_CRS = "EPSG:32650"


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
    """Per-week rows and the summary of :func:`run_bench` or :func:`run_weeks`.

    ``summary`` is the summary of all rows together (:func:`summarise`);
    ``groups`` holds one summary per generator and network
    (:func:`summarise_groups`).
    """

    scenarios: pd.DataFrame
    summary: dict
    groups: list[dict] | None = None


def _load(files: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The meter table and the readings (UTC timestamps) that :func:`synth_readings` wrote."""
    meters = read_meters(files["meters"])
    readings = pd.read_csv(files["readings"], dtype={"meter_id": str, "timestamp": str})
    readings["timestamp"] = pd.to_datetime(readings["timestamp"], utc=True, format="ISO8601")
    return meters, readings


def _pipe_length_m(network: Network) -> float:
    return float(network.links.loc[network.links["link_type"] == "pipe", "length_m"].sum())


def run_bench(
    network_path: str | Path,
    *,
    crs: str,
    scenarios: int = 10,
    leak_free: int = 0,
    seed: int = 0,
    days: int = 7,
    classic: bool = True,
    generator: str = "twin",
    work_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    localise_options: dict | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    client: Any = None,
) -> BenchResult:
    """Generate scenarios, run the job (and the classic method), compute the figures.

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
        Also run the classic method on the leak scenarios (``twin`` generator only).
    generator : {"twin", "epyt-flow"}
        ``twin``: :func:`twin.synth.synth_readings`, the job run on the
        tables in memory. ``epyt-flow``: :func:`twin.epyt.epyt_week` (needs
        the ``bench`` extra), the job run on the contract files as
        ``twin localise`` runs it.
    work_dir : path, optional
        Where scenario files go (default: a temporary directory per
        scenario, removed).
    progress : callable, optional
        ``progress(stage, done, total)``.
    localise_options : dict, optional
        Keyword options for :func:`twin.localise.localise`.
    workers : int, optional
        Run the scenarios as Dask tasks on a local cluster of this many
        worker processes (None: the machine's cores); 1 (the default) runs
        them one after another in this process (:func:`twin.scale.use_cluster`).
    scheduler : str, optional
        Address of a Dask scheduler to run the scenarios on instead.
    client : distributed.Client, optional
        A client already open (its cluster is used as it is).

    Returns
    -------
    BenchResult
        The same rows in the same order however the scenarios ran (only the
        timings differ).
    """
    if generator not in GENERATORS:
        raise InputError(f"unknown generator {generator!r}", element="--generator",
                         fix=f"use one of {', '.join(GENERATORS)}")
    network_path = Path(network_path)
    network = read_network(network_path, crs=crs)
    total_len = _pipe_length_m(network)
    jobs = [(seed + i, "random") for i in range(scenarios)] + [(seed + 10_000 + i, "none") for i in range(leak_free)]
    options = {"network_path": network_path, "crs": crs, "days": days, "classic": classic, "generator": generator,
               "total_len": total_len, "work_dir": None if work_dir is None else Path(work_dir),
               "localise_options": localise_options or {}}
    rows = _run_tasks(_bench_task, jobs, shared={"network": network}, options=options, stage="scenarios",
                      on_error=lambda job, exc: {"seed": job[0], "leak": job[1] != "none", "generator": generator,
                                                 "network": network_path.stem,
                                                 "error": f"{type(exc).__name__}: {exc}"},
                      progress=progress, workers=workers, scheduler=scheduler, client=client)
    df = pd.DataFrame(rows)
    return BenchResult(df, summarise(df, total_len, network_path.name), summarise_groups(df))


def _run_tasks(fn: Callable[..., dict], items: list, *, shared: dict[str, Any], options: dict[str, Any], stage: str,
               on_error: Callable[[Any, BaseException], dict], progress: Callable[[str, int, int], None] | None,
               workers: int | None, scheduler: str | None, client: Any) -> list[dict]:
    """``fn(item, **shared, **options)`` for every item: in this process, or as Dask tasks (:mod:`twin.scale`).

    ``shared`` holds the large objects every task needs: on a cluster they
    are sent to each worker once. Results come back in the order of ``items``;
    a task that raises gives ``on_error(item, exc)``.
    """
    def run_on(cl: Any) -> list[dict]:
        futures = {k: share(cl, v) for k, v in shared.items()}
        return map_tasks(cl, fn, items, shared={**futures, **options}, on_error=on_error, progress=progress,
                         stage=stage)

    if client is not None:
        return run_on(client)
    if use_cluster(len(items), workers=workers, scheduler=scheduler):
        with dask_client(scheduler, workers=workers) as cl:
            return run_on(cl)
    rows = []
    for done, item in enumerate(items, start=1):
        try:
            rows.append(fn(item, **shared, **options))
        except Exception as exc:  # as on a cluster: a failed scenario is a row, not the end of the others
            log.warning("%s %d of %d failed: %s: %s", stage, done, len(items), type(exc).__name__, exc)
            rows.append(on_error(item, exc))
        if progress is not None:
            progress(stage, done, len(items))
    return rows


def _bench_task(job: tuple[int, str], *, network: Network, network_path: Path, crs: str, days: int, classic: bool,
                generator: str, total_len: float, work_dir: Path | None, localise_options: dict) -> dict[str, Any]:
    """One scenario of :func:`run_bench` (seed, ``"random"`` or ``"none"``): its row, in a process or a Dask task."""
    sd, leak = job
    name = f"{'leak' if leak == 'random' else 'free'}-{sd}"
    with _scratch(work_dir, prefix="twin-bench-") as root:
        out = root / name
        if generator == "twin":
            row = _run_scenario(network, network_path, out, crs=crs, days=days, seed=sd, leak=leak,
                                classic=classic, total_len=total_len, localise_options=localise_options)
        else:
            row = _run_epyt_scenario(network_path, out, crs=crs, days=days, seed=sd, leak=leak,
                                     localise_options=localise_options)
    row.update({"generator": generator, "network": network_path.stem})
    log.info("bench scenario (seed %d): %s", sd,
             {k: row.get(k) for k in ("detected", "twin_rank", "twin_top_distance_m", "error")})
    return row


@contextmanager
def _scratch(work_dir: Path | None, *, prefix: str) -> Iterator[Path]:
    """``work_dir``, or a temporary folder removed afterwards (made where the task runs)."""
    if work_dir is not None:
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


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
    row: dict[str, Any] = {"seed": seed, "week": out.name, "leak": leak != "none", "synth_s": round(t_syn, 2),
                           "pipe_length_m": total_len}
    try:
        loc = localise(network, meters=meters, join=join, readings=readings, **localise_options)
    except Exception as exc:  # a failed scenario is a result, not a crash
        row.update({"error": f"{type(exc).__name__}: {exc}"})
        return row
    row["twin_s"] = round(time.perf_counter() - t1, 2)
    row.update(_report_figures(loc.report, loc.candidates))
    lk = _normalise_truth(truth)
    if lk is not None:
        row.update(_score_leak(network, loc, lk, total_len=total_len, classic=classic, twin_s=row["twin_s"]))
    return row


def _run_epyt_scenario(network_path: Path, out: Path, *, crs: str, days: int, seed: int, leak: str,
                       localise_options: dict) -> dict[str, Any]:
    """Generate one EPyT-Flow week into ``out`` and run the job on its files."""
    t0 = time.perf_counter()
    week = out / "week"
    epyt_week(network_path, crs=crs, days=days, leak=leak != "none", seed=seed, out_dir=week)
    t_gen = time.perf_counter() - t0
    row = run_week(week, crs=crs, out_dir=out / "job", localise_options=localise_options)
    row.update({"seed": seed, "week": out.name, "synth_s": round(t_gen, 2)})
    return row


def _report_figures(report: dict, candidates: pd.DataFrame) -> dict[str, Any]:
    """What the job claims, from its report and ranking: detection, onset, flow, top score, zone size, model calibration."""
    top = float(candidates["score"].iat[0]) if len(candidates) and "score" in candidates else np.nan
    near = float(candidates["p_within_300m"].iat[0]) if len(candidates) and "p_within_300m" in candidates else np.nan
    model_cal = (report.get("calibration") or {}).get("model_calibration") or {}
    held = (model_cal.get("misfit_reduced_chi2") or {}).get("held_out") or {}
    return {"detected": bool(report.get("detected")), "leak_flow_est_lps": report.get("leak_flow_lps"),
            "onset_est": report.get("onset"), "twin_top_score": top, "twin_top_p300": near,
            "twin_zone_pipes": (report.get("candidate_zone") or {}).get("pipes"),
            "model_calibration": model_cal.get("decision"), "calibration_held_out_gain": held.get("gain")}


def _score_leak(network: Network, loc: Localisation, lk: dict, *, total_len: float, classic: bool,
                twin_s: float) -> dict[str, Any]:
    """Figures of the twin's ranking (and the classic method's) against the true leak ``lk``."""
    row = _score_candidates(network, loc.candidates, loc.report, lk, total_len)
    if classic and loc.internals:
        dist = pipe_distances(network, lk["link_id"], float(lk["position"]), to="middle")
        t2 = time.perf_counter()
        ccand, cinfo = classic_localise(network, loc.internals)
        row["classic_s"] = round(time.perf_counter() - t2 + twin_s
                                 - loc.report["timings_s"].get("signatures_s", 0)
                                 - loc.report["timings_s"].get("refine_s", 0), 2)
        row["classic_simulations"] = cinfo["simulations"]
        row.update({f"classic_{k}": v for k, v in score_ranking(ccand, dist, lk["link_id"], total_len).items()})
    return row


def _score_candidates(network: Network, candidates: pd.DataFrame, report: dict, lk: dict,
                      total_len: float) -> dict[str, Any]:
    """The twin's figures on one leak week: distance, rank, walk, zone, onset and flow errors."""
    row: dict[str, Any] = {"leak_link": lk["link_id"], "leak_flow_lps": lk["flow_lps"], "onset_true": lk["onset"]}
    dist = pipe_distances(network, lk["link_id"], float(lk["position"]), to="middle")
    row.update({f"twin_{k}": v for k, v in score_ranking(candidates, dist, lk["link_id"], total_len).items()})
    in_zone = candidates["in_candidate_zone"] if "in_candidate_zone" in candidates else pd.Series(dtype=bool)
    row["twin_zone_has_leak"] = bool(in_zone[candidates["link_id"].astype(str) == lk["link_id"]].any())
    row.update(_onset_and_flow_errors(report, lk))
    return row


def _onset_and_flow_errors(report: dict, lk: dict) -> dict[str, float]:
    """``onset_error_min`` (absolute, minutes) and ``flow_error_pct`` (absolute, % of the true flow)."""
    out = {"onset_error_min": np.nan, "flow_error_pct": np.nan}
    if not report.get("detected"):
        return out
    if report.get("onset") and lk.get("onset"):
        diff = pd.Timestamp(report["onset"]) - pd.Timestamp(lk["onset"])
        out["onset_error_min"] = round(abs(diff.total_seconds()) / 60.0, 1)
    est, true = report.get("leak_flow_lps"), lk.get("flow_lps")
    if est is not None and true:
        out["flow_error_pct"] = round(100.0 * abs(float(est) - float(true)) / float(true), 2)
    return out


# ----------------------------------------------------------------------------
# folders of contract weeks
# ----------------------------------------------------------------------------


def _readings_file(week: Path) -> Path | None:
    for name in ("readings.parquet", "readings.csv"):
        if (week / name).exists():
            return week / name
    return None


def contract_weeks(root: str | Path) -> list[Path]:
    """Every folder below ``root`` (searched recursively, sorted) that holds a contract week.

    A week is a folder with ``network.inp``, ``meters.csv``,
    ``readings.csv`` or ``readings.parquet``, and ``truth.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("the weeks folder does not exist", path=root, fix="give a folder of contract weeks")
    found = []
    for truth in sorted(root.rglob("truth.json")):
        week = truth.parent
        if (week / "network.inp").exists() and (week / "meters.csv").exists() and _readings_file(week):
            found.append(week)
    return found


def _normalise_truth(truth: dict) -> dict | None:
    """The leak of a ``truth.json`` as ``link_id``, ``position``, ``flow_lps``, ``onset``; None when leak-free.

    Two formats: :func:`twin.synth.synth_readings` (``leak``: a record or
    null) and the validation weeks' (``leak_pipe``, ``leak_lps``,
    ``onset``; the leak at the middle of the pipe).
    """
    if "leak" in truth:
        lk = truth["leak"]
        if not lk:
            return None
        return {"link_id": str(lk["link_id"]), "position": float(lk.get("position", 0.5)),
                "flow_lps": lk.get("flow_lps", lk.get("target_flow_lps")), "onset": lk.get("onset")}
    if truth.get("leak_pipe"):
        return {"link_id": str(truth["leak_pipe"]), "position": 0.5, "flow_lps": truth.get("leak_lps"),
                "onset": truth.get("onset")}
    return None


def week_truth(week: str | Path) -> dict | None:
    """The normalised leak of a contract week (see :func:`_normalise_truth`), None when leak-free."""
    path = Path(week) / "truth.json"
    try:
        return _normalise_truth(json.loads(path.read_text(encoding="utf-8")))
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read the truth ({type(exc).__name__}: {exc})", path=path,
                         fix="give leak_pipe, leak_lps, onset, or a twin synth truth.json") from None


def _network_name(week: Path, root: Path | None) -> str:
    """The network a week belongs to: its truth's ``network`` (else the folder name before the last ``-``),
    prefixed by the sub-folder it sits in below ``root`` (``ideal/ky4``)."""
    try:
        name = json.loads((week / "truth.json").read_text(encoding="utf-8")).get("network")
    except ValueError:
        name = None
    name = Path(str(name)).stem if name else week.name.rsplit("-", 1)[0]
    if root is None:
        return name
    rel = week.relative_to(root).parent
    return name if rel == Path(".") else f"{rel.as_posix()}/{name}"


def run_week(week: str | Path, *, crs: str = WEEKS_CRS, out_dir: str | Path,
             localise_options: dict | None = None) -> dict[str, Any]:
    """Run the job on one contract week's files (as ``twin localise`` does) and score it.

    Returns
    -------
    dict
        One row of the scenario table; ``error`` holds the message of a
        week the job failed on.
    """
    week = Path(week)
    lk = week_truth(week)
    row: dict[str, Any] = {"week": week.name, "leak": lk is not None}
    # deferred: twin.pipeline imports score_ranking from this module (a real import cycle)
    from twin.pipeline import localise_files

    t0 = time.perf_counter()
    try:
        res = localise_files(week / "network.inp", crs=crs, meters_path=week / "meters.csv",
                             readings_path=_readings_file(week), out_dir=out_dir, write_map=False,
                             **(localise_options or {}))
    except Exception as exc:  # a benchmark reports a failed week, it does not stop
        row.update({"error": f"{type(exc).__name__}: {exc}", "detected": False})
        return row
    row["twin_s"] = round(time.perf_counter() - t0, 2)
    loc: Localisation = res["result"]
    total_len = _pipe_length_m(res["network"])
    row["pipe_length_m"] = total_len
    row["quarantined"] = (res["report_dict"].get("ingest") or {}).get("quarantined_total")
    row.update(_report_figures(res["report_dict"], loc.candidates))
    if lk is not None:
        row.update(_score_candidates(res["network"], loc.candidates, res["report_dict"], lk, total_len))
    return row


def run_weeks(root: str | Path, *, crs: str = WEEKS_CRS, generator: str | None = None,
              work_dir: str | Path | None = None, progress: Callable[[str, int, int], None] | None = None,
              localise_options: dict | None = None, workers: int | None = 1, scheduler: str | None = None,
              client: Any = None) -> BenchResult:
    """Run the job on every contract week below ``root`` and score each against its truth.

    Parameters
    ----------
    root : str or Path
        Folder of contract weeks (:func:`contract_weeks`), e.g.
        ``../shared/validation``.
    crs : str
        CRS of the weeks' network coordinates (default EPSG:32650).
    generator : str, optional
        Name of the source in the tables (default: ``weeks:<folder name>``).
    work_dir : path, optional
        Where the job's outputs go (default: a temporary directory per week,
        removed).
    progress : callable, optional
        ``progress(stage, done, total)``.
    localise_options : dict, optional
        Keyword options for :func:`twin.localise.localise`.
    workers, scheduler, client
        Run the weeks as Dask tasks, as in :func:`run_bench` (default: one
        after another in this process). The week folders must be readable at
        the same paths by the workers.

    Returns
    -------
    BenchResult
        One row per week, in the order of :func:`contract_weeks`; ``groups``
        per network (the sub-folder prefixes networks, so ``ideal/ky4`` is
        apart from ``ky4``).
    """
    root = Path(root)
    weeks = contract_weeks(root)
    if not weeks:
        raise InputError("no contract week below this folder", path=root,
                         fix="each week needs network.inp, meters.csv, readings.csv/.parquet and truth.json")
    name = generator or f"weeks:{root.resolve().name}"
    options = {"root": root, "crs": crs, "generator": name, "work_dir": None if work_dir is None else Path(work_dir),
               "localise_options": localise_options}
    items = list(enumerate(weeks))
    rows = _run_tasks(_week_task, items, shared={}, options=options, stage="weeks",
                      on_error=lambda item, exc: {"week": item[1].relative_to(root).as_posix(), "leak": _has_leak(item[1]),
                                                  "generator": name, "network": _network_name(item[1], root),
                                                  "error": f"{type(exc).__name__}: {exc}", "detected": False},
                      progress=progress, workers=workers, scheduler=scheduler, client=client)
    df = pd.DataFrame(rows)
    lengths = df["pipe_length_m"].dropna() if "pipe_length_m" in df else pd.Series(dtype=float)
    total = float(lengths.iloc[0]) if len(lengths) else np.nan
    return BenchResult(df, summarise(df, total, name), summarise_groups(df))


def _has_leak(week: Path) -> bool:
    """Whether a week's truth holds a leak (False when the truth cannot be read)."""
    try:
        return week_truth(week) is not None
    except InputError:
        return False


def _week_task(item: tuple[int, Path], *, root: Path, crs: str, generator: str, work_dir: Path | None,
               localise_options: dict | None) -> dict[str, Any]:
    """One week of :func:`run_weeks` (its number and folder): its row, in a process or a Dask task."""
    i, week = item
    with _scratch(work_dir, prefix="twin-weeks-") as out_root:
        row = run_week(week, crs=crs, out_dir=out_root / f"w{i:03d}", localise_options=localise_options)
    row.update({"generator": generator, "network": _network_name(week, root),
                "week": week.relative_to(root).as_posix()})
    log.info("week %s: %s", row["week"], {k: row.get(k) for k in ("detected", "twin_rank", "twin_top_distance_m",
                                                                   "error")})
    return row


# ----------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------


def _median(values: pd.Series) -> float | None:
    v = values.astype(float)
    if v.isna().all() or len(v) == 0:
        return None
    m = float(np.nanmedian(v))
    return m if np.isfinite(m) else float("inf")


def _method_figures(leak: pd.DataFrame, m: str, total_length_m: float) -> dict[str, Any]:
    """Figures of method ``m`` on the leak weeks; a week without a ranking of the leak is a miss."""
    hit = leak[f"{m}_hit"].astype("boolean").fillna(False).astype(bool)
    rank = leak[f"{m}_rank"].astype(float).fillna(np.inf)
    walk_pct = leak[f"{m}_walk_pct"].astype(float).fillna(100.0)
    walk_m = leak[f"{m}_walk_m"].astype(float)
    lengths = (leak["pipe_length_m"].astype(float) if "pipe_length_m" in leak
               else pd.Series(total_length_m, index=leak.index))
    walk_m = walk_m.fillna(lengths)
    top = leak[f"{m}_top_distance_m"].astype(float).fillna(np.inf)
    run = leak[f"{m}_s"] if f"{m}_s" in leak else pd.Series(dtype=float)
    return {
        "within_300m": int(hit.sum()),
        "within_300m_share": round(float(hit.mean()), 3),
        "median_rank": _median(rank),
        "median_walk_m": _median(walk_m),
        "median_walk_pct": _median(walk_pct),
        "median_top_distance_m": _median(top),
        "median_run_s": _median(run.dropna()) if len(run.dropna()) else None,
    }


def summarise(df: pd.DataFrame, total_length_m: float, name: str = "") -> dict:
    """The harness's figures from the per-scenario table (misses included, see the module's notes)."""
    out: dict[str, Any] = {"network": name, "pipe_length_km": round(total_length_m / 1000, 2)}
    leak = df[df["leak"].astype(bool)] if "leak" in df else df.iloc[0:0]
    free = df[~df["leak"].astype(bool)] if "leak" in df else df.iloc[0:0]
    out["leak_scenarios"] = int(len(leak))
    out["errors"] = int(df["error"].notna().sum()) if "error" in df else 0
    if len(leak):
        det = leak["detected"].astype("boolean").fillna(False).astype(bool)
        out["detected"] = int(det.sum())
        out["detected_share"] = round(float(det.mean()), 3)
        for m in ("twin", "classic"):
            if f"{m}_hit" in leak:
                out[m] = _method_figures(leak, m, total_length_m)
        out.update(_onset_flow_summary(leak))
        if "twin_top_score" in leak:
            out["reliability"] = reliability(leak).to_dict("records")
            out.update(_confident_figures(leak))
            zone = leak["twin_zone_has_leak"].astype("boolean").fillna(False).astype(bool) \
                if "twin_zone_has_leak" in leak else pd.Series(False, index=leak.index)
            out["zone_holds_leak"] = int(zone.sum())
            out["zone_holds_leak_share"] = round(float(zone.mean()), 3)
            if "twin_zone_pipes" in leak and leak["twin_zone_pipes"].notna().any():
                out["median_zone_pipes"] = _median(leak["twin_zone_pipes"].dropna())
    out["leak_free_weeks"] = int(len(free))
    out["false_alarms"] = int(free["detected"].astype("boolean").fillna(False).astype(bool).sum()) if len(free) else 0
    return out


def claimed_probability(leak: pd.DataFrame) -> pd.Series:
    """What the top candidate claims about the 300 m criterion, per week.

    Its ``p_within_300m`` (the probability the job gives to the leak lying
    within 300 m of pipe distance of it), or its ``score`` in tables written
    before that column existed; NaN where no leak was reported.
    """
    nan = pd.Series(np.nan, index=leak.index)
    near = leak["twin_top_p300"].astype(float) if "twin_top_p300" in leak else nan
    score = leak["twin_top_score"].astype(float) if "twin_top_score" in leak else nan
    return near.fillna(score)


def _confident_figures(leak: pd.DataFrame, threshold: float = 0.8) -> dict[str, int]:
    """Weeks whose top candidate claims p >= ``threshold``, and how many of them lie within 300 m."""
    score = claimed_probability(leak)
    sure = leak["detected"].astype("boolean").fillna(False).astype(bool) & (score >= threshold)
    hit = leak["twin_hit"].astype("boolean").fillna(False).astype(bool) if "twin_hit" in leak else sure & False
    return {"claimed_p_ge_0_8": int(sure.sum()), "claimed_p_ge_0_8_within_300m": int((sure & hit).sum())}


def _onset_flow_summary(leak: pd.DataFrame) -> dict[str, Any]:
    """Onset within 15 minutes, median onset error and median / worst leak-flow error, where detected."""
    out: dict[str, Any] = {}
    if "onset_error_min" in leak and leak["onset_error_min"].notna().any():
        on = leak["onset_error_min"].dropna().astype(float)
        out.update({"onset_within_15min": int((on <= 15).sum()), "onset_reported": int(len(on)),
                    "median_onset_error_min": float(on.median()), "worst_onset_error_min": float(on.max())})
    if "flow_error_pct" in leak and leak["flow_error_pct"].notna().any():
        fl = leak["flow_error_pct"].dropna().astype(float)
        out.update({"median_flow_error_pct": round(float(fl.median()), 2),
                    "worst_flow_error_pct": round(float(fl.max()), 2)})
    return out


def reliability(leak: pd.DataFrame, bins: tuple[float, ...] = RELIABILITY_BINS) -> pd.DataFrame:
    """Claimed probability of the top candidate, in bins, against how often it lies within 300 m.

    Parameters
    ----------
    leak : DataFrame
        Leak weeks with ``twin_top_p300`` or ``twin_top_score`` (NaN when no
        leak was reported; :func:`claimed_probability`) and ``twin_hit``.
    bins : tuple of float
        Bin edges of the score; the last bin includes its upper edge.

    Returns
    -------
    DataFrame
        One row per bin (``bin``, ``weeks``, ``mean_score``, ``within_300m``,
        ``share``), then a row ``no leak reported`` for the misses.
        ``share`` is NaN for an empty bin. A calibrated score has
        ``share`` close to ``mean_score`` in every bin.
    """
    score = claimed_probability(leak)
    reported = leak["detected"].astype("boolean").fillna(False).astype(bool) & score.notna() \
        if "detected" in leak else score.notna()
    hit = leak["twin_hit"].astype("boolean").fillna(False).astype(bool) if "twin_hit" in leak \
        else pd.Series(False, index=leak.index)
    rows = []
    for i, (lo, hi) in enumerate(zip(bins[:-1], bins[1:])):
        last = i == len(bins) - 2
        inside = reported & (score >= lo) & ((score <= hi) if last else (score < hi))
        n = int(inside.sum())
        rows.append({"bin": f"{lo:g}-{hi:g}" if not last else f">={lo:g}", "weeks": n,
                     "mean_score": round(float(score[inside].mean()), 3) if n else np.nan,
                     "within_300m": int(hit[inside].sum()),
                     "share": round(float(hit[inside].mean()), 3) if n else np.nan})
    rows[0]["bin"] = f"<{bins[1]:g}"
    rows.append({"bin": "no leak reported", "weeks": int((~reported).sum()), "mean_score": np.nan,
                 "within_300m": 0, "share": 0.0 if (~reported).any() else np.nan})
    return pd.DataFrame(rows)


def summarise_groups(df: pd.DataFrame) -> list[dict]:
    """:func:`summarise` per generator and network (in order of appearance)."""
    if df.empty:
        return []
    gen = df["generator"] if "generator" in df else pd.Series("", index=df.index)
    net = df["network"] if "network" in df else pd.Series("", index=df.index)
    out = []
    for (g, n), part in df.groupby([gen, net], sort=False):
        lengths = part["pipe_length_m"].dropna() if "pipe_length_m" in part else pd.Series(dtype=float)
        s = summarise(part, float(lengths.iloc[0]) if len(lengths) else float("nan"), str(n))
        s["generator"] = str(g)
        out.append(s)
    return out


def _fmt(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, float) and np.isinf(v):
        return "miss"
    return f"{v:g}{unit}" if isinstance(v, (int, float)) else f"{v}{unit}"


def format_summary(summary: dict) -> str:
    """Plain-text figures of one summary (one generator and network, or all) for the CLI and benchmarks."""
    gen = f"[{summary['generator']}] " if summary.get("generator") else ""
    lines = [f"{gen}network {summary.get('network')} ({summary.get('pipe_length_km')} km of pipe): "
             f"{summary.get('leak_scenarios')} leak weeks, {summary.get('leak_free_weeks')} leak-free weeks, "
             f"{summary.get('errors')} errors"]
    if "detected_share" in summary:
        lines.append(f"leaks detected: {summary.get('detected', '')}/{summary['leak_scenarios']} "
                     f"({summary['detected_share']:.0%})")
    for m in ("twin", "classic"):
        if m in summary:
            s = summary[m]
            lines.append(
                f"{m:8s} top within 300 m: {s.get('within_300m', '')}/{summary['leak_scenarios']} "
                f"({s['within_300m_share']:.0%})  median rank: {_fmt(s['median_rank'])}  "
                f"median walk: {_fmt(s['median_walk_m'], ' m')} ({_fmt(s['median_walk_pct'], ' %')} of network)  "
                f"median top distance: {_fmt(s['median_top_distance_m'], ' m')}  "
                f"median run: {_fmt(s['median_run_s'], ' s')}")
    if "onset_reported" in summary:
        lines.append(f"onset within 15 min: {summary['onset_within_15min']}/{summary['onset_reported']} reported "
                     f"(median error {_fmt(summary['median_onset_error_min'], ' min')}, "
                     f"worst {_fmt(summary['worst_onset_error_min'], ' min')})")
    if "median_flow_error_pct" in summary:
        lines.append(f"leak flow error: median {_fmt(summary['median_flow_error_pct'], ' %')}, "
                     f"worst {_fmt(summary['worst_flow_error_pct'], ' %')}")
    if "reliability" in summary:
        lines.append(f"90 % candidate zone holds the leaking pipe: {summary['zone_holds_leak']}/"
                     f"{summary['leak_scenarios']} (median zone {_fmt(summary.get('median_zone_pipes'))} pipes)")
        lines.append(f"top candidate claims p_within_300m >= 0.8 in {summary['claimed_p_ge_0_8']} weeks, "
                     f"{summary['claimed_p_ge_0_8_within_300m']} of them within 300 m")
        lines.append("reliability of the top candidate's p_within_300m (claimed p -> within 300 m):")
        for r in summary["reliability"]:
            lines.append(f"  {r['bin']:>17s}: {r['weeks']:3d} weeks  mean p {_fmt(r['mean_score']):>6s}  "
                         f"within 300 m {r['within_300m']:3d}  share {_fmt(r['share']):>5s}")
    lines.append(f"false alarms: {summary.get('false_alarms')} in {summary.get('leak_free_weeks')} leak-free weeks")
    return "\n".join(lines)


def format_report(result: BenchResult) -> str:
    """Figures per generator and network, then a one-line-per-week table."""
    parts = [format_summary(g) for g in (result.groups or [result.summary])]
    if result.groups and len(result.groups) > 1:
        parts.append("all weeks together:\n" + format_summary(result.summary))
    df = result.scenarios
    cols = [c for c in ("generator", "network", "week", "leak", "detected", "twin_rank", "twin_top_distance_m",
                        "twin_top_score", "twin_top_p300", "twin_zone_has_leak", "leak_flow_lps", "leak_flow_est_lps",
                        "onset_error_min", "twin_s", "error") if c in df]
    if len(df):
        parts.append("per week:\n" + df[cols].to_string(index=False, max_colwidth=40))
    return "\n\n".join(parts)
