"""A worker rings the dispatcher's doorbell (broker_config/bulk_signal.py) as it takes a bulk id.

`task_received` fires in the worker's consumer (the parent process) when a message has left Redis, before the job
runs, whatever the job then comes to (a skipped duplicate or a canceled row frees a place in the queue too). With
prefetch 1 and late acks that is right after the previous job ended, so the dispatcher refills the queue while
this job renders. The message's routing key is the queue it came from: the tier's bulk queue or this worker's
own (control/affinity.py); interactive and webhook messages ring nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import task_received

from broker_config import bulk_signal
from core.queues import bulk_queue_name, size_queue
from core.settings import get_settings

log = logging.getLogger(__name__)
_client: redis.Redis | None = None


def bulk_tier_of(routing_key: str, bulk_queue: str) -> str | None:
    """The tier's bulk queue when `routing_key` is it, a worker's own queue under it or the tier's large bulk queue
    (core/queues.py: one dispatcher round fills both), else None."""
    large = bulk_queue_name(size_queue(bulk_queue.removesuffix(".bulk"), large=True))
    ours = routing_key in (bulk_queue, large) or routing_key.startswith(f"{bulk_queue}@")
    return bulk_queue if ours else None


@task_received.connect
def _bulk_id_taken(request: Any = None, **_: object) -> None:
    global _client
    settings = get_settings()
    routing_key = str(((request.delivery_info if request is not None else None) or {}).get("routing_key") or "")
    tier = bulk_tier_of(routing_key, settings.worker_queues[1])
    if tier is None:
        return
    try:
        _client = _client or redis.Redis.from_url(settings.resolved_redis_url, socket_timeout=5)
        bulk_signal.ring(_client, settings.queue, tier)
    except redis.RedisError as exc:  # the dispatcher's timer refills the queue all the same
        log.warning("could not ring the bulk dispatcher: %s", exc)
