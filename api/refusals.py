"""Refusals of catalog input: every problem names the row (and file line), the column, the value and the rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from api.strict_json import printable

MAX_PROBLEMS = 50  # enough to fix a file in one go; a 10,000-row refusal stays readable


@dataclass(frozen=True)
class Problem:
    rule: str
    column: str | None = None
    row: int | None = None  # 1-based data row (the header is not a row)
    line: int | None = None  # line in the uploaded file where the row starts
    value: Any = None
    field: str | None = None  # a request field (template, key_column, file, defaults.width) when not a column

    def where(self) -> str:
        parts = []
        if self.row is not None:
            parts.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        elif self.field is not None:
            parts.append(self.field)
        return ", ".join(parts) or "catalog"

    def as_dict(self) -> dict[str, Any]:
        value = printable(
            self.value if self.value is None or isinstance(self.value, int | float | str | list) else str(self.value)
        )
        got = f" (got {value!r})" if self.value is not None else ""
        return {
            name: printable(item)
            for name, item in {
                "field": self.field or self.column or "catalog",
                "row": self.row,
                "line": self.line,
                "column": self.column,
                "value": value,
                "rule": self.rule,
                "message": f"{self.where()}: {self.rule}{got}",
            }.items()
        }


class Refusal(Exception):
    """Raised with every problem found (up to MAX_PROBLEMS); nothing of the batch has been written."""

    def __init__(self, problems: list[Problem], status_code: int = 422) -> None:
        super().__init__("; ".join(p.as_dict()["message"] for p in problems[:3]))
        self.problems, self.status_code = problems, status_code

    def to_http(self) -> HTTPException:
        detail = [p.as_dict() for p in self.problems[:MAX_PROBLEMS]]
        if len(self.problems) > MAX_PROBLEMS:
            more = len(self.problems) - MAX_PROBLEMS
            detail.append(Problem(f"... and {more} more problem(s) not listed").as_dict())
        return HTTPException(self.status_code, detail=detail)


def refuse(rule: str, *, status_code: int = 422, **where: Any) -> Refusal:
    return Refusal([Problem(rule, **where)], status_code=status_code)


class Problems:
    """Collects problems row by row and stops collecting once the list is long enough to act on."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, rule: str, **where: Any) -> None:
        self.items.append(Problem(rule, **where))

    @property
    def full(self) -> bool:
        return len(self.items) > MAX_PROBLEMS

    def raise_if_any(self) -> None:
        if self.items:
            raise Refusal(self.items)
