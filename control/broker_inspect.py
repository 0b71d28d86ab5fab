"""Which job ids Redis holds right now: waiting in a queue or delivered and not yet acknowledged."""

from __future__ import annotations

import base64
import json
import time
from typing import cast

import redis

# kombu's Redis transport keeps delivered-but-unacked messages in this hash, with delivery times in the zset.
UNACKED_HASH = "unacked"
UNACKED_INDEX = "unacked_index"


def _job_id(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
            message = message[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def job_ids_in_broker(client: redis.Redis, queue: str, delivered_within: float) -> set[str]:
    """Ids waiting in the queue, or delivered less than `delivered_within` seconds ago and not yet acked.

    A message delivered longer ago whose job is still queued went to a consumer that died before it
    claimed the job; Redis would hand it out again only after the visibility timeout (hours), so such a
    message counts as lost.
    """
    ids: set[str] = set()
    # The queue and any priority sub-lists kombu made for it share its name as a prefix.
    for key in client.scan_iter(match=f"{queue}*", count=100):
        if client.type(key) in (b"list", "list"):
            ids.update(i for i in map(_job_id, cast(list[bytes], client.lrange(key, 0, -1))) if i)
    recent = cast(list[bytes], client.zrangebyscore(UNACKED_INDEX, time.time() - delivered_within, "+inf"))
    if recent:
        ids.update(i for i in map(_job_id, cast(list[bytes | None], client.hmget(UNACKED_HASH, recent))) if i)
    return ids
