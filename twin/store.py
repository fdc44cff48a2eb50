"""The readings store: one embedded DuckDB file, nothing to start.

Tables
------
``meters``
    The usable registry (``meter_id``, ``kind``, ``lon``, ``lat`` WGS84,
    ``node_id``, ``link_id``, extra columns), the latest row per meter.
``meter_quarantine``
    Registry rows refused by :func:`twin.meters.validate_meters`, with ``reason``.
``meter_join``
    Customer meters snapped to pipes (:func:`twin.meters.join_meters`), when an
    ingest was given the network.
``readings``
    ``meter_id``, ``ts`` (TIMESTAMPTZ, UTC), ``value`` (DOUBLE: m³ register,
    m pressure head, L/s flow), ``kind``, ``flag`` (``'reset'`` where a
    customer register restarts), ``ingest_id``.
``quarantine``
    Every refused row as read (strings), with ``source`` file, ``source_row``
    and ``reason``.
``ingests``
    One row per ingest with its counts.
``balance``
    Written by ``twin balance``.
``runs``, ``alarms``, ``alarm_history``, ``candidates``
    The nightly job's runs and leak alarms (:mod:`twin.alarms`).

Ingest runs in SQL with bounded memory (``memory_limit``, default 1 GB; the
CSV/Parquet readers stream, and the sequence checks run per group of meters).
The session ``TimeZone`` is UTC so that TIMESTAMPTZ never depends on the
machine. DuckDB allows one writing process per file; other processes may
open it ``read_only=True`` when no writer holds it, and any number of
threads may share a :class:`Store`'s connection through cursors.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd

from twin import settings
from twin.errors import InputError, ReadingsError, TwinError, require_file
from twin.meters import KINDS, join_meters, read_meters, validate_meters
from twin.network import Network
from twin.readings import REASONS, REQUIRED_COLUMNS, classify

log = logging.getLogger(__name__)

#: Staged rows per group for the sequence checks (bounds window memory).
ROWS_PER_GROUP = 8_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    meter_id VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, value DOUBLE NOT NULL,
    kind VARCHAR, flag VARCHAR, ingest_id INTEGER);
CREATE TABLE IF NOT EXISTS quarantine (
    ingest_id INTEGER, source VARCHAR, source_row BIGINT, meter_id VARCHAR,
    "timestamp" VARCHAR, value VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id INTEGER, started_at TIMESTAMPTZ, meters_file VARCHAR, readings_file VARCHAR,
    readings_sha256_head VARCHAR, rows_in BIGINT, accepted BIGINT, quarantined BIGINT,
    duplicates_skipped BIGINT, resets BIGINT, seconds DOUBLE, summary VARCHAR);
CREATE TABLE IF NOT EXISTS meter_quarantine (
    ingest_id INTEGER, source VARCHAR, source_row BIGINT, meter_id VARCHAR, kind VARCHAR,
    lon DOUBLE, lat DOUBLE, node_id VARCHAR, link_id VARCHAR, reason VARCHAR);
"""

#: The nightly job's memory (:mod:`twin.alarms`): created on open, so a store
#: written before these tables existed gains them and keeps working.
_RUN_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ, days INTEGER, network VARCHAR, network_sha256 VARCHAR, status VARCHAR,
    leaks INTEGER, new_alarms INTEGER, continuing INTEGER, closed INTEGER, reopened INTEGER, unchecked INTEGER,
    readings_rows BIGINT, out_dir VARCHAR, report VARCHAR);
CREATE TABLE IF NOT EXISTS alarms (
    alarm_id INTEGER, dma VARCHAR, onset TIMESTAMPTZ, flow_lps DOUBLE, first_seen_run INTEGER,
    last_seen_run INTEGER, first_seen_at TIMESTAMPTZ, last_seen_at TIMESTAMPTZ, status VARCHAR,
    closed_at TIMESTAMPTZ, closed_run INTEGER, closed_reason VARCHAR, top_link_id VARCHAR, top_p DOUBLE);
CREATE TABLE IF NOT EXISTS alarm_history (
    alarm_id INTEGER, run_id INTEGER, state VARCHAR, onset TIMESTAMPTZ, flow_lps DOUBLE, t_stat DOUBLE,
    top_link_id VARCHAR, top_p DOUBLE, top_p_within_300m DOUBLE, note VARCHAR);
CREATE TABLE IF NOT EXISTS candidates (
    run_id INTEGER, alarm_id INTEGER, "rank" INTEGER, link_id VARCHAR, score DOUBLE, p_within_300m DOUBLE,
    leak_flow_lps DOUBLE, zone VARCHAR);
"""


@dataclass
class IngestSummary:
    """What one ingest did; the counts add up.

    Attributes
    ----------
    rows_in : int
        Data rows in the readings file.
    accepted : int
        Rows stored as readings.
    quarantined : dict[str, int]
        Rows refused, by reason (see :data:`twin.readings.REASONS`).
    duplicates_skipped : int
        Rows identical to ones already stored (readings or quarantine): a
        re-ingest adds nothing.
    resets : int
        Accepted customer readings flagged as a register reset.
    meters_in, meters_accepted : int
        Registry rows read and usable.
    meters_rejected : dict[str, int]
        Registry rows refused, by reason.
    joined, unmatched : int
        Customer meters joined to a pipe / not (only with a network).
    seconds : float
        Wall time.
    ingest_id : int
    """

    rows_in: int = 0
    accepted: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    duplicates_skipped: int = 0
    resets: int = 0
    meters_in: int = 0
    meters_accepted: int = 0
    meters_rejected: dict[str, int] = field(default_factory=dict)
    joined: int | None = None
    unmatched: int | None = None
    seconds: float = 0.0
    ingest_id: int = 0

    @property
    def quarantined_total(self) -> int:
        """Rows quarantined, all reasons."""
        return int(sum(self.quarantined.values()))

    @property
    def adds_up(self) -> bool:
        """Whether ``rows_in == accepted + quarantined + duplicates_skipped``."""
        return self.rows_in == self.accepted + self.quarantined_total + self.duplicates_skipped

    @property
    def all_quarantined(self) -> bool:
        """Whether the file had rows and every one of them was quarantined (nothing usable)."""
        return self.rows_in > 0 and self.quarantined_total == self.rows_in

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary."""
        d = asdict(self)
        d["quarantined_total"] = self.quarantined_total
        d["adds_up"] = self.adds_up
        return d


