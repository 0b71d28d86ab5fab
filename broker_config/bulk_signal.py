"""The bulk lane's doorbell: a Redis list that says "a bulk id left its queue", so the dispatcher refills at once.

The dispatcher keeps only a few batch ids in Redis (fairness and cancel are decided in SQL, control/dispatcher.py).
Topped up on a timer alone, a fast worker drains those few and then waits for the next tick: one worker ran batch
rows at 3.2 jobs/s, busy 56 % of the time, against 7 jobs/s for single jobs (issue 17). So a worker rings as it
takes a bulk id (worker/bulk_taken.py, in its consumer, before the job starts) and the API rings when it accepts a
batch; the dispatcher blocks on the list (BLPOP) and runs a round as soon as one arrives. The timer stays as the
safety net: a lost ring (Redis restarting, no dispatcher alive) costs one tick, never a job.

A list rather than pub/sub: a ring sent while the dispatcher is mid-round waits for its next BLPOP instead of
being lost, and exactly one dispatcher takes it. Rings carry the tier's bulk queue name (`ANY_TIER` for all);
the list is capped and expires, so rings with no dispatcher to hear them never pile up.
"""

from __future__ import annotations

from typing import cast

import redis

ANY_TIER = "*"
_CAP = 256  # rings kept while no dispatcher reads them: one round answers any number of them
_TTL_SECONDS = 300


def signal_key(queue: str) -> str:
    """One doorbell per farm (its base queue name, ZFARM_QUEUE): farms sharing a Redis never wake each other."""
    return f"zfarm:bulk-taken:{queue}"


def ring(client: redis.Redis, queue: str, tier_queue: str = ANY_TIER) -> None:
    """Says that `tier_queue` (a tier's bulk queue) has room now; raises redis.RedisError when Redis is away."""
    key = signal_key(queue)
    pipe = client.pipeline(transaction=False)
    pipe.lpush(key, tier_queue)
    pipe.ltrim(key, 0, _CAP - 1)
    pipe.expire(key, _TTL_SECONDS)
    pipe.execute()


def wait(client: redis.Redis, queue: str, timeout: float) -> set[str]:
    """Blocks until a ring or `timeout` seconds; the tier queues rung since the last call (all rings taken).

    The rings are taken before the round that answers them reads the queues, so a ring that arrives during that
    round is still in the list for the next call: no wakeup is lost.
    """
    key = signal_key(queue)
    # BLPOP takes whole seconds on old servers and fractions since Redis 6; 0 would block forever.
    first = client.blpop([key], timeout=max(timeout, 0.01))
    if first is None:
        return set()
    pipe = client.pipeline(transaction=True)
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    rest, _ = pipe.execute()
    return {_text(item) for item in [cast(tuple[bytes, bytes], first)[1], *rest]}


def _text(item: bytes | str) -> str:
    return item.decode() if isinstance(item, bytes) else item
