"""The morning report (twin.report, twin report, report.html of twin localise --store)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest

from twin.alarms import Window, record_run
from twin.report import REPORT_NAME, build_report, night_alarms, select_run, write_report
from twin.store import Store

from test_alarms import NET, NOW, WEEK, _t

CAND = pd.DataFrame({"rank": [1, 2], "link_id": ["P00424", "P00927"], "score": [0.06, 0.05],
                     "p_within_300m": [0.42, 0.41], "leak_flow_lps": [3.0, 3.0], "zone": ["DMA07"] * 2})
HOSTILE_DMA = "<script>alert('dma')</script>"
HOSTILE_PIPE = '"><img src=x onerror=alert(1)>'


def _report(onset: str | None, flow: float = 3.1, dma: str = "DMA07") -> dict:
    inputs = {"crs": "EPSG:4548"}
    if onset is None:
        return {"detected": False, "inputs": inputs}
    return {"detected": True, "onset": onset, "leak_flow_lps": flow, "leak_dma": dma,
            "detection": {"t_night": 12.0}, "inputs": inputs}


def _night_files(out: Path, link_id: str = "P00424") -> Path:
    """A night's output folder as the job lays it out: map, candidates, report, work orders and sheets."""
    (out / "plan" / "sheets").mkdir(parents=True)
    (out / "map.html").write_text("<html></html>")
    (out / "report.json").write_text("{}")
    CAND.to_csv(out / "candidates.csv", index=False)
    pd.DataFrame({"order_id": ["WO-01"], "link_id": [link_id]}).to_csv(out / "plan" / "work_orders.csv", index=False)
    (out / "plan" / "sheets" / "WO-01.html").write_text("<html></html>")
    return out


def _record(store: Store, report: dict, end: str, out: Path, *, network: Path = NET, cand: pd.DataFrame = CAND):
    window = Window(_t("2026-03-02T00:00+08:00"), _t(f"{end}T00:00+08:00"))
    return record_run(store, window, report, cand if report.get("detected") else cand.iloc[:0],
                      started_at=pd.Timestamp.now(tz="UTC"), days=7, network=str(network), out_dir=str(out))


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """The bundled week in a store and three nights recorded on it: the leak new, continuing, then gone."""
    from twin.network import read_network

    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "yt.duckdb"
    with Store(db) as st:
        st.ingest(WEEK / "meters.csv", WEEK / "readings.parquet", network=read_network(NET, crs="EPSG:4548"), now=NOW)
        _record(st, _report("2026-03-04T01:30:00+08:00", 3.2), "2026-03-06", _night_files(tmp / "n1"))
        _record(st, _report("2026-03-04T01:15:00+08:00", 3.1), "2026-03-09", _night_files(tmp / "n2"))
        _record(st, _report(None), "2026-03-10", _night_files(tmp / "n3"))
    return {"tmp": tmp, "db": db}


