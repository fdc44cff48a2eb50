"""A cache of parsed networks in the user's cache folder, keyed by the file's content.

Reading a large EPANET ``.inp`` costs about twice as much as loading the
finished :class:`twin.model.Network` back: on the 130,000-meter city
(22,047 pipes), WNTR's parser and the checks and tables of
:func:`twin.network.read_network` took 14-16 s on a loaded machine,
unpickling the finished network 7 s. Every command that reads the network
paid the parse; with the cache, only the first does.

Where
-----
``$TWIN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/twin``, else
``~/.cache/twin``; entries live in its ``networks/`` folder. Nothing is ever
written beside the user's files or in the working directory. Delete the
folder to clear the cache; ``TWIN_NO_CACHE=1`` turns it off.

Key
---
The SHA-256 of the file's bytes, the CRS it is read in and held in, the
versions of twin, WNTR, pandas, GeoPandas, Shapely and pyproj, and a hash
of the source of the modules that build a :class:`Network` (so a changed
reader never serves an old table). A renamed or moved file with the same
bytes hits the same entry; the entry's ``source`` is reset to the path read.

Failures never stop a command: an entry that cannot be read (truncated,
written by another version) is rebuilt and replaced, an unwritable folder is
logged once and the network is read without the cache.

Only ``.inp`` files are cached: a GIS network is several files (a
Shapefile's sidecars, the GeoJSON node and valve files beside the links) and
a set of reading options, and its import is already fast enough per
command; it is read directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from twin.model import Network

log = logging.getLogger(__name__)

#: Bump when the pickled layout changes in a way the key does not see.
CACHE_FORMAT = 1

#: Distributions whose versions enter the key (pickles are not portable across them).
_KEY_PACKAGES = ("twin", "wntr", "pandas", "geopandas", "shapely", "pyproj", "numpy")

#: Modules whose source builds a Network from an ``.inp``: a change in any of them invalidates entries.
_KEY_MODULES = ("network.py", "model.py", "crs.py", "cache.py")


def cache_dir() -> Path:
    """The folder of twin's cache: ``$TWIN_CACHE_DIR``, ``$XDG_CACHE_HOME/twin`` or ``~/.cache/twin``."""
    explicit = os.environ.get("TWIN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "twin"
    return Path.home() / ".cache" / "twin"


def cache_enabled() -> bool:
    """False when ``TWIN_NO_CACHE`` is set to anything but ``""``, ``0`` or ``false``."""
    value = os.environ.get("TWIN_NO_CACHE", "").strip().lower()
    return value in ("", "0", "false", "no")


def _versions() -> str:
    out = []
    for name in _KEY_PACKAGES:
        try:
            out.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name}=?")
    return ";".join(out)


def _code_hash() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _KEY_MODULES:
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()


def _crs_key(crs: Any) -> str:
    """A stable text for a CRS argument (None, a string such as ``EPSG:4548``, or a pyproj CRS)."""
    if crs is None:
        return "-"
    to_wkt = getattr(crs, "to_wkt", None)
    if callable(to_wkt):
        return str(to_wkt())
    return str(crs).strip().upper()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): the cache key's file part, and which network a run used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def network_key(path: Path, *, crs: Any, to_crs: Any) -> str:
    """The cache key of reading ``path`` in ``crs``, held in ``to_crs``: a SHA-256 hex digest.

    Parameters
    ----------
    path : Path
        The network file; its bytes are hashed (about 0.05 s for a 5 MB ``.inp``).
    crs, to_crs : any pyproj input or None
        As given to :func:`twin.network.read_network`.
    """
    parts = [f"format={CACHE_FORMAT}", f"file={file_sha256(path)}", f"crs={_crs_key(crs)}",
             f"to_crs={_crs_key(to_crs)}", _versions(), f"code={_code_hash()}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _load(entry: Path) -> Network | None:
    """The cached network of ``entry``, or None when there is none or it cannot be read."""
    try:
        with entry.open("rb") as f:
            net = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as exc:  # truncated, another version's pickle, unreadable: rebuild
        log.info("network cache: entry %s unreadable (%s: %s); reading the file again",
                 entry.name, type(exc).__name__, exc)
        return None
    if not isinstance(net, Network):
        log.info("network cache: entry %s holds no network; reading the file again", entry.name)
        return None
    return net


def _store(entry: Path, net: Network) -> None:
    """Write ``net`` to ``entry`` atomically (temporary file, then rename); failures are logged only."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{entry.stem}.", suffix=".tmp", dir=entry.parent)
    except OSError as exc:
        log.info("network cache: folder %s not writable (%s); working without the cache", entry.parent, exc)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(net, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
        log.debug("network cache: stored %s", entry)
    except Exception as exc:  # disk full, a table that does not pickle: never fail the command
        log.info("network cache: could not store %s (%s); working without the cache", entry.name, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def cached_network(path: Path, *, crs: Any, to_crs: Any, build: Callable[[], Network]) -> Network:
    """The network of ``path`` from the cache, or ``build()`` stored in the cache.

    Parameters
    ----------
    path : Path
        The network file (existing).
    crs, to_crs : any pyproj input or None
        Part of the key, as given to :func:`twin.network.read_network`.
    build : callable
        Reads the file (raising the reader's own errors, which are never cached).

    Returns
    -------
    Network
        A network of its own (never shared with another call), ``source`` the
        path as given.
    """
    if not cache_enabled():
        return build()
    try:
        entry = cache_dir() / "networks" / f"{network_key(path, crs=crs, to_crs=to_crs)}.pickle"
    except OSError as exc:
        log.info("network cache: cannot hash %s (%s); reading it without the cache", path, exc)
        return build()
    net = _load(entry)
    if net is not None:
        log.debug("network cache: %s from %s", path.name, entry)
        return _with_source(net, str(path))
    net = build()
    _store(entry, net)
    return net


def _with_source(net: Network, source: str) -> Network:
    """``net`` with ``source`` (and the model's name) set to the path read now."""
    net.wn.name = source
    if net.source == source:
        return net
    return dataclasses.replace(net, source=source)
