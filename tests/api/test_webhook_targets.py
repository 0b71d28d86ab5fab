"""Webhook receivers must be public: refused at submit (422, nothing stored) and again at send time, after
DNS resolution, against the address actually connected to."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import FarmSettings
from core.webhook_targets import UnsafeTarget, check_at_submit, parse_networks
from migrations.runner import upgrade
from models import Batch, DeliveryState, Job, JobStatus, WebhookDelivery
from tests.http_servers import Receiver, webhook_receiver
from worker.webhooks import deliver_once

SECRET = "unit-test-secret-0123456789"
INTERNAL = [
    ("http://127.0.0.1:6379/", "127.0.0.1 is loopback"),
    ("http://127.1/", "127.0.0.1 is loopback"),
    ("http://2130706433/", "127.0.0.1 is loopback"),
    ("http://0x7f000001/", "127.0.0.1 is loopback"),
    ("http://0177.0.0.1/", "127.0.0.1 is loopback"),
    ("http://localhost:8000/", "names the local machine"),
    ("http://LOCALHOST./", "names the local machine"),
    ("http://api.localhost/", "names the local machine"),
    ("http://[::1]/", "::1 is loopback"),
    ("http://[::ffff:127.0.0.1]/", "is loopback (as 127.0.0.1)"),
    ("http://[::ffff:a00:1]/", "is private (as 10.0.0.1)"),
    ("http://[2002:7f00:1::]/", "is loopback (as 127.0.0.1)"),
    ("http://[64:ff9b::a9fe:a9fe]/", "is link-local (as 169.254.169.254)"),
    ("http://10.0.0.5/", "10.0.0.5 is private"),
    ("http://172.16.3.4/", "172.16.3.4 is private"),
    ("http://192.168.1.1/", "192.168.1.1 is private"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
    ("http://[fe80::1]/", "fe80::1 is link-local"),
    ("http://[fd00::1]/", "fd00::1 is private"),
    ("http://224.0.0.1/", "224.0.0.1 is multicast"),
    ("http://0.0.0.0/", "0.0.0.0 is unspecified"),
    ("http://[::]/", ":: is unspecified"),
    ("http://100.64.0.1/", "100.64.0.1 is not globally routable"),
]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


def _api(tmp_path: Path, **settings: object) -> TestClient:
    db = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(db)
    return TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=db, webhook_secret=SECRET, **settings)))


def _count(api: TestClient, model: type) -> int:
    with api.app.state.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(("url", "why"), INTERNAL)
def test_job_callback_to_an_internal_address_is_refused_and_nothing_stored(tmp_path: Path, url: str, why: str) -> None:
    with _api(tmp_path) as api:
        response = api.post("/v1/jobs", json={"prompt": "a mug", "callback_url": url})
        assert response.status_code == 422, response.text
        [detail] = response.json()["detail"]
        assert detail["field"] == "callback_url" and detail["value"].startswith("http")
        assert why in detail["rule"] and "ZFARM_WEBHOOK_ALLOW_NETWORKS" in detail["rule"]
        assert _count(api, Job) == 0 and _count(api, WebhookDelivery) == 0


def test_batch_callback_to_an_internal_address_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    body = {"template": "{p}", "rows": [{"sku": "A", "p": "a mug"}], "callback_url": "http://169.254.169.254/"}
    with _api(tmp_path) as api:
        response = api.post("/v1/batches", json=body)
        assert response.status_code == 422
        [detail] = response.json()["detail"]
        assert detail["field"] == "callback_url" and "link-local" in detail["rule"]
        assert _count(api, Batch) == 0 and _count(api, Job) == 0 and _count(api, WebhookDelivery) == 0


def test_callback_with_user_and_password_is_refused(tmp_path: Path) -> None:
    with _api(tmp_path) as api:
        response = api.post("/v1/jobs", json={"prompt": "a mug", "callback_url": "https://me:pw@hooks.example.com/x"})
        assert response.status_code == 422
        [detail] = response.json()["detail"]
        assert detail["field"] == "callback_url" and "user name or password" in detail["rule"]
        assert _count(api, Job) == 0


def test_public_receiver_is_accepted_and_listed_networks_are_allowed(tmp_path: Path) -> None:
    with _api(tmp_path, webhook_allow_networks="10.0.0.0/8, 127.0.0.1/32") as api:
        public = api.post("/v1/jobs", json={"prompt": "a mug", "callback_url": "http://93.184.216.34/hook"})
        listed = api.post("/v1/jobs", json={"prompt": "a cup", "callback_url": "http://10.1.2.3:9000/hook"})
        loop = api.post("/v1/jobs", json={"prompt": "a jug", "callback_url": "http://127.0.0.1:9000/hook"})
        other_loopback = api.post("/v1/jobs", json={"prompt": "a pot", "callback_url": "http://127.0.0.2/hook"})
    assert (public.status_code, listed.status_code, loop.status_code) == (202, 202, 202)
    assert other_loopback.status_code == 422  # only what is listed: 127.0.0.1/32, not all of loopback


def test_allow_networks_setting_refuses_what_is_not_a_network() -> None:
    with pytest.raises(ValueError, match="CIDR networks separated by commas"):
        FarmSettings(webhook_allow_networks="10.0.0.0/8,intranet")
    assert [str(n) for n in parse_networks(" 10.0.0.0/8 ,fd00::/8")] == ["10.0.0.0/8", "fd00::/8"]


def _fake_dns(monkeypatch: pytest.MonkeyPatch, name: str, address: str) -> None:
    # The one thing a test here cannot do for real: make a public name resolve somewhere of its choosing.
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_name_resolving_to_an_internal_address_is_refused_at_submit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dns(monkeypatch, "metadata.example.com", "169.254.169.254")
    with pytest.raises(UnsafeTarget, match="169.254.169.254 is link-local"):
        check_at_submit("http://metadata.example.com/latest", ())
    with _api(tmp_path) as api:
        response = api.post("/v1/jobs", json={"prompt": "a mug", "callback_url": "http://metadata.example.com/x"})
    assert response.status_code == 422 and "link-local" in response.json()["detail"][0]["rule"]


def _pending(sessions: sessionmaker[Session], url: str) -> str:
    with sessions() as s:
        job = Job(prompt="p", width=256, height=256, steps=2, guidance_scale=0.0, seed=1, status=JobStatus.SUCCEEDED)
        job.webhook = WebhookDelivery(url=url, state=DeliveryState.PENDING)
        s.add(job)
        s.commit()
        return job.id


def _delivery(sessions: sessionmaker[Session], job_id: str) -> WebhookDelivery:
    with sessions() as s:
        return s.scalar(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))


def test_name_that_later_resolves_to_loopback_is_not_reached(
    sessions: sessionmaker[Session], receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a name that did not resolve at submit (accepted), and now resolves to the receiver on loopback
    port = receiver.url.rsplit(":", 1)[1]
    job_id = _pending(sessions, f"http://rebind.example.com:{port}/hook")
    _fake_dns(monkeypatch, "rebind.example.com", "127.0.0.1")
    # when
    outcome = deliver_once(job_id, sessions, FarmSettings(data_dir=tmp_path, webhook_secret=SECRET))
    # then: nothing reached the receiver, and the delivery failed at once (no retry can make it allowed)
    row = _delivery(sessions, job_id)
    assert receiver.requests == []
    assert outcome.state == DeliveryState.FAILED and row.attempts == 1
    assert (
        row.last_error.startswith("not sent: callback_url must not point") and "127.0.0.1 is loopback" in row.last_error
    )


def test_sender_connects_to_the_checked_address_and_keeps_the_name(
    sessions: sessionmaker[Session], receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a listed network, and a name resolving into it
    port = receiver.url.rsplit(":", 1)[1]
    job_id = _pending(sessions, f"http://hooks.internal.example:{port}/in")
    _fake_dns(monkeypatch, "hooks.internal.example", "127.0.0.1")
    settings = FarmSettings(data_dir=tmp_path, webhook_secret=SECRET, webhook_allow_networks="127.0.0.0/8")
    # when
    outcome = deliver_once(job_id, sessions, settings)
    # then: delivered to the address that was checked, with the URL's name in the Host header
    [request] = receiver.on("/in")
    assert outcome.state == DeliveryState.DELIVERED
    assert request.headers["Host"] == f"hooks.internal.example:{port}"


def test_receiver_answer_body_is_never_shown_to_the_tenant(
    sessions: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.bodies["/leaky"] = b"redis_version:7.0.15 internal-secret-token"
    job_id = _pending(sessions, receiver.fail_first("/leaky", 500))
    settings = FarmSettings(data_dir=tmp_path, webhook_secret=SECRET, webhook_allow_networks="127.0.0.0/8")
    deliver_once(job_id, sessions, settings)
    row = _delivery(sessions, job_id)
    assert row.last_status_code == 500 and row.last_error == "HTTP 500 Internal Server Error"


def test_one_attempt_is_capped_in_total_time(
    sessions: sessionmaker[Session], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.delays["/slow"] = 3.0
    job_id = _pending(sessions, receiver.url + "/slow")
    settings = FarmSettings(
        data_dir=tmp_path, webhook_secret=SECRET, webhook_allow_networks="127.0.0.0/8", webhook_timeout_seconds=0.5
    )
    started = time.monotonic()
    outcome = deliver_once(job_id, sessions, settings)
    took = time.monotonic() - started
    row = _delivery(sessions, job_id)
    assert took < 1.5 and outcome.state == DeliveryState.PENDING
    assert row.last_error == "no answer within 0.5 s"