def _file_head_hash(path: Path, nbytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(nbytes))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:16]


def _q(value: str | Path) -> str:
    """SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _q_file(path: str | Path) -> str:
    """SQL string literal of a file path for DuckDB's readers, glob characters escaped.

    ``read_csv`` and ``read_parquet`` expand ``*``, ``?`` and ``[...]``: a
    file named ``readings[1].csv`` would read ``readings1.csv`` and
    ``week*.csv`` every week. Each such character becomes a one-character
    class (``[*]``), which matches only itself.
    """
    return _q(re.sub(r"([\[*?])", r"[\1]", str(path)))


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _csv_error(exc: duckdb.Error, path: Path) -> ReadingsError:
    """A one-line :class:`ReadingsError` for DuckDB's CSV error, naming the line and the fix."""
    text = str(exc)
    line = re.search(r"Line:\s*(\d+)", text)
    where = f"line {line.group(1)}: " if line else ""
    if "unicode" in text.lower() or "utf-8" in text.lower():
        return ReadingsError(
            f"{where}the file is not UTF-8 (a byte of another encoding, e.g. GBK or Latin-1)",
            path=path,
            fix="re-encode the file as UTF-8, e.g. `iconv -f GB18030 -t UTF-8 in.csv > out.csv`",
        )
    reason = next((ln.strip() for ln in text.splitlines()[1:] if ln.strip() and "Original Line" not in ln), "")
    return ReadingsError(
        f"{where}cannot read the readings CSV ({reason or _first_line(exc)})",
        path=path,
        fix="check the delimiter and quoting there; rows need meter_id,timestamp,value",
    )


#: Delimiters a readings CSV may use, in the order they are tried on its header line.
CSV_DELIMITERS = (",", ";", "\t", "|")


def _csv_header(path: Path, *, max_bytes: int = 1 << 16) -> tuple[list[str], str]:
    """The column names of a readings CSV and its delimiter, from its header line.

    The delimiter is the first of :data:`CSV_DELIMITERS` that splits the
    header into fields holding ``meter_id``, ``timestamp`` and ``value``
    (else ``,``, and the missing columns are reported). Empty or repeated
    names become ``column<i>`` (columns DuckDB would name so).
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.readline(max_bytes)
        line = re.split(r"[\r\n]", raw.decode("utf-8-sig"), maxsplit=1)[0]
    except (OSError, EOFError) as exc:
        raise ReadingsError(f"cannot read the readings file ({exc})", path=path,
                            fix="copy the file again in full") from exc
    except UnicodeDecodeError as exc:
        raise ReadingsError("line 1: the header is not UTF-8 (a byte of another encoding, e.g. GBK or Latin-1)",
                            path=path,
                            fix="re-encode the file as UTF-8, e.g. `iconv -f GB18030 -t UTF-8 in.csv > out.csv`") from exc
    splits = {d: next(csv.reader([line], delimiter=d, quotechar='"', strict=False), []) for d in CSV_DELIMITERS}
    delimiter = next((d for d, names in splits.items()
                      if set(REQUIRED_COLUMNS) <= {n.strip().lower() for n in names}), ",")
    names: list[str] = []
    for i, name in enumerate(splits[delimiter]):
        names.append(name if name.strip() and name not in names else f"column{i}")
    return names, delimiter


def _ends_with_line_break(path: Path) -> bool:
    """Whether a file's last byte is a line break (True for an empty file)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) in (b"\n", b"\r")


def _utc_ns(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True).astype("datetime64[ns, UTC]")


