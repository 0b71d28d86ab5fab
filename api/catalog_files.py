"""Reading a catalog: CSV or JSONL bytes, or JSON rows, into numbered rows. Limits and UTF-8 are checked here."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from api import strict_json
from api.refusals import Problems, refuse

Value = str | int | float | bool | None


@dataclass(frozen=True)
class CatalogRow:
    number: int  # 1-based data row
    line: int | None  # where the row starts in the file (None for JSON rows)
    values: Mapping[str, Value]


@dataclass
class Catalog:
    source: str  # csv, jsonl or json
    columns: list[str] = field(default_factory=list)
    rows: list[CatalogRow] = field(default_factory=list)


def detect_format(filename: str | None, declared: str | None) -> str:
    if declared:
        return declared
    name = (filename or "").lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise refuse(
        "cannot tell the file's format from its name: use a .csv or .jsonl name, or send file_format",
        field="file",
        value=filename,
    )


def decode_utf8(data: bytes) -> str:
    if (nul := data.find(b"\x00")) >= 0:  # valid UTF-8, but no database stores it in text (PostgreSQL refuses it)
        raise refuse(
            f"the file contains a NUL character (byte 0x00) at offset {nul}: no cell may hold one",
            field="file",
            line=data[:nul].count(b"\n") + 1,
        )
    try:
        return data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the first column's name
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex().upper()
        raise refuse(
            f"the file is not UTF-8: byte 0x{bad} at offset {exc.start} cannot be decoded; save it as UTF-8",
            field="file",
            line=line,
        ) from exc


def _too_many(max_rows: int) -> Exception:
    return refuse(f"the catalog has more than {max_rows} rows (the farm's ZFARM_MAX_BATCH_ROWS)", status_code=413)


def _too_wide(count: int, max_columns: int, **where: Any) -> Exception:
    return refuse(
        f"the catalog has {count} columns, more than {max_columns} (the farm's ZFARM_MAX_CATALOG_COLUMNS)",
        status_code=413,
        **where,
    )


def _no_rows(catalog: Catalog) -> Catalog:
    if not catalog.rows:
        raise refuse("the catalog has no rows: send at least one item after the header", field="file")
    return catalog


def read_csv(text: str, max_rows: int, max_columns: int) -> Catalog:
    reader = csv.reader(_lines(text), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise refuse(f"the header is not valid CSV: {exc}", line=1, field="file") from exc
    if not header or not any(h.strip() for h in header):
        raise refuse("the file has no header row (the first line names the columns)", line=1, field="file")
    if len(header) > max_columns:  # refused on the header: a wide file costs many times its size once read
        raise _too_wide(len(header), max_columns, line=1, field="file")
    columns = [h.strip() for h in header]
    _check_header(columns)
    catalog = Catalog(source="csv", columns=columns)
    problems = Problems()
    start = reader.line_num + 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue  # blank lines (often at the end of an export) are not rows
            number = len(catalog.rows) + 1
            if number > max_rows:
                raise _too_many(max_rows)
            extra = record[len(columns) :]
            if any(cell.strip() for cell in extra):
                problems.add(f"the row has {len(record)} cells, the header names {len(columns)}", row=number, line=line)
            record = record[: len(columns)] + [""] * (len(columns) - len(record))
            catalog.rows.append(CatalogRow(number, line, dict(zip(columns, record, strict=True))))
    except csv.Error as exc:
        raise refuse(f"not valid CSV: {exc}", line=reader.line_num, field="file") from exc
    problems.raise_if_any()
    return _no_rows(catalog)


# The lines of a text as open(newline="") gives them (\r\n, \r or \n kept), one at a time: io.StringIO would hold
# a second copy of the whole file at four bytes a character before the header is even read.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _lines(text: str) -> Iterator[str]:
    return (match.group() for match in _LINE.finditer(text))


def _check_header(columns: list[str]) -> None:
    problems = Problems()
    seen: set[str] = set()
    for i, name in enumerate(columns, start=1):
        if not name:
            problems.add(f"header cell {i} is empty: every column needs a name", line=1, field="file")
        elif name in seen:
            problems.add("the header names this column twice", line=1, column=name)
        seen.add(name)
    problems.raise_if_any()


def read_jsonl(text: str, max_rows: int, max_columns: int) -> Catalog:
    catalog = Catalog(source="jsonl")
    problems = Problems()
    columns: dict[str, None] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        number = len(catalog.rows) + 1
        if number > max_rows:
            raise _too_many(max_rows)
        try:
            obj = strict_json.loads(line)
        except strict_json.JsonProblem as exc:  # NUL, lone surrogate, NaN, repeated key, nested too deep
            column = None if exc.where == "body" else exc.where
            problems.add(exc.rule, row=number, line=line_no, column=column, value=exc.value)
            catalog.rows.append(CatalogRow(number, line_no, {}))
            continue
        except ValueError as exc:
            problems.add(f"not valid JSON: {exc}", row=number, line=line_no)
            catalog.rows.append(CatalogRow(number, line_no, {}))
            continue
        values = _row_values(obj, number, line_no, problems)
        columns.update(dict.fromkeys(values))
        if len(columns) > max_columns:
            raise _too_wide(len(columns), max_columns, row=number, line=line_no)
        catalog.rows.append(CatalogRow(number, line_no, values))
        if problems.full:
            break
    problems.raise_if_any()
    catalog.columns = list(columns)
    return _no_rows(catalog)


def read_json_rows(rows: Iterable[Any], max_rows: int, max_columns: int) -> Catalog:
    catalog = Catalog(source="json")
    problems = Problems()
    columns: dict[str, None] = {}
    for number, obj in enumerate(rows, start=1):
        if number > max_rows:
            raise _too_many(max_rows)
        values = _row_values(obj, number, None, problems)
        columns.update(dict.fromkeys(values))
        if len(columns) > max_columns:
            raise _too_wide(len(columns), max_columns, row=number)
        catalog.rows.append(CatalogRow(number, None, values))
    problems.raise_if_any()
    catalog.columns = list(columns)
    return _no_rows(catalog)


def _row_values(obj: Any, number: int, line: int | None, problems: Problems) -> dict[str, Value]:
    if not isinstance(obj, dict):
        problems.add(f"a row must be a JSON object of column: value, not {type(obj).__name__}", row=number, line=line)
        return {}
    values: dict[str, Value] = {}
    for key, value in obj.items():
        name = str(key).strip()
        if not isinstance(value, str | int | float | bool) and value is not None:
            problems.add("values must be text, numbers or null", row=number, line=line, column=name, value=str(value))
            continue
        values[name] = value
    return values
