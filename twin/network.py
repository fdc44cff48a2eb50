"""Network import and export: EPANET ``.inp`` and GIS layers, held in a metric CRS.

A :class:`Network` bundles the hydraulic model (a WNTR ``WaterNetworkModel``
in SI units) with GeoPandas tables of its nodes, links and isolation valves,
all in one projected CRS in metres. Every later stage (meters, demand,
hydraulics, localisation, repair, maps) starts from it.

Sources
-------
- EPANET ``.inp`` in any flow units, read by WNTR. The file carries no CRS,
  so the caller names the CRS of its coordinates (``crs=``). Zones / DMAs
  come from the ``[TAGS]`` section.
- GIS layers (``.gpkg``, ``.geojson``, ``.shp``): see :mod:`twin.gis`.

Examples
--------
>>> net = read_network("L-TOWN.inp", crs="EPSG:32650")       # doctest: +SKIP
>>> net.links.loc["p1", "length_m"]                           # doctest: +SKIP
26.9292
>>> write_network(net, "l-town.gpkg")                         # doctest: +SKIP
"""

from __future__ import annotations

from copy import deepcopy
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import wntr

from twin.cache import cached_network
from twin.crs import check_declared_crs, internal_crs, is_pseudo_crs, parse_crs, transform_xy
from twin.errors import CRSError, InputError, NetworkError, require_file
from twin.gis import read_gis_network, write_gis_network
from twin.graph import graph_from_network
from twin.model import (
    LINK_COLUMNS,
    NODE_COLUMNS,
    VALVE_COLUMNS,
    Network,
    empty_valves,
    lonlat_bounds,
    tables_from_wn,
)
from twin.validate import validate_network

log = logging.getLogger(__name__)

# Network, its column contracts and table helpers live in twin.model, the CRS checks in twin.crs and the
# graph in twin.graph; they are re-exported here, where callers have always found them.
__all__ = [
    "GIS_SUFFIXES",
    "LINK_COLUMNS",
    "NODE_COLUMNS",
    "VALVE_COLUMNS",
    "Network",
    "check_declared_crs",
    "empty_valves",
    "graph_from_network",
    "internal_crs",
    "lonlat_bounds",
    "read_network",
    "tables_from_wn",
    "validate_network",
    "write_network",
]

#: File suffixes read and written as GIS layers.
GIS_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp")


# --------------------------------------------------------------------------- reading


def read_network(
    path: str | Path,
    *,
    crs: Any = None,
    to_crs: Any = None,
    require_crs: bool = True,
    **gis_options: Any,
) -> Network:
    """Read a network from an EPANET ``.inp`` or a GIS file.

    Parameters
    ----------
    path : str or Path
        ``.inp``, ``.gpkg``, ``.geojson`` or ``.shp``.
    crs : any pyproj input, optional
        CRS of the file's coordinates. Required for ``.inp`` (the format has
        none); for GIS files it overrides the layer's own CRS.
    to_crs : any pyproj input, optional
        Projected metric CRS to hold the network in. Default: ``crs`` when it
        is projected, else ``settings.DEFAULT_CRS`` (EPSG:4548).
    require_crs : bool
        For an ``.inp`` without ``crs``: raise (default), or read it to
        inspect it, coordinates as in the file and ``Network.crs`` None (no
        lon/lat, no CRS checks; not for the later stages).
    **gis_options
        Passed to :func:`twin.gis.read_gis_network` (``columns``,
        ``snap_tolerance_m``, ``diameter_unit``, layer names...).

    Returns
    -------
    Network

    Raises
    ------
    MissingFileError
        The file does not exist.
    NetworkError
        The file cannot be parsed or is not a usable network (the message
        names the file, the line or element where known, and the fix).
    CRSError
        The CRS is missing or unknown, or the coordinates are clearly lon/lat
        degrees while a metric CRS was declared.
    """
    p = require_file(path, what="network")
    suffix = p.suffix.lower()
    if suffix == ".inp":
        if gis_options:
            raise InputError(
                f"options {sorted(gis_options)} apply to GIS files only",
                path=p,
                fix="drop them for an .inp file",
            )
        net = cached_network(
            p, crs=crs, to_crs=to_crs,
            build=lambda: _read_inp(p, crs=crs, to_crs=to_crs, require_crs=require_crs),
        )
        _log_import(net)
        return net
    if suffix in GIS_SUFFIXES:
        net = read_gis_network(p, crs=crs, to_crs=to_crs, **gis_options)
        _log_import(net)
        return net
    raise NetworkError(
        f"unknown network file type {p.suffix or '(none)'!r}",
        path=p,
        fix="give an EPANET .inp, a GeoPackage (.gpkg), GeoJSON (.geojson) or Shapefile (.shp)",
    )


