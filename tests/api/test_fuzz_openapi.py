"""Property-based fuzzing of the OpenAPI schema (schemathesis): no input may produce a 5xx answer."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
import schemathesis
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from api.app import create_app
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[FastAPI]:
    # PostgreSQL too: it refuses what SQLite stores (a NUL in text), so a 500 may show on one only.
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'zfarm.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
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


# Hostile input (issue 17, item 3): a valid case with one thing the farm must refuse, sent as raw JSON text.
HOSTILE_TOKEN = "__zfarm_hostile__"
DEEP = 100_000
NON_FINITE = {"nan": "NaN", "infinity": "-Infinity", "overflow": "1e400"}


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _leaves(value, (*path, i))
    else:
        yield path, doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


def _hostile_text(body: dict[str, Any], kind: str, pick: int) -> str | None:
    """The body as JSON text with one hostile thing in it, or None when the body has no place for this kind."""
    body = copy.deepcopy(body)
    leaves = list(_leaves(body))
    if kind == "duplicate":
        key, value = next(iter(body.items()))
        return "{" + json.dumps(key) + ": " + json.dumps(value) + ", " + json.dumps(body)[1:]
    if kind in ("nul", "surrogate"):
        strings = [(p, v) for p, v in leaves if isinstance(v, str) and p]
        if not strings:
            return None
        path, value = strings[pick % len(strings)]
        _set(body, path, value + ("\x00" if kind == "nul" else "\ud800"))
        return json.dumps(body)  # ensure_ascii: written as \u0000 and \ud800
    candidates = [
        p for p, v in leaves if p and (kind == "deep" or (isinstance(v, int | float) and not isinstance(v, bool)))
    ]
    if not candidates:
        return None
    _set(body, candidates[pick % len(candidates)], HOSTILE_TOKEN)
    token = "[" * DEEP + "]" * DEEP if kind == "deep" else NON_FINITE[kind]
    return json.dumps(body).replace(json.dumps(HOSTILE_TOKEN), token)


def test_hostile_input_is_refused_with_4xx_never_5xx(fuzz_app: FastAPI, api_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    kinds = ["nul", "surrogate", "nan", "infinity", "overflow", "duplicate", "deep", "nul-in-path"]
    tried = 0
    client = TestClient(fuzz_app)  # no lifespan: the module's app is shared with the first fuzz
    for operation in operations:
        json_body = any(body.media_type == "application/json" for body in operation.body)
        usable = [
            k for k in kinds if (k == "nul-in-path" and "{" in operation.path) or (k != "nul-in-path" and json_body)
        ]
        if not usable:
            continue

        @given(case=operation.as_strategy(), kind=st.sampled_from(usable), pick=st.integers(0, 50))
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case, kind: str, pick: int) -> None:
            nonlocal tried
            path, headers = case.formatted_path, {"content-type": "application/json"}
            if kind == "nul-in-path":
                assume(bool(case.path_parameters))
                name = sorted(case.path_parameters)[pick % len(case.path_parameters)]
                values = {**case.path_parameters, name: f"{case.path_parameters[name]}\x00"}
                path = case.path.format(**{k: quote(str(v), safe="") for k, v in values.items()})
                text = json.dumps(case.body) if isinstance(case.body, dict) else None
            else:
                assume(case.media_type == "application/json" and isinstance(case.body, dict) and case.body)
                text = _hostile_text(case.body, kind, pick)
                assume(text is not None)
            response = client.request(case.method, path, params=case.query, content=text, headers=headers)
            tried += 1
            assert 400 <= response.status_code < 500, (
                f"{kind}: {case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
            )

        fuzz()
    assert tried >= 40
