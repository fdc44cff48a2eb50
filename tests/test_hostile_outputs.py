"""Hostile IDs in the HTML outputs: nothing a utility's file holds runs as script in a crew's browser.

Every kind of element (pipes, nodes, valves, DMAs, pressure loggers, flow
meters, customer meters and their classes, residual columns, work orders,
the title) carries markup in its ID. The crew map is opened in headless
Chromium, every layer is shown and every popup and tooltip opened by script;
the injected handlers would set ``window.__x`` or ``document.title``. The
work-order sheets are opened the same way.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from tests.test_maps import console_messages, run_chromium
from tests.test_repair import CRS, X0, Y0, candidates, toy_network, toy_valves
from twin.crs import transform_xy
from twin.maps import crew_map, save_map
from twin.meters import join_meters, meters_from_frame
from twin.repair import plan_repairs, write_plan

#: Payloads short enough for WNTR names (< 32 characters, no spaces). Each one
#: either runs a handler when parsed as HTML, or breaks out of a <script> element.
PAYLOADS = [
    "<img/src/onerror=__x=1>",
    "<svg/onload=__x=2>",
    "</script><b>",
    "<!--<script>",
    "\"'><svg/onload=__x=5>",
]
#: Longer payloads for IDs that WNTR does not hold (meters, valves, DMAs, orders).
LONG = [
    '<img src=x onerror="document.title=\'pwned\',window.__x=11">',
    "<script>window.__x=12</script>",
    "<iframe srcdoc=\"<script>parent.__x=13</script>\"></iframe>",
    "</script><script>window.__x=14</script><!--",
    "\u2028<a href=javascript:__x=15>link</a> & &lt \u00e9\u6c34",
]


def bad(name: str, k: int = 0) -> str:
    """``name`` with a payload that fits a WNTR name."""
    return f"{name}{PAYLOADS[(sum(map(ord, name)) + k) % len(PAYLOADS)]}"


def worse(name: str, k: int) -> str:
    """``name`` with a longer payload."""
    return f"{name}{LONG[k % len(LONG)]}"


def hostile_inputs():
    net = toy_network(bad)
    n = bad
    zones = {"p0": "A", "p1": "A", "p6": "A", "p2": "B", "p3": "B", "p4": "B", "p5": "B", "p7": "B"}
    dma = {"A": worse("A", 0), "B": worse("B", 1)}
    net.links["zone"] = pd.Series({n(k): dma[v] for k, v in zones.items()}).reindex(net.links.index)
    rng = np.random.default_rng(3)
    k = 40
    x = X0 + rng.uniform(0, 600, k)
    y = Y0 + rng.choice([0.0, -200.0], k) + rng.uniform(-15, 15, k)
    lon, lat = transform_xy(x, y, from_crs=CRS, to_crs="EPSG:4326")
    cust = pd.DataFrame({"meter_id": [worse(f"C{i:02d}", i) for i in range(k)], "kind": "customer",
                         "lon": lon, "lat": lat, "node_id": None, "link_id": None,
                         "customer_class": [worse("hospital", i) for i in range(k)]})
    lon2, lat2 = transform_xy(np.array([X0 + 400, X0 + 600]), np.array([Y0, Y0]), from_crs=CRS,
                              to_crs="EPSG:4326")
    dev = pd.DataFrame({"meter_id": [worse("P1", 0), worse("P2", 1), worse("P3", 2), worse("F1", 3)],
                        "kind": ["pressure"] * 3 + ["flow"],
                        "lon": [lon2[0], lon2[1], np.nan, np.nan], "lat": [lat2[0], lat2[1], np.nan, np.nan],
                        "node_id": [n("J3"), n("J4"), n("J6"), None], "link_id": [None, None, None, n("p0")]})
    meters = meters_from_frame(pd.concat([cust, dev], ignore_index=True))
    join = join_meters(meters, net)
    cands = candidates([n("p2"), n("p1"), n("p3"), n("p5"), n("p7")])
    cands["in_candidate_zone"] = [True, True, True, False, False]
    cands["zone"] = [worse("Z", i) for i in range(len(cands))]
    vl = toy_valves(net, lambda v: worse(v, 4) if v.startswith("V") else n(v))
    plan = plan_repairs(net, candidates=cands, join=join, valves=vl, simulate=False)
    return net, meters, join, cands, vl, plan


def hostile_map(tmp_path):
    net, meters, join, cands, vl, plan = hostile_inputs()
    plan = plan.copy()
    plan["order_id"] = [worse(f"WO-{i}", i) for i in range(len(plan))]  # a tampered plan folder
    residuals = pd.DataFrame({"meter_id": [worse("P1", 0), worse("P2", 1), worse("P3", 2)],
                              worse("residual", 0): [-0.04, -0.01, 0.002], "note": LONG[:3]})
    balance = pd.DataFrame({"dma": sorted(net.links["zone"].unique()) * 2,
                            "date": ["2026-03-02"] * 2 + ["2026-03-03"] * 2,
                            "nrw_pct": [8.0, 24.0, 9.0, 26.0]})
    m = crew_map(net, candidates=cands, join=join, meters=meters, balance=balance, residuals=residuals,
                 plan=plan, valves=vl, basemap="none", title=worse("title", 0))
    return save_map(m, tmp_path / "map.html"), net, meters, vl, plan


PROBE = """
<script>
window.addEventListener("load", function () {
  var map = %(map)s, texts = [], out = {};
  Object.keys(window).filter(function (k) { return /^feature_group_/.test(k); })
    .forEach(function (k) { map.addLayer(window[k]); });
  map.setView(%(centre)s, 17, {animate: false});
  function grab(sel) {
    document.querySelectorAll(sel).forEach(function (el) { texts.push(el.innerText); });
  }
  function openAll() {
    var layers = [];
    map.eachLayer(function (l) { layers.push(l); });
    layers.forEach(function (l) {
      if (l.getPopup && l.getPopup()) { l.openPopup(); grab(".leaflet-popup-content"); map.closePopup(); }
      if (l.getTooltip && l.getTooltip()) { l.openTooltip(); grab(".leaflet-tooltip"); l.closeTooltip(); }
      if (l instanceof L.Polyline && l.listens("click")) {
        l.getLatLngs().forEach(function (part) {
          l.fire("click", {latlng: Array.isArray(part) ? part[0] : part});
          grab(".leaflet-popup-content"); map.closePopup();
        });
      }
    });
    out.opened = layers.length;
  }
  function report() {
    var ctl = document.querySelector(".leaflet-control-layers");
    ctl.classList.add("leaflet-control-layers-expanded");
    grab(".leaflet-control-layers-list"); grab(".twin-legend"); grab(".twin-title");
    var handlers = 0;
    document.querySelectorAll("*").forEach(function (el) {
      for (var i = 0; i < el.attributes.length; i++) {
        var a = el.attributes[i];
        if (/^on/i.test(a.name) || /^\\s*javascript:/i.test(a.value) || a.name === "srcdoc") { handlers++; }
      }
    });
    out.x = window.__x === undefined ? null : String(window.__x);
    out.title = document.title;
    out.handlers = handlers;
    out.scripts = document.querySelectorAll("script").length;
    out.texts = texts;
    var div = document.createElement("div");
    div.id = "probe";
    div.setAttribute("data-probe", JSON.stringify(out));
    document.body.appendChild(div);
  }
  setTimeout(openAll, 500);
  setTimeout(report, 1500);
});
</script>
"""


def test_hostile_ids_do_not_run_in_the_crew_map(tmp_path):
    html_path, net, meters, vl, plan = hostile_map(tmp_path)
    page = html_path.read_text(encoding="utf-8")
    n_scripts = len(re.findall(r"<script\b", page))
    map_var = re.search(r"var (map_\w+) = L\.map\(", page).group(1)
    lon, lat = transform_xy(np.array([X0 + 300.0]), np.array([Y0 - 100.0]), from_crs=CRS, to_crs="EPSG:4326")
    probe = PROBE % {"map": map_var, "centre": json.dumps([lat[0], lon[0]])}
    html_path.write_text(page.replace("</html>", probe + "</html>"), encoding="utf-8")
    dom = run_chromium(html_path, tmp_path, "--dump-dom", "--window-size=1400,1000", budget_ms=6000)
    assert console_messages(dom.stderr) == [], console_messages(dom.stderr)[:3]
    assert 'id="twin-errors"' not in dom.stdout, "a script of the page failed"
    found = re.search(r'id="probe" data-probe="([^"]*)"', dom.stdout)
    assert found, "the probe did not run: a hostile ID broke the page's scripts"
    import html as _html

    out = json.loads(_html.unescape(found.group(1)))
    assert out["x"] is None, f"an injected handler ran (window.__x = {out['x']})"
    assert out["title"] == "", f"an injected handler set the title: {out['title']!r}"
    assert out["handlers"] == 0, "an element with an event-handler attribute reached the page"
    assert out["scripts"] == n_scripts + 1, "a <script> element was injected"
    # the IDs are shown to the crew, as text
    text = "\n".join(out["texts"])
    shown = [*net.links.index, *meters.index, *vl.index, *net.links["zone"].dropna().unique(),
             *plan["order_id"], "title" + LONG[0]]
    missing = [s for s in shown if s.replace("\u2028", "") not in text.replace("\u2028", "")]
    assert not missing, f"{len(missing)} IDs not shown as text, e.g. {missing[:3]}"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [(tag, k) for k, v in attrs if k.startswith("on") or k == "srcdoc"
                          or (v or "").strip().lower().startswith("javascript:")]

    def handle_data(self, data):
        self.text.append(data)


def test_hostile_ids_are_text_in_the_work_order_sheets(tmp_path):
    net, meters, join, cands, vl, plan = hostile_inputs()
    files = write_plan(plan, tmp_path / "plan", net, join=join, meters=meters)
    sheet = files["sheet:WO-01"]
    dom = run_chromium(sheet, tmp_path, "--dump-dom", budget_ms=1000)
    assert dom.returncode == 0 and console_messages(dom.stderr) == []
    tags = _Tags()
    tags.feed(dom.stdout)
    assert "script" not in tags.tags and "iframe" not in tags.tags and "img" not in tags.tags
    assert tags.handlers == []
    text = "".join(tags.text)
    row = plan.iloc[0]
    for vid in row["valves_to_close"].split(";"):
        assert vid in text
    assert row["link_id"] in text
    assert worse("C00", 0) in text or any(c in text for c in row["customer_ids"].split(";"))
