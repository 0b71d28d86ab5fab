"""One leader per farm for the background loops (bulk dispatcher, reconciler, webhook sweep).

Every `zfarm api` replica runs the loops' threads, but a round runs only in the replica that holds the lease:
a Redis key (`zfarm:control:leader:<queue>`, one farm = one queue name in one Redis) set with SET NX PX and a
random token, renewed every `renew_every` seconds by compare-and-extend (redis-py's `Lock`: its `reacquire`
extends the key only while it still holds this token, in one Lua script). A replica that dies (SIGKILL, host
lost) stops renewing; its key expires after `ttl` seconds and the next replica to try takes it. A replica that
stops cleanly releases the key, so the next one takes over within one renewal.

Why Redis and not a PostgreSQL advisory lock: every process of the farm already needs Redis, while the database
may be SQLite (one host); an advisory lock lives as long as one pooled connection, which a pool may recycle.
Why leader in the API rather than a separate `zfarm control` process: nothing more to deploy, and any replica
takes over; the loops are light (a few queries a second).

A replica believes it leads only until `ttl - margin` after the start of its last successful renewal (its own
monotonic clock): by then the key it set has not yet expired, so two replicas never both believe it, unless
Redis itself lost the key (a restart without the last second of its append-only file). Even then the loops
stay correct (each change of a job is a compare-and-set in models/lifecycle.py, each webhook delivery is taken
once in models/deliveries.py, the dispatcher holds a Redis lock per queue): the lease saves duplicate work and
makes the counters honest; it is not what keeps jobs exactly-once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis
from redis.exceptions import LockError

log = logging.getLogger(__name__)


def lease_key(queue: str) -> str:
    return f"zfarm:control:leader:{queue}"


@dataclass
class LeaderLease:
    redis_url: str
    queue: str
    ttl: float = 5.0
    renew_every: float = 1.0
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    became: int = 0  # times this process became leader
    stepped_down: int = 0  # times it stopped being leader
    _valid_until: float = 0.0
    _leading: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.renew_every < self.ttl:
            raise ValueError(f"renew_every={self.renew_every}: must be above 0 and below ttl={self.ttl}")
        # A slow Redis must not hold a renewal past the lease itself.
        self._redis = redis.Redis.from_url(
            self.redis_url, socket_timeout=self.renew_every, socket_connect_timeout=self.renew_every
        )
        self._lock = self._redis.lock(lease_key(self.queue), timeout=self.ttl, blocking=False, thread_local=False)
        self._guard = threading.Lock()
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-lease", daemon=True)

    def is_leader(self) -> bool:
        return self._leading and time.monotonic() < self._valid_until

    def holder(self) -> str | None:
        """The token of whichever replica holds the lease now (for logs and tests)."""
        try:
            value = self._redis.get(lease_key(self.queue))
        except redis.RedisError:
            return None
        return value.decode() if isinstance(value, bytes) else None

    def start(self) -> None:
        self.renew()  # a single replica leads from its first second, not after one renewal period
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self._thread.join(timeout=self.ttl)
        with self._guard:
            if self._leading:
                # The next replica takes over at its next try, not after the ttl.
                with contextlib.suppress(LockError, redis.RedisError):
                    self._lock.release()
                self._set(False)
        self._redis.close()

    def renew(self) -> bool:
        """One try: take the lease if free, extend it if ours; returns whether this process leads now."""
        with self._guard:
            started = time.monotonic()
            try:
                if self._leading:
                    ok = bool(self._lock.reacquire())
                else:
                    ok = bool(self._lock.acquire(blocking=False, token=self.identity))
            except LockError:
                ok = False  # it expired and another replica holds it now
                self._valid_until = 0.0
            except redis.RedisError as exc:
                # Redis unreachable: the key we set is still valid until _valid_until; after that, step down.
                log.warning("leader lease %s: Redis unreachable (%s)", self.queue, exc)
                self._set(self._leading and time.monotonic() < self._valid_until)
                return self.is_leader()
            if ok:
                self._valid_until = started + self.ttl - self.renew_every
            self._set(ok)
            return ok

    def _set(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self.became += 1
            log.info("control loops: %s became leader of farm %s (lease %.1f s)", self.identity, self.queue, self.ttl)
        else:
            self.stepped_down += 1
            log.info("control loops: %s stopped being leader of farm %s", self.identity, self.queue)

    def _run(self) -> None:
        while not self.stopped.wait(self.renew_every):
            self.renew()


def always() -> bool:
    """The gate of a loop that runs without a lease (tests that drive one loop alone)."""
    return True