_LINE_RE = re.compile(r"at line (\d+)")


def _inp_error(path: Path, exc: BaseException, lines: list[str]) -> NetworkError:
    """Translate a WNTR / EPANET parse exception into a NetworkError naming the line."""
    inner: BaseException = exc
    while inner.__cause__ is not None and "(Error 200)" in str(inner):
        inner = inner.__cause__
    text = " ".join(str(inner).split())
    line_no: int | None = None
    m = _LINE_RE.search(text)
    if m:
        line_no = int(m.group(1))
        text = _LINE_RE.sub("", text).rstrip(",: ")
        text = text.split(":")[0].rstrip(",: ") if "(Error" in text else text
    elif isinstance(inner, ValueError):
        # float('abc') and friends: find the offending token in the file.
        m2 = re.search(r"'([^']*)'", str(inner))
        if m2:
            token = m2.group(1)
            for i, line in enumerate(lines, start=1):
                body = line.split(";", 1)[0]
                if token in body.split():
                    line_no = i
                    break
            text = f"value {token!r} is not a number" if "float" in str(inner) or "int" in str(inner) else text
    elif isinstance(inner, KeyError):
        token = str(inner.args[0]) if inner.args else ""
        text = f"reference to undefined element {token!r}"
        for i, line in enumerate(lines, start=1):
            body = line.split(";", 1)[0]
            if token and token in body.split():
                line_no = i
                break
    where = ""
    if line_no is not None:
        section = _section_at(lines, line_no)
        snippet = lines[line_no - 1].strip()[:60] if 0 < line_no <= len(lines) else ""
        where = f"line {line_no}" + (f" in {section}" if section else "") + (f" ({snippet!r})" if snippet else "")
    reason = f"{where}: {text}" if where else f"cannot parse EPANET input: {text}"
    return NetworkError(
        reason,
        path=path,
        fix="correct that line (see the EPANET 2.2 manual for the section's format), "
        "or export the file again from EPANET",
    )


def _section_at(lines: list[str], line_no: int) -> str | None:
    for i in range(min(line_no, len(lines)) - 1, -1, -1):
        s = lines[i].strip()
        if s.startswith("["):
            return s.split()[0]
    return None


_INP_SECTIONS = {
    "[OPTIONS]", "[TITLE]", "[JUNCTIONS]", "[RESERVOIRS]", "[TANKS]", "[PIPES]", "[PUMPS]", "[VALVES]",
    "[EMITTERS]", "[CURVES]", "[PATTERNS]", "[ENERGY]", "[STATUS]", "[CONTROLS]", "[RULES]", "[DEMANDS]",
    "[QUALITY]", "[REACTIONS]", "[SOURCES]", "[MIXING]", "[TIMES]", "[REPORT]", "[COORDINATES]",
    "[VERTICES]", "[LABELS]", "[BACKDROP]", "[TAGS]", "[END]",
}
# Section -> (minimum fields, columns that must be numbers, what the line holds).
_INP_LAYOUT = {
    "[JUNCTIONS]": (2, (1, 2), "ID elevation, optional demand pattern"),
    "[RESERVOIRS]": (2, (1,), "ID head, optional pattern"),
    "[TANKS]": (6, (1, 2, 3, 4, 5), "ID elevation init_level min_level max_level diameter, optional min_vol curve"),
    "[PIPES]": (6, (3, 4, 5), "ID node1 node2 length diameter roughness, optional minor_loss status"),
    "[PUMPS]": (4, (), "ID node1 node2 HEAD curve | POWER kW"),
    "[VALVES]": (6, (3,), "ID node1 node2 diameter type setting [minor_loss]"),
    "[COORDINATES]": (3, (1, 2), "node X Y"),
    "[VERTICES]": (3, (1, 2), "link X Y"),
}


