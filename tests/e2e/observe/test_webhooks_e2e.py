"""Webhooks through the whole farm: job ends -> webhooks queue -> `zfarm webhooks` -> a local receiver."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.observe.farm import WEBHOOK_SECRET, ObservedFarm
from tests.farm_helpers import wait_for
from tests.http_servers import Receiver, webhook_receiver
from zfarm.webhook_signing import SIGNATURE_HEADER, SignatureError, verify

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


def _webhook(url: str, job_id: str, state: str) -> dict:
    def settled() -> dict | None:
        job = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        return job if job["webhook"]["state"] == state else None

    return wait_for(settled, 60, f"webhook of {job_id} to be {state}", interval=0.2)


def test_finished_job_posts_a_signed_payload_whose_image_links_work(farm: ObservedFarm, receiver: Receiver) -> None:
    # given
    target = receiver.url + "/hooks/ok"
    body = {"prompt": "a felt hat", "width": 256, "height": 256, "seed": 3, "callback_url": target}
    job = httpx.post(f"{farm.url}/v1/jobs", json=body).json()
    assert job["callback_url"] == target and job["webhook"]["state"] == "waiting"
    # when
    final = _webhook(farm.url, job["id"], "delivered")
    # then: one request, signed over the exact bytes, with the job's record and working image links
    [request] = receiver.on("/hooks/ok")
    verify(WEBHOOK_SECRET, request.headers[SIGNATURE_HEADER], request.body)
    with pytest.raises(SignatureError):
        verify("another-secret-0123456789", request.headers[SIGNATURE_HEADER], request.body)
    payload = request.json()
    assert payload["event"] == "job.finished" == request.headers["X-Zfarm-Event"]
    assert payload["delivery_id"] == request.headers["X-Zfarm-Delivery"] and payload["attempt"] == 1
    assert payload["job"]["id"] == job["id"] and payload["job"]["status"] == "succeeded"
    assert payload["job"]["test_model_noise"] is True
    [image] = payload["job"]["images"]
    assert hashlib.sha256(httpx.get(image["url"]).content).hexdigest() == image["sha256"]
    assert final["webhook"]["attempts"] == 1 and final["webhook"]["last_status_code"] == 200


def test_failing_receiver_is_retried_with_backoff_until_it_answers(farm: ObservedFarm, receiver: Receiver) -> None:
    # given: the receiver answers 500, then 503, then 200
    target = receiver.fail_first("/hooks/flaky", 500, 503)
    body = {"prompt": "a jute rug", "width": 256, "height": 256, "callback_url": target}
    # when
    job = httpx.post(f"{farm.url}/v1/jobs", json=body).json()
    final = _webhook(farm.url, job["id"], "delivered")
    # then: three attempts with growing gaps (backoff base 0.2 s in this farm: 0.2 s, then 0.4 s)
    attempts = receiver.on("/hooks/flaky")
    assert [r.json()["attempt"] for r in attempts] == [1, 2, 3]
    assert len({r.headers["X-Zfarm-Delivery"] for r in attempts}) == 1
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    assert final["webhook"]["attempts"] == 3 and final["webhook"]["last_error"] is None


def test_job_canceled_before_it_ran_still_notifies(farm: ObservedFarm, receiver: Receiver) -> None:
    # given: the worker is busy, so the second job waits in the queue
    busy = httpx.post(f"{farm.url}/v1/jobs", json={"prompt": "busy", "width": 1024, "height": 1024}).json()
    target = receiver.url + "/hooks/canceled"
    queued = httpx.post(
        f"{farm.url}/v1/jobs", json={"prompt": "never", "width": 256, "height": 256, "callback_url": target}
    ).json()
    # when
    httpx.delete(f"{farm.url}/v1/jobs/{queued['id']}")
    _webhook(farm.url, queued["id"], "delivered")
    # then
    [request] = receiver.on("/hooks/canceled")
    assert request.json()["job"]["status"] == "canceled" and request.json()["job"]["images"] == []
    wait_for(lambda: httpx.get(f"{farm.url}/v1/jobs/{busy['id']}").json()["status"] == "succeeded", 60, "busy")


def test_finished_batch_posts_one_signed_batch_payload_with_working_links(
    farm: ObservedFarm, receiver: Receiver
) -> None:
    # given: a two-row catalog with a batch webhook
    target = receiver.url + "/hooks/batch"
    rows = [{"sku": "HAT-1", "product": "felt hat"}, {"sku": "HAT-2", "product": "straw hat"}]
    body = {
        "template": "studio photo of a {product}",
        "rows": rows,
        "defaults": {"width": 256, "height": 256, "steps": 2},
        "callback_url": target,
    }
    created = httpx.post(f"{farm.url}/v1/batches", json=body)
    assert created.status_code == 202, created.text
    batch_url = created.json()["url"]

    # when: both jobs run on the real worker and the batch ends
    def delivered() -> dict | None:
        batch = httpx.get(batch_url).json()
        return batch if batch["webhook"] and batch["webhook"]["state"] == "delivered" else None

    final = wait_for(delivered, 120, "the batch webhook to be delivered", interval=0.3)
    # then: exactly one request for the batch, signed, sent after both jobs had ended
    [request] = receiver.on("/hooks/batch")
    verify(WEBHOOK_SECRET, request.headers[SIGNATURE_HEADER], request.body)
    payload = request.json()
    assert payload["event"] == "batch.finished" == request.headers["X-Zfarm-Event"]
    batch = payload["batch"]
    assert batch["id"] == final["id"] and batch["status"] == "succeeded"
    assert batch["counts"]["succeeded"] == 2 and batch["images_done"] == 2 and batch["not_succeeded"] == []
    manifest = httpx.get(batch["manifest_url"])
    assert manifest.status_code == 200 and "HAT-1" in manifest.text and "HAT-2" in manifest.text
    assert final["webhook"]["attempts"] == 1 and final["callback_url"] == target
