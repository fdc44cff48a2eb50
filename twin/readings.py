"""Readings: read raw rows and classify each one as accepted or quarantined.

Every input row ends in exactly one place: accepted (a reading), quarantined
with a reason, or skipped because the very same row is already stored (a
re-ingest). The rules live in one SQL classifier (:func:`classify`) that runs
in DuckDB, used both by :func:`validate_readings` (an in-memory table) and by
:meth:`twin.store.Store.ingest` (a file-backed staging table, bounded memory).

Quarantine reasons (:data:`REASONS`), the first that applies wins:

``malformed_row``
    more fields than the header (anywhere in the file, not only in the
    rows DuckDB's CSV sniffer samples).
``truncated_row``
    the last row of a CSV that does not end with a line break: the file was
    cut while being written or copied, so the row may be cut too. The whole
    file, ingested later, stores that row normally.
``unknown_meter``
    empty ``meter_id`` or one that is not in the registry.
``rejected_meter``
    the meter is in the registry file but was rejected by
    :func:`twin.meters.validate_meters` (see the store's ``meter_quarantine``).
``unparseable_timestamp``
    empty or not an ISO 8601 date-time.
``timestamp_without_offset``
    a local time without a UTC offset: ambiguous, refused.
``invalid_utc_offset``
    an offset no clock uses: beyond -12:00 or +14:00, or minutes of 60 or
    more (``+25:00``, ``+08:75``).
``missing_value`` / ``non_numeric_value``
    empty (or ``NA``/``null``) / not a finite number.
``negative_value``
    a negative customer register or pressure (flows may be negative).
``implausible_flow``
    a flow larger in magnitude than ``max_flow_lps``
    (:data:`twin.settings.MAX_FLOW_LPS`, more than the largest trunk main
    carries): wrong units or a corrupt value.
``future_timestamp``
    later than ``now`` plus 10 minutes.
``duplicate``
    a second row for the same meter and instant in the file, or one that
    differs from the stored value for that instant.
``register_backwards``
    a customer register lower than the reading before it while the reading
    after it resumes at the earlier level (a misread).
``implausible_jump``
    a customer register rising faster than ``max_flow_m3h`` (a spike that
    falls back, or a step), or a pressure spike larger than
    ``pressure_spike_m`` that returns.

A customer register that drops and stays down (meter replaced or rolled over)
is **accepted** with ``flag = 'reset'``; consumption is computed across it by
:func:`twin.demand.meter_consumption`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from twin import settings
from twin.errors import ReadingsError, require_file

log = logging.getLogger(__name__)

#: Quarantine reasons, in order of precedence.
REASONS: tuple[str, ...] = (
    "malformed_row",
    "truncated_row",
    "unknown_meter",
    "rejected_meter",
    "unparseable_timestamp",
    "timestamp_without_offset",
    "invalid_utc_offset",
    "missing_value",
    "non_numeric_value",
    "negative_value",
    "implausible_flow",
    "future_timestamp",
    "duplicate",
    "register_backwards",
    "implausible_jump",
)

#: Whitespace trimmed from the ends of every field: the characters Python's
#: ``str.strip()`` removes, as the meter registry is stripped (tabs, no-break
#: and ideographic spaces too), so ``"\u3000L1\t"`` is the registry's ``L1``.
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"

#: Columns a readings file must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("meter_id", "timestamp", "value")

#: Largest plausible flow through a customer meter, m³/h (DN50 commercial
#: meters reach ~40 m³/h; residential DN15-20 ~3-5 m³/h).
MAX_FLOW_M3H = 40.0

#: A register step always allowed whatever the interval, m³.
MIN_JUMP_M3 = 2.0

#: Pressure change that, going and coming back, marks a spike, m.
PRESSURE_SPIKE_M = 30.0

#: Register resolution: smaller decreases are rounding, not going backwards, m³.
REGISTER_TOLERANCE_M3 = 0.0005

#: Tolerance for timestamps in the future (clock drift), seconds.
FUTURE_TOLERANCE_S = 600



# --------------------------------------------------------------------------- reading


def read_readings(
    path: str | Path, *, chunk_rows: int = settings.READ_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Iterate over a readings file in chunks of raw rows.

    Parameters
    ----------
    path : str or Path
        ``.csv`` or ``.parquet`` in the DESIGN.md long format.
    chunk_rows : int
        Rows per chunk.

    Yields
    ------
    DataFrame
        Columns ``meter_id``, ``timestamp``, ``value`` as strings exactly as
        read (None for empty fields), and ``source_row`` (1-based data row).

    Raises
    ------
    ReadingsError
        Unsupported format or a required column missing.
    """
    p = require_file(path, what="readings")
    suffix = p.suffix.lower()
    start = 1
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(p)
        except Exception as exc:  # pyarrow.ArrowInvalid and kin: not Parquet, or cut short
            raise ReadingsError(
                f"cannot read the readings Parquet file ({str(exc).splitlines()[0]})",
                path=p,
                fix="the file is cut or not Parquet: copy it again in full, or give the CSV",
            ) from exc
        _check_columns(pf.schema_arrow.names, p)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=list(REQUIRED_COLUMNS)):
            df = batch.to_pandas()
            out = _as_raw_strings(df, start)
            start += len(out)
            yield out
    elif suffix in (".csv", ".gz", ".txt"):
        try:
            reader = pd.read_csv(p, dtype=str, keep_default_na=False, chunksize=chunk_rows)
            for df in reader:
                df.columns = [str(c).strip().lower() for c in df.columns]
                _check_columns(df.columns, p)
                out = _as_raw_strings(df, start)
                start += len(out)
                yield out
        except pd.errors.ParserError as exc:
            raise ReadingsError(
                f"cannot parse the readings CSV ({exc})",
                path=p,
                fix="check the delimiter and quoting; rows need meter_id,timestamp,value",
            ) from exc
        except UnicodeDecodeError as exc:
            raise ReadingsError(
                f"the file is not UTF-8 (byte {exc.start:,} of a chunk after data row {start - 1:,})",
                path=p,
                fix="re-encode the file as UTF-8, e.g. `iconv -f GB18030 -t UTF-8 in.csv > out.csv`",
            ) from exc
    else:
        raise ReadingsError(f"unsupported readings format {suffix!r}", path=p, fix="give a .csv or .parquet file")