def _canonical_section(header: str) -> str:
    sec = header.split()[0].upper()
    if sec in _INP_SECTIONS:
        return sec
    for alt in (sec.replace("]", "S]"), sec.replace("S]", "]")):
        if alt in _INP_SECTIONS:
            return alt
    return sec


#: Sections whose IDs share one namespace: EPANET refuses a node or link ID used twice (error 215);
#: WNTR keeps the last line silently, so the scan below refuses them first.
_ID_NAMESPACES = {
    "[JUNCTIONS]": "node", "[RESERVOIRS]": "node", "[TANKS]": "node",
    "[PIPES]": "link", "[PUMPS]": "link", "[VALVES]": "link",
    "[COORDINATES]": "coordinate",
}


def _prescan_inp(path: Path, lines: list[str]) -> set[str]:
    """Check section names, field counts, numbers and unique IDs line by line, naming the bad lines.

    WNTR's own messages for these cases are cryptic ("'NoneType' object has
    no attribute 'factor'" for a truncated file) or missing (a second line
    with the same ID replaces the first), so the common mistakes are caught
    here first with the line number and what the line should hold. One pass
    over the text (about 0.15 s for a file of 22,000 pipes and 22,000 nodes).
    Returns the IDs listed in ``[COORDINATES]``.
    """
    first_line: dict[tuple[str, str], tuple[str, int]] = {}
    duplicates: list[tuple[str, str, int, str, int]] = []  # (id, first section, line, section, line)
    seen: set[str] = set()
    section = None
    last = max((i for i, ln in enumerate(lines, start=1) if ln.strip()), default=0)
    for i, raw in enumerate(lines, start=1):
        body = raw.split(";", 1)[0].strip()
        if not body:
            continue
        if body.startswith("["):
            section = _section_header(path, body, i)
            seen.add(section)
            if section == "[END]":
                break
            continue
        if section is None:
            raise NetworkError(
                f"line {i}: text before the first [SECTION] header ({body[:40]!r})",
                path=path,
                fix="start the file with a section such as [TITLE] or [JUNCTIONS], or comment the line with ';'",
            )
        fields = body.split()
        _check_fields(path, section, fields, i, truncated=i == last)
        namespace = _ID_NAMESPACES.get(section)
        if namespace is not None:
            key = (namespace, fields[0])
            if key in first_line:
                duplicates.append((fields[0], *first_line[key], section, i))
            else:
                first_line[key] = (section, i)
    if duplicates:
        raise _duplicate_error(path, duplicates)
    _check_complete(path, seen, section, last)
    return {eid for (namespace, eid) in first_line if namespace == "coordinate"}


def _section_header(path: Path, body: str, i: int) -> str:
    """The canonical name of the section header on line ``i``; unknown sections are refused."""
    section = _canonical_section(body)
    if section not in _INP_SECTIONS:
        raise NetworkError(
            f"line {i}: unknown section {body.split()[0]!r}",
            path=path,
            fix="correct the section name (EPANET sections: [JUNCTIONS], [PIPES], [COORDINATES]...) "
            "or delete the section",
        )
    return section


def _check_fields(path: Path, section: str, fields: list[str], i: int, *, truncated: bool) -> None:
    """Field count and numbers of one data line of a section with a fixed layout."""
    layout = _INP_LAYOUT.get(section)
    if layout is None:
        return
    n_min, numeric, form = layout
    if len(fields) < n_min:
        hint = " (the file looks truncated)" if truncated else ""
        raise NetworkError(
            f"line {i} in {section}: {len(fields)} fields, expected at least {n_min} ({form}){hint}",
            path=path,
            fix="complete the line or export the network again from EPANET",
        )
    for col in numeric:
        if col >= len(fields):
            continue
        try:
            value = float(fields[col])
        except ValueError:
            raise NetworkError(
                f"line {i} in {section}: {fields[col]!r} is not a number (element {fields[0]}, "
                f"field {col + 1} of '{form}')",
                path=path,
                fix="write a plain number with '.' as the decimal mark",
            ) from None
        _check_finite(path, section, fields, col, value, i, form)


