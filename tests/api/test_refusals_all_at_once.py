"""Every problem of a catalog at once, and the nearest known name for a misspelt one (issue 16, bug 6)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.batch_helpers import TEMPLATE, batch_api, rows, written_and_queued


@pytest.fixture
def api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    with batch_api(f"sqlite:///{tmp_path / 'zfarm.db'}", tmp_path, redis_url) as client:
        yield client


def _refused(api: TestClient, redis_url: str, **request: object) -> list[dict]:
    before = written_and_queued(api, redis_url)
    response = api.post("/v1/batches", **request)  # type: ignore[arg-type]
    assert response.status_code == 422, response.text
    assert written_and_queued(api, redis_url) == before
    return response.json()["detail"]


def test_a_duplicate_key_is_reported_beside_bad_values_in_its_rows_and_others(api: TestClient, redis_url: str) -> None:
    catalog = [
        {"sku": "A", "product": "mug"},
        {"sku": "B", "product": "cup", "width": "wide"},
        {"sku": "C", "product": "vase"},
        {"sku": "C", "product": "bowl", "steps": "many"},
    ]
    errors = _refused(api, redis_url, json={"template": TEMPLATE, "rows": catalog})
    found = [(e["row"], e["column"]) for e in errors]
    assert found == [(2, "width"), (4, "steps"), (None, "sku")], errors
    assert "duplicate keys" in errors[-1]["rule"] and "C (rows 3, 4)" in errors[-1]["rule"]


def test_a_prompt_over_the_token_window_is_reported_beside_another_rows_bad_value(
    api: TestClient, redis_url: str
) -> None:
    catalog = [{"sku": "A", "product": "x" * 600}, {"sku": "B", "product": "cup", "width": "wide"}]
    errors = _refused(api, redis_url, json={"template": TEMPLATE, "rows": catalog})
    assert sorted((e["row"], e["field"]) for e in errors) == [(1, "prompt"), (2, "width")], errors


def test_every_bad_placeholder_is_named(api: TestClient, redis_url: str) -> None:
    errors = _refused(api, redis_url, json={"template": "{product.name} on {setting!r} {sku[0]}", "rows": rows(1)})
    assert [e["value"] for e in errors] == ["{product.name}", "{setting!r}", "{sku[0]}"]


def test_unknown_placeholders_and_key_column_suggest_the_nearest_column(api: TestClient, redis_url: str) -> None:
    catalog = [{"SKU": "A", "product": "mug", "color": "red"}]
    errors = _refused(api, redis_url, json={"template": "a {colour} {prodcut}", "rows": catalog})
    by_value = {e["value"]: e["rule"] for e in errors}
    assert by_value["{colour}"].endswith("did you mean 'color'?"), errors
    assert by_value["{prodcut}"].endswith("did you mean 'product'?"), errors
    assert by_value["sku"].endswith("did you mean 'SKU'?"), errors


def test_unknown_presets_suggest_the_nearest_and_the_rows_are_still_checked(api: TestClient, redis_url: str) -> None:
    catalog = [{"sku": "A", "product": "mug", "preset": "portrait768"}, {"sku": "B", "product": "cup", "steps": "x"}]
    errors = _refused(api, redis_url, json={"template": TEMPLATE, "rows": catalog, "preset": "square1024"})
    by_field = {(e["row"], e["field"]): e["rule"] for e in errors}
    assert by_field[(None, "preset")].endswith("did you mean 'square-1024'?"), errors
    assert by_field[(1, "preset")].endswith("did you mean 'portrait-768'?"), errors
    assert (2, "steps") in by_field


def test_unknown_fields_suggest_the_field_meant(api: TestClient, redis_url: str) -> None:
    # a job
    job = api.post("/v1/jobs", json={"prompt": "a mug", "wdth": 512})
    assert job.status_code == 422
    [error] = job.json()["detail"]
    assert error["field"] == "wdth" and error["rule"].endswith("did you mean 'width'?")
    # a batch's defaults and options, in JSON
    errors = _refused(
        api, redis_url, json={"template": TEMPLATE, "rows": rows(1), "defaults": {"stesp": 4}, "seeed": 1}
    )
    rules = {e["field"]: e["rule"] for e in errors}
    assert rules["defaults.stesp"].endswith("did you mean 'steps'?") and rules["seeed"].endswith("did you mean 'seed'?")
    # and a form field of an upload
    upload = {"files": {"file": ("c.csv", b"sku,product\nA,mug\n")}, "data": {"templat": TEMPLATE}}
    [error] = _refused(api, redis_url, **upload)
    assert error["field"] == "templat" and error["rule"].endswith("did you mean 'template'?")