class _Refs(HTMLParser):
    """Every href/src/xlink:href of a page, and its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("href", "src", "xlink:href", "action") and v is not None]


def _check_offline_and_links(page: str, here: Path) -> list[str]:
    """Assert no external resource and that every link resolves to a file; return the links."""
    refs = _Refs()
    refs.feed(page)
    assert "script" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    assert not re.search(r"url\(|@import", page)
    for ref in refs.refs:
        url = urlparse(ref)
        assert not url.scheme and not url.netloc, ref
        assert (here / unquote(url.path)).is_file(), ref
    # the SVG namespace is an identifier, not a resource; nothing else names http(s)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\")", page)
    return refs.refs


def test_report_of_the_latest_night_shows_alarms_plots_and_links(nights):
    out = nights["tmp"] / "n2"
    with Store(nights["db"], read_only=True) as st:
        page = build_report(st, night="2026-03-08", out_dir=out)
        alarms = night_alarms(st, 2)
    assert alarms[["alarm_id", "dma", "state", "open"]].values.tolist() == [[1, "DMA07", "continuing", True]]
    assert "night of 2026-03-08" in page and "18 districts watched" in page and "1 open leak" in page
    assert "Since the night of 2026-03-05 (run #1): 0 new, 0 closed" in page
    assert ">continuing<" in page and "2026-03-04 01:15" in page and "P00424" in page and ">0.06<" in page
    # a chart and a sparkline per zone: the 18 districts and 2 transmission zones
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 20 == page.count('class="spark"')
    assert page.count("(transmission)") == 2 and "#1 +3.10 L/s" in page  # the step, marked on DMA07's chart
    assert page.index("<h3>DMA07</h3>") < page.index("<h3>DMA01</h3>")  # the district with the alarm first
    links = _check_offline_and_links(page, out)
    assert {"map.html", "plan/work_orders.csv", "plan/sheets/WO-01.html", "candidates.csv"} <= set(links)


def test_report_of_each_night_as_it_stood(nights, tmp_path):
    """The first night: a new alarm; the third: closed (step gone). Links from another folder are relative."""
    path = write_report(nights["db"], tmp_path / "r", night="2026-03-05")
    page = path.read_text()
    assert ">new<" in page and "first run recorded" in page
    _check_offline_and_links(page, path.parent)
    assert "../" in page  # the night's files, seen from the report's own folder
    with Store(nights["db"], read_only=True) as st:
        last = build_report(st, out_dir=nights["tmp"] / "n3")
        assert int(select_run(st)["run_id"]) == 3
    assert "no open leak" in last and ">closed<" in last and "1 closed" in last and "step gone" in last


def test_report_escapes_hostile_names(tmp_path, nights):
    db = tmp_path / "h.duckdb"
    shutil.copy(nights["db"], db)
    cand = CAND.assign(link_id=[HOSTILE_PIPE, "P2"], zone=HOSTILE_DMA)
    with Store(db) as st:
        _record(st, _report("2026-03-08T03:00:00+08:00", 2.0, dma=HOSTILE_DMA), "2026-03-09",
                _night_files(tmp_path / "n", link_id=HOSTILE_PIPE), cand=cand)
        balance = pd.DataFrame({"dma": HOSTILE_DMA, "date": pd.date_range("2026-03-02", "2026-03-08").date,
                                "siv_m3": 500.0, "consumption_m3": 400.0, "nrw_m3": 100.0, "nrw_pct": 20.0,
                                "flag": ["partial", "", "", "", "", "nrw_jump", "partial"], "role": "district"})
        page = build_report(st, balance=balance, out_dir=tmp_path / "n")
    assert "<script" not in page and "<img" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(&#x27;dma&#x27;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "+2.00 L/s" in page  # the hostile district's step is drawn
    _check_offline_and_links(page, tmp_path / "n")


def test_report_without_the_network_says_why(tmp_path, nights):
    db = tmp_path / "nonet.duckdb"
    shutil.copy(nights["db"], db)
    with Store(db) as st:
        _record(st, _report(None), "2026-03-09", tmp_path / "gone", network=tmp_path / "moved.inp")
        page = build_report(st, out_dir=tmp_path)
    assert "No water balance charts" in page and "moved.inp" in page and "<svg" not in page
    assert "no open leak" in page


def test_report_command_and_bad_input(nights, tmp_path, twin_cli, capsys):
    assert twin_cli("report", "--store", nights["db"], "--out", tmp_path / "r", "--night", "2026-03-08") == 0
    assert (tmp_path / "r" / REPORT_NAME).is_file() and "report:" in capsys.readouterr().out
    empty = tmp_path / "empty.duckdb"
    with Store(empty):
        pass
    cases = [((tmp_path / "missing.duckdb", None), "does not exist"),
             ((empty, None), "holds no runs yet"),
             ((nights["db"], "8 March"), "is not a date"),
             ((nights["db"], "2026-04-01"), "no run of the night of 2026-04-01")]
    for (db, night), message in cases:
        args = ["report", "--store", db, "--out", tmp_path / "bad"] + (["--night", night] if night else [])
        assert twin_cli(*args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_nightly_job_writes_the_report(tmp_path, nights, twin_cli, capsys):
    """twin localise --store: report.html beside map.html and the work orders, its links resolving."""
    db = tmp_path / "night.duckdb"
    with Store(db) as st:  # the readings, without the synthetic runs of the fixture
        st.ingest(WEEK / "meters.csv", WEEK / "readings.parquet", now=NOW)
    out = tmp_path / "night"
    assert twin_cli("localise", "--store", db, "--network", NET, "--crs", "EPSG:4548", "--out", out, "--top", "1",
                    "--basemap", "none", "--no-calibrate") == 0
    assert f"morning_report: {out / REPORT_NAME}" in capsys.readouterr().out
    page = (out / REPORT_NAME).read_text()
    assert "1 open leak" in page and ">new<" in page and "DMA07" in page
    links = _check_offline_and_links(page, out)
    assert "map.html" in links and any(x.startswith("plan/sheets/") for x in links)


def test_report_renders_in_a_headless_browser(nights):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    page = nights["tmp"] / "n2" / REPORT_NAME
    write_report(nights["db"], page.parent, night="2026-03-08")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "Morning report" in dom and dom.count("<svg") >= 36 and "#1 +3.10 L/s" in dom
