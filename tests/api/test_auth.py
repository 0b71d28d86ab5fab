"""API keys per tenant: nobody without a key, nobody sees another tenant's jobs, admin-only routes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.keys import create_key
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade
from models import ApiKey, make_engine, make_session_factory


@pytest.fixture
def farm(tmp_path: Path, redis_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    keys = {}
    with sessions() as s:
        for tenant, admin in (("acme", False), ("globex", False), ("ops", True)):
            keys[tenant] = create_key(s, tenant=tenant, is_admin=admin)[1]
    settings = FarmSettings(data_dir=tmp_path, database_url=url, auth=True)
    with TestClient(create_app(settings)) as client:
        yield client, keys
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_v1_route_needs_a_key_but_health_does_not(farm) -> None:  # type: ignore[no-untyped-def]
    client, _ = farm
    assert client.get("/healthz").status_code == 200
    for method, path in (
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/x"),
        ("get", "/v1/workers"),
        ("get", "/v1/keys"),
    ):
        response = client.request(method, path, json={"prompt": "a"} if method == "post" else None)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/jobs", headers=_h("zf_not-a-key")).status_code == 401


def test_no_v1_route_answers_without_a_key(farm) -> None:  # type: ignore[no-untyped-def]
    # Every route in the API's schema, so a new one that forgets the key is found here (GET /v1/presets did).
    client, _ = farm
    checked = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method in operations:
            url = re.sub(r"\{[^}]+\}", "1", path)
            response = client.request(method, url, json={} if method in ("post", "put", "patch") else None)
            assert response.status_code == 401, f"{method} {path} -> {response.status_code}"
            checked.append(f"{method} {path}")
    assert "get /v1/presets" in checked and len(checked) >= 25


def test_a_tenant_sees_only_its_own_jobs(farm) -> None:  # type: ignore[no-untyped-def]
    client, keys = farm
    # given
    mine = client.post("/v1/jobs", json={"prompt": "acme mug"}, headers=_h(keys["acme"])).json()
    # when / then: the other tenant gets 404 everywhere, as for a job that does not exist
    for method, path in (
        ("get", f"/v1/jobs/{mine['id']}"),
        ("delete", f"/v1/jobs/{mine['id']}"),
        ("get", f"/v1/jobs/{mine['id']}/images/0"),
    ):
        assert client.request(method, path, headers=_h(keys["globex"])).status_code == 404
    assert client.get("/v1/jobs", headers=_h(keys["globex"])).json()["jobs"] == []
    listed = client.get("/v1/jobs", headers=_h(keys["acme"])).json()["jobs"]
    assert [j["id"] for j in listed] == [mine["id"]]
    assert client.get(f"/v1/jobs/{mine['id']}", headers=_h(keys["acme"])).status_code == 200


def test_workers_and_keys_need_an_admin_key(farm) -> None:  # type: ignore[no-untyped-def]
    client, keys = farm
    assert client.get("/v1/workers", headers=_h(keys["acme"])).status_code == 403
    assert client.get("/v1/workers", headers=_h(keys["ops"])).status_code == 200
    created = client.post("/v1/keys", json={"tenant": "initech"}, headers=_h(keys["ops"]))
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert new_key.startswith("zf_")
    assert client.get("/v1/jobs", headers=_h(new_key)).status_code == 200
    # keys are stored hashed, and shown only once
    listed = client.get("/v1/keys", headers=_h(keys["ops"])).json()
    assert all(k["key"] is None for k in listed)
    sessions = make_session_factory(make_engine(client.app.state.settings.resolved_database_url))
    with sessions() as s:
        assert all(new_key not in (k.key_sha256, k.prefix) for k in s.query(ApiKey))
    # revoked keys stop working
    key_id = created.json()["id"]
    assert client.delete(f"/v1/keys/{key_id}", headers=_h(keys["ops"])).status_code == 200
    assert client.get("/v1/jobs", headers=_h(new_key)).status_code == 401


def test_submits_over_the_tenant_quota_answer_429_with_retry_after(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'zfarm.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    with sessions() as s:
        burst = create_key(s, tenant=f"burst-{uuid.uuid4().hex[:8]}", submits_per_minute=3)[1]
        capped = create_key(s, tenant=f"capped-{uuid.uuid4().hex[:8]}", max_queued_jobs=2)[1]
    settings = FarmSettings(data_dir=tmp_path, database_url=url, auth=True)
    with TestClient(create_app(settings)) as client:
        first = client.post("/v1/jobs", json={"prompt": "p"}, headers=_h(burst))
        assert first.status_code == 202, first.text
        codes = [first.status_code] + [
            client.post("/v1/jobs", json={"prompt": "p"}, headers=_h(burst)).status_code for _ in range(3)
        ]
        assert codes == [202, 202, 202, 429]
        over = client.post("/v1/jobs", json={"prompt": "p"}, headers=_h(burst))
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        assert "submits per minute" in over.json()["detail"]
        codes = [client.post("/v1/jobs", json={"prompt": "p"}, headers=_h(capped)).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        third = client.post("/v1/jobs", json={"prompt": "p"}, headers=_h(capped))
        assert "jobs waiting; the cap is 2" in third.json()["detail"]
        assert third.headers["retry-after"] == "30"
    redis.Redis.from_url(redis_url).delete(get_settings().queue)
