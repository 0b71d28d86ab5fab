"""Bad input gets 422 naming the field, the value and the rule; nothing invalid is written or queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade
from models import Job, make_engine, make_session_factory


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=url))) as client:
        yield client


def _counts(api: TestClient, redis_url: str) -> tuple[int, int]:
    sessions = make_session_factory(make_engine(api.app.state.settings.resolved_database_url))
    with sessions() as s:
        rows = s.scalar(select(func.count()).select_from(Job))
    queued = redis.Redis.from_url(redis_url).llen(get_settings().queue)
    return rows, queued


CASES = [
    ({"width": 1000}, "width", 1000, "multiple of 16"),
    ({"height": 4096}, "height", 4096, "less than or equal to 2048"),
    ({"width": 128}, "width", 128, "greater than or equal to 256"),
    ({"steps": 0}, "steps", 0, "greater than or equal to 1"),
    ({"steps": 51}, "steps", 51, "less than or equal to 50"),
    ({"num_images": 9}, "num_images", 9, "less than or equal to 8"),
    ({"num_images": 0}, "num_images", 0, "greater than or equal to 1"),
    ({"prompt": ""}, "prompt", "", "at least 1 character"),
    ({"prompt": "   "}, "prompt", "   ", "non-whitespace"),
    ({"seed": -1}, "seed", -1, "greater than or equal to 0"),
    ({"seed": 2**63}, "seed", 2**63, "less than or equal to"),
    ({"output_format": "gif"}, "output_format", "gif", "'png', 'webp' or 'jpeg'"),
    ({"colour": "red"}, "colour", "red", "unknown field"),
]


@pytest.mark.parametrize(("override", "field", "value", "rule"), CASES)
def test_bad_field_is_refused_with_field_value_and_rule(
    api: TestClient, redis_url: str, override: dict, field: str, value: object, rule: str
) -> None:
    # given
    before = _counts(api, redis_url)
    body = {"prompt": "a mug", **override}
    # when
    response = api.post("/v1/jobs", json=body)
    # then
    assert response.status_code == 422, response.text
    [error] = [e for e in response.json()["detail"] if e["field"] == field]
    assert error["value"] == value
    assert rule in error["rule"]
    assert field in error["message"] and repr(value) in error["message"]
    assert _counts(api, redis_url) == before


def test_non_finite_guidance_is_refused(api: TestClient) -> None:
    response = api.post(
        "/v1/jobs", content=b'{"prompt": "a mug", "guidance_scale": NaN}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["field"] == "guidance_scale" and "finite" in error["rule"]


def test_valid_job_is_accepted_queued_and_recorded(api: TestClient, redis_url: str) -> None:
    rows, queued = _counts(api, redis_url)
    response = api.post("/v1/jobs", json={"prompt": "a mug", "seed": 5})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and job["parameters"]["seed"] == 5
    assert job["parameters"]["width"] == 1024 and job["parameters"]["steps"] == 8
    assert job["parameters"]["guidance_scale"] == 0.0
    assert response.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    assert _counts(api, redis_url) == (rows + 1, queued + 1)
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def test_seed_is_drawn_and_recorded_when_not_given(api: TestClient, redis_url: str) -> None:
    job = api.post("/v1/jobs", json={"prompt": "a mug"}).json()
    assert 0 <= job["parameters"]["seed"] < 2**63
    assert api.get(f"/v1/jobs/{job['id']}").json()["parameters"]["seed"] == job["parameters"]["seed"]
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def test_unknown_job_and_image_answer_404(api: TestClient, redis_url: str) -> None:
    assert api.get("/v1/jobs/" + "0" * 32).status_code == 404
    job = api.post("/v1/jobs", json={"prompt": "a mug"}).json()
    missing = api.get(f"/v1/jobs/{job['id']}/images/0")
    assert missing.status_code == 404 and "no image 0" in missing.json()["detail"]
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def test_openapi_docs_are_served(api: TestClient) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/images/{index}", "/v1/workers", "/healthz"} <= set(
        paths
    )