def _duplicate_error(path: Path, duplicates: list[tuple[str, str, int, str, int]]) -> NetworkError:
    """One error listing every ID defined twice, with its sections and line numbers."""
    shown = "; ".join(
        f"{eid!r} in {s1} line {l1} and {s2} line {l2}" for eid, s1, l1, s2, l2 in duplicates[:5]
    )
    more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
    return NetworkError(
        f"{len(duplicates)} duplicate ID(s): {shown}{more} (EPANET refuses them; a reader would keep one "
        "silently)",
        path=path,
        element=duplicates[0][0],
        fix="give every node and every link its own ID (a junction and a tank may not share one), "
        "or delete the repeated line",
        data={"duplicates": [
            {"id": eid, "first_section": s1, "first_line": l1, "section": s2, "line": l2}
            for eid, s1, l1, s2, l2 in duplicates
        ]},
    )


#: Sections WNTR cannot do without: [OPTIONS] (flow units; without it WNTR fails with "'NoneType' object
#: has no attribute 'factor'") and [COORDINATES] (the network's geometry). EPANET writes both near the end,
#: so a file cut short loses them first.
_REQUIRED_SECTIONS = {"[OPTIONS]": "flow units", "[COORDINATES]": "node positions"}


def _check_complete(path: Path, seen: set[str], section: str | None, last: int) -> None:
    """Refuse a file that lacks [OPTIONS] or [COORDINATES]; warn about a missing [END] line otherwise."""
    missing = [f"{s} ({what})" for s, what in _REQUIRED_SECTIONS.items() if s not in seen]
    if missing and "[END]" not in seen:
        raise NetworkError(
            f"the file stops at line {last}, inside {section or 'no section'}, without an [END] line: it looks "
            f"truncated; missing {', '.join(missing)}",
            path=path,
            fix="copy the complete file again, or export it again from EPANET (File > Export > Network)",
            data={"last_line": last, "last_section": section, "missing_sections": missing},
        )
    if "[OPTIONS]" not in seen:
        raise NetworkError(
            "the file has no [OPTIONS] section, so its flow units are unknown",
            path=path,
            fix="add an [OPTIONS] section with the units, e.g. a line 'Units LPS' (EPANET's default is GPM)",
        )
    if "[END]" not in seen:
        log.warning("%s has no [END] line: the file may be truncated", path)


#: Largest coordinate magnitude accepted, in the file's units: no CRS in use has coordinates beyond
#: 1e8 (the Earth's circumference is 4e7 m; Gauss-Kruger zone prefixes reach 4.1e7).
MAX_COORDINATE = 1e8


def _check_finite(path: Path, section: str, fields: list[str], col: int, value: float, i: int, form: str) -> None:
    """Numbers must be finite; coordinates must be within :data:`MAX_COORDINATE` (else they cannot be projected)."""
    kind = {"[COORDINATES]": "node", "[VERTICES]": "link"}.get(section, "element")
    where = f"line {i} in {section}: {kind} {fields[0]}"
    if not np.isfinite(value):
        raise NetworkError(
            f"{where}: field {col + 1} of '{form}' is {fields[col]!r}, not a finite number",
            path=path,
            fix="write the real value (for a coordinate: the position in the file's CRS)",
        )
    if section in ("[COORDINATES]", "[VERTICES]") and abs(value) > MAX_COORDINATE:
        raise NetworkError(
            f"{where}: coordinate {fields[col]} is beyond ±{MAX_COORDINATE:.0e} and cannot be projected "
            "(a placeholder or a unit error?)",
            path=path,
            fix="correct the coordinate in the file's CRS, or delete the element if it is not real",
        )


def _decode_inp(path: Path, raw: bytes) -> tuple[str, str]:
    """The file's text and the encoding it was read with (UTF-8, with or without BOM, else GB18030)."""
    if b"\x00" in raw[:4096]:
        raise NetworkError(
            "the file is binary, not EPANET text input",
            path=path,
            fix="give the .inp text file (EPANET: File > Export > Network)",
        )
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise NetworkError(  # pragma: no cover - gb18030 decodes nearly any byte string
        "the file is neither UTF-8 nor GB18030 text",
        path=path,
        fix="save the .inp as UTF-8 text",
    )


