"""Crew maps: offline HTML, what the layers hold, GCJ-02 shift, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_repair import CRS, X0, Y0, candidates, toy_network, toy_valves
from twin.crs import transform_xy, wgs84_to_gcj02
from twin.errors import InputError, UnknownElementError
from twin.maps import NRW_CLASSES, crew_map, offline_html, save_map
from twin.meters import join_meters, meters_from_frame
from twin.repair import plan_repairs


def zoned_toy():
    net = toy_network()
    zone = {"p0": "A", "p1": "A", "p6": "A", "p2": "B", "p3": "B", "p4": "B", "p5": "B", "p7": "B"}
    net.links["zone"] = pd.Series(zone).reindex(net.links.index).astype("string")
    return net


def toy_meters(seed: int = 1, n_customers: int = 60):
    """Customers scattered within 15 m of the toy's pipes, 3 loggers (one without
    coordinates: it sits at its node), 1 flow meter; WGS84 lon/lat."""
    rng = np.random.default_rng(seed)
    x = X0 + rng.uniform(0, 600, n_customers)
    y = Y0 + rng.choice([0.0, -200.0], n_customers) + rng.uniform(-15, 15, n_customers)
    lon, lat = transform_xy(x, y, from_crs=CRS, to_crs="EPSG:4326")
    rows = pd.DataFrame({"meter_id": [f"C{i:03d}" for i in range(n_customers)], "kind": "customer",
                         "lon": lon, "lat": lat, "node_id": None, "link_id": None,
                         "customer_class": np.where(np.arange(n_customers) == 0, "hospital", "residential")})
    lon2, lat2 = transform_xy(np.array([X0 + 400, X0 + 600]), np.array([Y0, Y0]), from_crs=CRS,
                              to_crs="EPSG:4326")
    dev = pd.DataFrame({"meter_id": ["P1", "P2", "P3", "F1"], "kind": ["pressure"] * 3 + ["flow"],
                        "lon": [lon2[0], lon2[1], np.nan, np.nan], "lat": [lat2[0], lat2[1], np.nan, np.nan],
                        "node_id": ["J3", "J4", "J6", None], "link_id": [None, None, None, "p0"]})
    return meters_from_frame(pd.concat([rows, dev], ignore_index=True))


def balance_table() -> pd.DataFrame:
    return pd.DataFrame({"dma": ["A", "A", "B", "B"], "date": ["2026-03-02", "2026-03-03"] * 2,
                         "nrw_pct": [8.0, 9.0, 24.0, 26.0], "siv_m3": [500, 510, 800, 790],
                         "mnf_lps": [1.1, 1.2, 3.4, 3.3]})


def full_map(basemap: str = "none"):
    net = zoned_toy()
    meters = toy_meters()
    join = join_meters(meters, net)
    cands = candidates(["p2", "p1", "p3", "p5", "p7"])
    cands["in_candidate_zone"] = [True, True, True, False, False]
    vl = toy_valves(net)
    plan = plan_repairs(net, candidates=cands, join=join, valves=vl, simulate=False)
    residuals = pd.DataFrame({"meter_id": ["P1", "P2", "P3"], "residual_change_m": [-0.04, -0.01, 0.002]})
    m = crew_map(net, candidates=cands, join=join, meters=meters, balance=balance_table(),
                 residuals=residuals, plan=plan, valves=vl, basemap=basemap, title="toy")
    return m, net, meters, join, cands, plan


def payload(page: str, name: str) -> dict:
    """The JSON data of one twin layer in a rendered page."""
    match = re.search(r'twin\.\w+\(feature_group_\w+, "' + name + r'", (.*?)\);\n', page)
    assert match, f"layer {name} not in page"
    return json.loads(match.group(1))


# --------------------------------------------------------------------------- HTML


def test_html_is_self_contained(tmp_path):
    m, *_ = full_map()
    path = save_map(m, tmp_path / "map.html")
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", page), "a script is loaded from outside the page"
    assert not re.search(r"<link[^>]*\bhref=[\"']?(https?:)?//", page), "a stylesheet comes from a CDN"
    assert "Leaflet 1.9.4" in page and "twin.cluster = function" in page
    assert "url(images/" not in page  # the layer-control icons are inlined
    assert "tile.openstreetmap" not in page  # basemap none: no tiles at all


def test_same_inputs_give_the_same_page():
    a, *_ = full_map()
    b, *_ = full_map()
    assert offline_html(a) == offline_html(b)


def test_pipe_popups_and_colours():
    m, net, *_ = full_map()
    page = offline_html(m)
    pipes = payload(page, "pipes")
    assert pipes["labels"][:6] == ["ID", "type", "diameter mm", "material", "install year", "length m"]
    rows = {r[0]: r for r in pipes["rows"]}
    assert set(rows) == set(net.links.index)
    assert rows["p5"][2] == 80 and rows["p1"][2] == 150 and rows["p1"][5] == 200.0
    colour = dict(zip([r[0] for r in pipes["rows"]], pipes["colour"]))
    assert colour["p2"] == max(colour.values()) > colour["p7"] > 0  # rank 1 darkest, unscored grey
    assert colour["p0"] == 0 and colour["p4"] == 0
    # the best candidates are drawn last, on top
    assert pipes["rows"][-1][0] == "p2"


def test_candidates_zone_meters_and_plan_layers():
    m, net, meters, join, cands, plan = full_map()
    page = offline_html(m)
    labels = payload(page, "candidates")
    assert labels["text"] == ["1", "2", "3", "4", "5"]
    assert [r[1] for r in labels["rows"]] == list(cands["link_id"])
    cust = payload(page, "customers")
    assert len(cust["ids"]) == len(cust["coords"]) // 2 == 60
    # popups name the pipe each customer was joined to
    i = cust["ids"].index("C000")
    assert cust["linkNames"][cust["links"][i]] == join.loc["C000", "link_id"]
    assert cust["classNames"][cust["classes"][i]] == "hospital"
    loggers = payload(page, "loggers")
    assert [r[0] for r in loggers["rows"]] == ["P1", "P2", "P3"]
    assert "residual_change_m" in loggers["labels"]
    assert loggers["colour"][0] == 3  # the largest residual gets the strongest colour
    # P3 has no coordinates: drawn at its node J6
    lon, lat = transform_xy(np.array([X0]), np.array([Y0 - 200]), from_crs=CRS, to_crs="EPSG:4326")
    assert loggers["coords"][4:6] == pytest.approx([lat[0], lon[0]], abs=2e-5)
    first = plan.iloc[0]
    seg = payload(page, "segment")
    assert sorted(r[0] for r in seg["rows"]) == sorted(first["isolated_links"].split(";"))
    close = payload(page, "close")
    assert sorted(r[0] for r in close["rows"]) == sorted(first["valves_to_close"].split(";"))


def test_dmas_coloured_by_nrw():
    m, *_ = full_map()
    dmas = payload(offline_html(m), "dmas")
    colours = {f["properties"]["_popup"].split("DMA ")[1][0]: f["properties"]["_style"]["fillColor"]
               for f in dmas["features"]}
    assert colours == {"A": NRW_CLASSES[0][1], "B": NRW_CLASSES[3][1]}  # 8.5 % and 25 % mean


def test_amap_shifts_every_geometry_to_gcj02():
    osm, *_ = full_map("osm")
    amap, *_ = full_map("amap")
    a, b = offline_html(osm), offline_html(amap)
    assert "tile.openstreetmap.org" in a and "autonavi.com" in b
    for layer in ("pipes", "customers", "loggers"):
        pa, pb = payload(a, layer), payload(b, layer)
        flat_a = np.concatenate([np.asarray(c) for c in pa["coords"]]) if layer == "pipes" else np.asarray(pa["coords"])
        flat_b = np.concatenate([np.asarray(c) for c in pb["coords"]]) if layer == "pipes" else np.asarray(pb["coords"])
        lat, lon = flat_a[0::2], flat_a[1::2]
        glon, glat = wgs84_to_gcj02(lon, lat)
        assert np.abs(flat_b[0::2] - glat).max() < 2e-5 and np.abs(flat_b[1::2] - glon).max() < 2e-5
        assert np.abs(flat_b[1::2] - lon).min() > 1e-3  # a real shift (hundreds of metres)


def test_bad_inputs_are_named():
    net = toy_network()
    with pytest.raises(UnknownElementError, match="not in the network"):
        crew_map(net, candidates=candidates(["p1", "nope"]), basemap="none")
    with pytest.raises(InputError, match="basemap"):
        crew_map(net, basemap="google")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="nrw_pct"):
        crew_map(zoned_toy(), balance=pd.DataFrame({"dma": ["A"], "loss": [3]}), basemap="none")


def test_cli_map(tmp_path, twin_cli, capsys):
    import wntr

    net = toy_network()
    inp = tmp_path / "toy.inp"
    wntr.network.write_inpfile(net.wn, str(inp), units="LPS")
    candidates(["p1", "p3"]).to_csv(tmp_path / "candidates.csv", index=False)
    rc = twin_cli("plan", "--network", inp, "--crs", CRS, "--candidates", tmp_path / "candidates.csv",
                  "--out", tmp_path / "plan", "--no-simulate", "--no-map")
    assert rc == 0
    balance_table().to_csv(tmp_path / "balance.csv", index=False)
    pd.DataFrame({"meter_id": ["P1"], "residual_change_m": [-0.03]}).to_csv(tmp_path / "res.csv", index=False)
    rc = twin_cli("map", "--network", inp, "--crs", CRS, "--candidates", tmp_path / "candidates.csv",
                  "--plan", tmp_path / "plan", "--basemap", "none", "--out", tmp_path / "m.html",
                  "--balance", tmp_path / "balance.csv", "--residuals", tmp_path / "res.csv",
                  "--order", "WO-02")
    assert rc == 0
    page = (tmp_path / "m.html").read_text()
    orders = pd.read_csv(tmp_path / "plan" / "work_orders.csv", dtype=str).set_index("order_id")
    close = payload(page, "close")
    assert sorted(r[0] for r in close["rows"]) == sorted(orders.loc["WO-02", "valves_to_close"].split(";"))
    assert all(r[3] == "WO-02" for r in close["rows"])
    rc = twin_cli("map", "--network", inp, "--crs", CRS, "--plan", tmp_path / "plan", "--order", "WO-99",
                  "--basemap", "none", "--out", tmp_path / "m2.html")
    assert rc == 2 and "WO-99" in capsys.readouterr().err
    rc = twin_cli("map", "--network", inp, "--crs", CRS, "--basemap", "bing", "--out", tmp_path / "x.html")
    err = capsys.readouterr().err
    assert rc == 2 and "basemap" in err and "Traceback" not in err


# --------------------------------------------------------------------------- browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    if os.environ.get("CI"):
        pytest.fail("headless Chromium is required under CI (Debian package `chromium`)")
    pytest.skip("chromium not installed (Debian package `chromium`)")


def run_chromium(html: Path, tmp_path: Path, *extra: str, budget_ms: int = 8000) -> subprocess.CompletedProcess:
    """Open a page in headless Chromium with the network cut off; return the finished process."""
    args = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any CDN request would fail loudly
        f"--virtual-time-budget={budget_ms}", *extra, html.resolve().as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_map_opens_offline_in_chromium_and_draws_every_layer(tmp_path):
    m, net, meters, join, cands, plan = full_map("none")
    html = save_map(m, tmp_path / "map.html")
    dom = run_chromium(html, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    assert 'id="twin-errors"' not in dom.stdout
    stats = re.search(r'id="twin-stats" data-stats="([^"]*)"', dom.stdout)
    assert stats, "the page's layers did not run"
    counts = json.loads(stats.group(1).replace("&quot;", '"'))
    first = plan.iloc[0]
    assert counts == {
        "dmas": 2, "pipes": len(net.links), "zone": 1, "candidates": 5, "customers": 60,
        "customers_clustered": 60,
        "loggers": 3, "flowmeters": 1, "valves": 6,
        "segment": len(first["isolated_links"].split(";")),
        "close": len(first["valves_to_close"].split(";")),
        "cut_off": len(first["cut_off_links"].split(";")),
        "other_segments": sum(len(v.split(";")) for v in plan["isolated_links"].iloc[1:]),
        "other_close": sum(len(v.split(";")) for v in plan["valves_to_close"].iloc[1:]),
    }
    assert first["cut_off_links"] == "p4"  # J5 hangs on the isolated J2
    # Leaflet drew the vector layers on a canvas and the rank labels as markers
    assert "leaflet-zoom-animated" in dom.stdout and "<canvas" in dom.stdout
    assert dom.stdout.count('class="leaflet-marker-icon twin-rank') == 5
    shot = tmp_path / "crew-map.png"
    run = run_chromium(html, tmp_path, f"--screenshot={shot}", "--window-size=1200,800")
    assert run.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_work_order_sheet_opens_in_chromium(tmp_path):
    from twin.repair import write_plan

    net = zoned_toy()
    meters = toy_meters()
    join = join_meters(meters, net)
    plan = plan_repairs(net, candidates=candidates(["p1"]), join=join, valves=toy_valves(net),
                        simulate=False)
    files = write_plan(plan, tmp_path / "plan", net, join=join, meters=meters)
    sheet = files["sheet:WO-01"]
    dom = run_chromium(sheet, tmp_path, "--dump-dom", budget_ms=2000)
    assert dom.returncode == 0 and console_messages(dom.stderr) == []
    assert "<svg" in dom.stdout and "Va" in dom.stdout
    pdf = tmp_path / "WO-01.pdf"
    run = run_chromium(sheet, tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", budget_ms=2000)
    assert run.returncode == 0 and pdf.exists() and pdf.read_bytes()[:4] == b"%PDF"


PROBE = """
<script>
window.addEventListener("load", function () {
  var map = %(map)s, out = {};
  function clickAt(latlng) {
    var p = map.latLngToContainerPoint(latlng), r = map.getContainer().getBoundingClientRect();
    var target = document.elementFromPoint(r.left + p.x, r.top + p.y);
    ["mousedown", "mouseup", "click"].forEach(function (type) {
      target.dispatchEvent(new MouseEvent(type, {clientX: r.left + p.x, clientY: r.top + p.y,
                                                  bubbles: true, cancelable: true, view: window}));
    });
  }
  function popupText() {
    var el = document.querySelector(".leaflet-popup-content");
    return el ? el.innerText : null;
  }
  function report() {
    var div = document.createElement("div");
    div.id = "probe";
    div.setAttribute("data-probe", JSON.stringify(out));
    document.body.appendChild(div);
  }
  var steps = [
    function () { map.setView(%(pipe)s, 17, {animate: false}); },
    function () { clickAt(%(pipe)s); },
    function () { out.pipe = popupText(); map.closePopup(); map.setView(%(pipe2)s, 17, {animate: false}); },
    function () { clickAt(%(pipe2)s); },
    function () { out.pipe2 = popupText(); map.closePopup(); map.setView(%(meter)s, 18, {animate: false}); },
    function () { clickAt(%(meter)s); },
    function () { out.meter = popupText(); map.closePopup(); map.setView(%(meter)s, 12, {animate: false}); },
    function () { out.clusters = document.querySelectorAll(".twin-cluster").length; report(); }
  ];
  (function next(i) { if (i < steps.length) { steps[i](); setTimeout(function () { next(i + 1); }, 400); } })(0);
});
</script>
"""


def test_popups_open_on_click_in_chromium(tmp_path):
    """Clicks on the canvas reach the right pipe and meter; clusters appear when zoomed out."""
    m, net, meters, join, *_ = full_map("none")
    html = save_map(m, tmp_path / "map.html")
    page = html.read_text(encoding="utf-8")
    map_var = re.search(r"var (map_\w+) = L\.map\(", page).group(1)
    lon, lat = transform_xy(np.array([X0 + 60.0, X0 + 300.0]), np.array([Y0, Y0 - 200.0]),
                            from_crs=CRS, to_crs="EPSG:4326")
    meter = meters.loc["C005"]
    probe = PROBE % {"map": map_var, "pipe": json.dumps([lat[0], lon[0]]),
                     "pipe2": json.dumps([lat[1], lon[1]]),
                     "meter": json.dumps([meter.geometry.y, meter.geometry.x])}
    html.write_text(page.replace("</html>", probe + "</html>"), encoding="utf-8")
    dom = run_chromium(html, tmp_path, "--dump-dom", "--window-size=1000,800", budget_ms=10000)
    assert console_messages(dom.stderr) == []
    found = re.search(r'id="probe" data-probe="([^"]*)"', dom.stdout)
    assert found, "the probe did not run"
    probe_out = json.loads(html_unescape(found.group(1)))
    assert probe_out["pipe"] is not None and "pipe p1" in probe_out["pipe"].lower()
    assert "150" in probe_out["pipe"] and "200" in probe_out["pipe"]  # diameter mm, length m
    # p7 (J6-J7, 80 mm, rank 5) is not in the work order: the score layer answers
    assert probe_out["pipe2"] is not None and probe_out["pipe2"].startswith("Pipe p7")
    assert "80" in probe_out["pipe2"] and "rank\t5" in probe_out["pipe2"]
    assert probe_out["meter"] is not None and "C005" in probe_out["meter"]
    assert str(join.loc["C005", "link_id"]) in probe_out["meter"]
    assert probe_out["clusters"] >= 1


def html_unescape(text: str) -> str:
    import html as _html

    return _html.unescape(text)


def test_map_of_a_plain_inp_without_results(ltown_inp, tmp_path):
    """L-Town: no zones, no material/year, no valves, an empty candidates table."""
    from twin.network import read_network

    net = read_network(ltown_inp, crs="EPSG:32650")
    empty = pd.DataFrame({"rank": pd.Series(dtype=int), "link_id": pd.Series(dtype=str),
                          "score": pd.Series(dtype=float)})
    page = offline_html(crew_map(net, candidates=empty, basemap="none"))
    pipes = payload(page, "pipes")
    assert len(pipes["rows"]) == len(net.links) and set(pipes["colour"]) == {0}
    assert '"dmas"' not in page and '"candidates"' not in page


def test_dma_outlines_do_not_cover_each_other_on_the_yingtan_network():
    # The trunk zone runs through the whole city; a hull of its pipes would paint every
    # district with the trunk's NRW colour. Each outline must hold mostly its own pipes.
    import shapely

    from conftest import NETWORKS
    from twin.maps import dma_polygons
    from twin.network import read_network

    net = read_network(NETWORKS / "yingtan-small.inp", crs="EPSG:4548")
    outlines = dma_polygons(net)
    links = net.links[net.links["zone"].notna()]
    mid = shapely.line_interpolate_point(links.geometry.values, 0.5, normalized=True)
    zone = links["zone"].astype(str).to_numpy()
    assert {"TRUNK", "DMA07"} <= set(outlines.index)
    for dma, shape in outlines.geometry.items():
        others = zone != dma
        inside = shapely.contains_xy(shape, shapely.get_x(mid[others]), shapely.get_y(mid[others]))
        assert inside.mean() < 0.5, f"{dma} covers {inside.mean():.0%} of the other zones' pipes"


def fitted_box(page: str) -> tuple[float, float, float, float]:
    """(south, west, north, east) degrees the page opens on."""
    found = re.search(r"map_\w+\.fitBounds\(\s*\[\[([-\d.]+), ([-\d.]+)\], \[([-\d.]+), ([-\d.]+)\]\]", page)
    assert found, "the map is not fitted to a box"
    return tuple(float(v) for v in found.groups())  # type: ignore[return-value]


def test_map_opens_on_the_candidates_not_the_city(ltown_inp):
    """L-Town is 5 km across; three ranked pipes in one street are what the crew came for."""
    from twin.network import read_network

    net = read_network(ltown_inp, crs="EPSG:32650")
    pipes = net.links[net.links["link_type"] == "pipe"]
    mid = pipes.geometry.interpolate(0.5, normalized=True)
    near = mid.distance(mid.iloc[100]).sort_values().index[:3].tolist()
    cands = candidates(near)
    cands["in_candidate_zone"] = True
    page = offline_html(crew_map(net, candidates=cands, basemap="none"))
    s, w, n, e = fitted_box(page)
    lon, lat = transform_xy(*pipes.loc[near].geometry.get_coordinates().to_numpy().T,
                            from_crs=net.crs, to_crs="EPSG:4326")
    assert s < lat.min() and n > lat.max() and w < lon.min() and e > lon.max()  # the candidates in view...
    lon_c, lat_c = transform_xy(*np.array(net.links.total_bounds).reshape(2, 2).T, from_crs=net.crs,
                                to_crs="EPSG:4326")
    assert (n - s) * (e - w) < 0.05 * (lat_c[1] - lat_c[0]) * (lon_c[1] - lon_c[0])  # ...not the city
    lo, la = transform_xy(np.array([e, w]), np.array([s, s]), from_crs="EPSG:4326", to_crs=net.crs)
    assert abs(lo[0] - lo[1]) >= 300.0  # with a margin of at least 150 m on each side
    # without candidates: the whole network
    s, w, n, e = fitted_box(offline_html(crew_map(net, basemap="none")))
    assert s <= lat_c[0] + 1e-4 and n >= lat_c[1] - 1e-4
