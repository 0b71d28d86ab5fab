"""Hostile input (issue 17, item 3): each of these answered 500; now each is a 4xx naming the field, the value and
the rule, and nothing is stored or queued. The NUL cases run on SQLite and PostgreSQL (which cannot store a NUL)."""

from __future__ import annotations

import json
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import strict_json
from api.catalog_files import read_csv
from api.refusals import Refusal
from tests.api.batch_helpers import TEMPLATE, batch_api, rows, written_and_queued

DEEP = 100_000


@pytest.fixture
def api(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(database_url, tmp_path, redis_url) as client:
        yield client


@pytest.fixture
def sqlite_api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path, redis_url, max_catalog_columns=50) as client:
        yield client


def _refused(api: TestClient, redis_url: str, path: str = "/v1/batches", status: int = 422, **request: object) -> dict:
    before = written_and_queued(api, redis_url)
    response = api.post(path, **request)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert written_and_queued(api, redis_url) == before
    [first, *_] = response.json()["detail"]
    return first


def _raw_json(text: str) -> dict:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


def _upload(data: str, filename: str = "catalog.csv", **fields: str) -> dict:
    return {"files": {"file": (filename, data.encode())}, "data": {"template": TEMPLATE, **fields}}


# NUL: PostgreSQL refuses it in text (the driver raised, the API answered 500); SQLite stored it.


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_nul_in_a_job_prompt_is_refused(api: TestClient, redis_url: str, field: str) -> None:
    body = {"prompt": "a mug", field: "a\x00mug"}
    error = _refused(api, redis_url, "/v1/jobs", json=body)
    assert error["field"] == field and error["value"] == "a\x00mug" and "NUL" in error["rule"]


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("name", {"template": TEMPLATE, "rows": rows(2), "name": "spring\x00sale"}),
        ("template", {"template": "a {product}\x00", "rows": rows(2)}),
        ("rows.1.sku", {"template": TEMPLATE, "rows": [*rows(1), {"sku": "B\x00", "product": "cup"}]}),
    ],
)
def test_nul_in_a_json_batch_is_refused(api: TestClient, redis_url: str, where: str, body: dict) -> None:
    error = _refused(api, redis_url, json=body)
    assert error["field"] == where and "NUL" in error["rule"]


def test_nul_in_a_csv_cell_or_a_form_field_is_refused(api: TestClient, redis_url: str) -> None:
    error = _refused(api, redis_url, **_upload("sku,product\nA-1,mu\x00g\n"))
    assert error["field"] == "file" and error["line"] == 2 and "NUL" in error["rule"]
    error = _refused(api, redis_url, **_upload("sku,product\nA-1,mug\n", name="spring\x00sale"))
    assert error["field"] == "name" and "NUL" in error["rule"]


def test_nul_in_a_path_or_query_is_refused(api: TestClient) -> None:
    assert api.get("/v1/jobs/abc%00def").status_code == 422
    assert api.get("/v1/batches/abc%00def/items").status_code == 422


# Lone surrogates: not characters; the 422 handler itself failed writing them out as UTF-8.


def test_lone_surrogate_in_a_prompt_is_refused_and_echoed_escaped(sqlite_api: TestClient, redis_url: str) -> None:
    error = _refused(sqlite_api, redis_url, "/v1/jobs", **_raw_json('{"prompt": "a \\ud800 mug"}'))
    assert error["field"] == "prompt" and error["value"] == "a \\ud800 mug" and "surrogate" in error["rule"]


def test_lone_surrogate_in_a_jsonl_key_is_refused(sqlite_api: TestClient, redis_url: str) -> None:
    catalog = '{"sku": "A", "product": "mug"}\n{"sku": "B", "pro\\udc00duct": "cup"}\n'
    error = _refused(sqlite_api, redis_url, **_upload(catalog, filename="c.jsonl"))
    assert (error["row"], error["line"]) == (2, 2) and "surrogate" in error["rule"]
    assert error["column"] == "pro\\udc00duct"


def test_a_valid_surrogate_pair_is_accepted(sqlite_api: TestClient) -> None:
    response = sqlite_api.post("/v1/jobs", **_raw_json('{"prompt": "a mug with a \\ud83d\\ude00 on it"}'))
    assert response.status_code == 202, response.text
    assert response.json()["parameters"]["prompt"] == "a mug with a \U0001f600 on it"


# Numbers JSON has no place for: NaN, Infinity, and 1e400 (read as inf).


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_number_in_json_rows_is_refused(sqlite_api: TestClient, redis_url: str, number: str) -> None:
    text = f'{{"template": "{TEMPLATE}", "rows": [{{"sku": "A", "product": "mug", "width": {number}}}]}}'
    error = _refused(sqlite_api, redis_url, **_raw_json(text))
    assert error["field"] == "rows.0.width" and error["value"] == number and "finite" in error["rule"]


@pytest.mark.parametrize("number", ["NaN", "1e400"])
def test_non_finite_number_in_jsonl_is_refused(sqlite_api: TestClient, redis_url: str, number: str) -> None:
    catalog = f'{{"sku": "A", "product": "mug", "steps": {number}}}\n'
    error = _refused(sqlite_api, redis_url, **_upload(catalog, filename="c.jsonl"))
    assert (error["row"], error["column"], error["value"]) == (1, "steps", number) and "finite" in error["rule"]


@pytest.mark.parametrize("number", ["NaN", "1e400"])
def test_non_finite_number_in_a_job_is_refused(sqlite_api: TestClient, redis_url: str, number: str) -> None:
    error = _refused(
        sqlite_api, redis_url, "/v1/jobs", **_raw_json(f'{{"prompt": "a mug", "guidance_scale": {number}}}')
    )
    assert error["field"] == "guidance_scale" and "finite" in error["rule"]


