"""A bad catalog is refused whole, with the row, the column, the value and the rule; nothing is written or queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.batch_helpers import TEMPLATE, batch_api, rows, written_and_queued


@pytest.fixture
def api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(
        f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path, redis_url, max_batch_rows=20, max_upload_bytes=4096
    ) as client:
        yield client


def _refused(api: TestClient, redis_url: str, status: int = 422, **request: object) -> list[dict]:
    before = written_and_queued(api, redis_url)
    response = api.post("/v1/batches", **request)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert written_and_queued(api, redis_url) == before
    return response.json()["detail"]


def _csv(text: str | bytes, name: str = "catalog.csv", **fields: str) -> dict:
    data = text.encode() if isinstance(text, str) else text
    return {"files": {"file": (name, data)}, "data": {"template": TEMPLATE, **fields}}


def test_unknown_placeholder_is_refused_naming_it_and_the_columns(api: TestClient, redis_url: str) -> None:
    [error] = _refused(api, redis_url, json={"template": "a {colour} {product}", "rows": rows(2)})
    assert error["field"] == "template" and error["value"] == "{colour}"
    assert "unknown placeholder" in error["rule"] and "'colour'" in error["rule"] and "sku, product" in error["rule"]


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ("{product.__class__}", "attribute and index access are not allowed"),
        ("{product[0]}", "attribute and index access are not allowed"),
        ("{product:>40}", "format specs are not allowed"),
        ("{product!r}", "conversions"),
        ("a {} b", "must name a column"),
        ("a {0} b", "must name a column"),
        ("unclosed {product", "not a valid template"),
    ],
)
def test_template_with_more_than_plain_columns_is_refused(
    api: TestClient, redis_url: str, template: str, rule: str
) -> None:
    [error] = _refused(api, redis_url, json={"template": template, "rows": rows(1)})
    assert error["field"] == "template" and rule in error["rule"]


def test_row_without_a_key_is_refused_with_row_line_and_column(api: TestClient, redis_url: str) -> None:
    [error] = _refused(api, redis_url, **_csv("sku,product\nA-1,mug\n ,cup\n"))
    assert (error["row"], error["line"], error["column"]) == (2, 3, "sku")
    assert "missing key" in error["rule"] and error["message"].startswith("row 2 (line 3), column 'sku'")


def test_missing_key_column_is_refused(api: TestClient, redis_url: str) -> None:
    [error] = _refused(api, redis_url, json={"template": TEMPLATE, "rows": rows(1), "key_column": "ean"})
    assert error["field"] == "key_column" and error["value"] == "ean" and "no key column" in error["rule"]


def test_empty_rendered_prompt_is_refused(api: TestClient, redis_url: str) -> None:
    catalog = [{"sku": "A", "product": "mug"}, {"sku": "B", "product": "  "}]
    [error] = _refused(api, redis_url, json={"template": "{product}", "rows": catalog})
    assert error["row"] == 2 and "rendered prompt is empty" in error["rule"] and "product" in error["rule"]


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("width", "wide", "must be a whole number"),
        ("width", "1000", "multiple of 16"),
        ("height", "4096", "less than or equal to 2048"),
        ("steps", "0", "greater than or equal to 1"),
        ("num_images", "1.5", "must be a whole number"),
        ("seed", "-3", "greater than or equal to 0"),
        ("guidance_scale", "nan", "must be a finite number"),
        ("format", "gif", "must be one of png, webp, jpeg"),
        ("preset", "poster-9000", "unknown preset"),
    ],
)
def test_bad_override_value_is_refused_with_row_column_and_value(
    api: TestClient, redis_url: str, column: str, value: str, rule: str
) -> None:
    errors = _refused(api, redis_url, **_csv(f"sku,product,{column}\nA,mug,\nB,cup,{value}\n"))
    [error] = [e for e in errors if e["column"] == column]
    assert (error["row"], error["line"]) == (2, 3)
    assert rule in error["rule"] and str(error["value"]) in (
        value,
        str(int(value)) if value.lstrip("-").isdigit() else value,
    )
    assert f"column '{column}'" in error["message"]


def test_duplicate_keys_are_refused_listing_each_with_its_rows(api: TestClient, redis_url: str) -> None:
    [error] = _refused(api, redis_url, **_csv("sku,product\nA,mug\nB,cup\nA,bowl\nC,jar\nB,vase\n"))
    assert error["column"] == "sku" and error["value"] == ["A", "B"]
    assert "duplicate keys" in error["rule"] and "A (rows 1, 3)" in error["rule"] and "B (rows 2, 5)" in error["rule"]


def test_file_that_is_not_utf8_is_refused_with_its_line(api: TestClient, redis_url: str) -> None:
    data = "sku,product\nA,mug\nB,caf\u00e9 table\n".encode("latin-1")
    [error] = _refused(api, redis_url, **_csv(data))
    assert error["field"] == "file" and error["line"] == 3
    assert "not UTF-8" in error["rule"] and "0xE9" in error["rule"]


def test_file_over_the_size_limit_answers_413(api: TestClient, redis_url: str) -> None:
    big = "sku,product\n" + "".join(f"S{i},{'x' * 100}\n" for i in range(60))
    response = api.post("/v1/batches", **_csv(big))
    assert response.status_code == 413 and "over the limit of 4096 bytes" in response.json()["detail"]


def test_row_count_over_the_limit_answers_413(api: TestClient, redis_url: str) -> None:
    [error] = _refused(api, redis_url, status=413, json={"template": TEMPLATE, "rows": rows(21)})
    assert "more than 20 rows" in error["rule"]
    [error] = _refused(api, redis_url, status=413, **_csv("sku,product\n" + "".join(f"S{i},p\n" for i in range(21))))
    assert "more than 20 rows" in error["rule"]


def test_csv_row_with_more_cells_than_the_header_is_refused(api: TestClient, redis_url: str) -> None:
    [error] = _refused(api, redis_url, **_csv("sku,product\nA,mug\nB,cup,surprise\n"))
    assert (error["row"], error["line"]) == (2, 3) and "3 cells, the header names 2" in error["rule"]


def test_jsonl_line_that_is_not_json_is_refused(api: TestClient, redis_url: str) -> None:
    body = '{"sku": "A", "product": "mug"}\n{"sku": "B", product: cup}\n'
    [error] = _refused(api, redis_url, **_csv(body, name="catalog.jsonl"))
    assert (error["row"], error["line"]) == (2, 2) and "not valid JSON" in error["rule"]


def test_prompt_over_the_token_window_is_refused_per_row(api: TestClient, redis_url: str) -> None:
    catalog = [{"sku": "A", "product": "mug"}, {"sku": "B", "product": "x" * 600}]
    [error] = _refused(api, redis_url, json={"template": TEMPLATE, "rows": catalog})
    assert error["row"] == 2 and error["field"] == "prompt" and "at most 512" in error["rule"]


def test_every_problem_of_a_file_is_listed_at_once(api: TestClient, redis_url: str) -> None:
    errors = _refused(api, redis_url, **_csv("sku,product,width\nA,mug,abc\n,cup,\nC,,\n", template="{product}"))
    assert [(e["row"], e["column"]) for e in errors] == [(1, "width"), (2, "sku"), (3, None)]


def test_unknown_form_field_and_unknown_json_field_are_refused(api: TestClient, redis_url: str) -> None:
    [error] = _refused(api, redis_url, **_csv("sku,product\nA,mug\n", colour="red"))
    assert error["field"] == "colour" and "unknown form field" in error["rule"]
    errors = _refused(api, redis_url, json={"template": TEMPLATE, "rows": rows(1), "colour": "red"})
    assert any(e["field"] == "colour" and "unknown field" in e["rule"] for e in errors)
