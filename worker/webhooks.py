"""Webhook delivery: one signed POST per attempt, the outcome recorded on the delivery row. Plain functions.

Two events: `job.finished` (a job's record with its image links) and `batch.finished` (the batch's counts,
its manifest and archive links, and the keys that did not succeed). Delivery is at least once: a receiver
should use the X-Zfarm-Delivery header to drop repeats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from broker_config.celery_app import app
from broker_config.task_names import DELIVER_WEBHOOK
from core.settings import FarmSettings, get_settings
from core.webhook_targets import IPNetwork, Target, UnsafeTarget, target_for_sending
from models import Batch, DeliveryState, Job, JobStatus, WebhookDelivery
from models.base import utcnow
from models.batch_stats import batch_stats
from models.db import transaction
from models.deliveries import take_due
from models.records import Presign, job_record
from models.webhooks import MAX_BACKOFF_SECONDS
from worker.webhook_slots import TenantSlots
from zfarm.webhook_signing import SIGNATURE_HEADER, sign, standard_headers

log = logging.getLogger(__name__)
LEGACY_FIELDS = ("prompt", "negative_prompt", "width", "height", "steps", "seed")
MAX_LISTED_PROBLEMS = 100  # keys that did not succeed, listed in a batch payload; the manifest has them all


def backoff_seconds(attempt: int, base: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...): base, 2 base, 4 base, ... capped."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def job_payload(job: Job, base_url: str, presign: Presign | None = None) -> dict[str, Any]:
    """The job's record as GET /v1/jobs/{id} answers it, plus the top-level fields of the first payload
    format (prompt, negative_prompt, width, height, steps, seed), kept for receivers written against it."""
    record = job_record(job, base_url, presign)
    legacy = {name: record["parameters"][name] for name in LEGACY_FIELDS}
    return json.loads(json.dumps({**record, **legacy}, default=_iso))


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def batch_payload(s: Session, batch: Batch, base_url: str) -> dict[str, Any]:
    stats = batch_stats(s, batch.id)
    last_end = s.scalar(select(func.max(Job.finished_at)).where(Job.batch_id == batch.id))
    not_succeeded = s.execute(
        select(Job.item_key, Job.row_number, Job.status, Job.error, Job.id)
        .where(Job.batch_id == batch.id, Job.status != JobStatus.SUCCEEDED)
        .order_by(Job.row_number)
        .limit(MAX_LISTED_PROBLEMS)
    ).all()
    url = f"{base_url}/v1/batches/{batch.id}"
    return {
        "id": batch.id,
        "name": batch.name,
        "status": stats.state(batch),
        "rows": batch.rows,
        "counts": stats.counts,
        "images_done": stats.images_done,
        "jobs_reused": batch.jobs_reused,
        "gpu_seconds": stats.gpu_seconds,
        "created_at": batch.created_at.isoformat(),
        "finished_at": last_end.isoformat() if last_end else None,
        "url": url,
        "manifest_url": f"{url}/manifest.csv",
        "archive_url": f"{url}/archive.zip",
        "not_succeeded": [
            {"key": key, "row": row, "status": status, "error": error, "job_id": job_id}
            for key, row, status, error, job_id in not_succeeded
        ],
        "not_succeeded_truncated": stats.total - stats.counts.get(JobStatus.SUCCEEDED, 0) > len(not_succeeded),
    }


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    url: str
    body: bytes
    number: int
    event: str
    tenant: str | None = None


@dataclass(frozen=True)
class Outcome:
    state: str
    retry_in: float | None = None  # seconds until the next attempt, when there is one


@dataclass(frozen=True)
class Answer:
    """What one POST came to. `error` is None for a 2xx answer; `final` means no retry can help."""

    status_code: int | None
    error: str | None
    final: bool = False


DEFER_SECONDS = (1.0, 3.0)  # a delivery whose tenant has every slot taken comes back after this long


def deliver_once(
    delivery_id: str,
    sessions: sessionmaker[Session],
    settings: FarmSettings,
    slots: TenantSlots | None = None,
    presign: Presign | None = None,
) -> Outcome:
    """One attempt for a webhook delivery; says whether and when to try again.

    With `presign` the job's image links are signed at each attempt: a retried delivery carries fresh links."""
    if not settings.webhook_secret:
        raise RuntimeError("ZFARM_WEBHOOK_SECRET is not set: webhooks cannot be signed")
    attempt = _prepare(delivery_id, sessions, settings.resolved_public_url, presign)
    if attempt is None:
        return Outcome("skipped")
    if slots is not None and not slots.acquire(attempt.tenant, attempt.delivery_id):
        # Not an attempt: the receiver was not asked. The row stays pending; the task comes back.
        return Outcome("deferred", random.uniform(*DEFER_SECONDS))
    try:
        answer = post(attempt, settings.webhook_secret, settings.webhook_timeout_seconds, settings.webhook_allow)
    finally:
        if slots is not None:
            slots.release(attempt.tenant, attempt.delivery_id)
    max_attempts = attempt.number if answer.final else settings.webhook_max_attempts
    state = _record(sessions, attempt, answer.status_code, answer.error, max_attempts)
    if state == DeliveryState.PENDING:
        return Outcome(state, backoff_seconds(attempt.number, settings.webhook_backoff_seconds))
    if state == DeliveryState.FAILED:
        log.warning(
            "webhook %s (%s) failed after %d attempts: %s", delivery_id, attempt.event, attempt.number, answer.error
        )
    return Outcome(state)


