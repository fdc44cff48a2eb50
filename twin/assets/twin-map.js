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

  twin.stat = function (name, n) {
    stats[name] = (stats[name] || 0) + n;
    var el = statsDiv();
    if (el) { el.setAttribute("data-stats", JSON.stringify(stats)); }
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
   * colour (index per line), palette, weight (per line), opacity}. */
  twin.lines = function (group, name, d) {
    var n = d.coords.length;
    var onClick = function (e) {
      var i = e.target.options.twinIndex;
      e.target.bindPopup(twin.table(d.title + " " + d.rows[i][0], d.labels, d.rows[i])).openPopup(e.latlng);
    };
    for (var i = 0; i < n; i++) {
      var line = L.polyline(latlngs(d.coords[i]), {
        color: d.palette[d.colour[i]], weight: d.weight[i], opacity: d.opacity, twinIndex: i,
        interactive: d.labels.length > 0
      });
      if (d.labels.length > 0) { line.once("click", onClick); }
      line.addTo(group);
    }
    twin.stat(name, n);
  };

  /* Circle markers: d = {title, labels, rows, coords (flat lat,lon), colour, palette,
   * radius, fill, tooltip (optional per point)}. */
  twin.points = function (group, name, d) {
    var n = d.coords.length / 2;
    for (var i = 0; i < n; i++) {
      var m = L.circleMarker([d.coords[2 * i], d.coords[2 * i + 1]], {
        radius: d.radius, color: d.stroke || "#222", weight: d.strokeWeight || 1,
        fillColor: d.palette[d.colour[i]], fillOpacity: d.fill
      });
      m.bindPopup(twin.table(d.title + " " + d.rows[i][0], d.labels, d.rows[i]));
      if (d.tooltip) { m.bindTooltip(String(d.tooltip[i]), d.tooltipOptions || {}); }
      m.addTo(group);
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

  /* Clustered customer meters: d = {ids, links (optional), classes (optional), coords (flat lat,lon)}.
   * Leaflet.markercluster with chunked loading; individual meters are canvas circles. */
  twin.cluster = function (group, name, d) {
    var n = d.coords.length / 2;
    var mcg = L.markerClusterGroup({
      chunkedLoading: true, chunkInterval: 100, showCoverageOnHover: false,
      disableClusteringAtZoom: 18, maxClusterRadius: 60, spiderfyOnMaxZoom: false
    });
    var markers = new Array(n);
    for (var i = 0; i < n; i++) {
      markers[i] = L.circleMarker([d.coords[2 * i], d.coords[2 * i + 1]], {
        radius: 4, color: "#1b5e20", weight: 1, fillColor: "#66bb6a", fillOpacity: 0.9, twinIndex: i
      });
    }
    mcg.on("click", function (e) {
      var i = e.layer.options.twinIndex;
      L.popup().setLatLng(e.latlng)
        .setContent(twin.table("Customer meter " + d.ids[i], ["Meter", "Pipe", "Class"],
          [d.ids[i], d.links ? d.links[i] : null, d.classes ? d.classes[i] : null]))
        .openOn(group._map || e.target._map);
    });
    mcg.addLayers(markers);
    mcg.addTo(group);
    twin.stat(name, n);
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
