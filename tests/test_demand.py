"""Consumption, registers at instants, node demand and diurnal shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin.demand import diurnal_pattern, meter_consumption, node_demand, register_at, window_volumes
from twin.errors import InputError


def _readings(rows):
    return pd.DataFrame(
        {
            "meter_id": [r[0] for r in rows],
            "timestamp": pd.to_datetime([r[1] for r in rows], utc=True),
            "value": [float(r[2]) for r in rows],
        }
    )


def test_consumption_over_irregular_intervals_and_a_meter_replacement():
    r = _readings(
        [
            ("a", "2026-03-02T00:00Z", 10.0),
            ("a", "2026-03-02T12:00Z", 11.0),  # 1 m³ in 12 h
            ("a", "2026-03-03T06:00Z", 12.5),  # 1.5 m³ in 18 h
            ("a", "2026-03-03T18:00Z", 0.4),  # replaced: new register 0.4
            ("a", "2026-03-04T06:00Z", 1.4),
            ("b", "2026-03-02T03:00Z", 5.0),
            ("b", "2026-03-02T03:00Z", 5.0),  # duplicate row: ignored
            ("b", "2026-03-02T09:00Z", 5.0),
        ]
    ).sample(frac=1.0, random_state=1)  # any order
    c = meter_consumption(r)
    a = c[c.meter_id == "a"].reset_index(drop=True)
    assert a["volume_m3"].tolist()[:2] == pytest.approx([1.0, 1.5])
    assert a["reset"].tolist() == [False, False, True, False]
    # across the reset: the meter's median rate (1/12 m³/h) x 12 h = 1.0 > 0.4
    assert a.loc[2, "volume_m3"] == pytest.approx(1.0)
    assert (c["volume_m3"] >= 0).all()
    assert c[c.meter_id == "b"]["volume_m3"].tolist() == [0.0]
    assert str(c["start"].dtype) == "datetime64[ns, UTC]"


def test_register_at_interpolates_and_extrapolates_only_a_day():
    r = _readings([("a", "2026-03-02T00:00Z", 10.0), ("a", "2026-03-02T12:00Z", 16.0), ("a", "2026-03-03T00:00Z", 16.0)])
    times = pd.to_datetime(["2026-03-01T18:00Z", "2026-03-02T06:00Z", "2026-03-02T12:00Z", "2026-03-03T12:00Z", "2026-03-05T00:00Z"], utc=True)
    reg = register_at(r, times)["a"].to_numpy()
    rate = 6.0 / 86400  # mean over the meter's readings, m³/s
    assert reg[0] == pytest.approx(10.0 - rate * 6 * 3600)
    assert reg[1] == pytest.approx(13.0)
    assert reg[2] == pytest.approx(16.0)
    assert reg[3] == pytest.approx(16.0 + rate * 12 * 3600)
    assert np.isnan(reg[4])  # two days after the last reading
    with pytest.raises(InputError, match="tz-aware"):
        register_at(r, ["2026-03-02"])


def test_register_at_in_demand_time_puts_volume_in_the_busy_hours():
    r = _readings([("a", "2026-03-02T20:00+08:00", 0.0), ("a", "2026-03-03T08:00+08:00", 12.0)])
    grid = pd.date_range("2026-03-02T00:00+08:00", periods=96 * 2, freq="15min").tz_convert("UTC")
    local_hour = grid.tz_convert("Asia/Shanghai").hour
    shape = pd.Series(np.where((local_hour >= 20) | (local_hour < 2), 3.0, 1.0), index=grid)
    midnight = [pd.Timestamp("2026-03-03T00:00+08:00")]
    linear = register_at(r, midnight)["a"].iloc[0]
    shaped = register_at(r, midnight, rate_shape=shape)["a"].iloc[0]
    assert linear == pytest.approx(4.0)  # 4 of 12 hours
    # 20-24 h: 4 h x 3 = 12 units; 0-2 h: 6 units; 2-8 h: 6 units -> 12/24 of the volume
    assert shaped == pytest.approx(6.0, rel=1e-6)


def test_window_volumes_conserve_the_register():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 5 * 86400, 12))
    v = np.cumsum(rng.uniform(0, 1, 12)) + 100
    r = pd.DataFrame({"meter_id": "m", "timestamp": pd.Timestamp("2026-03-02", tz="UTC") + pd.to_timedelta(t, unit="s"), "value": v})
    edges = pd.Timestamp("2026-03-02", tz="UTC") + pd.to_timedelta(np.linspace(t[0], t[-1], 7), unit="s")
    w = window_volumes(r, edges)
    assert w["m"].sum() == pytest.approx(v[-1] - v[0])
    assert (w["m"] >= 0).all()
    assert w.attrs["window_s"] == pytest.approx(np.diff(edges.asi8) / 1e9)


def test_node_demand_splits_by_position_and_conserves_volume():
    join = pd.DataFrame(
        {
            "link_id": ["P1", "P2", pd.NA],
            "position": [0.25, 1.0, np.nan],
            "start_node": ["A", "B", pd.NA],
            "end_node": ["B", "C", pd.NA],
            "distance_m": [3.0, 0.0, 80.0],
            "matched": [True, True, False],
        },
        index=pd.Index(["m1", "m2", "far"], name="meter_id"),
    )
    idx = pd.date_range("2026-03-02", periods=2, freq="1h", tz="UTC")
    vols = pd.DataFrame({"m1": [3.6, 7.2], "m2": [1.8, np.nan], "far": [9.0, 9.0]}, index=idx)
    d = node_demand(join, vols)
    assert list(d.columns) == ["A", "B", "C"]
    assert d.loc[idx[0], "A"] == pytest.approx(0.75 * 3.6 / 3600)
    assert d.loc[idx[0], "B"] == pytest.approx(0.25 * 3.6 / 3600)
    assert d.loc[idx[0], "C"] == pytest.approx(1.8 / 3600)
    assert d.loc[idx[1], "C"] == 0.0  # unknown volume adds nothing
    assert d.iloc[0].sum() * 3600 == pytest.approx(3.6 + 1.8)  # unmatched meter left out
    with pytest.raises(InputError, match="window_s"):
        node_demand(join, vols.iloc[:1])


def test_diurnal_pattern_is_local_time_with_mean_one():
    idx = pd.date_range("2026-03-02T00:00+08:00", periods=96 * 3, freq="15min").tz_convert("UTC")
    hour = idx.tz_convert("Asia/Shanghai").hour
    flow = pd.DataFrame({"DMA1": np.where(hour == 19, 40.0, 10.0)}, index=idx)
    p = diurnal_pattern(flow)
    assert len(p) == 24 and p["DMA1"].mean() == pytest.approx(1.0)
    assert p["DMA1"].idxmax() == 19


def test_window_demand_keeps_the_volume_and_counts_the_meters():
    from twin.demand import window_demand

    # two meters, registers at irregular times; a third joined meter without readings
    t = pd.to_datetime(["2026-03-02T01:00Z", "2026-03-02T13:30Z", "2026-03-03T00:10Z",
                        "2026-03-02T02:00Z", "2026-03-03T02:00Z"], utc=True)
    readings = pd.DataFrame({"meter_id": ["a", "a", "a", "b", "b"], "timestamp": t,
                             "value": [10.0, 11.0, 12.5, 100.0, 102.4]})
    join = pd.DataFrame({"link_id": ["p", "p", "p"], "position": [0.25, 1.0, 0.5], "start_node": ["n1"] * 3,
                         "end_node": ["n2"] * 3, "matched": [True, True, True]},
                        index=pd.Index(["a", "b", "c"], name="meter_id"))
    edges = pd.date_range("2026-03-02T00:00Z", periods=3, freq="12h")
    rate, info = window_demand(readings, join, edges)
    assert list(rate.index) == [0, 1]
    vol = rate.sum(axis=1).to_numpy() * 12 * 3600  # m³ per window
    # registers at the edges: interpolated between readings, extrapolated an hour or two
    # before the first reading at the meter's mean rate
    rate_a, rate_b = 2.5 / (23 + 10 / 60), 2.4 / 24  # m³/h
    a = [10.0 - rate_a, 10.0 + 1.0 * 11 / 12.5, 11.0 + 1.5 * 10.5 / (10 + 40 / 60)]
    b = [100.0 - 2 * rate_b, 100.0 + 2.4 * 10 / 24, 100.0 + 2.4 * 22 / 24]
    np.testing.assert_allclose(vol, np.diff(a) + np.diff(b), rtol=1e-9)
    assert rate["n2"].sum() > rate["n1"].sum()  # b sits at the end node, a mostly at the start
    assert info == {"customer_meters": 3, "customer_meters_joined": 3, "customer_meters_with_readings": 2,
                    "customer_windows_filled": 2}  # a's and b's registers at the first edge