def _check_columns(names: Any, path: Path) -> None:
    names = [str(c).strip().lower() for c in names]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ReadingsError(
            f"readings lack the column(s) {', '.join(missing)} (has {', '.join(names) or 'none'})",
            path=path,
            fix="the long format needs meter_id,timestamp,value (DESIGN.md)",
            data={"missing_columns": missing, "columns": names},
        )


def _as_raw_strings(df: pd.DataFrame, start: int) -> pd.DataFrame:
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for c in REQUIRED_COLUMNS:
        col = df[c]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            s = col.map(lambda t: t.isoformat() if pd.notna(t) else None)
        else:
            s = col.astype(object).where(col.notna(), None)
            s = s.map(lambda v: v if v is None or isinstance(v, str) else repr(v) if isinstance(v, float) else str(v))
        out[c] = s.to_numpy(dtype=object)
    out["source_row"] = np.arange(start, start + len(df), dtype=np.int64)
    return out


# --------------------------------------------------------------------------- classification


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class _SequenceRules:
    """Thresholds of the sequence checks, written into SQL.

    Attributes
    ----------
    max_flow_m3h : float
        Largest plausible flow through a customer meter, m³/h.
    min_jump_m3 : float
        A register step always allowed, m³.
    pressure_spike_m : float
        Pressure change that, going and coming back, marks a spike, m.
    tolerance_m3 : float
        Register resolution, m³.
    """

    max_flow_m3h: float = MAX_FLOW_M3H
    min_jump_m3: float = MIN_JUMP_M3
    pressure_spike_m: float = PRESSURE_SPIKE_M
    tolerance_m3: float = REGISTER_TOLERANCE_M3

    def jump(self, a: str, b: str) -> str:
        """SQL for the largest plausible register rise between times ``a`` and ``b``, m³."""
        rate = float(self.max_flow_m3h) / 3600.0
        return f"greatest({float(self.min_jump_m3)}, {rate} * (epoch({b}) - epoch({a})))"


