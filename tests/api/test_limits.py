"""Input limits: body size, the text encoder's token window, the pixel budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade


@pytest.fixture
def api(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    settings = FarmSettings(
        data_dir=tmp_path, database_url=url, model="tiny", max_json_bytes=4096, max_pixels=1024 * 1024
    )
    with TestClient(create_app(settings)) as client:
        yield client
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def test_body_over_the_limit_answers_413(api: TestClient) -> None:
    response = api.post("/v1/jobs", json={"prompt": "x" * 5000})
    assert response.status_code == 413
    assert "over the limit of 4096 bytes" in response.json()["detail"]


def test_chunked_body_over_the_limit_answers_413(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    response = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_prompt_over_the_token_window_is_refused_unless_truncation_is_asked(api: TestClient) -> None:
    # the tiny tokenizer is byte-level: 600 ASCII characters are 600 tokens, over the 512 window
    long_prompt = "a" * 600
    refused = api.post("/v1/jobs", json={"prompt": long_prompt})
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["field"] == "prompt" and "at most 512" in error["rule"] and "truncate_prompt" in error["rule"]
    accepted = api.post("/v1/jobs", json={"prompt": long_prompt, "truncate_prompt": True})
    assert accepted.status_code == 202
    assert api.post("/v1/jobs", json={"prompt": "a" * 400}).status_code == 202


def test_pixel_budget_is_enforced(api: TestClient) -> None:
    refused = api.post("/v1/jobs", json={"prompt": "p", "width": 2048, "height": 1024})
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["field"] == "width*height" and error["value"] == 2048 * 1024
    assert api.post("/v1/jobs", json={"prompt": "p", "width": 1024, "height": 1024}).status_code == 202