# Shapes: a header and no rows; nesting 100,000 deep; repeated keys; too many columns.


@pytest.mark.parametrize(
    ("catalog", "name"), [("sku,product\n", "c.csv"), ("sku,product\n\n\n", "c.csv"), ("\n", "c.jsonl")]
)
def test_catalog_without_rows_is_refused(sqlite_api: TestClient, redis_url: str, catalog: str, name: str) -> None:
    error = _refused(sqlite_api, redis_url, **_upload(catalog, filename=name))
    assert error["field"] == "file" and "no rows" in error["rule"]


def test_jsonl_line_nested_deep_is_refused(sqlite_api: TestClient, redis_url: str) -> None:
    catalog = '{"sku": "A", "product": "mug"}\n' + '{"sku": ' + "[" * DEEP + "]" * DEEP + "}\n"
    error = _refused(sqlite_api, redis_url, **_upload(catalog, filename="c.jsonl"))
    assert (error["row"], error["line"]) == (2, 2) and "nested too deeply" in error["rule"]


@pytest.mark.parametrize("field", ["renditions", "defaults", "placement"])
def test_form_json_field_nested_deep_is_refused(sqlite_api: TestClient, redis_url: str, field: str) -> None:
    error = _refused(sqlite_api, redis_url, **_upload("sku,product\nA,mug\n", **{field: "[" * DEEP + "]" * DEEP}))
    assert error["field"] == field and "nested too deeply" in error["rule"]


def test_json_body_nested_deep_is_refused(sqlite_api: TestClient, redis_url: str) -> None:
    error = _refused(sqlite_api, redis_url, "/v1/jobs", **_raw_json('{"prompt": ' + "[" * DEEP + "]" * DEEP + "}"))
    assert error["field"] == "body" and "nested too deeply" in error["rule"]


def test_repeated_key_in_a_job_is_refused_naming_it(sqlite_api: TestClient, redis_url: str) -> None:
    error = _refused(sqlite_api, redis_url, "/v1/jobs", **_raw_json('{"prompt": "a mug", "seed": 1, "seed": 2}'))
    assert error["field"] == "seed" and error["value"] == "seed" and "more than once" in error["rule"]


def test_repeated_key_in_a_batch_row_is_refused_naming_it(sqlite_api: TestClient, redis_url: str) -> None:
    text = f'{{"template": "{TEMPLATE}", "rows": [{{"sku": "A", "product": "mug", "sku": "B"}}]}}'
    error = _refused(sqlite_api, redis_url, **_raw_json(text))
    assert error["field"] == "rows.0.sku" and "more than once" in error["rule"]
    error = _refused(
        sqlite_api, redis_url, **_upload('{"sku": "A", "product": "mug", "product": "cup"}\n', filename="c.jsonl")
    )
    assert (error["row"], error["column"]) == (1, "product") and "more than once" in error["rule"]


def test_too_many_columns_are_refused(sqlite_api: TestClient, redis_url: str) -> None:
    header = ",".join(["sku", "product", *(f"c{i}" for i in range(60))])
    error = _refused(sqlite_api, redis_url, status=413, **_upload(header + "\n" + "A,mug" + ",x" * 60 + "\n"))
    assert (
        error["line"] == 1
        and "62 columns, more than 50" in error["rule"]
        and "ZFARM_MAX_CATALOG_COLUMNS" in error["rule"]
    )
    wide = [{"sku": "A", "product": "mug", **{f"c{i}": i for i in range(60)}}]
    error = _refused(sqlite_api, redis_url, status=413, json={"template": TEMPLATE, "rows": wide})
    assert "more than 50" in error["rule"]


def test_the_refusals_leave_valid_input_alone(sqlite_api: TestClient) -> None:
    body = {"template": TEMPLATE, "rows": rows(2, width=512), "name": "caf\u00e9 \U0001f600"}
    response = sqlite_api.post("/v1/batches", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text


def test_a_wide_csv_is_refused_on_its_header_before_any_row_is_read() -> None:
    # 10,000 columns x 200 rows: read in full, ~20x its 4 MB; refused on the header, a fraction of its size.
    text = ",".join(f"c{i}" for i in range(10_000)) + "\n" + ("x," * 9_999 + "x\n") * 200
    tracemalloc.start()
    try:
        with pytest.raises(Refusal) as refused:
            read_csv(text, max_rows=50_000, max_columns=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status_code == 413 and "10000 columns" in refused.value.problems[0].rule
    assert peak < len(text) // 4, f"peak {peak} bytes for a {len(text)}-character file"


def test_a_large_json_batch_is_parsed_off_the_event_loop(
    sqlite_api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 36 MB catalog took seconds to parse; on the event loop, every other request waited for it.
    seen: list[tuple[int, bool]] = []
    real_loads = strict_json.loads

    def recording_loads(data: str | bytes) -> object:
        seen.append((threading.get_ident(), len(data) > 1_000_000))
        return real_loads(data)

    monkeypatch.setattr(strict_json, "loads", recording_loads)
    loop_thread = sqlite_api.portal.call(threading.get_ident)  # type: ignore[union-attr]
    body = {"template": "a {colour} {product}", "rows": rows(3000, note="n" * 400)}
    response = sqlite_api.post("/v1/batches", json=body)
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "template"
    assert [large for _, large in seen] == [True]
    assert seen[0][0] != loop_thread
