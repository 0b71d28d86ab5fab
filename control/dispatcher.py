"""Feeds bulk (batch) jobs to Redis a few at a time, taking turns between batches.

Why not queue every batch job at once: one Redis list is first-in-first-out, so a 10,000-row batch
submitted first would hold the workers until its last row, and a batch submitted a minute later would
wait for all of it. Instead the rows wait in SQL, and this loop keeps the bulk queue only a few ids deep
(two per live worker by default), topping it up by turns, one job per turn, until the queue is full:
tenants take turns first (the tenant served least recently goes first), and within a tenant its
batches take turns (by `batches.dispatched_at`, never-served first). So a tenant with ten batches gets
the same share of the farm as a tenant with one, it keeps Redis small, and a batch's rows go in row order.
Interactive jobs never pass through here: they go straight to their own queue, which workers read
first (see broker_config/celeryconfig.py).

When: as soon as a worker takes a bulk id (it rings, broker_config/bulk_signal.py) or a batch is accepted, and on
a timer as the safety net. Topping up on the timer alone idled the workers: a worker drained its two ids faster
than the ticks refilled them (issue 17: 3.2 jobs/s at 56 % busy against 7 jobs/s for single jobs). On demand,
the next id is in Redis before the job the worker just took has ended, and Redis still holds only a few.

Every API process runs one; only the farm's leader (control/leader.py) runs its rounds, and a Redis lock per
queue keeps even two would-be leaders from filling one queue at once. Each precision tier (core/queues.py)
has its own bulk queue, filled to its own depth from its own rows: fp8 rows never wait behind bf16 rows for a
worker that would not take them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import redis
from sqlalchemy import ColumnElement, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from broker_config import bulk_signal
from control.affinity import Affinity, TierWorkers
from control.enqueue import Enqueuer
from control.leader import always
from core.queues import DEFAULT_PRECISION, PRECISIONS, is_large
from models import Batch, Job, JobStatus, Lane
from models.base import utcnow
from models.db import transaction
from models.workers import live_max_pixels

log = logging.getLogger(__name__)
MIN_DEPTH = 2
PER_WORKER = 2  # bulk ids waiting per live worker: one to take as its job ends, one while the round refills
LOCK_WAIT = 2.0  # seconds a round waits for another process's round on the same tier
SOCKET_TIMEOUT = 10.0
RING_WAIT_MAX = 1.0  # the loop checks for a stop at least this often


@dataclass
class Dispatcher:
    sessions: sessionmaker[Session]
    enqueuer: Enqueuer
    redis_url: str
    depth: int | None = None  # None: two per live worker, at least MIN_DEPTH
    offline_after: float = 30.0

    def __post_init__(self) -> None:
        self._targets: dict[str, int] = {}  # each tier's depth at its last round (`_half_full`)
        # A socket timeout longer than any BLPOP below: a Redis that hangs must not hang the loop for good.
        self.redis = redis.Redis.from_url(self.redis_url, socket_timeout=SOCKET_TIMEOUT)
        self.queue = self.enqueuer.queues[Lane.BULK]
        # Jobs with LoRA adapters go to a worker of their tier that holds them (control/affinity.py).
        self.affinities: dict[str, Affinity] = {
            p: Affinity(
                self.sessions,
                self.redis,
                self.enqueuer.queue_for(Lane.BULK, p),
                self.offline_after,
                p,
                self.enqueuer.large_pixels,
            )
            for p in PRECISIONS
        }

    def top_up(self, tiers: Iterable[str] = PRECISIONS, *, thorough: bool = True) -> int:
        """One round for each precision tier named (each has its own bulk queue and workers): how many ids it sent.

        `thorough` also drains the own queues of workers that went away: the timer's rounds do; the rounds a
        ring starts (a worker took an id) skip it, it changes nothing between two of them.
        """
        return sum(self._top_up(precision, thorough) for precision in tiers)

    def ring(self) -> None:
        """Asks the dispatching process, whichever it is, for a round of every tier now (raises redis.RedisError)."""
        bulk_signal.ring(self.redis, self.enqueuer.queue)

    def wait_for_ring(self, timeout: float) -> list[str] | None:
        """Blocks until a ring or `timeout` s: the precision tiers rung, None when none rang."""
        rung = bulk_signal.wait(self.redis, self.enqueuer.queue, timeout)
        if not rung:
            return None
        queues = {self.enqueuer.queue_for(Lane.BULK, p): p for p in PRECISIONS}
        return [p for q, p in queues.items() if bulk_signal.ANY_TIER in rung or q in rung]

    def _top_up(self, precision: str, thorough: bool = True) -> int:
        queue = self.enqueuer.queue_for(Lane.BULK, precision)
        large = self.enqueuer.queue_for(Lane.BULK, precision, large=True)  # images only large cards take
        if not thorough and self._half_full(precision, queue, large):
            return 0
        # Waits a moment for another API process's round to end rather than skip: a ring taken here must be
        # answered here, after that round, or the place it announced stays empty until the timer.
        lock = self.redis.lock(f"zfarm:dispatcher:{queue}", timeout=30, blocking_timeout=LOCK_WAIT)
        if not lock.acquire():
            return 0  # another API process has been dispatching for a while: its round covers this one
        try:
            affinity = self.affinities[precision]
            if thorough:
                affinity.drain_offline()
            # One reading for the whole round (workers, depth, batches, their next rows), then one transaction that
            # records what was sent: a round is a few statements, however many ids it sends.
            with self.sessions() as s:
                workers = affinity.workers(s)
                # Messages without a priority sit in the plain list; the farm never sets one.
                waiting = self._shared_depth(queue, large) + affinity.waiting(workers)
                self._targets[precision] = target = self.target_depth(precision, workers)
                missing = target - waiting
                if missing <= 0:
                    return 0
                routes, served = self._choose(s, missing, precision, workers)
            return self._send(routes, served)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("dispatcher lock expired before its round ended")

    def _half_full(self, precision: str, queue: str, large: str) -> bool:
        """A ring's round is skipped while the tier's shared queues hold more than half of the last round's target:
        with a round per id taken, the dispatcher's reading (several statements) cost as much CPU as a tiny-model
        job on a 2-core box; refilling from half full sends several ids a round and leaves each worker one to take.
        Two Redis lengths, no SQL; the timer's rounds always run (they see new workers and drain gone ones)."""
        target = self._targets.get(precision, 0)
        return target > 0 and self._shared_depth(queue, large) * 2 > target

    def _shared_depth(self, queue: str, large: str) -> int:
        """Ids waiting in a tier's shared bulk queues (plain and large images), not yet taken by a worker."""
        return int(cast(int, self.redis.llen(queue))) + int(cast(int, self.redis.llen(large)))

    def target_depth(self, precision: str = DEFAULT_PRECISION, workers: TierWorkers | None = None) -> int:
        if self.depth is not None:
            return self.depth
        # A worker that has not said its precision yet (an older row) runs the default one.
        live = (workers or self.affinities[precision].workers()).live
        return max(MIN_DEPTH, PER_WORKER * len(live))

    def fits(self, s: Session, precision: str) -> ColumnElement[bool]:
        """Jobs some live worker of the tier can take: no larger than its largest card's budget (core/capability.py).
        With no live worker, jobs any card takes; a larger one waits in SQL (its record says why: api/waiting.py)."""
        budget = live_max_pixels(s, self.offline_after, self.enqueuer.large_pixels).get(precision)
        return Job.width * Job.height <= (budget or self.enqueuer.large_pixels)

    def _choose(
        self, s: Session, count: int, precision: str, workers: TierWorkers
    ) -> tuple[dict[str, list[str]], list[str]]:
        """Up to `count` ids by turns, grouped by the queue each goes to; and the batch served at each turn."""
        fits = self.fits(s, precision)
        waiting = (
            select(Job.batch_id)
            .where(
                Job.lane == Lane.BULK,
                Job.status == JobStatus.QUEUED,
                Job.enqueued_at.is_(None),
                Job.precision == precision,
                fits,
            )
            .distinct()
        )
        rows = s.execute(
            select(Batch.id, Batch.tenant)
            .where(Batch.id.in_(waiting))
            .order_by(Batch.dispatched_at.asc().nulls_first(), Batch.created_at, Batch.id)
        ).all()
        order = [batch_id for batch_id, _ in rows]
        tenant_of = {batch_id: tenant or "" for batch_id, tenant in rows}
        heads = {batch_id: self._next_ids(s, batch_id, count, precision, fits) for batch_id in order}
        picks, served = take_turns(order, heads, count, tenant_of)
        if not picks:
            return {}, []
        return self._by_size(s, self.affinities[precision].route(picks, workers, s), precision), served

    def _by_size(self, s: Session, routes: dict[str, list[str]], precision: str) -> dict[str, list[str]]:
        """The tier's shared ids split by image size: those over the large budget go to the queue only large cards
        read (core/queues.py); a worker's own queue keeps what affinity chose (it checked the card's budget)."""
        shared = routes.pop(self.enqueuer.queue_for(Lane.BULK, precision), [])
        if not shared:
            return routes
        sizes = {
            r.id: (r.width, r.height)
            for r in s.execute(select(Job.id, Job.width, Job.height).where(Job.id.in_(shared)))
        }
        for large in (False, True):
            group = [i for i in shared if is_large(*sizes.get(i, (0, 0)), self.enqueuer.large_pixels) == large]
            if group:
                routes.setdefault(self.enqueuer.queue_for(Lane.BULK, precision, large=large), []).extend(group)
        return routes

    def _send(self, routes: dict[str, list[str]], served: list[str]) -> int:
        # Each to a worker's own queue or the tier's, named here: the Enqueuer need not look the tier up again.
        sent = [job_id for queue, ids in routes.items() for job_id in self.enqueuer.publish(ids, queue)]
        if not served:
            return 0
        # The batch served last in this round goes last in the next one.
        now = utcnow()
        last_turn = {batch_id: position for position, batch_id in enumerate(served)}
        with transaction(self.sessions) as s:
            self.enqueuer.mark_sent(s, sent)
            for batch_id, position in last_turn.items():
                s.execute(
                    update(Batch)
                    .where(Batch.id == batch_id)
                    .values(dispatched_at=now + timedelta(microseconds=position))
                )
        return len(sent)

    @staticmethod
    def _next_ids(
        s: Session,
        batch_id: str,
        count: int,
        precision: str = DEFAULT_PRECISION,
        fits: ColumnElement[bool] | None = None,
    ) -> list[str]:
        return list(
            s.scalars(
                select(Job.id)
                .where(
                    Job.batch_id == batch_id,
                    Job.status == JobStatus.QUEUED,
                    Job.enqueued_at.is_(None),
                    Job.precision == precision,
                    true() if fits is None else fits,
                )
                .order_by(Job.row_number)
                .limit(count)
            )
        )

    def close(self) -> None:
        self.redis.close()