def _as_utc(value: Any, what: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise InputError(f"{what} {value!r} has no time zone", fix="give a tz-aware time, e.g. 2026-03-02T00:00+08:00")
    return ts.tz_convert("UTC")


def _time_window(where: list[str], params: list[Any], start: Any, end: Any) -> None:
    """Add ``start <= ts < end`` (either bound optional, UTC) to a WHERE clause being built."""
    if start is not None:
        where.append("ts >= CAST(? AS TIMESTAMPTZ)")
        params.append(_as_utc(start, "start").isoformat())
    if end is not None:
        where.append("ts < CAST(? AS TIMESTAMPTZ)")
        params.append(_as_utc(end, "end").isoformat())


def _fill_reading_counts(summary: IngestSummary, rows_in: int, counts: dict[str, int], resets: int) -> None:
    """Put the outcome counts of a readings file into ``summary`` (reasons in :data:`REASONS` order)."""
    counts = dict(counts)
    summary.rows_in = rows_in
    summary.accepted = int(counts.pop("accepted", 0))
    summary.duplicates_skipped = int(counts.pop("skipped", 0))
    summary.quarantined = {r: int(counts[r]) for r in REASONS if r in counts}
    summary.resets = resets


#: The likely cause of a file whose rows were all quarantined, by the commonest reason.
_LIKELY_CAUSE = {
    "malformed_row": "the delimiter or quoting is not the file's (rows need meter_id,timestamp,value)",
    "truncated_row": "the file was cut while being written or copied",
    "unknown_meter": "the meter IDs do not match the registry: another utility's or an old --meters file?",
    "rejected_meter": "the registry rows of these meters were rejected (see table meter_quarantine)",
    "unparseable_timestamp": "the timestamps are not ISO 8601 (2026-03-02T08:00:00+08:00)",
    "timestamp_without_offset": "the timestamps carry no UTC offset: add +08:00 (local time) or Z (UTC)",
    "invalid_utc_offset": "the timestamps' UTC offsets are impossible: use +08:00 for local time",
    "missing_value": "the value column is empty",
    "non_numeric_value": "the values are not numbers (a decimal comma, or the wrong column?)",
    "negative_value": "the values are negative: registers and pressures are not",
    "implausible_flow": "the flows are far too large: give them in L/s",
    "future_timestamp": "the timestamps are in the future: check this machine's clock or pass --now",
    "duplicate": "the rows repeat readings already stored with other values",
    "register_backwards": "the registers run backwards",
    "implausible_jump": "the values jump implausibly: check the units (m³ registers, m pressure head)",
}


def refuse_all_quarantined(summary: IngestSummary, readings_path: str | Path) -> None:
    """Raise when every row of a readings file was quarantined, naming the likely cause.

    The rows stay in the ``quarantine`` table with their reasons; the CLI
    exits with status 2 so that a scheduled job notices.

    Raises
    ------
    ReadingsError
        ``data`` holds the counts per reason.
    """
    if not summary.all_quarantined:
        return
    top = max(summary.quarantined, key=lambda r: summary.quarantined[r])
    raise ReadingsError(
        f"every row ({summary.rows_in:,}) was quarantined, most as {top}: likely {_LIKELY_CAUSE.get(top, top)}",
        path=readings_path,
        fix="correct the file and ingest it again; the rows and their reasons are in the store's quarantine table",
        data=dict(summary.quarantined),
    )


def _warn_if_clock_is_off(summary: IngestSummary, now: pd.Timestamp) -> None:
    """Warn when most rows are in the future: the machine's clock (or ``now``) is likely wrong."""
    future = summary.quarantined.get("future_timestamp", 0)
    if future > 0.5 * max(summary.rows_in, 1):
        log.warning(
            "%s of %s rows are later than now (%s): is this machine's clock right? "
            "Pass now= (CLI: --now) to check against another time",
            f"{future:,}", f"{summary.rows_in:,}", now.isoformat(),
        )


def check_store_path(path: str | Path) -> None:
    """Refuse a store path that is not a DuckDB database file name.

    The CLI calls it first thing, before reading anything else.

    DuckDB opens an existing CSV or Parquet file as an in-memory database (all
    writes lost on close) and happily creates a database named ``out.csv``;
    a store must be a ``.duckdb`` (or ``.db``/``.ddb``) file.
    """
    if str(path) != ":memory:" and Path(path).suffix.lower() not in settings.STORE_SUFFIXES:
        raise InputError(
            "a store must be a DuckDB database file, not a data file or a name without its extension",
            path=path,
            fix=f"give a file ending in {settings.STORE_SUFFIX}, e.g. {Path(path).with_suffix(settings.STORE_SUFFIX).name}",
        )


def _check_memory_limit(memory_limit: str) -> None:
    """Refuse a memory limit DuckDB cannot read, before any file is created."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET memory_limit = {_q(memory_limit)}")
    except duckdb.Error as exc:
        raise InputError(
            f"DuckDB cannot use the memory limit {memory_limit!r} ({str(exc).splitlines()[0]})",
            element="--memory-limit",
            fix="give an amount with a unit, e.g. 1GB or 500MB",
        ) from exc
    finally:
        con.close()


class Store:
    """A DuckDB file holding meters, readings and what was quarantined.

    Parameters
    ----------
    path : str or Path, default ``":memory:"``
        The database file (created when missing) or ``":memory:"``.
    read_only : bool, default False
        Open an existing file read-only (several processes may do so when no
        process writes).
    memory_limit : str, default ``"1GB"``
        DuckDB's memory limit; larger work spills to a temporary directory.
    threads : int, optional
        DuckDB worker threads (default: DuckDB's choice).

    Examples
    --------
    >>> with Store("yingtan.duckdb") as store:                       # doctest: +SKIP
    ...     summary = store.ingest("meters.csv", "readings.csv")
    ...     flows = store.series("flow")
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        read_only: bool = False,
        memory_limit: str = "1GB",
        threads: int | None = None,
    ) -> None:
        self.path = str(path)
        check_store_path(self.path)
        if read_only and self.path != ":memory:":
            require_file(self.path, what="store")
        if self.path != ":memory:" and not read_only:
            parent = Path(self.path).parent
            if not parent.exists():
                raise InputError(
                    "the store's folder does not exist", path=self.path, fix=f"create {parent} first"
                )
        _check_memory_limit(memory_limit)
        try:
            self.con: duckdb.DuckDBPyConnection = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            raise InputError(
                f"cannot open the store ({str(exc).splitlines()[0]})",
                path=self.path,
                fix="give a DuckDB file (or a new path); close other programs writing to it",
            ) from exc
        if self.path != ":memory:":
            self._check_file_backed()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")  # the library never prints
        self.con.execute(f"SET memory_limit = {_q(memory_limit)}")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.read_only = read_only
        if not read_only:
            self.con.execute(_SCHEMA)
            self.con.execute(_RUN_SCHEMA)

    def _check_file_backed(self) -> None:
        """Refuse a connection that DuckDB opened in memory (its writes would be lost on close)."""
        rows = self.con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
        if not rows or not rows[0][0]:
            self.con.close()
            raise InputError(
                "DuckDB opens this path as an in-memory database: nothing would be stored",
                path=self.path,
                fix=f"give the store a file name ending in {settings.STORE_SUFFIX}, e.g. store{settings.STORE_SUFFIX}",
            )

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Run the body as one DuckDB transaction: committed whole, or rolled back on any exception.

        A process killed inside it leaves the file as it was (DuckDB never
        saw the COMMIT).
        """
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:  # the connection is already unusable; nothing was committed
                pass
            raise
        self.con.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction for a caller's writes (e.g. a run and its alarms): all or nothing.

        Raises
        ------
        InputError
            The store is open read-only.
        """
        if self.read_only:
            raise InputError("the store is open read-only", path=self.path, fix="open it without read_only to write")
        with self._transaction():
            yield

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def has_table(self, name: str) -> bool:
        """Whether a table of that name exists."""
        n = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()[0][0]
        return bool(n)

    def _df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        # through Arrow: faster than .df() for strings, and TIMESTAMPTZ arrives as UTC
        return self.con.sql(sql, params=list(params) if params else None).to_arrow_table().to_pandas()

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """Replace table ``name`` with a DataFrame (geometry columns dropped)."""
        frame = pd.DataFrame(df).copy()
        if "geometry" in frame.columns:
            frame = frame.drop(columns="geometry")
        self.con.register("_write_df", frame)
        try:
            self.con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _write_df')
        finally:
            self.con.unregister("_write_df")

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """The result of a read query as a DataFrame (TIMESTAMPTZ columns as UTC)."""
        return self._df(sql, params)

    def table(self, name: str) -> pd.DataFrame:
        """A whole table as a DataFrame (TIMESTAMPTZ columns as UTC)."""
        if not self.has_table(name):
            raise InputError(f"the store has no table {name!r}", path=self.path, fix="ingest or compute it first")
        return self._df(f'SELECT * FROM "{name}"')

    # ------------------------------------------------------------------ meters

    def ingest_meters(
        self,
        meters_path: str | Path,
        *,
        meters_crs: Any = settings.MAP_CRS,
        network: Network | None = None,
        max_distance_m: float = settings.SNAP_DISTANCE_M,
        ingest_id: int | None = None,
    ) -> IngestSummary:
        """Read, validate and store a meter registry (and its join to ``network``).

        Rows for meters already stored replace them. Returns a summary with
        the meter counts only.
        """
        with self._transaction():
            ingest_id = self._next_ingest_id() if ingest_id is None else ingest_id
            summary, _ = self._ingest_meters(
                meters_path, meters_crs=meters_crs, network=network, max_distance_m=max_distance_m,
                ingest_id=ingest_id,
            )
        return summary

    def _ingest_meters(
        self,
        meters_path: str | Path,
        *,
        meters_crs: Any,
        network: Network | None,
        max_distance_m: float,
        ingest_id: int,
    ) -> tuple[IngestSummary, pd.DataFrame]:
        """:meth:`ingest_meters`, also returning the rejected registry rows."""
        raw = read_meters(meters_path, crs=meters_crs)
        good, rejected = validate_meters(raw, network)
        table = pd.DataFrame(good.drop(columns="geometry")).reset_index()
        table["meter_id"] = table["meter_id"].astype(str)
        for c in ("kind", "node_id", "link_id"):
            table[c] = table[c].astype("string")
        table["ingest_id"] = ingest_id
        self._upsert_by_meter("meters", table)
        if len(rejected):
            self._replace_meter_quarantine(rejected, meters_path, ingest_id)
        summary = IngestSummary(
            meters_in=len(raw),
            meters_accepted=len(good),
            meters_rejected=_reason_counts(rejected["reason"]) if len(rejected) else {},
            ingest_id=ingest_id,
        )
        if network is not None:
            join = join_meters(good, network, max_distance_m=max_distance_m)
            self._upsert_by_meter("meter_join", join.reset_index())
            summary.joined = int(join["matched"].sum())
            summary.unmatched = int((~join["matched"]).sum())
        return summary, rejected

    def _upsert_by_meter(self, name: str, table: pd.DataFrame) -> None:
        """Write ``table`` into table ``name``, replacing the stored rows of the same ``meter_id``."""
        if self.has_table(name):
            old = self._df(f'SELECT * FROM "{name}"')
            old = old.loc[~old["meter_id"].isin(table["meter_id"])]
            table = pd.concat([old, table], ignore_index=True) if len(old) else table
        self.write_table(name, table)

    def _replace_meter_quarantine(self, rejected: pd.DataFrame, meters_path: str | Path, ingest_id: int) -> None:
        """Store the rejected registry rows.

        The latest check of a file replaces the earlier one: a re-ingest adds nothing.
        """
        rj = rejected.copy()
        rj.insert(0, "ingest_id", ingest_id)
        rj.insert(1, "source", str(meters_path))
        self.con.register("_rj", rj)
        self.con.execute("DELETE FROM meter_quarantine WHERE source = ?", [str(meters_path)])
        self.con.execute(
            "INSERT INTO meter_quarantine SELECT ingest_id, source, source_row, meter_id, kind, lon, lat, "
            "node_id, link_id, reason FROM _rj"
        )
        self.con.unregister("_rj")

    def meters(self) -> gpd.GeoDataFrame:
        """The stored registry, as :func:`twin.meters.read_meters` returns it (EPSG:4326)."""
        if not self.has_table("meters"):
            raise InputError("the store holds no meters yet", path=self.path, fix="run `twin ingest --meters ...` first")
        df = self._df("SELECT * FROM meters ORDER BY meter_id")
        geom = gpd.points_from_xy(df["lon"], df["lat"])
        out = gpd.GeoDataFrame(df.drop(columns=["ingest_id"], errors="ignore"), geometry=geom, crs=settings.MAP_CRS)
        return out.set_index("meter_id")

    def meter_table(self) -> pd.DataFrame:
        """The stored registry as a plain table (no geometry; faster than :meth:`meters`).

        Returns
        -------
        DataFrame
            Index ``meter_id``; ``kind``, ``lon``, ``lat`` (WGS84), ``node_id``,
            ``link_id`` and any extra registry columns.
        """
        if not self.has_table("meters"):
            raise InputError("the store holds no meters yet", path=self.path, fix="run `twin ingest --meters ...` first")
        df = self._df("SELECT * FROM meters")
        return df.drop(columns=["ingest_id"], errors="ignore").set_index("meter_id")

    def join(self) -> pd.DataFrame | None:
        """The stored meter join (index ``meter_id``), or None when never computed."""
        if not self.has_table("meter_join"):
            return None
        j = self._df("SELECT * FROM meter_join ORDER BY meter_id").set_index("meter_id")
        j["matched"] = j["matched"].astype(bool)
        return j

    # ------------------------------------------------------------------ readings

    def _next_ingest_id(self) -> int:
        return int(self.con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests").fetchall()[0][0])

    def _stage(self, path: Path) -> int:
        """Stage a readings file as table ``_stage`` (raw strings, see :func:`twin.readings.classify`); return its rows."""
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            self._stage_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            self._stage_csv(path)
        else:
            raise ReadingsError(f"unsupported readings format {suffix!r}", path=path, fix="give a .csv or .parquet file")
        return int(self.con.execute("SELECT count(*) FROM _stage").fetchall()[0][0])

    def _stage_parquet(self, path: Path) -> None:
        src = f"read_parquet({_q_file(path)}, file_row_number = true)"
        try:
            cols = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
            lower = {c.lower().strip(): c for c in cols}
            self._check_reading_columns(lower, path)
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE _stage AS SELECT
                    file_row_number + 1 AS source_row,
                    CAST("{lower['meter_id']}" AS VARCHAR) AS meter_id,
                    CAST("{lower['timestamp']}" AS VARCHAR) AS "timestamp",
                    CAST("{lower['value']}" AS VARCHAR) AS value,
                    FALSE AS extra_fields, FALSE AS cut_row
                    FROM {src}"""
            )
        except duckdb.Error as exc:
            raise ReadingsError(
                f"cannot read the readings Parquet file ({_first_line(exc)})",
                path=path,
                fix="the file is cut or not Parquet: copy it again in full, or give the CSV",
            ) from exc

    def _stage_csv(self, path: Path) -> None:
        """Stage a CSV in the dialect of its header line, checking every row.

        The delimiter is the one that splits the header into the required
        columns (``,``, ``;``, tab or ``|``); quoting is RFC 4180 (``"``
        around a field, ``""`` for a quote inside), as spreadsheets and
        Python's ``csv`` write it, wherever in the file a quoted field first
        appears. DuckDB's sniffer is not used: it samples the first rows only,
        so quotes or IDs with ``'`` in them made it guess another dialect.
        The file is read with one spare column, so a row with more fields
        than the header is marked (``extra_fields``); a last row without a
        line break is marked ``cut_row``; a field holding a line break (a
        quote opened and not closed) or a byte that is not UTF-8 stops the
        ingest with the row or line named.
        """
        if path.stat().st_size == 0:
            raise ReadingsError("the readings file is empty", path=path,
                                fix="give a file with a header meter_id,timestamp,value and its rows")
        names, delimiter = _csv_header(path)
        lower = {c.lower().strip(): c for c in names}
        self._check_reading_columns(lower, path)
        spare = "_twin_surplus_field"
        columns = ", ".join(f"{_q(c)}: 'VARCHAR'" for c in [*names, spare])
        src = (
            f"read_csv({_q_file(path)}, auto_detect = false, header = true, delim = {_q(delimiter)}, "
            f"quote = '\"', escape = '\"', null_padding = true, strict_mode = false, "
            f"columns = {{{columns}}})"
        )
        extra = [c for k, c in lower.items() if k.startswith("column") and k[6:].isdigit()] + [spare]
        extra_sql = " OR ".join(f'"{c}" IS NOT NULL' for c in extra)
        try:
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE _stage AS SELECT
                    row_number() OVER () AS source_row,
                    "{lower['meter_id']}" AS meter_id, "{lower['timestamp']}" AS "timestamp",
                    "{lower['value']}" AS value, ({extra_sql}) AS extra_fields, FALSE AS cut_row
                    FROM {src}"""
            )
        except duckdb.Error as exc:
            raise _csv_error(exc, path) from exc
        self._refuse_line_breaks_in_fields(path)
        if path.suffix.lower() != ".gz" and not _ends_with_line_break(path):
            self.con.execute("UPDATE _stage SET cut_row = TRUE WHERE source_row = (SELECT max(source_row) FROM _stage)")

    def _refuse_line_breaks_in_fields(self, path: Path) -> None:
        """Raise naming the first row whose field holds a line break (a quote left open swallows lines)."""
        row = self.con.execute(
            """SELECT min(source_row) FROM _stage WHERE regexp_matches(meter_id, '[\r\n]')
               OR regexp_matches("timestamp", '[\r\n]') OR regexp_matches(value, '[\r\n]')"""
        ).fetchall()[0][0]
        if row is not None:
            raise ReadingsError(
                "a field holds a line break (a quote opened and not closed joins the lines that follow)",
                path=path,
                row=int(row),
                fix="remove the stray quote or line break there; readings fields never span lines",
            )

    @staticmethod
    def _check_reading_columns(lower: dict[str, str], path: Path) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in lower]
        if missing:
            raise ReadingsError(
                f"readings lack the column(s) {', '.join(missing)} (has {', '.join(lower) or 'none'})",
                path=path,
                fix="the long format needs meter_id,timestamp,value (DESIGN.md)",
                data={"missing_columns": missing, "columns": list(lower)},
            )

    def _rejected_meters_table(self, rejected: pd.DataFrame | None) -> str:
        """Name of a table of rejected meter IDs: this ingest's, else every one the store rejected."""
        if rejected is not None and len(rejected):
            self.con.register("_rej_ids", pd.DataFrame({"meter_id": rejected["meter_id"].astype(str)}))
            return "_rej_ids"
        self.con.execute("CREATE OR REPLACE TEMP VIEW _rej_hist AS SELECT meter_id FROM meter_quarantine")
        return "_rej_hist"

    def _write_classified(self, table: str, ingest_id: int, source: Path) -> tuple[dict[str, int], int]:
        """Append the accepted rows to ``readings`` and the refused ones to ``quarantine``.

        Returns
        -------
        counts : dict
            Rows per outcome: ``'accepted'``, ``'skipped'`` or a quarantine reason.
        resets : int
            Accepted rows flagged as a register reset.
        """
        self.con.execute(
            f"""INSERT INTO readings SELECT mid, ts, v, kind, flag, {ingest_id}
                FROM {table} WHERE reason IS NULL"""
        )
        self.con.execute(
            f"""INSERT INTO quarantine SELECT {ingest_id}, {_q(source)}, source_row, meter_id, "timestamp", value, reason
                FROM {table} WHERE reason IS NOT NULL AND reason <> 'skipped' ORDER BY source_row"""
        )
        counts = dict(
            self.con.execute(f"SELECT coalesce(reason, 'accepted'), count(*) FROM {table} GROUP BY ALL").fetchall()
        )
        resets = int(
            self.con.execute(f"SELECT count(*) FROM {table} WHERE reason IS NULL AND flag = 'reset'").fetchall()[0][0]
        )
        self.con.execute(f"DROP TABLE IF EXISTS {table}")
        self.con.execute("DROP TABLE IF EXISTS _stage")
        return {str(k): int(v) for k, v in counts.items()}, resets

    def _ingest_readings(
        self,
        summary: IngestSummary,
        readings_path: str | Path,
        *,
        rejected: pd.DataFrame | None,
        now: Any,
        progress: Callable[[str, int, int], None] | None,
        thresholds: dict[str, float],
    ) -> None:
        """Stage, classify and write a readings file; fill the reading counts of ``summary``."""
        rp = require_file(readings_path, what="readings")
        if not self.has_table("meters"):
            raise InputError(
                "no meter registry: readings cannot be checked against meters",
                path=rp,
                fix="give --meters meters.csv with the first ingest",
            )
        now_ts = pd.Timestamp.now(tz="UTC") if now is None else _as_utc(now, "now")
        if progress:
            progress("staging", 0, 1)
        rows_in = self._stage(rp)
        if progress:
            progress("staging", 1, 1)
        table = classify(
            self.con,
            stage="_stage",
            meters="meters",
            rejected_meters=self._rejected_meters_table(rejected),
            stored_readings="readings",
            stored_quarantine="quarantine",
            now=now_ts,
            groups=max(1, math.ceil(rows_in / ROWS_PER_GROUP)),
            progress=(lambda d, t: progress("checking", d, t)) if progress else None,
            **thresholds,
        )
        if progress:
            progress("writing", 0, 1)
        counts, resets = self._write_classified(table, summary.ingest_id, rp)
        if progress:
            progress("writing", 1, 1)
        _fill_reading_counts(summary, rows_in, counts, resets)
        _warn_if_clock_is_off(summary, now_ts)
        if summary.all_quarantined:  # INFO: the CLI and the jobs refuse it in one line (refuse_all_quarantined)
            log.info("%s: every row was quarantined (%s)", rp, ", ".join(f"{r} {n:,}" for r, n in summary.quarantined.items()))
        if not summary.adds_up:  # a bug, not bad input
            raise TwinError(f"ingest counts do not add up: {summary.as_dict()}", data=summary.as_dict())

    def _record_ingest(
        self, summary: IngestSummary, meters_path: str | Path | None, readings_path: str | Path | None
    ) -> None:
        """Append one row to the ``ingests`` table."""
        self.con.execute(
            "INSERT INTO ingests VALUES (?, now(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                summary.ingest_id,
                str(meters_path) if meters_path is not None else None,
                str(readings_path) if readings_path is not None else None,
                _file_head_hash(Path(readings_path)) if readings_path is not None else None,
                summary.rows_in,
                summary.accepted,
                summary.quarantined_total,
                summary.duplicates_skipped,
                summary.resets,
                summary.seconds,
                json.dumps(summary.as_dict()),
            ],
        )

    def ingest(
        self,
        meters_path: str | Path | None,
        readings_path: str | Path | None,
        *,
        meters_crs: Any = settings.MAP_CRS,
        network: Network | None = None,
        now: Any = None,
        max_distance_m: float = settings.SNAP_DISTANCE_M,
        progress: Callable[[str, int, int], None] | None = None,
        **thresholds: float,
    ) -> IngestSummary:
        """Load a registry and/or a readings file; every row ends in one place.

        The steps: store the registry (validated, joined to ``network``);
        stage the readings file; classify every row
        (:func:`twin.readings.classify`); write the accepted and quarantined
        rows; record the ingest with its counts. They run as one transaction:
        an exception (or the process killed) at any step leaves the store as
        it was, and the same ingest run again stores every row once.

        Parameters
        ----------
        meters_path : str or Path, optional
            Meter registry (``.csv``/``.parquet``); None to use the stored one.
        readings_path : str or Path, optional
            Readings in the long format (``.csv``/``.parquet``).
        meters_crs : any pyproj input or ``"GCJ02"`` / ``"BD09"``
            CRS of the registry's lon/lat.
        network : Network, optional
            Validates the registry against the network and stores the join.
        now : Timestamp, optional
            "Now" for the future-timestamp check (default: the current time).
        max_distance_m : float
            Join distance, metres.
        progress : callable, optional
            ``progress(phase, done, total)``.
        **thresholds
            Passed to :func:`twin.readings.classify`.

        Returns
        -------
        IngestSummary
            ``rows_in == accepted + sum(quarantined) + duplicates_skipped``.

        Raises
        ------
        InputError
            The store is read-only, or readings come before any registry.
        ReadingsError
            The readings file cannot be read or lacks a required column.
        TwinError
            The counts do not add up (a bug, not bad input); ``data`` holds the
            summary as a dictionary.
        """
        if self.read_only:
            raise InputError("the store is open read-only", path=self.path, fix="open it without read_only to ingest")
        t0 = time.perf_counter()
        if readings_path is not None:
            require_file(readings_path, what="readings")
        with self._transaction():  # registry, readings, quarantine and record: all or nothing
            ingest_id = self._next_ingest_id()
            rejected = None
            if meters_path is not None:
                summary, rejected = self._ingest_meters(
                    meters_path, meters_crs=meters_crs, network=network, max_distance_m=max_distance_m,
                    ingest_id=ingest_id,
                )
            else:
                summary = IngestSummary(ingest_id=ingest_id)
            if readings_path is not None:
                self._ingest_readings(
                    summary, readings_path, rejected=rejected, now=now, progress=progress, thresholds=thresholds
                )
            summary.seconds = time.perf_counter() - t0
            self._record_ingest(summary, meters_path, readings_path)
        log.info(
            "ingested %s rows: %s accepted, %s quarantined, %s already stored (%.1f s)",
            f"{summary.rows_in:,}", f"{summary.accepted:,}", f"{summary.quarantined_total:,}",
            f"{summary.duplicates_skipped:,}", summary.seconds,
        )
        return summary

    def readings(
        self,
        *,
        kind: str | None = None,
        meter_ids: Sequence[str] | None = None,
        start: Any = None,
        end: Any = None,
        ordered: bool = True,
    ) -> pd.DataFrame:
        """Stored readings in long format.

        Parameters
        ----------
        kind : {"customer", "pressure", "flow"}, optional
        meter_ids : sequence of str, optional
        start, end : tz-aware time, optional
            Half-open interval ``[start, end)``.
        ordered : bool, default True
            Sort by meter and time (False is faster for large reads).

        Returns
        -------
        DataFrame
            ``meter_id``, ``timestamp`` (``datetime64[ns, UTC]``), ``value``
            (float64), ``flag`` (``'reset'`` or None).
        """
        where, params = ["TRUE"], []
        if kind is not None:
            if kind not in KINDS:
                raise InputError(f"unknown meter kind {kind!r}", fix="use customer, pressure or flow")
            where.append("kind = ?")
            params.append(kind)
        _time_window(where, params, start, end)
        sql = f"SELECT meter_id, ts AS \"timestamp\", value, flag FROM readings WHERE {' AND '.join(where)}"
        if meter_ids is not None:
            self.con.register("_ids", pd.DataFrame({"meter_id": [str(m) for m in meter_ids]}))
            sql += " AND meter_id IN (SELECT meter_id FROM _ids)"
        df = self._df(sql + (" ORDER BY meter_id, ts" if ordered else ""), params)
        if meter_ids is not None:
            self.con.unregister("_ids")
        df["timestamp"] = _utc_ns(df["timestamp"])
        df["value"] = df["value"].astype(np.float64)
        df["meter_id"] = df["meter_id"].astype(str)
        return df

    def series(
        self,
        kind: str,
        *,
        meter_ids: Sequence[str] | None = None,
        start: Any = None,
        end: Any = None,
        freq_s: int = settings.LOGGER_INTERVAL_S,
        max_gap: int = settings.GAP_FILL_SAMPLES,
    ) -> pd.DataFrame:
        """Logger readings on a regular grid, short gaps filled.

        The rule is :func:`grid_series`'s: each reading goes to the nearest
        grid instant (readings a few seconds late still count); several
        readings for one instant are averaged; gaps of at most ``max_gap``
        samples are interpolated linearly in time, other instants are NaN.

        Parameters
        ----------
        kind : {"pressure", "flow"}
            Pressure head (m) or flow (L/s, positive start-to-end).
        meter_ids : sequence of str, optional
        start, end : tz-aware time, optional
        freq_s : int, default 900
            Grid step, seconds.
        max_gap : int, default ``settings.GAP_FILL_SAMPLES``
            Longest gap filled, samples (0: no filling).

        Returns
        -------
        DataFrame
            Index ``timestamp`` (``datetime64[ns, UTC]``, every ``freq_s``
            from the first to the last reading), columns meter IDs (sorted).
        """
        if kind not in ("pressure", "flow"):
            raise InputError(f"series are for loggers (pressure, flow), not {kind!r}", fix="use Store.readings for customer registers")
        raw = self.readings(kind=kind, meter_ids=meter_ids, start=start, end=end, ordered=False)
        out = grid_series(raw, freq_s=freq_s, max_gap=max_gap)
        if out.empty and meter_ids is not None:
            out = out.reindex(columns=pd.Index(sorted(str(m) for m in meter_ids), name="meter_id"))
        return out

    def quarantine(self, *, reason: str | None = None) -> pd.DataFrame:
        """Quarantined readings rows (``source``, ``source_row``, raw columns, ``reason``)."""
        sql, params = "SELECT * FROM quarantine", []
        if reason is not None:
            sql += " WHERE reason = ?"
            params.append(reason)
        return self._df(sql + " ORDER BY ingest_id, source_row", params)

    def ingests(self) -> pd.DataFrame:
        """The ingest log."""
        return self._df("SELECT * FROM ingests ORDER BY ingest_id")

    def time_range(self, kind: str | None = None) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """First and last reading time (UTC), or None when empty."""
        sql = "SELECT min(ts) AS a, max(ts) AS b FROM readings"
        params: list[Any] = []
        if kind:
            sql += " WHERE kind = ?"
            params.append(kind)
        df = self._df(sql, params)
        if df.empty or pd.isna(df["a"].iloc[0]):
            return None
        return pd.Timestamp(df["a"].iloc[0]).tz_convert("UTC"), pd.Timestamp(df["b"].iloc[0]).tz_convert("UTC")


    def reading_count(self, kind: str | None = None, *, start: Any = None, end: Any = None) -> int:
        """Number of stored readings (of one kind, or all; in ``[start, end)`` when given)."""
        where, params = ["TRUE"], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        _time_window(where, params, start, end)
        return int(self._df(f"SELECT count(*) AS n FROM readings WHERE {' AND '.join(where)}", params)["n"].iloc[0])

