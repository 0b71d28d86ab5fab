"""Property-based fuzzing of the OpenAPI schema (schemathesis): no input may produce a 5xx answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from api.app import create_app
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'zfarm.db'}"
    upgrade(url)
    app = create_app(FarmSettings(data_dir=tmp, database_url=url, model="tiny", auth=False))
    yield app
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


@pytest.fixture(scope="module")
def api_schema(fuzz_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def test_no_input_produces_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin does not load under this pytest.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call()
            assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"

        fuzz()