def take_turns(
    order: list[str], heads: dict[str, list[str]], count: int, tenant_of: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Up to `count` ids, one per turn; returns the ids and the batch of each.

    `order` lists batches from least to most recently served. Tenants take turns, the one whose latest
    turn is oldest first (a tenant's place is that of its most recently served batch, so a new batch does
    not move its tenant ahead); within a tenant, its batches take turns in `order`. Without `tenant_of`
    every batch is its own tenant: plain round-robin between batches.
    """
    tenant_of = tenant_of or {batch_id: batch_id for batch_id in order}
    ids = {batch_id: deque(heads.get(batch_id, ())) for batch_id in order}
    batches_of: dict[str, deque[str]] = {}
    latest: dict[str, int] = {}
    for position, batch_id in enumerate(order):
        if ids[batch_id]:
            batches_of.setdefault(tenant_of[batch_id], deque()).append(batch_id)
        latest[tenant_of[batch_id]] = position
    tenants = sorted(batches_of, key=lambda tenant: latest[tenant])
    picks: list[str] = []
    served: list[str] = []
    while len(picks) < count and tenants:
        for tenant in list(tenants):
            if len(picks) == count:
                break
            batches = batches_of[tenant]
            batch_id = batches.popleft()
            picks.append(ids[batch_id].popleft())
            served.append(batch_id)
            if ids[batch_id]:
                batches.append(batch_id)  # its next turn comes after the tenant's other batches
            if not batches:
                tenants.remove(tenant)
    return picks, served


class DispatcherThread(threading.Thread):
    """Runs a round when a worker takes a bulk id or a batch arrives (a ring), and every `every` s regardless."""

    def __init__(self, dispatcher: Dispatcher, every: float = 0.5, leader: Callable[[], bool] = always) -> None:
        super().__init__(name="dispatcher", daemon=True)
        self.dispatcher, self.every = dispatcher, every
        self.leader = leader  # rounds run only in the replica that holds the farm's lease (control/leader.py)
        self.stopped = threading.Event()
        self._wake = threading.Event()

    def wake(self) -> None:
        """Run a round now (a batch was accepted or retried) instead of at the next tick.

        It rings rather than pokes this thread: with several API processes, the one dispatching hears it.
        """
        try:
            self.dispatcher.ring()
        except redis.RedisError:
            self._wake.set()  # Redis is away: this process's own loop, at least, runs a round

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()

    def run(self) -> None:
        next_timed = time.monotonic() + self.every
        while not self.stopped.is_set():
            tiers = self._wait(next_timed)
            if self.stopped.is_set():
                break
            timed = tiers is None
            if timed:
                next_timed = time.monotonic() + self.every
            if not self.leader():
                continue
            try:
                # The timer's round is thorough and covers every tier; a ring's covers the tiers it names.
                if tiers is None:
                    self.dispatcher.top_up()
                else:
                    self.dispatcher.top_up(tiers, thorough=False)
            except Exception:  # the database or Redis may be restarting; the next round tries again
                log.exception("dispatcher round failed")

    def _wait(self, next_timed: float) -> list[str] | None:
        """The tiers rung, or None when the timer is due (or this thread was woken directly)."""
        while not self.stopped.is_set():
            if self._wake.is_set():
                self._wake.clear()
                return None
            left = next_timed - time.monotonic()
            if left <= 0:
                return None
            try:
                rung = self.dispatcher.wait_for_ring(min(left, RING_WAIT_MAX))
            except redis.RedisError:  # Redis restarting: the timer's rounds go on, and they log the failure
                self._wake.wait(min(left, RING_WAIT_MAX))
                continue
            if rung:
                return rung
        return None
