"""Embedded sinks: a DuckDB warehouse and a Parquet lake, written by natural key.

``LocalTableSink`` is the embedded implementation of the table-sink interface
(the Snowflake sink implements the same ``upsert`` contract):

* warehouse: ``MERGE INTO <zone>.<table>`` by the table's natural key. A
  matched row is only updated when a non-processing-time column differs (or,
  for ``keep_newer`` tables, when the incoming row is newer), so re-running a
  job or backfilling a processed range changes nothing — not even
  ``ingested_at``;
* lake: after each merge the touched partitions are exported from the
  warehouse to ``LAKE/<zone>/<table>/dt=YYYY-MM-DD/part-00000.parquet``
  (sorted by key, written to a temp file and renamed), so lake files are a
  deterministic function of table content.

``WriteToTables`` is the Beam side: rows are buffered per bundle and flushed
in ``finish_bundle`` (or every ``batch_size`` rows); a process-wide lock per
warehouse file serialises writers (DuckDB allows one writing process).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from io_connectors.tables import TABLES, TableSpec

_LOCKS: dict[str, threading.Lock] = defaultdict(threading.Lock)
_ARROW = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32(), "BOOLEAN": pa.bool_()}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def partition_of(spec: TableSpec, row: dict) -> str | None:
    if spec.partition_by is None:
        return None
    value = row.get(spec.partition_by)
    return value[:10] if isinstance(value, str) and len(value) >= 10 else "unknown"


def _latest_per_key(spec: TableSpec, rows: list[dict]) -> list[dict]:
    """One row per key within a batch: the newest for keep_newer tables, else the last written."""
    chosen: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row.get(k) for k in spec.key)
        current = chosen.get(key)
        if current is None or spec.keep_newer is None:
            chosen[key] = row
        elif tuple(row[c] for c in spec.keep_newer) > tuple(current[c] for c in spec.keep_newer):
            chosen[key] = row
    return list(chosen.values())


@dataclass(frozen=True)
class LocalTableSink:
    """Picklable settings of the embedded sink; ``open()`` on a worker returns a writer."""

    warehouse: str
    lake: str | None = None

    def open(self) -> LocalTableWriter:
        return LocalTableWriter(self.warehouse, self.lake)


class LocalTableWriter:
    def __init__(self, warehouse: str, lake: str | None):
        self.warehouse = os.path.abspath(warehouse)
        self.lake = lake
        self._ready: set[str] = set()

    def _connect(self):
        import duckdb

        os.makedirs(os.path.dirname(self.warehouse) or ".", exist_ok=True)
        return duckdb.connect(self.warehouse)

    def _ensure(self, con, spec: TableSpec) -> None:
        if spec.name in self._ready:
            return
        cols = ", ".join(f"{_q(c)} {t}" for c, t in spec.columns)
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(spec.zone)}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(spec.zone)}.{_q(spec.table)} ({cols}, PRIMARY KEY "
            f"({', '.join(_q(k) for k in spec.key)}))"
        )
        self._ready.add(spec.name)

    def ensure_all(self) -> None:
        """Create every contract table (so empty outputs still exist with their columns)."""
        with _LOCKS[self.warehouse]:
            con = self._connect()
            try:
                for spec in TABLES.values():
                    self._ensure(con, spec)
            finally:
                con.close()

    def upsert(self, table: str, rows: list[dict]) -> int:
        """MERGE ``rows`` into ``table`` by natural key; export touched lake partitions. Returns rows changed."""
        spec = TABLES[table]
        rows = _latest_per_key(spec, rows)
        if not rows:
            return 0
        names = spec.column_names
        arrow = pa.table({c: pa.array([r.get(c) for r in rows], type=_ARROW[t]) for c, t in spec.columns})
        target = f"{_q(spec.zone)}.{_q(spec.table)}"
        on = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in spec.key)
        if spec.keep_newer:
            newer = " OR ".join(
                f"(s.{_q(c)} > t.{_q(c)}"
                + "".join(f" AND s.{_q(p)} = t.{_q(p)}" for p in spec.keep_newer[:i])
                + ")"
                for i, c in enumerate(spec.keep_newer)
            )
            matched = f"WHEN MATCHED AND ({newer}) THEN UPDATE SET "
        else:
            compared = [c for c in names if c not in spec.key and c not in spec.processing_time_columns]
            differs = " OR ".join(f"s.{_q(c)} IS DISTINCT FROM t.{_q(c)}" for c in compared) or "FALSE"
            matched = f"WHEN MATCHED AND ({differs}) THEN UPDATE SET "
        matched += ", ".join(f"{_q(c)} = s.{_q(c)}" for c in names if c not in spec.key)
        # identifiers come from the TABLES contract (quoted), values travel as Arrow: no injection surface
        sql = (
            f"MERGE INTO {target} AS t USING staging AS s ON {on} {matched} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(_q(c) for c in names)}) "
            f"VALUES ({', '.join('s.' + _q(c) for c in names)})"
        )
        partitions = {partition_of(spec, r) for r in rows}
        with _LOCKS[self.warehouse]:
            con = self._connect()
            try:
                self._ensure(con, spec)
                con.register("staging", arrow)
                changed = con.execute(sql).fetchone()
                con.unregister("staging")
                if self.lake:
                    self._export(con, spec, partitions)
            finally:
                con.close()
        return int(changed[0]) if changed else 0

    def _export(self, con, spec: TableSpec, partitions: set[str | None]) -> None:
        order = ", ".join(_q(k) for k in spec.key)
        base = os.path.join(self.lake, spec.zone, spec.table)
        for part in partitions:
            if part is None:
                folder, where = base, "TRUE"
            else:
                folder = os.path.join(base, f"dt={part}")
                where = (
                    f"substr({_q(spec.partition_by)}, 1, 10) = '{part}'"
                    if part != "unknown"
                    else (f"{_q(spec.partition_by)} IS NULL OR length({_q(spec.partition_by)}) < 10")
                )
            os.makedirs(folder, exist_ok=True)
            final = os.path.join(folder, "part-00000.parquet")
            tmp = final + ".tmp"
            con.execute(
                f"COPY (SELECT * FROM {_q(spec.zone)}.{_q(spec.table)} WHERE {where} ORDER BY {order}) "
                f"TO '{tmp}' (FORMAT PARQUET)"
            )
            os.replace(tmp, final)


def table_row_counts(warehouse: str) -> list[dict]:
    """Rows per contract table (``MISSING`` where a table does not exist)."""
    import duckdb

    con = duckdb.connect(warehouse, read_only=True)
    try:
        present = {
            f"{schema}.{name}"
            for schema, name in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
        out = []
        for name, spec in TABLES.items():
            rows = (
                con.execute(f"SELECT count(*) FROM {_q(spec.zone)}.{_q(spec.table)}").fetchone()[0]
                if name in present
                else "MISSING"
            )
            out.append({"table": name, "rows": rows})
        return out
    finally:
        con.close()


class ReadWarehouseTable(beam.PTransform):
    """Rows of a contract table as dicts, read when the pipeline runs (not at graph build).

    Used by backfills to look up curated rows outside the replayed range, e.g.
    the payment a chargeback disputes; an absent warehouse or table yields nothing.
    """

    def __init__(self, warehouse: str, table: str, columns: tuple[str, ...] | None = None):
        super().__init__()
        spec = TABLES[table]
        unknown = set(columns or ()) - set(spec.column_names)
        if unknown:
            raise ValueError(f"{table} has no column(s) {sorted(unknown)}")
        self._warehouse, self._spec, self._columns = warehouse, spec, columns or spec.column_names

    def expand(self, pbegin):
        warehouse, spec, columns = self._warehouse, self._spec, self._columns

        def read(_):
            import duckdb

            if not os.path.exists(warehouse):
                return
            con = duckdb.connect(warehouse, read_only=True)
            try:
                present = con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                    [spec.zone, spec.table],
                ).fetchone()[0]
                if not present:
                    return
                cursor = con.execute(
                    f"SELECT {', '.join(_q(c) for c in columns)} FROM {_q(spec.zone)}.{_q(spec.table)}"
                )
                while batch := cursor.fetchmany(10_000):
                    for values in batch:
                        yield dict(zip(columns, values, strict=True))
            finally:
                con.close()

        return pbegin | "Impulse" >> beam.Impulse() | "ReadRows" >> beam.FlatMap(read)


def feature_latency(warehouse: str) -> tuple[float, float]:
    """p50/p99 seconds from a payment's arrival (ingested_at) to its feature row being computed."""
    import duckdb

    con = duckdb.connect(warehouse, read_only=True)
    try:
        row = con.execute(
            "SELECT quantile_cont(d, 0.5), quantile_cont(d, 0.99) FROM ("
            " SELECT epoch(CAST(f.computed_at AS TIMESTAMP)) - epoch(CAST(p.ingested_at AS TIMESTAMP)) AS d"
            " FROM analytics.fraud_features f JOIN curated.payment_event p USING (event_id))"
        ).fetchone()
    finally:
        con.close()
    return (row[0] or 0.0, row[1] or 0.0)


