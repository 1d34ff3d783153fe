"""Read the lakehouse without Spark: what its tables hold (`ray-backfill tables`) and read-only SQL
over them in DuckDB (`ray-backfill query`).

The catalog is opened with pyiceberg's SqlCatalog, which reads the `iceberg_tables` schema Iceberg's
JDBC catalog writes (SQLite or PostgreSQL), from the same settings `run` resolves. No JVM starts, so
a user's question is answered in about a second. `tables` reads metadata only (the data files'
record counts and column bounds); `query` scans only the tables its SQL names.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlparse

from jobs.config import CatalogConfig
from jobs.errors import ConfigError, InputError, WarehouseError
from jobs.tables import ALL_TABLES, TableSpec

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.table import Table

FORMATS = ("table", "csv", "json")


def _where(catalog: CatalogConfig) -> str:
    return str(catalog.sqlite_file if catalog.kind == "sqlite" else catalog.uri)


def sqlalchemy_uri(catalog: CatalogConfig) -> str:
    """The SQLAlchemy URL of a JDBC catalog: the sqlite file, or the database of the postgres JDBC
    URL with the settings' user and password (of the JDBC parameters only `sslmode` carries over)."""
    from sqlalchemy.engine import URL

    if catalog.kind == "sqlite":
        return URL.create("sqlite", database=str(catalog.sqlite_file)).render_as_string()
    parsed = urlparse(str(catalog.uri).removeprefix("jdbc:"))
    params = dict(parse_qsl(parsed.query))
    url = URL.create("postgresql+psycopg2", username=catalog.user or params.get("user"), password=catalog.password,
                     host=parsed.hostname, port=parsed.port, database=parsed.path.lstrip("/") or None,
                     query={k: v for k, v in params.items() if k == "sslmode"})
    return url.render_as_string(hide_password=False)


def _unreadable(catalog: CatalogConfig, exc: Exception) -> WarehouseError:
    """One line on a catalog that cannot be opened or read; the password never shows, even if a driver quotes it."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if catalog.password:
        reason = reason.replace(catalog.password, "***")
    return WarehouseError(f"catalog {_where(catalog)} cannot be read: {reason}")


def load_tables(catalog: CatalogConfig, specs: tuple[TableSpec, ...] = ALL_TABLES) -> dict[str, Table]:
    """Those of `specs` the run's catalog holds, by `namespace.name`, opened through pyiceberg's
    SqlCatalog (which never creates a catalog or its tables here); WarehouseError when it holds none."""
    if catalog.kind not in ("sqlite", "postgres"):
        raise ConfigError(f"catalog kind {catalog.kind!r}: `tables` and `query` read the sqlite and postgres "
                          "catalogs; read this one with spark-sql (README: Reading the tables)")
    if catalog.kind == "sqlite" and not catalog.sqlite_file.is_file():
        raise WarehouseError(f"no lakehouse at {catalog.warehouse}: {catalog.sqlite_file} does not exist "
                             "(run a backfill first, or give --warehouse)")
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import NoSuchTableError
    from sqlalchemy.exc import SQLAlchemyError

    tables = {}
    try:
        # the catalog properties (s3.endpoint, ...) are pyiceberg's FileIO settings too
        iceberg = SqlCatalog(catalog.name, uri=sqlalchemy_uri(catalog), init_catalog_tables="false",
                             warehouse=catalog.warehouse_uri, **dict(catalog.properties))
        for spec in specs:
            try:
                tables[spec.full_name] = iceberg.load_table((spec.namespace, spec.name))
            except NoSuchTableError:
                continue
            except OSError as exc:  # the catalog names a metadata file that is gone or unreadable
                raise WarehouseError(f"table {spec.full_name} cannot be read: {exc.strerror or exc}") from None
    except SQLAlchemyError as exc:
        raise _unreadable(catalog, exc) from None
    if specs and not tables:
        raise WarehouseError(f"no lakehouse tables in catalog {catalog.name!r} at {_where(catalog)} "
                             "(run a backfill first, or check --warehouse and --catalog-name)")
    return tables


@dataclass(frozen=True)
class TableInfo:
    """What one table holds now: rows, the span of its time column, snapshots, data files, bytes."""

    table: str
    rows: int
    time_column: str | None
    first: dt.date | dt.datetime | None
    last: dt.date | dt.datetime | None
    snapshots: int
    data_files: int
    bytes: int
    metadata_location: str

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["first"], out["last"] = (v.isoformat() if v else None for v in (self.first, self.last))
        return out


def table_info(spec: TableSpec, table: Table) -> TableInfo:
    """A table's figures from its metadata: the current snapshot's data files and their column bounds."""
    import pyarrow.compute as pc

    files = table.inspect.data_files()
    first = last = None
    if spec.time_column and files.num_rows:
        bounds = files.column("readable_metrics").combine_chunks().field(spec.time_column)
        first = pc.min(bounds.field("lower_bound")).as_py()
        last = pc.max(bounds.field("upper_bound")).as_py()
    return TableInfo(
        table=spec.full_name, rows=table.scan().count(), time_column=spec.time_column, first=first, last=last,
        snapshots=len(table.snapshots()), data_files=files.num_rows,
        bytes=int(pc.sum(files.column("file_size_in_bytes")).as_py() or 0),
        metadata_location=table.metadata_location,
    )


def warehouse_tables(catalog: CatalogConfig) -> list[TableInfo]:
    """Every lakehouse table the catalog holds, in pipeline order."""
    tables = load_tables(catalog)
    return [table_info(spec, tables[spec.full_name]) for spec in ALL_TABLES if spec.full_name in tables]


def _when(value: dt.date | dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, dt.datetime) else value.isoformat()


def _size(n: int) -> str:
    power = next((p for p in (3, 2, 1) if n >= 1024 ** p), 0)
    return f"{n / 1024 ** power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}" if power else f"{n} B"


def format_tables(infos: list[TableInfo]) -> str:
    """One aligned line per table."""
    header = ("table", "rows", "first", "last", "snapshots", "files", "size")
    rows = [(i.table, f"{i.rows:,}", _when(i.first), _when(i.last), str(i.snapshots), str(i.data_files),
             _size(i.bytes)) for i in infos]
    return _aligned(header, rows, right=(1, 4, 5, 6))


def _aligned(header: tuple[str, ...], rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
                     for r in (header, *rows))


# DuckDB statement types a query may be; everything else would write or change the session.
_READING = ("SELECT", "EXPLAIN")


def _mentioned(sql: str) -> tuple[TableSpec, ...]:
    """The lakehouse tables whose name the SQL contains as a word: only these are scanned."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    return tuple(spec for spec in ALL_TABLES if spec.name in words)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sql_error(exc: Exception) -> InputError:
    """DuckDB's message up to its first blank line (the position marker after it needs the SQL), on one line."""
    text = str(exc).split("\n\n", 1)[0]
    return InputError(f"query: {' '.join(text.split())}")


