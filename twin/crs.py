"""Coordinate reference systems: parsing, checks and the Chinese web-map datums.

pyproj knows every EPSG system but not the two obfuscated datums of Chinese
web maps: GCJ-02 (Amap/Gaode, Tencent, Google China) and BD-09 (Baidu). Both
are lon/lat degrees offset from WGS84 by a published, non-linear formula of a
few hundred metres. This module implements them, vectorised over numpy arrays,
and lets :func:`transform_xy` treat them as pseudo-CRSs named ``"GCJ02"`` and
``"BD09"``.

The forward formulas (WGS84 -> GCJ-02 -> BD-09) are closed-form; the inverse
ones are solved by fixed-point iteration to better than 1e-9 degrees (about
0.1 mm), far below the 1e-7 degrees the project requires.

Examples
--------
>>> lon, lat = wgs84_to_gcj02(116.391, 39.907)
>>> back_lon, back_lat = gcj02_to_wgs84(lon, lat)
>>> abs(float(back_lon) - 116.391) < 1e-8
True
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from numpy.typing import ArrayLike, NDArray

from twin import settings
from twin.errors import CRSError

log = logging.getLogger(__name__)

__all__ = [
    "PSEUDO_CRS",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "check_declared_crs",
    "degrees_declared_as_metres",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "internal_crs",
    "is_pseudo_crs",
    "outside_area_of_use",
    "parse_crs",
    "require_projected",
    "transform_xy",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

#: Names accepted for the two pseudo-CRSs (compared case-insensitively,
#: ignoring "-", "_" and spaces), mapped to their canonical name.
PSEUDO_CRS = {"GCJ02": "GCJ02", "BD09": "BD09", "BD09LL": "BD09", "AMAP": "GCJ02", "BAIDU": "BD09"}

# Krasovsky 1940 ellipsoid, on which the GCJ-02 offset is defined.
_A = 6378245.0
_EE = 0.00669342162296594323
# BD-09's rotation/scale constant.
_X_PI = np.pi * 3000.0 / 180.0
# GCJ-02 is only applied inside this lon/lat box (the rest of the world is WGS84).
_CHINA_BOX = (72.004, 0.8293, 137.8347, 55.8271)
_INVERSE_TOL_DEG = 1e-10
_INVERSE_MAX_ITER = 50

_WGS84 = pyproj.CRS.from_epsg(4326)


def _canonical_pseudo(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    key = value.upper().replace("-", "").replace("_", "").replace(" ", "")
    return PSEUDO_CRS.get(key)


def is_pseudo_crs(value: Any) -> bool:
    """Whether ``value`` names the GCJ-02 or BD-09 pseudo-CRS (e.g. ``"GCJ-02"``, ``"bd09"``)."""
    return _canonical_pseudo(value) is not None


def parse_crs(value: Any, *, what: str = "CRS") -> pyproj.CRS:
    """Return a :class:`pyproj.CRS` for any pyproj input, or raise :class:`CRSError`.

    Parameters
    ----------
    value : str, int, pyproj.CRS or dict
        ``"EPSG:4548"``, ``4548``, a WKT or PROJ string, a CRS object.
    what : str
        What the CRS is for, used in the error message (``"--crs"``).

    Returns
    -------
    pyproj.CRS

    Raises
    ------
    CRSError
        When ``value`` is empty, unknown, or one of the pseudo-CRSs GCJ-02 /
        BD-09 (these are not pyproj CRSs: convert with :func:`transform_xy`).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise CRSError(f"no {what} given", fix="name a CRS such as EPSG:4548 or EPSG:32650")
    if isinstance(value, pyproj.CRS):
        return value
    if is_pseudo_crs(value):
        raise CRSError(
            f"{what} {value!r} is a Chinese web-map datum, not a map projection",
            fix="convert its lon/lat with twin.crs.transform_xy(..., from_crs='GCJ02') first",
        )
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    try:
        return pyproj.CRS.from_user_input(value)
    except (pyproj.exceptions.CRSError, TypeError, ValueError) as exc:
        raise CRSError(
            f"{what} {value!r} is not a known coordinate reference system",
            fix="use an EPSG code such as EPSG:4548 (CGCS2000 GK CM 117E) or EPSG:32650 (UTM 50N)",
        ) from exc