def _load_inp(path: Path) -> tuple[wntr.network.WaterNetworkModel, set[str]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NetworkError(f"cannot read the file ({exc.strerror})", path=path, fix="check permissions") from exc
    if not raw.strip():
        raise NetworkError("the file is empty", path=path, fix="give an EPANET .inp network with [JUNCTIONS] and [PIPES]")
    text, encoding = _decode_inp(path, raw)
    lines = text.splitlines()
    with_xy = _prescan_inp(path, lines)
    # WNTR reads UTF-8 only: files with a BOM or in GB18030 (Chinese Windows) go through a UTF-8 copy.
    needs_copy = raw.startswith(b"\xef\xbb\xbf") or encoding != "utf-8-sig"
    with tempfile.TemporaryDirectory() as tmp:
        source = path
        if needs_copy:
            source = Path(tmp) / path.name
            source.write_text(text, encoding="utf-8")
            log.debug("%s read as %s", path, encoding)
        try:
            wn = wntr.network.WaterNetworkModel(str(source))
        except Exception as exc:  # WNTR raises EpanetException, ValueError, KeyError, RuntimeError...
            err = _inp_error(path, exc, lines)
            if not any(ln.strip().upper().startswith("[END]") for ln in lines):
                err = NetworkError(
                    f"{err.reason} (the file has no [END] line: it looks truncated)", path=path, fix=err.fix
                )
            raise err from exc
    wn.name = str(path)
    if wn.num_nodes == 0:
        raise NetworkError(
            "no nodes found: the file has no [JUNCTIONS], [RESERVOIRS] or [TANKS] data",
            path=path,
            fix="check that this is an EPANET .inp network file and that it is complete",
        )
    if wn.num_links == 0:
        raise NetworkError(
            "no links found: the file has no [PIPES], [PUMPS] or [VALVES] data (truncated?)",
            path=path,
            fix="check that the file is complete",
        )
    return wn, with_xy


def _read_inp(path: Path, *, crs: Any, to_crs: Any, require_crs: bool = True) -> Network:
    wn, with_xy = _load_inp(path)
    if crs is None and not require_crs:
        nodes, links = tables_from_wn(wn, None)
        return Network(wn=wn, crs=None, nodes=nodes, links=links, valves=empty_valves(None), source=str(path))
    if crs is None:
        raise CRSError(
            "an EPANET .inp file has no coordinate reference system",
            path=path,
            fix="name the CRS of its coordinates, e.g. --crs EPSG:32650",
        )
    pseudo = is_pseudo_crs(crs)
    src: Any = str(crs).upper().replace("-", "") if pseudo else parse_crs(crs, what="--crs")
    dst = internal_crs(None if pseudo else src, to_crs)
    names = list(wn.node_name_list)
    missing = [n for n in names if n not in with_xy]
    if missing:
        raise NetworkError(
            f"{len(missing)} of {len(names)} nodes have no coordinates, e.g. {missing[:3]}",
            path=path,
            fix="add them to the [COORDINATES] section (a file cut short loses that section at its end)",
        )
    coords = np.array([wn.get_node(n).coordinates for n in names], dtype=float).reshape(-1, 2)
    check_declared_crs(coords, src, path=path,
                       length_ratio=_inp_length_ratio(wn, dict(zip(names, map(tuple, coords)))))
    if pseudo or not src.equals(dst):
        wn = _transform_wn(wn, src, dst, path=path, copy=False)  # the model was parsed here: no one else holds it
    nodes, links = tables_from_wn(wn, dst)
    return Network(wn=wn, crs=dst, nodes=nodes, links=links, valves=empty_valves(dst), source=str(path))


def _inp_length_ratio(wn: wntr.network.WaterNetworkModel, xy: dict[str, tuple[float, float]]) -> float | None:
    """Median of stated pipe length (m) over coordinate distance of its ends; None if undefined."""
    if not wn.num_pipes:
        return None
    lengths = []
    dists = []
    for _, pipe in wn.pipes():
        a = xy[pipe.start_node_name]
        b = xy[pipe.end_node_name]
        lengths.append(pipe.length)
        dists.append(np.hypot(a[0] - b[0], a[1] - b[1]))
    lengths_a = np.asarray(lengths)
    dists_a = np.asarray(dists)
    ok = dists_a > 0
    if not ok.any():
        return None
    return float(np.median(lengths_a[ok] / dists_a[ok]))


def _transform_wn(
    wn: wntr.network.WaterNetworkModel, src: Any, dst: pyproj.CRS, *, path: Path | None = None, copy: bool = True
) -> wntr.network.WaterNetworkModel:
    """``wn`` with node coordinates and link vertices transformed from ``src`` to ``dst``.

    A deep copy unless ``copy=False``, which changes ``wn`` in place (for a
    model the caller has just parsed and holds alone: the copy costs about
    7 s on a 22,000-pipe network).
    """
    if copy:
        wn = deepcopy(wn)
    names = list(wn.node_name_list)
    xy = np.array([wn.get_node(n).coordinates for n in names], dtype=float).reshape(-1, 2)
    x, y = transform_xy(xy[:, 0], xy[:, 1], from_crs=src, to_crs=dst)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        name = src if isinstance(src, str) else src.to_string()
        raise CRSError(
            f"coordinates cannot be transformed from {name} to {dst.to_string()}",
            path=path,
            fix="check the --crs value: the coordinates do not fit it",
        )
    for n, xi, yi in zip(names, x.tolist(), y.tolist()):
        wn.get_node(n).coordinates = (xi, yi)
    with_vertices = [(name, link) for name, link in wn.links() if link.vertices]
    if with_vertices:
        counts = [len(link.vertices) for _, link in with_vertices]
        vxy = np.array([v for _, link in with_vertices for v in link.vertices], dtype=float)
        vx, vy = transform_xy(vxy[:, 0], vxy[:, 1], from_crs=src, to_crs=dst)
        pos = 0
        for (_, link), k in zip(with_vertices, counts):
            link.vertices = list(zip(vx[pos : pos + k].tolist(), vy[pos : pos + k].tolist()))
            pos += k
    return wn


def _log_import(net: Network) -> None:
    """One INFO line per network read: counts, pipe length and CRS."""
    s = net.summary()
    log.info(
        "read %s: %d junctions, %d reservoirs, %d tanks, %d pipes (%.2f km), %d pumps, %d valves; CRS %s",
        Path(net.source).name, s["junctions"], s["reservoirs"], s["tanks"], s["pipes"], s["pipe_length_km"],
        s["pumps"], s["valves"], s["crs"] or "none (coordinates as in the file)",
    )


# --------------------------------------------------------------------------- writing


def write_network(network: Network, path: str | Path, *, to_crs: Any = None) -> list[Path]:
    """Write a network to ``.inp`` or GIS layers.

    Parameters
    ----------
    network : Network
    path : str or Path
        ``.inp``: EPANET 2.2 input file, in the model's original flow units,
        zones in ``[TAGS]``. ``.gpkg``: layers ``pipes`` (every link, with
        ``link_type``), ``nodes`` and ``valves``. ``.geojson``: the links to
        ``path`` and the nodes / valves beside it as ``<stem>.nodes.geojson``
        and ``<stem>.valves.geojson`` (read back together by
        :func:`read_network`). ``.shp``: the same as three shapefiles.
    to_crs : any pyproj input, optional
        CRS of the written coordinates (default: the network's CRS).

    Returns
    -------
    list of Path
        The files written.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    target = parse_crs(to_crs, what="--to-crs") if to_crs is not None else network.crs
    if suffix == ".inp":
        return [_write_inp(network, p, target)]
    if suffix in GIS_SUFFIXES:
        return write_gis_network(network, p, to_crs=target)
    raise NetworkError(
        f"cannot write network files of type {p.suffix or '(none)'!r}",
        path=p,
        fix="use .inp, .gpkg, .geojson or .shp",
    )


def _write_inp(network: Network, path: Path, target: pyproj.CRS) -> Path:
    wn = network.wn
    if not target.equals(network.crs):
        wn = _transform_wn(wn, network.crs, target)
    units = wn.options.hydraulic.inpfile_units or "LPS"
    path.parent.mkdir(parents=True, exist_ok=True)
    # WNTR writes straight to the path; write beside it then rename so a failure leaves no half file.
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_file = Path(tmp) / path.name
        try:
            wntr.network.io.write_inpfile(wn, str(tmp_file), units=units, version=2.2)
        except Exception as exc:
            raise NetworkError(f"cannot write EPANET input: {exc}", path=path) from exc
        tmp_file.replace(path)
    log.info("wrote %s (%d nodes, %d links, %s)", path.name, wn.num_nodes, wn.num_links, target.to_string())
    return path