def _parse_rows(
    con: duckdb.DuckDBPyConnection,
    *,
    stage: str,
    meters: str,
    rejected_meters: str | None,
    now: pd.Timestamp,
    groups: int,
    max_flow_lps: float,
) -> None:
    """Create ``_parsed``: every staged row parsed, with the first row-level reason that applies."""
    now_utc = pd.Timestamp(now).tz_convert("UTC") + pd.Timedelta(seconds=FUTURE_TOLERANCE_S)
    now_sql = f"TIMESTAMPTZ {_sql_str(now_utc.strftime('%Y-%m-%d %H:%M:%S+00'))}"
    ws = _sql_str(WHITESPACE)
    rej_join = (
        f"LEFT JOIN (SELECT DISTINCT meter_id FROM {rejected_meters}) rj ON rj.meter_id = p.mid"
        if rejected_meters
        else "LEFT JOIN (SELECT NULL::VARCHAR AS meter_id WHERE FALSE) rj ON rj.meter_id = p.mid"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _parsed AS
        WITH s AS (
            SELECT source_row, meter_id, "timestamp", value, extra_fields, cut_row,
                   nullif(trim(meter_id, {ws}), '') AS mid,
                   trim("timestamp", {ws}) AS t0,
                   nullif(trim(value, {ws}), '') AS vs
            FROM {stage}
        ),
        n AS (
            SELECT *,
                   CASE WHEN t0 LIKE '% +%' OR t0 LIKE '% -%' OR t0 LIKE '% Z' OR t0 LIKE '%z'
                        THEN regexp_replace(upper(t0), '\\s+(Z|[+-]\\d{{2}}(:?\\d{{2}})?)$', '\\1')
                        ELSE t0 END AS tsn
            FROM s
        ),
        p0 AS (
            SELECT *,
                   try_cast(tsn AS TIMESTAMPTZ) AS ts_any,
                   -- a date and a time to the minute at least (a bare date casts too)
                   length(tsn) >= 16 AS has_time,
                   regexp_matches(tsn, '(Z|[+-]\\d\\d(:?\\d\\d)?)$') AS has_off,
                   regexp_extract(tsn, '([+-])(\\d\\d):?(\\d\\d)?$', ['sign', 'h', 'm']) AS off,
                   try_cast(vs AS DOUBLE) AS v
            FROM n
        ),
        p AS (
            SELECT *,
                   -- real offsets run from -12:00 to +14:00, minutes below 60
                   coalesce(try_cast(nullif(off.m, '') AS INTEGER) >= 60
                            OR try_cast(off.h AS INTEGER) * 60 + coalesce(try_cast(nullif(off.m, '') AS INTEGER), 0)
                               > CASE WHEN off.sign = '-' THEN 720 ELSE 840 END, FALSE) AS bad_off
            FROM p0
        )
        SELECT p.source_row, p.meter_id, p."timestamp", p.value, p.mid, m.kind,
               CASE WHEN p.has_time AND p.has_off THEN p.ts_any END AS ts,
               p.v,
               CASE
                 WHEN p.extra_fields THEN 'malformed_row'
                 WHEN p.cut_row THEN 'truncated_row'
                 WHEN p.mid IS NULL THEN 'unknown_meter'
                 WHEN m.meter_id IS NULL AND rj.meter_id IS NOT NULL THEN 'rejected_meter'
                 WHEN m.meter_id IS NULL THEN 'unknown_meter'
                 WHEN p.tsn IS NULL OR p.tsn = '' THEN 'unparseable_timestamp'
                 WHEN p.ts_any IS NOT NULL AND NOT p.has_off THEN 'timestamp_without_offset'
                 WHEN p.ts_any IS NULL OR NOT p.has_time THEN 'unparseable_timestamp'
                 WHEN p.bad_off THEN 'invalid_utc_offset'
                 WHEN p.vs IS NULL OR (p.v IS NULL AND lower(p.vs) IN ('na', 'n/a', 'null', 'none', '-')) THEN 'missing_value'
                 WHEN p.v IS NULL OR NOT isfinite(p.v) THEN 'non_numeric_value'
                 WHEN p.v < 0 AND m.kind IN ('customer', 'pressure') THEN 'negative_value'
                 WHEN m.kind = 'flow' AND abs(p.v) > {float(max_flow_lps)} THEN 'implausible_flow'
                 WHEN p.ts_any > {now_sql} THEN 'future_timestamp'
               END AS reason,
               NULL::VARCHAR AS flag,
               (hash(p.mid) % {max(1, int(groups))})::INTEGER AS grp
        FROM p
        LEFT JOIN {meters} m ON m.meter_id = p.mid
        {rej_join}
        """
    )


def _mark_duplicates(con: duckdb.DuckDBPyConnection, stored_readings: str | None) -> None:
    """Duplicates in the file (first row wins) and against the stored readings."""
    con.execute(
        """
        UPDATE _parsed p SET reason = 'duplicate' FROM (
            SELECT source_row, row_number() OVER (PARTITION BY mid, ts ORDER BY source_row) AS k
            FROM _parsed WHERE reason IS NULL
        ) d WHERE d.source_row = p.source_row AND d.k > 1
        """
    )
    if stored_readings:
        con.execute(
            f"""
            UPDATE _parsed p SET reason = CASE WHEN r.value = p.v THEN 'skipped' ELSE 'duplicate' END
            FROM {stored_readings} r
            WHERE p.reason IS NULL AND r.meter_id = p.mid AND r.ts = p.ts
            """
        )
    # the same raw row twice in the file, both refused: the second one is the
    # duplicate (first row wins), so a re-ingest finds it in quarantine once
    con.execute(
        """
        UPDATE _parsed p SET reason = 'duplicate' FROM (
            SELECT source_row, row_number() OVER (
                PARTITION BY meter_id, "timestamp", value ORDER BY source_row) AS k
            FROM _parsed WHERE reason IS NOT NULL AND reason NOT IN ('skipped', 'duplicate')
        ) d WHERE d.source_row = p.source_row AND d.k > 1
        """
    )


def _stored_context_sql(stored_readings: str | None, group: int) -> str:
    """SQL rows of stored readings around a group's new ones (7 days either side), for context."""
    if not stored_readings:
        return ""
    g = group
    return f"""
            UNION ALL
            SELECT NULL::BIGINT, r.meter_id, r.ts, r.value, r.kind, TRUE
            FROM {stored_readings} r
            SEMI JOIN (SELECT DISTINCT mid FROM _parsed WHERE grp = {g} AND reason IS NULL AND kind IN ('customer', 'pressure')) k
                 ON k.mid = r.meter_id
            WHERE r.kind IN ('customer', 'pressure')
              AND r.ts BETWEEN (SELECT min(ts) - INTERVAL 7 DAY FROM _parsed WHERE grp = {g} AND reason IS NULL)
                           AND (SELECT max(ts) + INTERVAL 7 DAY FROM _parsed WHERE grp = {g} AND reason IS NULL)
            """


def _sequence_sql(rules: _SequenceRules, stored_readings: str | None, group: int) -> str:
    """SQL of the sequence verdicts of one group: ``(source_row, reason, flag)``.

    One window pass. A row is an outlier against its neighbours (a spike up
    that falls back, a misread that the next reading undoes); the other rows
    are compared with the previous reading that is not an outlier (the one
    before when the previous row is one): a drop that stays is a register
    reset (accepted, flagged), a rise faster than ``max_flow_m3h`` an
    implausible jump.
    """
    tol = float(rules.tolerance_m3)
    spike = float(rules.pressure_spike_m)
    jump = rules.jump
    return f"""
            WITH ctx AS (
                SELECT source_row, mid, ts, v, kind, FALSE AS stored
                FROM _parsed WHERE grp = {group} AND reason IS NULL AND kind IN ('customer', 'pressure')
                {_stored_context_sql(stored_readings, group)}
            ),
            w AS (
                SELECT *, lag(v) OVER w AS pv, lag(v, 2) OVER w AS pv2, lead(v) OVER w AS nv,
                       lag(ts) OVER w AS pt, lag(ts, 2) OVER w AS pt2, lag(stored) OVER w AS pstored
                FROM ctx WINDOW w AS (PARTITION BY mid ORDER BY ts)
            ),
            c AS (
                SELECT *, CASE
                    WHEN stored THEN NULL
                    WHEN kind = 'customer' AND pv IS NOT NULL AND v - pv > {jump('pt', 'ts')}
                         AND nv IS NOT NULL AND nv < v - {tol} THEN 'implausible_jump'
                    WHEN kind = 'customer' AND pv IS NOT NULL AND v < pv - {tol}
                         AND nv IS NOT NULL AND nv >= pv - {tol} THEN 'register_backwards'
                    WHEN kind = 'customer' AND pv IS NOT NULL AND v < pv - {tol}
                         AND nv IS NULL AND v > 0.5 * pv THEN 'register_backwards'
                    WHEN kind = 'pressure' AND pv IS NOT NULL AND nv IS NOT NULL
                         AND abs(v - pv) > {spike} AND abs(v - nv) > {spike}
                         AND sign(v - pv) = sign(v - nv) THEN 'implausible_jump'
                END AS r1,
                coalesce(pv2 IS NOT NULL AND NOT pstored AND (
                    (kind = 'customer' AND pv - pv2 > {jump('pt2', 'pt')} AND v < pv - {tol})
                    OR (kind = 'customer' AND pv < pv2 - {tol} AND v >= pv2 - {tol})
                    OR (kind = 'pressure' AND abs(pv - pv2) > {spike} AND abs(pv - v) > {spike}
                        AND sign(pv - pv2) = sign(pv - v))), FALSE) AS prev_out
                FROM w
            ),
            e AS (
                SELECT source_row, stored, kind, v, ts, r1,
                       CASE WHEN prev_out THEN pv2 ELSE pv END AS ev,
                       CASE WHEN prev_out THEN pt2 ELSE pt END AS et
                FROM c
            )
            SELECT * FROM (
                SELECT source_row,
                       coalesce(r1, CASE WHEN kind = 'customer' AND ev IS NOT NULL AND v >= ev - {tol}
                                          AND v - ev > {jump('et', 'ts')} THEN 'implausible_jump' END) AS reason,
                       CASE WHEN r1 IS NULL AND kind = 'customer' AND ev IS NOT NULL AND v < ev - {tol}
                            THEN 'reset' END AS flag
                FROM e WHERE NOT stored
            ) WHERE reason IS NOT NULL OR flag IS NOT NULL
            """


def _check_sequences(
    con: duckdb.DuckDBPyConnection,
    rules: _SequenceRules,
    *,
    stored_readings: str | None,
    groups: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Register and pressure sequence checks, one group of meters at a time."""
    for g in range(groups):
        con.execute(f"CREATE OR REPLACE TEMP TABLE _seq AS {_sequence_sql(rules, stored_readings, g)}")
        con.execute(
            """
            UPDATE _parsed p SET reason = s.reason, flag = s.flag
            FROM _seq s WHERE s.source_row = p.source_row
            """
        )
        if progress is not None:
            progress(g + 1, groups)
    con.execute("DROP TABLE IF EXISTS _seq")


def _skip_stored_quarantine(con: duckdb.DuckDBPyConnection, stored_quarantine: str | None) -> None:
    """Rows already quarantined once (same raw text): a re-ingest, skipped."""
    if not stored_quarantine:
        return
    con.execute(
        f"""
        UPDATE _parsed p SET reason = 'skipped'
        FROM (SELECT DISTINCT meter_id, "timestamp", value FROM {stored_quarantine}) q
        WHERE p.reason IS NOT NULL AND p.reason <> 'skipped'
          AND q.meter_id IS NOT DISTINCT FROM p.meter_id
          AND q."timestamp" IS NOT DISTINCT FROM p."timestamp"
          AND q.value IS NOT DISTINCT FROM p.value
        """
    )


def classify(
    con: duckdb.DuckDBPyConnection,
    *,
    stage: str,
    meters: str,
    rejected_meters: str | None,
    stored_readings: str | None,
    stored_quarantine: str | None,
    now: pd.Timestamp,
    groups: int = 1,
    max_flow_m3h: float = MAX_FLOW_M3H,
    min_jump_m3: float = MIN_JUMP_M3,
    pressure_spike_m: float = PRESSURE_SPIKE_M,
    tolerance_m3: float = REGISTER_TOLERANCE_M3,
    max_flow_lps: float = settings.MAX_FLOW_LPS,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Classify every staged row in SQL; return the name of the result table.

    The steps, in order: parse each row and give it the first row-level
    reason that applies; mark duplicates (in the file, against the store);
    check the register and pressure sequences per group of meters; skip rows
    already quarantined by an earlier ingest.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A connection whose session ``TimeZone`` is UTC.
    stage : str
        Table ``(source_row BIGINT, meter_id, timestamp, value VARCHAR,
        extra_fields BOOLEAN, cut_row BOOLEAN)``: ``extra_fields`` where the
        row has more fields than the header, ``cut_row`` for a last row the
        file may have cut.
    meters : str
        Table of the usable registry: ``meter_id``, ``kind``.
    rejected_meters : str or None
        Table with a ``meter_id`` column of registry rows that were rejected.
    stored_readings, stored_quarantine : str or None
        Tables already in the store (``readings(meter_id, ts, value, kind)``,
        ``quarantine(meter_id, timestamp, value)`` raw) for duplicate checks
        and sequence context.
    now : Timestamp
        tz-aware "now" for the future check.
    groups : int
        The sequence checks run per group of meters (hash of the ID) to bound
        the memory of the window functions.
    max_flow_m3h, min_jump_m3, pressure_spike_m, tolerance_m3 : float
        Thresholds, see the module docstring.
    max_flow_lps : float, default ``settings.MAX_FLOW_LPS``
        Largest plausible flow through a flow meter, either direction, L/s.
    progress : callable, optional
        ``progress(done, total)`` after each group.

    Returns
    -------
    str
        Temp table ``_parsed(source_row, meter_id, timestamp, value, mid,
        kind, ts, v, reason, flag, grp)`` where ``reason`` is NULL for an
        accepted row, ``'skipped'`` for a row already stored, otherwise a
        quarantine reason; ``flag`` is ``'reset'`` for an accepted register
        reset.
    """
    groups = max(1, int(groups))
    rules = _SequenceRules(max_flow_m3h, min_jump_m3, pressure_spike_m, tolerance_m3)
    _parse_rows(con, stage=stage, meters=meters, rejected_meters=rejected_meters, now=now, groups=groups,
                max_flow_lps=max_flow_lps)
    _mark_duplicates(con, stored_readings)
    _check_sequences(con, rules, stored_readings=stored_readings, groups=groups, progress=progress)
    _skip_stored_quarantine(con, stored_quarantine)
    return "_parsed"


def _stage_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw rows as the staging table :func:`classify` reads (strings, ``source_row``)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ReadingsError(
            f"readings lack the column {missing[0]!r}",
            fix="give meter_id,timestamp,value",
            data={"missing_columns": missing, "columns": [str(c) for c in raw.columns]},
        )
    if "source_row" in raw.columns:
        source_row = raw["source_row"].to_numpy(dtype=np.int64)
    else:
        source_row = np.arange(1, len(raw) + 1, dtype=np.int64)
    return pd.DataFrame(
        {
            "source_row": source_row,
            "meter_id": _obj_str(raw["meter_id"]),
            "timestamp": _obj_str(raw["timestamp"]),
            "value": _obj_str(raw["value"]),
            "extra_fields": np.zeros(len(raw), dtype=bool),
            "cut_row": np.zeros(len(raw), dtype=bool),
        }
    )


def _registry_frame(meters: pd.DataFrame) -> pd.DataFrame:
    """``meter_id``, ``kind`` (strings) of a registry with ``meter_id`` as index or column."""
    m = meters.reset_index() if "meter_id" not in meters.columns else meters
    return pd.DataFrame({"meter_id": m["meter_id"].astype(str).to_numpy(), "kind": m["kind"].astype(str).to_numpy()})


def _stored_frame(stored: pd.DataFrame, registry: pd.DataFrame) -> pd.DataFrame:
    """Stored readings as the store's ``readings`` table: ``meter_id``, ``ts`` (UTC), ``value``, ``kind``."""
    st = pd.DataFrame(
        {
            "meter_id": stored["meter_id"].astype(str).to_numpy(),
            "ts": pd.to_datetime(stored["timestamp"], utc=True),
            "value": stored["value"].to_numpy(dtype=np.float64),
        }
    )
    return st.merge(registry, on="meter_id", how="left")


def _classify_frames(
    stage: pd.DataFrame,
    registry: pd.DataFrame,
    *,
    rejected_ids: pd.DataFrame | None,
    stored: pd.DataFrame | None,
    now: pd.Timestamp,
    thresholds: dict[str, float],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run :func:`classify` on in-memory tables; return the accepted and the refused rows."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("_stage_df", stage)
        con.register("_meters_df", registry)
        con.execute("CREATE TEMP TABLE _stage AS SELECT * FROM _stage_df")
        con.execute("CREATE TEMP TABLE _meters AS SELECT * FROM _meters_df")
        if rejected_ids is not None:
            con.register("_rej_df", rejected_ids)
        if stored is not None:
            con.register("_stored_df", stored)
        table = classify(
            con,
            stage="_stage",
            meters="_meters",
            rejected_meters="_rej_df" if rejected_ids is not None else None,
            stored_readings="_stored_df" if stored is not None else None,
            stored_quarantine=None,
            now=now,
            **thresholds,
        )
        acc = con.execute(
            f"""SELECT mid AS meter_id, ts AS "timestamp", v AS value, kind, flag, source_row
                FROM {table} WHERE reason IS NULL ORDER BY mid, ts"""
        ).df()
        qua = con.execute(
            f"""SELECT meter_id, "timestamp", value, source_row, reason
                FROM {table} WHERE reason IS NOT NULL ORDER BY source_row"""
        ).df()
    finally:
        con.close()
    acc["timestamp"] = _as_utc_ns(acc["timestamp"])
    acc["value"] = acc["value"].astype(np.float64)
    return acc, qua


def validate_readings(
    raw: pd.DataFrame,
    meters: pd.DataFrame,
    *,
    now: pd.Timestamp | str | None = None,
    rejected_meters: pd.DataFrame | None = None,
    stored: pd.DataFrame | None = None,
    **thresholds: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw readings into accepted and quarantined rows (in memory).

    Parameters
    ----------
    raw : DataFrame
        Columns ``meter_id``, ``timestamp``, ``value`` (strings as read) and
        optionally ``source_row`` (1-based; made up if absent).
    meters : DataFrame
        The usable registry: index or column ``meter_id``, column ``kind``.
    now : Timestamp or str, optional
        "Now" for the future check (default: the current time).
    rejected_meters : DataFrame, optional
        Rejected registry rows (column ``meter_id``), for ``rejected_meter``.
    stored : DataFrame, optional
        Readings already accepted (``meter_id``, ``timestamp``, ``value``),
        for duplicate and sequence checks.
    **thresholds
        ``max_flow_m3h``, ``min_jump_m3``, ``pressure_spike_m``,
        ``tolerance_m3``, ``max_flow_lps`` (see :func:`classify`).

    Returns
    -------
    accepted : DataFrame
        ``meter_id``, ``timestamp`` (``datetime64[ns, UTC]``), ``value``
        (float64), ``kind``, ``flag`` (``'reset'`` or None), ``source_row``;
        sorted by meter and time.
    quarantined : DataFrame
        The raw columns, ``source_row`` and ``reason``; rows identical to
        stored readings get ``reason = 'skipped'``.

    Raises
    ------
    ReadingsError
        A required column is missing (``data`` names them) or ``now`` has no
        time zone.
    """
    stage = _stage_frame(raw)
    registry = _registry_frame(meters)
    now_ts = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if now_ts.tzinfo is None:
        raise ReadingsError("`now` must carry a time zone", fix="give e.g. '2026-03-09T00:00:00+08:00'")
    rejected_ids = None
    if rejected_meters is not None and len(rejected_meters):
        rejected_ids = pd.DataFrame({"meter_id": rejected_meters["meter_id"].astype(str).to_numpy()})
    stored_rows = _stored_frame(stored, registry) if stored is not None and len(stored) else None
    acc, qua = _classify_frames(
        stage, registry, rejected_ids=rejected_ids, stored=stored_rows, now=now_ts, thresholds=thresholds
    )
    log.info(
        "validated %s readings: %s accepted, %s quarantined",
        f"{len(raw):,}", f"{len(acc):,}", f"{int((qua['reason'] != 'skipped').sum()):,}",
    )
    return acc, qua


def _obj_str(s: pd.Series) -> np.ndarray:
    vals = s.astype(object).where(s.notna(), None).to_numpy(dtype=object)
    return np.array([v if v is None or isinstance(v, str) else str(v) for v in vals], dtype=object)


def _as_utc_ns(s: pd.Series) -> pd.Series:
    """Any datetime-like Series as ``datetime64[ns, UTC]``."""
    out = pd.to_datetime(s, utc=True)
    return out.astype("datetime64[ns, UTC]")