def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    """Count reasons by their first words (before any quoted detail)."""
    key = reasons.astype(str).str.replace(r"\s*[\('].*$", "", regex=True)
    return {str(k): int(v) for k, v in key.value_counts().sort_index().items()}


def fill_gaps(series: pd.DataFrame, *, max_gap: int = settings.GAP_FILL_SAMPLES) -> pd.DataFrame:
    """Interpolate the short gaps of series on a regular grid.

    A gap of at most ``max_gap`` consecutive missing samples between two
    readings is filled linearly in time; a longer gap is left NaN as a whole
    (never half filled), and so are the ends of each series.

    Parameters
    ----------
    series : DataFrame
        Index a regular time grid, one column per sensor (any unit).
    max_gap : int, default ``settings.GAP_FILL_SAMPLES``
        Longest gap filled, samples (0: nothing is filled).

    Returns
    -------
    DataFrame
        A copy of ``series`` with the short gaps filled.
    """
    if max_gap <= 0 or series.empty:
        return series.copy()
    filled = series.interpolate(method="time" if isinstance(series.index, pd.DatetimeIndex) else "linear",
                                limit_area="inside")
    missing = series.isna().to_numpy()
    # the samples of one gap share the count of readings before them
    present = np.cumsum(~missing, axis=0)
    too_long = np.zeros_like(missing)
    for j in range(missing.shape[1]):
        runs = pd.Series(missing[:, j]).groupby(present[:, j]).transform("sum").to_numpy()
        too_long[:, j] = missing[:, j] & (runs > max_gap)
    return filled.mask(too_long)


