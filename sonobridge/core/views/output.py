"""View rows written as CSV, NDJSON, JSON or Parquet, one row at a time.

Each writer takes an iterator of rows and a binary sink and writes as it reads, so the memory a
run needs is one batch of resources and (for Parquet) one row group, whatever the row count.
Values keep their meaning across formats: CSV writes ``true``/``false``, empty for null and
JSON for a collection; NDJSON/JSON write numbers as numbers (a decimal keeps its digits);
Parquet types its columns from the view's column types (boolean, integer, decimal as double,
everything else as string, a collection as a list).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import IO, Any

import orjson

from sonobridge.core.errors import CoreError

FORMATS = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson",
           "json": "application/json", "parquet": "application/vnd.apache.parquet"}
ALIASES = {"text/csv": "csv", "application/x-ndjson": "ndjson", "application/ndjson": "ndjson",
           "application/fhir+ndjson": "ndjson", "application/json": "json",
           "application/vnd.apache.parquet": "parquet"}
PARQUET_ROW_GROUP = 10_000
Row = dict[str, Any]


def format_of(value: str | None, default: str = "json") -> str:
    """A ``_format`` value (short name or media type) as a short name; 400 when unknown."""
    if value is None or value == "":
        return default
    key = value.split(";")[0].strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise CoreError(400, "not-supported", f"_format={value!r}: a view is written as "
                        f"{', '.join(FORMATS)}", expression=["_format"])
    if key == "parquet" and not parquet_available():
        raise CoreError(400, "not-supported", "_format=parquet needs pyarrow, which is not "
                        "installed here", expression=["_format"])
    return key


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and \
            value.as_tuple().exponent == 0 else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return dumps(value).decode()
    return str(value)


def write_csv(columns: list[str], rows: Iterable[Row], sink: IO[bytes],
              header: bool = True) -> int:
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
    out = csv.writer(text)
    if header:
        out.writerow(columns)
    count = 0
    for row in rows:
        out.writerow([_csv_cell(row.get(c)) for c in columns])
        count += 1
    text.flush()
    text.detach()
    return count


def write_ndjson(columns: list[str], rows: Iterable[Row], sink: IO[bytes]) -> int:
    count = 0
    for row in rows:
        sink.write(dumps(row))
        sink.write(b"\n")
        count += 1
    return count


def write_json(columns: list[str], rows: Iterable[Row], sink: IO[bytes]) -> int:
    count = 0
    sink.write(b"[")
    for row in rows:
        if count:
            sink.write(b",")
        sink.write(dumps(row))
        count += 1
    sink.write(b"]")
    return count


def _arrow_type(col_type: str | None, collection: bool) -> Any:
    import pyarrow as pa

    base = {"boolean": pa.bool_(), "integer": pa.int64(), "integer64": pa.int64(),
            "positiveInt": pa.int64(), "unsignedInt": pa.int64(),
            "decimal": pa.float64()}.get(col_type or "", pa.string())
    return pa.list_(base) if collection else base


def _arrow_value(value: Any, arrow_type: Any) -> Any:
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_list(arrow_type):
        values = value if isinstance(value, list) else [value]
        return [_arrow_value(v, arrow_type.value_type) for v in values]
    if pa.types.is_string(arrow_type):
        return value if isinstance(value, str) else _csv_cell(value)
    if pa.types.is_floating(arrow_type):
        return float(value)
    if pa.types.is_integer(arrow_type):
        return int(value)
    return value


def write_parquet(columns: list[str], rows: Iterable[Row], sink: IO[bytes],
                  types: dict[str, str | None] | None = None,
                  collections: frozenset[str] = frozenset()) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = types or {}
    schema = pa.schema([(c, _arrow_type(types.get(c), c in collections)) for c in columns])
    count = 0
    with pq.ParquetWriter(sink, schema) as writer:
        batch: list[Row] = []

        def flush() -> None:
            arrays = [pa.array([_arrow_value(r.get(f.name), f.type) for r in batch],
                               type=f.type) for f in schema]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            batch.clear()

        for row in rows:
            batch.append(row)
            count += 1
            if len(batch) >= PARQUET_ROW_GROUP:
                flush()
        if batch or count == 0:
            flush()
    return count


Writer = Callable[[list[str], Iterable[Row], IO[bytes]], int]


def write(fmt: str, columns: list[str], rows: Iterable[Row], sink: IO[bytes],
          types: dict[str, str | None] | None = None,
          collections: frozenset[str] = frozenset(), header: bool = True) -> int:
    """Write ``rows`` to ``sink`` in ``fmt``; returns the row count."""
    if fmt == "parquet":
        return write_parquet(columns, rows, sink, types, collections)
    if fmt == "csv":
        return write_csv(columns, rows, sink, header)
    writers: dict[str, Writer] = {"csv": write_csv, "ndjson": write_ndjson,
                                  "json": write_json}
    return writers[fmt](columns, rows, sink)


def counted(rows: Iterable[Row], tick: Callable[[int], None], every: int = 1000
            ) -> Iterator[Row]:
    """Rows passed through, ``tick(n)`` told every ``every`` rows (a progress bar)."""
    n = 0
    for row in rows:
        yield row
        n += 1
        if n % every == 0:
            tick(every)
    tick(n % every)
