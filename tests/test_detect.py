"""Detection from the water balance: edge windows, leak-free weeks, a real step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin.bench import _load
from twin.demand import window_coverage
from twin.detect import detect_leak
from twin.localise import localise
from twin.meters import join_meters
from twin.network import read_network
from twin.synth import synth_readings

YINGTAN = Path(__file__).resolve().parents[1] / "networks" / "yingtan-small.inp"

DAYS = 7
STEP = 96  # 15-minute slots per day


def _week(leak_lps: float = 0.0, onset_day: float = 3.5, edge_bias: float = 0.0, seed: int = 1):
    """A week of supply (m³/s) and metered window consumption; local time = UTC.

    Consumption follows a diurnal shape with day-to-day and 15-minute noise;
    the meters register 95 % of it per 12-hour window. ``edge_bias`` scales
    the first window's metered consumption up and the last one's down (their
    registers extrapolated), which raises the unexplained supply at the end.
    """
    rng = np.random.default_rng(seed)
    times = pd.date_range("2026-03-02", periods=DAYS * STEP, freq="15min", tz="UTC")
    hour = np.asarray(times.hour) + np.asarray(times.minute) / 60.0
    slot = np.asarray(times.hour) * 4 + np.asarray(times.minute) // 15
    day = np.arange(len(times)) // STEP
    window = day * 2 + (hour >= 12).astype(int)
    shape = 1.0 + 0.5 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
    use = 0.05 * shape * (1 + 0.003 * rng.standard_normal(DAYS))[day] * (1 + 0.02 * rng.standard_normal(len(times)))
    leak = leak_lps / 1000.0 * (np.arange(len(times)) >= int(onset_day * STEP))
    supply = pd.Series(use + 0.005 + leak, index=times)
    metered = pd.Series(0.95 * use).groupby(window).mean()
    metered.iloc[0] *= 1 + edge_bias
    metered.iloc[-1] *= 1 - edge_bias
    night = (hour >= 2) & (hour < 5)
    return supply, metered, window, slot, night, day


def _detect(supply, metered, window, slot, night, day, use=None, **kwargs):
    return detect_leak(supply, metered, window, slot, night, day, use=use, **kwargs)


def test_biased_edge_windows_alarm_unless_left_out():
    week = _week(edge_bias=0.04)
    window = week[2]
    inner = (window > window.min()) & (window < window.max())
    # the edge bias alone looks like a leak in the last window when late onsets are scanned
    # (to the window totals too: the biased windows are in them) ...
    late = _detect(*week, min_after_h=6)
    assert late.detected and late.onset >= week[0].index[-STEP]
    # ... and does not once the edges are left out
    for kwargs in ({}, {"min_after_h": 6}, {"window_alpha": None}):
        det = _detect(*week, use=inner, **kwargs)
        assert not det.detected, det.details


def test_real_step_is_found_with_the_edges_left_out():
    supply, metered, window, slot, night, day = _week(leak_lps=1.5, onset_day=3.3, edge_bias=0.04)
    inner = (window > window.min()) & (window < window.max())
    det = _detect(supply, metered, window, slot, night, day, use=inner)
    assert det.detected, det.details
    assert abs((det.onset - supply.index[int(3.3 * STEP)]).total_seconds()) <= 3600
    assert det.leak_m3s * 1000 == pytest.approx(1.5, rel=0.1)


def test_window_coverage_counts_the_bracketed_share():
    t = pd.to_datetime(["2026-03-02 06:00", "2026-03-02 18:00", "2026-03-03 06:00",
                        "2026-03-02 00:00", "2026-03-03 12:00"], utc=True)
    readings = pd.DataFrame({"meter_id": ["a", "a", "a", "b", "b"], "timestamp": t, "value": [1, 2, 3, 1, 4.0]})
    join = pd.DataFrame({"matched": [True, True]}, index=pd.Index(["a", "b"], name="meter_id"))
    edges = pd.date_range("2026-03-02", periods=4, freq="12h", tz="UTC")
    cover = window_coverage(readings, join, edges)
    # window 0: a from 06:00 (half), b all; window 1: both; window 2: a until 06:00 (half), b all
    assert cover == pytest.approx([0.75, 1.0, 0.75])
    join.loc["b", "matched"] = False
    assert window_coverage(readings, join, edges) == pytest.approx([0.5, 1.0, 0.5])


def test_leak_free_generated_week_raises_no_alarm_and_reports_the_edges(tmp_path):
    files = synth_readings(YINGTAN, crs="EPSG:4548", days=7, leak="none", seed=4242, out_dir=tmp_path)
    network = read_network(YINGTAN, crs="EPSG:4548")
    meters, readings = _load(files)
    loc = localise(network, meters=meters, join=join_meters(meters, network), readings=readings)
    assert loc.report["detected"] is False
    left_out = loc.report["windows_left_out"]
    # the generator's registers start and end inside the week: its first and last windows
    assert [w["start"][:13] for w in left_out] == ["2026-03-02T00", "2026-03-08T12"]
    assert all(w["coverage"] < 0.9 for w in left_out)
    json.dumps(loc.report)


def test_a_weekly_shift_of_use_into_the_night_fails_the_volume_test_a_leak_passes():
    """Two days whose use moves into the night (metered, as on BattLeDIM's Friday and Saturday) are no leak."""
    supply, metered, window, slot, night, day = _week(seed=3)
    hour = slot / 4.0
    shifted = np.isin(day, [4, 5])  # a weekly cycle the calendar's day types (Sat/Sun) do not follow
    extra = 0.004 * shifted * (np.exp(-((hour - 3.0) / 3.0) ** 2) - 0.25)  # m³/s, into the night, out of the day
    use = supply.to_numpy() - 0.005 + extra
    shifted_supply = pd.Series(use + 0.005, index=supply.index)
    shifted_metered = pd.Series(0.95 * use).groupby(window).mean()
    base = dict(day_type=(np.asarray(supply.index.day_of_week) >= 5).astype(int))
    det = _detect(shifted_supply, shifted_metered, window, slot, night, day, window_alpha=None, scan_alpha=None,
                  **base)
    assert det.detected  # the slot-matched test alone takes the shift for a leak ...
    assert abs(det.details["window_step_lps"]) < 0.2 * det.details["step_lps"]
    det = _detect(shifted_supply, shifted_metered, window, slot, night, day, **base)
    assert not det.detected  # ... the window totals do not step with it, wherever the onset
    assert det.details["t_scan"] < det.details["t_scan_threshold"]
    # ... while a real leak (2 % of the supply) from Thursday noon steps the window totals too
    leak = 0.0012 * (np.arange(len(use)) >= int(3.5 * STEP))
    det = _detect(shifted_supply + leak, shifted_metered, window, slot, night, day, **base)
    assert det.detected and det.details["t_window"] > det.details["t_window_threshold"], det.details
    # the 15-minute step carries part of the shift; the flow reported is the window totals' step
    assert det.details["step_lps"] > 1.3
    assert abs(det.leak_m3s * 1000 - 1.2) < 0.1 and det.details["leak_flow_from"] == "window totals"



def test_a_leak_after_a_change_of_shape_is_reported_where_the_volume_steps():
    """A volume-neutral change of the consumption's shape on Thursday night, a leak from Saturday morning.

    Scanning the 15-minute balance for the best step finds the change of
    shape (larger than the leak, every 15 minutes) and the window totals
    reject it: the leak after it was missed. The window totals' own scan
    finds the water the registers miss.
    """
    supply, metered, window, slot, night, day = _week(seed=5)
    day_type = (np.asarray(supply.index.day_of_week) >= 5).astype(int)
    hour = slot / 4.0
    k = np.arange(len(supply))
    shifted = k >= int(3.95 * STEP)  # from Thursday 22:48: more use at night, less by day
    extra = 0.004 * shifted * (np.exp(-((hour - 3.0) / 3.0) ** 2) - 0.25)
    use = supply.to_numpy() - 0.005 + extra
    onset = int(5.25 * STEP)  # Saturday 06:00
    leak = 0.0012 * (k >= onset)  # 2 % of the supply
    shaped_metered = pd.Series(0.95 * use).groupby(window).mean()
    det = _detect(pd.Series(use + 0.005 + leak, index=supply.index), shaped_metered, window, slot, night, day,
                  day_type=day_type)
    assert det.detected, det.details
    assert det.details["t_scan"] > det.details["t_scan_threshold"]
    assert abs((det.onset - supply.index[onset]).total_seconds()) <= 12 * 3600
    assert det.leak_m3s * 1000 == pytest.approx(1.2, rel=0.35)
    # the same week without the leak: nothing
    det = _detect(pd.Series(use + 0.005, index=supply.index), shaped_metered, window, slot, night, day,
                  day_type=day_type)
    assert not det.detected, det.details