def table_digest(warehouse: str, table: str, *, exclude: tuple[str, ...] = ()) -> tuple[int, str]:
    """(row count, sha256 of the rows sorted by key) of a table, leaving out ``exclude`` columns."""
    import hashlib

    import duckdb

    spec = TABLES[table]
    columns = [c for c in spec.column_names if c not in exclude]
    con = duckdb.connect(warehouse, read_only=True)
    try:
        rows = con.execute(
            f"SELECT {', '.join(_q(c) for c in columns)} FROM {_q(spec.zone)}.{_q(spec.table)} "
            f"ORDER BY {', '.join(_q(c) for c in columns)}"
        ).fetchall()
    finally:
        con.close()
    digest = hashlib.sha256(repr(rows).encode("utf-8")).hexdigest()
    return len(rows), digest


class _WriteTablesFn(beam.DoFn):
    def __init__(self, sink, batch_size: int):
        self._sink = sink
        self._batch_size = batch_size

    def setup(self):
        self._writer = self._sink.open()

    def start_bundle(self):
        self._buffer: dict[str, list[dict]] = defaultdict(list)
        self._count = 0

    def process(self, element):
        table, row = element
        self._buffer[table].append(row)
        self._count += 1
        if self._count >= self._batch_size:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        for table, rows in self._buffer.items():
            if rows:
                changed = self._writer.upsert(table, rows)
                Metrics.counter("riskpipe.sink", f"{table}.rows_written").inc(len(rows))
                Metrics.counter("riskpipe.sink", f"{table}.rows_changed").inc(changed)
        self._buffer = defaultdict(list)
        self._count = 0

    def teardown(self):
        close = getattr(self._writer, "close", None)
        if close:
            close()


class WriteToTables(beam.PTransform):
    """Write ``(table_name, row)`` pairs with a table sink, by natural key (idempotent)."""

    def __init__(self, sink, batch_size: int = 20_000):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._sink = sink
        self._batch_size = batch_size

    def expand(self, pcoll):
        return pcoll | "Upsert" >> beam.ParDo(_WriteTablesFn(self._sink, self._batch_size))