def grid_series(
    readings: pd.DataFrame,
    *,
    freq_s: int = settings.LOGGER_INTERVAL_S,
    max_gap: int = settings.GAP_FILL_SAMPLES,
) -> pd.DataFrame:
    """Long logger readings as wide series on the regular UTC grid.

    The one rule for sensor series (used by :meth:`Store.series` and by the
    localisation job on readings frames): each reading goes to the nearest
    grid instant (half a step rounds up), several readings for one instant
    are averaged, the grid runs every ``freq_s`` from the first to the last
    instant, and gaps of at most ``max_gap`` samples are interpolated
    (:func:`fill_gaps`).

    Parameters
    ----------
    readings : DataFrame
        ``meter_id``, ``timestamp`` (tz-aware, or ISO 8601 strings with an
        offset), ``value`` (any unit; non-numbers are dropped).
    freq_s : int, default 900
        Grid step, seconds.
    max_gap : int, default ``settings.GAP_FILL_SAMPLES``
        Longest gap filled, samples (0: none).

    Returns
    -------
    DataFrame
        Index ``timestamp`` (``datetime64[ns, UTC]``), columns meter IDs
        (sorted, name ``meter_id``), float64 values.
    """
    step = int(freq_s)
    ts = readings["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True, format="ISO8601")
    epoch = pd.DatetimeIndex(ts).as_unit("ns").asi8 / 1e9
    value = pd.to_numeric(readings["value"], errors="coerce").to_numpy(np.float64)
    ok = np.isfinite(value)
    if not ok.any():
        return pd.DataFrame(columns=pd.Index([], name="meter_id"),
                            index=pd.DatetimeIndex([], tz="UTC", name="timestamp"), dtype=np.float64)
    slot = np.floor(epoch[ok] / step + 0.5).astype(np.int64) * step
    long = pd.DataFrame({"t": slot, "meter_id": readings["meter_id"].astype(str).to_numpy()[ok],
                         "value": value[ok]})
    wide = long.groupby(["t", "meter_id"])["value"].mean().unstack("meter_id")
    grid = np.arange(int(wide.index.min()), int(wide.index.max()) + step, step, dtype=np.int64)
    wide = wide.reindex(grid)
    wide.index = pd.DatetimeIndex(pd.to_datetime(grid, unit="s", utc=True).astype("datetime64[ns, UTC]"),
                                  name="timestamp")
    wide.columns = pd.Index([str(c) for c in wide.columns], name="meter_id")
    return fill_gaps(wide.sort_index(axis=1).astype(np.float64), max_gap=max_gap)