def _expose(con: duckdb.DuckDBPyConnection, catalog: CatalogConfig, sql: str) -> None:
    """Make the tables `sql` names views `<namespace>.<table>` of `con` (plain `<table>` too: the
    namespaces are on the search path), scanned through pyiceberg into Arrow; then lock `con` so it
    reads nothing else (no files, no extensions)."""
    namespaces = list(dict.fromkeys(spec.namespace for spec in ALL_TABLES))
    for namespace in namespaces:
        con.execute(f"CREATE SCHEMA {_quoted(namespace)}")
    for name, table in load_tables(catalog, _mentioned(sql)).items():
        arrow = "_arrow_" + name.replace(".", "_")
        con.register(arrow, table.scan().to_arrow())
        namespace, table_name = name.split(".")
        con.execute(f"CREATE VIEW {_quoted(namespace)}.{_quoted(table_name)} AS SELECT * FROM {_quoted(arrow)}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET search_path = " + _literal(",".join(["main", *namespaces])))
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def run_query(catalog: CatalogConfig, sql: str, limit: int | None) -> tuple[list[str], list[tuple], bool]:
    """(column names, up to `limit` rows (0 or None: all), whether rows were left out) of one reading statement."""
    import duckdb

    if limit is not None and limit < 0:
        raise InputError(f"--limit {limit} must be a number of rows (0: all)")
    limit = limit or None
    con = duckdb.connect()
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise _sql_error(exc) from None
        if len(statements) != 1:
            raise InputError(f"query: give exactly one SQL statement, not {len(statements)}")
        kind = statements[0].type.name
        if kind not in _READING:
            raise InputError(f"query: only SELECT statements run here, not {kind}: the tables are read-only "
                             "(`ray-backfill run` and `stage` write them)")
        _expose(con, catalog, sql)
        try:
            con.execute(sql)
            columns = [d[0] for d in con.description]
            rows = con.fetchmany(limit + 1) if limit is not None else con.fetchall()
        except duckdb.Error as exc:
            raise _sql_error(exc) from None
    finally:
        con.close()
    more = limit is not None and len(rows) > limit
    return columns, rows[:limit], more


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def format_result(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """The rows as an aligned table, CSV or JSON (one array of objects)."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, row)) for row in rows], default=_json_value)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _cell(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    cells = [tuple(_cell(v) for v in row) for row in rows]
    numeric = tuple(i for i in range(len(columns)) if rows and all(
        isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows if row[i] is not None))
    return _aligned(tuple(columns), cells, right=numeric)


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    return str(value)  # Decimal, UUID, bytes