def require_projected(crs: Any, *, what: str = "network") -> pyproj.CRS:
    """Return ``crs`` parsed, or raise :class:`CRSError` if it is not projected in metres.

    Parameters
    ----------
    crs : any pyproj input
        The CRS to check.
    what : str
        What must be in a metric CRS, for the message.
    """
    parsed = parse_crs(crs, what=f"{what} CRS")
    if not parsed.is_projected:
        raise CRSError(
            f"the {what} CRS {parsed.to_string()} is not projected; distances need metres",
            fix="use a projected CRS such as EPSG:4548 or EPSG:32650",
        )
    unit = parsed.axis_info[0].unit_name if parsed.axis_info else ""
    if unit not in ("metre", "meter", "m"):
        raise CRSError(
            f"the {what} CRS {parsed.to_string()} is in {unit or 'unknown units'}, not metres",
            fix="use a metric projected CRS such as EPSG:4548 or EPSG:32650",
        )
    return parsed


def internal_crs(crs: pyproj.CRS | None, to_crs: Any = None) -> pyproj.CRS:
    """The projected metric CRS a network is held in.

    ``to_crs`` when given, else ``crs`` if it is projected, else
    ``settings.DEFAULT_CRS`` (EPSG:4548). Raises :class:`CRSError` when the
    chosen CRS is not projected in metres.
    """
    if to_crs is not None:
        return require_projected(to_crs, what="target")
    if crs is not None and crs.is_projected:
        return require_projected(crs, what="network")
    return require_projected(settings.DEFAULT_CRS, what="default")


# --------------------------------------------------------------------------- GCJ-02 / BD-09


