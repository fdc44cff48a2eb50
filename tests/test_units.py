"""Units check (issue 12, item 6): readings in kPa, m³/h or litres give a units warning or exit 2.

The hostile inputs are the bundled Yingtan week with one kind (or one sensor)
scaled by the factor of a common wrong unit.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import DATA, NETWORKS
from twin.errors import ReadingsError
from twin.measure import measurements_from_readings
from twin.network import read_network
from twin.units import off_by_factor

WEEK = DATA / "yingtan-small-week"
INP = NETWORKS / "yingtan-small.inp"
FACTORS = {"pressure": (9.80665, "kPa", "metres of head"), "flow": (3.6, "m³/h", "L/s"),
           "customer": (1000.0, "litres", "m³")}


@pytest.fixture(scope="module")
def week():
    net = read_network(INP, crs="EPSG:4548")
    meters = pd.read_csv(WEEK / "meters.csv", dtype={"node_id": str, "link_id": str})
    readings = pd.read_parquet(WEEK / "readings.parquet")
    kind = readings["meter_id"].map(meters.set_index("meter_id")["kind"])
    return net, meters, readings, kind


def _scaled(readings: pd.DataFrame, mask: pd.Series, factor: float) -> pd.DataFrame:
    out = readings.copy()
    out.loc[mask.to_numpy(), "value"] = out.loc[mask.to_numpy(), "value"] * factor
    return out


def test_the_bundled_week_in_the_contracts_units_gives_no_units_warning(week):
    net, meters, readings, _ = week
    m = measurements_from_readings(readings, meters, net)
    assert m.warnings == []
    assert not m.rejected["reason"].str.startswith("units").any()


@pytest.mark.parametrize("kind", ["pressure", "flow", "customer"])
def test_a_whole_kind_in_a_wrong_unit_is_refused_naming_the_factor_and_the_fix(week, kind):
    net, meters, readings, kinds = week
    factor, unit, fix_unit = FACTORS[kind]
    with pytest.raises(ReadingsError) as exc:
        measurements_from_readings(_scaled(readings, kinds.eq(kind), factor), meters, net)
    msg = str(exc.value)
    assert f"{factor:g}" in msg and unit in msg and "Fix: convert" in msg and fix_unit in msg
    assert exc.value.data["unit"] == unit and exc.value.data["kind"] == kind


def test_one_logger_in_kpa_and_one_flow_meter_in_m3h_are_set_aside_and_named(week):
    net, meters, readings, _ = week
    r = _scaled(readings, readings["meter_id"].eq("PRS-J00363"), 9.80665)
    r = _scaled(r, r["meter_id"].eq("FLW-P00981"), 3.6)
    m = measurements_from_readings(r, meters, net)
    assert any("PRS-J00363" in w and "kPa" in w and "9.80665" in w for w in m.warnings)
    assert any("FLW-P00981" in w and "m³/h" in w and "3.6" in w for w in m.warnings)
    aside = m.rejected.set_index("meter_id")["reason"]
    assert aside["PRS-J00363"].startswith("units") and aside["FLW-P00981"].startswith("units")
    assert "J00363" not in m.pressure.columns and "P00981" not in m.flow.columns
    assert len(m.pressure.columns) == 29  # the others are used


def test_a_few_customer_meters_in_litres_are_left_out_of_the_consumption(week):
    net, meters, readings, kinds = week
    few = meters.loc[meters["kind"].eq("customer"), "meter_id"].head(20)
    m = measurements_from_readings(_scaled(readings, readings["meter_id"].isin(few), 1000.0), meters, net)
    assert any("20 of" in w and "litres" in w for w in m.warnings)
    assert not m.customer["meter_id"].isin(few).any()
    assert m.customer["meter_id"].nunique() == 10000 - 20


def test_off_by_factor_needs_both_an_implausible_value_and_the_factor():
    ratio = pd.Series({"ok": 1.1, "kpa": 9.5, "half": 0.6, "between": 4.0})
    assert off_by_factor(ratio, "pressure").to_dict() == {"ok": "", "kpa": "kPa", "half": "", "between": ""}


def test_cli_localise_exits_two_on_flows_in_m3h(week, tmp_path, twin_cli, capsys):
    _, _, readings, kinds = week
    bad = tmp_path / "readings.parquet"
    _scaled(readings, kinds.eq("flow"), 3.6).to_parquet(bad, index=False)
    rc = twin_cli("localise", "--network", INP, "--crs", "EPSG:4548", "--meters", WEEK / "meters.csv",
                  "--readings", bad, "--out", tmp_path / "out", "--no-map")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "m³/h" in err and "3.6" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "candidates.csv").exists()


def test_the_water_balance_refuses_flows_in_m3h(week, tmp_path):
    from twin.balance import water_balance
    from twin.store import Store

    net, meters, readings, kinds = week
    flows = meters.loc[meters["kind"].ne("customer")]
    mpath, rpath = tmp_path / "meters.csv", tmp_path / "readings.parquet"
    flows.to_csv(mpath, index=False)
    _scaled(readings, kinds.eq("flow"), 3.6)[kinds.ne("customer").to_numpy()].to_parquet(rpath, index=False)
    with Store(tmp_path / "s.duckdb") as store:
        store.ingest(mpath, rpath, network=net)
        with pytest.raises(ReadingsError, match="m³/h"):
            water_balance(net, store, join=pd.DataFrame(columns=["link_id", "matched"]))


def test_a_burst_behind_a_flow_meter_is_not_taken_for_m3h(week):
    """A unit scales the whole series; a burst adds to it from its onset and must stay in the data."""
    net, meters, readings, _ = week
    r = readings.copy()
    on = r["meter_id"].eq("FLW-P00981")
    t = pd.to_datetime(r.loc[on, "timestamp"], utc=True)
    mean = r.loc[on, "value"].abs().mean()
    # from mid-week, as much again as would make the week's mean look like m³/h (x 3.6)
    late = (t >= t.min() + (t.max() - t.min()) / 2).to_numpy()
    r.loc[r.index[on.to_numpy()][late], "value"] += 2 * 2.6 * mean * r.loc[on, "value"].pipe(
        lambda v: v.abs() / v.where(v != 0, 1)).to_numpy()[late]
    assert r.loc[on, "value"].abs().mean() / mean == pytest.approx(3.6, rel=0.1)
    m = measurements_from_readings(r, meters, net)
    assert not m.rejected["reason"].str.startswith("units").any(), m.warnings
    assert "P00981" in m.flow.columns
