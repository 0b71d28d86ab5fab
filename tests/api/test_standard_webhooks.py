"""Webhooks in the Standard Webhooks format, verified by the `standardwebhooks` library (issue 16, item 3)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from core.webhook_targets import parse_networks
from tests.http_servers import Receiver, webhook_receiver
from worker.webhooks import Attempt, post
from zfarm.webhook_signing import (
    SIGNATURE_HEADER,
    SignatureError,
    standard_headers,
    standard_secret,
    verify,
    verify_standard,
)

SECRET = "unit-test-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


def test_a_delivery_carries_standard_webhooks_headers_that_the_library_verifies(receiver: Receiver) -> None:
    # given
    body = json.dumps({"event": "job.finished", "job": {"id": "abc", "status": "succeeded"}}).encode()
    attempt = Attempt("d3l1v3ry", receiver.url + "/hook", body, 2, "job.finished")
    # when
    answer = post(attempt, SECRET, timeout=5, allow=parse_networks("127.0.0.0/8"))
    # then: the library, given the secret as whsec_..., or as its bytes, accepts it ...
    assert answer.status_code == 200, answer
    [request] = receiver.on("/hook")
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["webhook-id"] == "d3l1v3ry"
    assert Webhook(standard_secret(SECRET)).verify(request.body, headers) == json.loads(body)
    assert Webhook(SECRET.encode()).verify(request.body, headers) == json.loads(body)
    verify_standard(SECRET, headers, request.body)
    # ... and the first format still comes beside it (for one release), signed at the same time
    verify(SECRET, headers[SIGNATURE_HEADER.lower()], request.body)
    assert headers[SIGNATURE_HEADER.lower()].startswith(f"t={headers['webhook-timestamp']},")
    # a changed body or another secret is refused by the library and by ours
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret(SECRET)).verify(request.body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(standard_secret("another-secret-0123456789")).verify(request.body, headers)
    with pytest.raises(SignatureError, match="does not match"):
        verify_standard(SECRET, headers, request.body + b" ")


def test_signatures_made_by_the_library_verify_with_ours_and_old_ones_are_refused() -> None:
    body = b'{"event":"batch.finished"}'
    hook = Webhook(standard_secret(SECRET))
    signed = hook.sign("msg_1", datetime.fromtimestamp(1_700_000_000, UTC), body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": signed}
    assert standard_headers(SECRET, "msg_1", body, 1_700_000_000)["webhook-signature"] == signed
    verify_standard(SECRET, headers, body, now=1_700_000_010)
    with pytest.raises(SignatureError, match="away from now"):
        verify_standard(SECRET, headers, body, now=1_700_000_000 + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify_standard(SECRET, {"webhook-id": "msg_1"}, body)
    assert base64.b64decode(standard_secret(SECRET).removeprefix("whsec_")) == SECRET.encode()