def _as_arrays(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    if x.shape != y.shape:
        raise CRSError(f"lon and lat have different shapes {x.shape} and {y.shape}")
    return x, y


def _in_china(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.bool_]:
    x0, y0, x1, y1 = _CHINA_BOX
    return (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)


def _gcj_offset(lon: NDArray[np.float64], lat: NDArray[np.float64]):
    """GCJ-02 minus WGS84, degrees, at WGS84 ``lon``/``lat`` (zero outside China)."""
    x = lon - 105.0
    y = lat - 35.0
    sx = np.sqrt(np.abs(x))
    pi = np.pi
    # Shared periodic terms of the published obfuscation polynomial.
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx
    d_lat = d_lat + common
    d_lat = d_lat + (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
    d_lat = d_lat + (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0
    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx
    d_lon = d_lon + common
    d_lon = d_lon + (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
    d_lon = d_lon + (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0
    # Metres of offset -> degrees on the Krasovsky ellipsoid.
    rad_lat = np.radians(lat)
    s = np.sin(rad_lat)
    magic = 1.0 - _EE * s * s
    sqrt_magic = np.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * pi)
    inside = _in_china(lon, lat)
    return np.where(inside, d_lon, 0.0), np.where(inside, d_lat, 0.0)


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """WGS84 lon/lat (degrees) to GCJ-02 lon/lat (degrees); unchanged outside China.

    Parameters
    ----------
    lon, lat : array_like
        WGS84 longitude and latitude, degrees, same shape.

    Returns
    -------
    lon, lat : ndarray
        GCJ-02 longitude and latitude, degrees.
    """
    x, y = _as_arrays(lon, lat)
    dx, dy = _gcj_offset(x, y)
    return x + dx, y + dy


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """GCJ-02 lon/lat (degrees) to WGS84 lon/lat (degrees), exact inverse by iteration.

    Solves ``wgs84_to_gcj02(w) = g`` by fixed-point iteration starting from
    ``w = g``; converges to better than 1e-9 degrees in a few steps.
    """
    gx, gy = _as_arrays(lon, lat)
    return _invert(wgs84_to_gcj02, gx, gy)


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """GCJ-02 lon/lat (degrees) to BD-09 lon/lat (degrees), Baidu's published formula."""
    x, y = _as_arrays(lon, lat)
    z = np.hypot(x, y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """BD-09 lon/lat (degrees) to GCJ-02 lon/lat (degrees), exact inverse by iteration."""
    bx, by = _as_arrays(lon, lat)
    return _invert(gcj02_to_bd09, bx, by)


def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """WGS84 lon/lat (degrees) to BD-09 lon/lat (degrees)."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """BD-09 lon/lat (degrees) to WGS84 lon/lat (degrees)."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def _invert(forward, tx: NDArray[np.float64], ty: NDArray[np.float64]):
    """Solve ``forward(x, y) = (tx, ty)`` by fixed-point iteration (the offsets are tiny and smooth)."""
    x = tx.copy()
    y = ty.copy()
    for _ in range(_INVERSE_MAX_ITER):
        fx, fy = forward(x, y)
        ex = fx - tx
        ey = fy - ty
        x = x - ex
        y = y - ey
        if not np.size(ex) or np.nanmax(np.maximum(np.abs(ex), np.abs(ey))) < _INVERSE_TOL_DEG:
            break
    return x, y


_TO_WGS84 = {"GCJ02": gcj02_to_wgs84, "BD09": bd09_to_wgs84}
_FROM_WGS84 = {"GCJ02": wgs84_to_gcj02, "BD09": wgs84_to_bd09}


def transform_xy(
    x: ArrayLike, y: ArrayLike, *, from_crs: Any, to_crs: Any
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Transform coordinates between any two CRSs, GCJ-02 and BD-09 included.

    Parameters
    ----------
    x, y : array_like
        Coordinates in ``from_crs``: easting/northing (m) for a projected CRS,
        lon/lat (degrees) for a geographic one or a pseudo-CRS. Always x first
        (longitude first), whatever the CRS's official axis order.
    from_crs, to_crs : any pyproj input, or ``"GCJ02"`` / ``"BD09"``
        Source and target systems.

    Returns
    -------
    x, y : ndarray of float64
        Coordinates in ``to_crs``, same shape as the input.
    """
    xs, ys = _as_arrays(x, y)
    src = _canonical_pseudo(from_crs)
    dst = _canonical_pseudo(to_crs)
    if src is not None and src == dst:
        return xs.copy(), ys.copy()
    if src is not None:
        xs, ys = _TO_WGS84[src](xs, ys)
        src_crs = _WGS84
    else:
        src_crs = parse_crs(from_crs, what="source CRS")
    dst_crs = _WGS84 if dst is not None else parse_crs(to_crs, what="target CRS")
    if not src_crs.equals(dst_crs):
        transformer = pyproj.Transformer.from_crs(src_crs, dst_crs, always_xy=True)
        xs, ys = transformer.transform(xs, ys)
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
    else:
        xs, ys = xs.copy(), ys.copy()
    if dst is not None:
        xs, ys = _FROM_WGS84[dst](xs, ys)
    return xs, ys


# --------------------------------------------------------------------------- plausibility checks


def outside_area_of_use(x: ArrayLike, y: ArrayLike, crs: Any) -> NDArray[np.bool_]:
    """Which points lie outside the CRS's published area of use.

    Parameters
    ----------
    x, y : array_like
        Coordinates in ``crs`` (x first).
    crs : any pyproj input
        The CRS the coordinates are declared in.

    Returns
    -------
    ndarray of bool
        True where the point is outside the area of use (all False when the
        CRS publishes none, or the coordinates cannot be transformed).
    """
    xs, ys = _as_arrays(x, y)
    parsed = parse_crs(crs)
    area = parsed.area_of_use
    if area is None or xs.size == 0:
        return np.zeros(xs.shape, dtype=bool)
    with np.errstate(all="ignore"):
        lon, lat = transform_xy(xs, ys, from_crs=parsed, to_crs=_WGS84)
    finite = np.isfinite(lon) & np.isfinite(lat)
    inside = (lon >= area.west - 1e-9) & (lon <= area.east + 1e-9)
    if area.west > area.east:  # crosses the antimeridian
        inside = (lon >= area.west) | (lon <= area.east)
    inside &= (lat >= area.south - 1e-9) & (lat <= area.north + 1e-9)
    return ~(inside & finite)


def degrees_declared_as_metres(
    x: ArrayLike,
    y: ArrayLike,
    crs: Any,
    *,
    length_ratio: float | None = None,
) -> bool:
    """Whether coordinates declared in a projected CRS are clearly lon/lat degrees.

    True when the CRS is projected, every coordinate lies within
    [-180, 180] x [-90, 90], and the layout is implausible in metres: either
    the whole network spans less than 10 units, or the pipes' stated lengths
    are over 1,000 times their coordinate lengths (``length_ratio``, the
    median of stated length / coordinate length). Schematic networks drawn in
    small local units (WNTR's Net1) pass: their ratio is about 300.

    Parameters
    ----------
    x, y : array_like
        Node or vertex coordinates as declared.
    crs : any pyproj input
        The declared CRS.
    length_ratio : float, optional
        Median stated pipe length (m) over coordinate length, where known.
    """
    parsed = parse_crs(crs)
    if not parsed.is_projected:
        return False
    xs, ys = _as_arrays(x, y)
    finite = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[finite], ys[finite]
    if xs.size < 2:
        return False
    if np.any(np.abs(xs) > 180.0) or np.any(np.abs(ys) > 90.0):
        return False
    span = float(np.hypot(xs.max() - xs.min(), ys.max() - ys.min()))
    if length_ratio is not None and np.isfinite(length_ratio):
        return bool(length_ratio > 1_000.0)
    return span < 10.0


def check_declared_crs(coords: np.ndarray, src: Any, *, path: Path, length_ratio: float | None = None) -> None:
    """Refuse coordinates that clearly do not fit the declared CRS.

    Parameters
    ----------
    coords : numpy.ndarray
        (n, 2) x, y as read from the file, in ``src``.
    src : any pyproj input or "GCJ02" / "BD09"
        The CRS the file declares or the user named.
    path : Path
        The file, for the message.
    length_ratio : float, optional
        Median of stated pipe length over coordinate distance; a ratio far
        above 1 marks degrees read as metres (see
        :func:`degrees_declared_as_metres`).

    Raises
    ------
    CRSError
        Lon/lat degrees declared as a metric CRS, or values beyond
        +-180 / +-90 declared as degrees.
    """
    if coords.size == 0:
        return
    x, y = coords[:, 0], coords[:, 1]
    geographic = is_pseudo_crs(src) or not parse_crs(src).is_projected
    if geographic:
        if np.nanmax(np.abs(x)) > 180.0 or np.nanmax(np.abs(y)) > 90.0:
            name = src if is_pseudo_crs(src) else parse_crs(src).to_string()
            raise CRSError(
                f"coordinates reach x {np.nanmax(np.abs(x)):.1f}, y {np.nanmax(np.abs(y)):.1f}: not lon/lat degrees, "
                f"but {name} is geographic",
                path=path,
                fix="pass the projected CRS the coordinates are in, e.g. --crs EPSG:4548 or EPSG:32650",
            )
        return
    if degrees_declared_as_metres(x, y, src, length_ratio=length_ratio):
        raise CRSError(
            f"coordinates look like lon/lat degrees (x {np.nanmin(x):.4f}..{np.nanmax(x):.4f}, "
            f"y {np.nanmin(y):.4f}..{np.nanmax(y):.4f}) but {parse_crs(src).to_string()} is in metres",
            path=path,
            fix="pass --crs EPSG:4326 (or the geographic CRS they are in)",
        )
