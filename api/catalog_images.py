"""The image columns of a catalog row (issue 12): `image` and `mask` (a file in the batch's images zip, or an
asset id), `mode`, `strength`, `mask_blur`, `mask_grow` (through catalog_rows.RESERVED) and the placement
columns `placement_fit`, `placement_anchor`, `placement_offset_x`, `placement_offset_y`, each overriding the
batch's value. `image` and `mask` are read only in rows whose mode is an image mode: in a text batch they stay
plain columns (a catalog export often has an `image` column of URLs)."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from api.catalog_files import CatalogRow
from api.image_schemas import IMAGE_MODES
from api.refusals import Problems

MODES = ("text", *IMAGE_MODES)
INPUT_COLUMNS = ("image", "mask")
PLACEMENT_COLUMNS = {
    "placement_fit": "fit",
    "placement_anchor": "anchor",
    "placement_offset_x": "offset_x",
    "placement_offset_y": "offset_y",
}


def parse_mode_cell(name: str, raw: Any) -> Any:
    """Parses the scalar mode columns; None means the cell is not valid (catalog_rows names the rule)."""
    if name == "mode":
        text = str(raw).strip().lower()
        return text if text in MODES else None
    if name == "strength":
        return _number(raw)
    return _whole(raw)  # mask_blur, mask_grow


MODE_RULES = {
    "mode": f"must be one of {', '.join(MODES)}",
    "strength": "must be a number (0 < strength <= 1)",
    "mask_blur": "must be a whole number of pixels",
    "mask_grow": "must be a whole number of pixels",
}


def placement_overrides(row: CatalogRow, problems: Problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, field in PLACEMENT_COLUMNS.items():
        raw = row.values.get(column)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        value = _number(raw) if field == "fit" else _whole(raw) if field.startswith("offset") else str(raw).strip()
        if value is None:
            rule = "must be a number" if field == "fit" else "must be a whole number of pixels"
            problems.add(rule, row=row.number, line=row.line, column=column, value=raw)
        else:
            out[field] = value
    return out


def input_cells(row: CatalogRow, mode: str) -> dict[str, str]:
    """The row's `image` and `mask` cells, when its mode reads images."""
    if mode not in IMAGE_MODES:
        return {}
    cells = {}
    for column in INPUT_COLUMNS:
        raw = row.values.get(column)
        if raw is not None and str(raw).strip():
            cells[column] = str(raw).strip()
    return cells


def column_of(field: str, columns: Collection[str]) -> str | None:
    """The row column that set a job field, for naming it in a refusal (None: the batch set it)."""
    if field.startswith("placement."):
        column = "placement_" + field.split(".", 1)[1]
        return column if column in columns else None
    own = ("mode", "strength", "mask_blur", "mask_grow", "width", "height", *INPUT_COLUMNS)
    return field if field in own and field in columns else None


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    value = _number(raw)
    return int(value) if value is not None and value.is_integer() else None
