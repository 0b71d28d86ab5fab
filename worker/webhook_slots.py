"""Per-tenant turns in the webhook senders: at most N deliveries of one tenant in flight, farm-wide.

Kept in Redis (one sorted set per tenant, member = delivery id, score = when the slot lapses) so every
sender process shares the count, and a sender that dies mid-delivery frees its slot when the score passes.
A delivery that finds its tenant's slots taken is not sent now; its task comes back shortly without holding
a thread, so the threads stay free for other tenants' receivers.
"""

from __future__ import annotations

import time

import redis

KEY_PREFIX = "zfarm:webhook-slots:"
# Drop lapsed slots, then take one if fewer than the limit are held. Atomic: senders race here.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[3]) - tonumber(ARGV[1])) * 1000) + 1000)
  return 1
end
return 0
"""


class TenantSlots:
    def __init__(self, redis_url: str, limit: int, hold_seconds: float) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self.limit = limit
        self.hold_seconds = hold_seconds

    def acquire(self, tenant: str | None, delivery_id: str) -> bool:
        now = time.time()
        key = KEY_PREFIX + (tenant or "-")
        return bool(self._acquire(keys=[key], args=[now, self.limit, now + self.hold_seconds, delivery_id]))

    def release(self, tenant: str | None, delivery_id: str) -> None:
        self._redis.zrem(KEY_PREFIX + (tenant or "-"), delivery_id)

    def close(self) -> None:
        self._redis.close()