def _prepare(
    delivery_id: str, sessions: sessionmaker[Session], base_url: str, presign: Presign | None = None
) -> Attempt | None:
    with transaction(sessions) as s:
        # Messages sent before batch webhooks existed carry the job id: both are accepted.
        row = s.scalar(
            select(WebhookDelivery)
            .where(or_(WebhookDelivery.id == delivery_id, WebhookDelivery.job_id == delivery_id))
            .with_for_update()
        )
        if row is None or row.state != DeliveryState.PENDING:
            return None  # delivered, failed, or not yet due: nothing to do for this message
        row.updated_at = utcnow()  # keeps the sweep from sending a second message while this one works
        number = row.attempts + 1
        body: dict[str, Any] = {
            "event": row.event,
            "delivery_id": row.id,
            "attempt": number,
            "sent_at": utcnow().isoformat(),
        }
        tenant = None
        if row.batch is not None:
            body["batch"] = batch_payload(s, row.batch, base_url)
            tenant = row.batch.tenant
        elif row.job is not None:
            body["job"] = job_payload(row.job, base_url, presign)
            tenant = row.job.tenant
        body_bytes = json.dumps(body, separators=(",", ":")).encode()
        return Attempt(row.id, row.url, body_bytes, number, row.event, tenant)


def post(attempt: Attempt, secret: str, timeout: float, allow: Sequence[IPNetwork] = ()) -> Answer:
    """One signed POST to a checked address, within `timeout` seconds in all (resolving included).

    The receiver's body is never read: what it says is not shown to the tenant (a tenant must not be able
    to read a service through the farm), only the status code and its standard reason.
    """
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "zfarm-webhooks/0.1",
        "X-Zfarm-Event": attempt.event,
        "X-Zfarm-Delivery": attempt.delivery_id,
        "X-Zfarm-Attempt": str(attempt.number),
        **standard_headers(secret, attempt.delivery_id, attempt.body, now := int(time.time())),
        SIGNATURE_HEADER: sign(secret, attempt.body, now),  # the first format: sent for one more release
    }
    deadline = time.monotonic() + timeout
    try:
        target = target_for_sending(attempt.url, allow, timeout)
    except UnsafeTarget as exc:
        return Answer(None, f"not sent: callback_url {exc}", final=True)
    except OSError as exc:
        return Answer(None, f"could not resolve the receiver's host: {exc}")
    left = max(deadline - time.monotonic(), 0.1)
    try:
        status_code = asyncio.run(asyncio.wait_for(_send(target, attempt.body, headers, left), left))
    except TimeoutError:
        return Answer(None, f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {str(exc)[:200]}")
    if 200 <= status_code < 300:
        return Answer(status_code, None)
    return Answer(status_code, f"HTTP {status_code} {httpx.codes.get_reason_phrase(status_code)}".rstrip())


async def _send(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    # Connect to the address that was checked, speak to the name: the Host header and the TLS server name
    # (which the certificate is checked against) stay the URL's, so no second DNS lookup can redirect it.
    url = target.url
    headers = {**headers, "Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout) as client:
        request = client.build_request(
            "POST", url.copy_with(host=target.address), content=body, headers=headers, extensions=extensions
        )
        response = await client.send(request, stream=True)
        await response.aclose()
        return response.status_code


def _record(
    sessions: sessionmaker[Session], attempt: Attempt, status_code: int | None, error: str | None, max_attempts: int
) -> str:
    with transaction(sessions) as s:
        row = s.get(WebhookDelivery, attempt.delivery_id)
        if row is None:
            return "missing"
        row.attempts, row.last_status_code, row.last_error = attempt.number, status_code, error
        row.updated_at = utcnow()
        if error is None:
            row.state, row.delivered_at = DeliveryState.DELIVERED, utcnow()
        elif attempt.number >= max_attempts:
            row.state = DeliveryState.FAILED
        return row.state


def notify_webhook(job_id: str, sessions: sessionmaker[Session]) -> None:
    """The fast path after a job ends: hand its webhook, and its batch's if that was the batch's last job,
    to the webhooks queue now, not at the next sweep."""
    try:
        with transaction(sessions) as s:
            due = take_due(s, job_id=job_id)
            batch_id = s.scalar(select(Job.batch_id).where(Job.id == job_id))
            if batch_id is not None:
                due += take_due(s, batch_id=batch_id)
        for delivery_id in due:
            app.send_task(DELIVER_WEBHOOK, args=[delivery_id], queue=get_settings().webhook_queue)
    except Exception:  # never fail a finished render over its notification; the API's sweep sends it later
        log.exception("could not hand the webhook of job %s to the queue", job_id)
