/* twin crew-map helpers (MIT, part of the twin project).
 *
 * Layers are drawn from compact JSON written by twin/maps.py; every function
 * records how many features it drew in the data-stats attribute (JSON) of a
 * hidden div with id twin-stats, which the browser tests read. Errors thrown
 * by any script are written into a hidden div with id twin-errors.
 */
(function () {
  "use strict";
  var twin = {};
  var stats = {};

  function statsDiv() {
    var el = document.getElementById("twin-stats");
    if (!el && document.body) {
      el = document.createElement("div");
      el.id = "twin-stats";
      el.style.display = "none";
      document.body.appendChild(el);
    }
    return el;
  }

  var times = {};
  twin.stat = function (name, n) {
    stats[name] = (stats[name] || 0) + n;
    times[name] = Math.round(window.performance.now());  // ms since navigation start
    var el = statsDiv();
    if (el) {
      el.setAttribute("data-stats", JSON.stringify(stats));
      el.setAttribute("data-ms", JSON.stringify(times));
    }
  };

  window.addEventListener("error", function (ev) {
    var el = document.getElementById("twin-errors");
    if (!el && document.body) {
      el = document.createElement("div");
      el.id = "twin-errors";
      el.style.display = "none";
      document.body.appendChild(el);
    }
    if (el) { el.appendChild(document.createTextNode((ev.message || "error") + "\n")); }
  });

  function esc(v) {
    return String(v).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  /* A popup table from parallel arrays of labels and values (nulls skipped). */
  twin.table = function (title, labels, values) {
    var rows = "";
    for (var i = 0; i < labels.length; i++) {
      var v = values[i];
      if (v === null || v === undefined || v === "") { continue; }
      rows += "<tr><th>" + esc(labels[i]) + "</th><td>" + esc(v) + "</td></tr>";
    }
    return "<div class='twin-popup'><b>" + esc(title) + "</b><table>" + rows + "</table></div>";
  };

  function latlngs(flat) {
    var out = new Array(flat.length / 2);
    for (var i = 0, j = 0; i < flat.length; i += 2, j++) { out[j] = [flat[i], flat[i + 1]]; }
    return out;
  }

  /* Polylines: d = {title, labels, rows (per line: values), coords (flat lat,lon per line),
   * colour (palette index per line), palette, weight (per line), opacity}.
   * Lines of the same colour and weight are drawn as one multi-polyline (a few
   * canvas layers instead of one per pipe); a click finds the nearest line. */
  twin.lines = function (group, name, d) {
    var n = d.coords.length;
    var groups = {};
    for (var i = 0; i < n; i++) {
      var key = d.colour[i] + "|" + d.weight[i];
      (groups[key] = groups[key] || []).push(i);
    }
    Object.keys(groups).forEach(function (key) {
      var idx = groups[key];
      var parts = idx.map(function (i) { return latlngs(d.coords[i]); });
      var line = L.polyline(parts, {
        color: d.palette[d.colour[idx[0]]], weight: d.weight[idx[0]], opacity: d.opacity,
        dashArray: d.dashArray || null, interactive: d.labels.length > 0
      });
      if (d.labels.length > 0) {
        line.on("click", function (e) {
          var map = e.target._map, p = map.latLngToLayerPoint(e.latlng);
          var best = -1, bestD = Infinity;
          for (var k = 0; k < parts.length; k++) {
            var pts = parts[k];
            var a = map.latLngToLayerPoint(pts[0]);
            for (var j = 1; j < pts.length; j++) {
              var b = map.latLngToLayerPoint(pts[j]);
              var dd = L.LineUtil.pointToSegmentDistance(p, a, b);
              if (dd < bestD) { bestD = dd; best = k; }
              a = b;
            }
          }
          if (best >= 0) {
            var row = d.rows[idx[best]];
            L.popup().setLatLng(e.latlng).setContent(twin.table(d.title + " " + row[0], d.labels, row)).openOn(map);
          }
        });
      }
      line.addTo(group);
    });
    twin.stat(name, n);
  };

  /* Circle markers: d = {title, labels, rows, coords (flat lat,lon), colour, palette,
   * radius, fill, tooltip (optional per point)}. */
  twin.points = function (group, name, d) {
    var n = d.coords.length / 2;
    var target = group;
    if (d.minZoom) {  // dense layers (valves) appear only from this zoom on
      target = L.layerGroup();
      var toggle = function () {
        var map = group._map;
        if (!map) { return; }
        if (map.getZoom() >= d.minZoom) { group.addLayer(target); } else { group.removeLayer(target); }
      };
      group.on("add", function () { group._map.on("zoomend", toggle); toggle(); });
      if (group._map) { group._map.on("zoomend", toggle); setTimeout(toggle, 0); }
    }
    for (var i = 0; i < n; i++) {
      var m = L.circleMarker([d.coords[2 * i], d.coords[2 * i + 1]], {
        radius: d.radius, color: d.stroke || "#222", weight: d.strokeWeight || 1,
        fillColor: d.palette[d.colour[i]], fillOpacity: d.fill
      });
      m.bindPopup(twin.table(d.title + " " + d.rows[i][0], d.labels, d.rows[i]));
      if (d.tooltip) { m.bindTooltip(esc(d.tooltip[i]), d.tooltipOptions || {}); }  // IDs are text
      m.addTo(target);
    }
    twin.stat(name, n);
  };

  /* Numbered labels (DivIcon markers, no images needed). */
  twin.labels = function (group, name, d) {
    var n = d.coords.length / 2;
    for (var i = 0; i < n; i++) {
      var icon = L.divIcon({
        className: d.className, html: esc(d.text[i]), iconSize: [22, 22], iconAnchor: [11, 11]
      });
      var m = L.marker([d.coords[2 * i], d.coords[2 * i + 1]], { icon: icon, zIndexOffset: 1000 - i });
      m.bindPopup(twin.table(d.title + " " + d.rows[i][0], d.labels, d.rows[i]));
      m.addTo(group);
    }
    twin.stat(name, n);
  };

  /* GeoJSON features whose properties carry _style and _popup. */
  twin.geojson = function (group, name, fc) {
    var layer = L.geoJSON(fc, {
      style: function (f) { return f.properties._style; },
      onEachFeature: function (f, l) { if (f.properties._popup) { l.bindPopup(f.properties._popup); } }
    });
    layer.addTo(group);
    twin.stat(name, fc.features.length);
  };

  /* Clustered customer meters: d = {ids, coords (flat lat,lon), links (optional: per meter an
   * index into d.linkNames, -1 none), classes (optional: index into d.classNames)}.
   * A grid clustering recomputed for the view on every move (about 10 ms for
   * 130,000 meters): clusters are canvas circles with a count label; from
   * zoom d.pointZoom on, every meter in view is a circle with a popup. */
  twin.cluster = function (group, name, d) {
    var n = d.coords.length / 2;
    var X = new Float64Array(n), Y = new Float64Array(n);
    for (var i = 0; i < n; i++) {  // Web Mercator, 0..1
      var lat = d.coords[2 * i] * Math.PI / 180;
      X[i] = (d.coords[2 * i + 1] + 180) / 360;
      Y[i] = (1 - Math.log(Math.tan(lat) + 1 / Math.cos(lat)) / Math.PI) / 2;
    }
    var layer = L.layerGroup().addTo(group);
    var cell = 60, pointZoom = d.pointZoom || 17;
    var style = { radius: 4, color: "#1b5e20", weight: 1, fillColor: "#66bb6a", fillOpacity: 0.9 };
    function popup(i) {
      var cls = d.classes ? d.classNames[d.classes[i]] : null;
      return twin.table("Customer meter " + d.ids[i], ["Meter", "Pipe", "Class"],
        [d.ids[i], d.links && d.links[i] >= 0 ? d.linkNames[d.links[i]] : null, cls]);
    }
    function draw() {
      var map = group._map;
      if (!map) { return; }
      layer.clearLayers();
      var z = map.getZoom(), scale = 256 * Math.pow(2, z);
      var b = map.getPixelBounds(), pad = cell;
      var x0 = (b.min.x - pad) / scale, x1 = (b.max.x + pad) / scale;
      var y0 = (b.min.y - pad) / scale, y1 = (b.max.y + pad) / scale;
      if (z >= pointZoom) {
        for (var i = 0; i < n; i++) {
          if (X[i] < x0 || X[i] > x1 || Y[i] < y0 || Y[i] > y1) { continue; }
          var m = L.circleMarker([d.coords[2 * i], d.coords[2 * i + 1]], style);
          m.bindPopup(popup.bind(null, i));
          layer.addLayer(m);
        }
        return;
      }
      var cells = new Map();
      for (var k = 0; k < n; k++) {
        if (X[k] < x0 || X[k] > x1 || Y[k] < y0 || Y[k] > y1) { continue; }
        var key = Math.floor(X[k] * scale / cell) * 1e7 + Math.floor(Y[k] * scale / cell);
        var c = cells.get(key);
        if (c === undefined) { cells.set(key, c = [0, 0, 0, k]); }
        c[0]++; c[1] += d.coords[2 * k]; c[2] += d.coords[2 * k + 1];
      }
      cells.forEach(function (c) {
        var at = [c[1] / c[0], c[2] / c[0]];
        if (c[0] === 1) {
          var one = L.circleMarker(at, style);
          one.bindPopup(popup.bind(null, c[3]));
          layer.addLayer(one);
          return;
        }
        var r = Math.min(17, 8 + 2.5 * Math.log10(c[0]));
        var icon = L.divIcon({
          className: "twin-cluster", html: "<div>" + (c[0] >= 10000 ? Math.round(c[0] / 1000) + "k" : c[0]) + "</div>",
          iconSize: [2 * r, 2 * r]
        });
        var mk = L.marker(at, { icon: icon, keyboard: false });
        mk.on("click", function () { map.setView(at, Math.min(z + 2, pointZoom)); });
        layer.addLayer(mk);
      });
    }
    group.on("add", function () { group._map.on("moveend", draw); draw(); });
    group.on("remove", function (e) { if (e.target._map) { e.target._map.off("moveend", draw); } });
    if (group._map) { group._map.on("moveend", draw); }
    twin.stat(name, n);
    setTimeout(function () { draw(); twin.stat(name + "_clustered", layer.getLayers().length ? n : 0); }, 0);
  };

  /* A legend control: html is trusted markup built by twin/maps.py. */
  twin.legend = function (map, html) {
    var ctl = L.control({ position: "bottomright" });
    ctl.onAdd = function () {
      var div = L.DomUtil.create("div", "twin-legend");
      div.innerHTML = html;
      L.DomEvent.disableClickPropagation(div);
      return div;
    };
    ctl.addTo(map);
  };

  window.twin = twin;
})();
