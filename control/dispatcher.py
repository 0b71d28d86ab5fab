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

Every API process runs one; only the farm's leader (control/leader.py) runs its rounds, and a Redis lock per
queue keeps even two would-be leaders from filling one queue at once. Each precision tier (core/queues.py)
has its own bulk queue, filled to its own depth from its own rows: fp8 rows never wait behind bf16 rows for a
worker that would not take them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import redis
from sqlalchemy import ColumnElement, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from control.affinity import Affinity
from control.enqueue import Enqueuer
from control.leader import always
from core.queues import DEFAULT_PRECISION, PRECISIONS
from models import Batch, Job, JobStatus, Lane, Worker
from models.base import utcnow
from models.db import transaction
from models.workers import is_live, live_max_pixels

log = logging.getLogger(__name__)
MIN_DEPTH = 2


@dataclass
class Dispatcher:
    sessions: sessionmaker[Session]
    enqueuer: Enqueuer
    redis_url: str
    depth: int | None = None  # None: two per live worker, at least MIN_DEPTH
    offline_after: float = 30.0

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(self.redis_url)
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

    def top_up(self) -> int:
        """One round for each precision tier (each has its own bulk queue and workers): how many ids it sent."""
        return sum(self._top_up(precision) for precision in PRECISIONS)

    def _top_up(self, precision: str) -> int:
        queue = self.enqueuer.queue_for(Lane.BULK, precision)
        lock = self.redis.lock(f"zfarm:dispatcher:{queue}", timeout=30, blocking=False)
        if not lock.acquire(blocking=False):
            return 0  # another API process is dispatching right now
        try:
            # Messages without a priority sit in the plain list; the farm never sets one.
            affinity = self.affinities[precision]
            affinity.drain_offline()
            large = self.enqueuer.queue_for(Lane.BULK, precision, large=True)  # images only large cards take
            waiting = (
                int(cast(int, self.redis.llen(queue))) + int(cast(int, self.redis.llen(large))) + affinity.waiting()
            )
            missing = self.target_depth(precision) - waiting
            return self._dispatch(missing, precision) if missing > 0 else 0
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("dispatcher lock expired before its round ended")

    def target_depth(self, precision: str = DEFAULT_PRECISION) -> int:
        if self.depth is not None:
            return self.depth
        # A worker that has not said its precision yet (an older row) runs the default one.
        tier = Worker.precision == precision
        if precision == DEFAULT_PRECISION:
            tier = or_(tier, Worker.precision.is_(None))
        with self.sessions() as s:
            live = s.scalar(select(func.count()).select_from(Worker).where(is_live(self.offline_after), tier))
        return max(MIN_DEPTH, 2 * int(live or 0))

    def fits(self, s: Session, precision: str) -> ColumnElement[bool]:
        """Jobs some live worker of the tier can take: no larger than its largest card's budget (core/capability.py).
        With no live worker, jobs any card takes; a larger one waits in SQL (its record says why: api/waiting.py)."""
        budget = live_max_pixels(s, self.offline_after, self.enqueuer.large_pixels).get(precision)
        return Job.width * Job.height <= (budget or self.enqueuer.large_pixels)

    def _dispatch(self, count: int, precision: str = DEFAULT_PRECISION) -> int:
        with self.sessions() as s:
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
            return 0
        affinity = self.affinities[precision]
        sent: list[str] = []
        for queue, ids in affinity.route(picks).items():
            own = None if queue == affinity.bulk_queue else queue  # a worker's own queue, else the tier's
            sent.extend(self.enqueuer.send(ids, Lane.BULK, queue=own))
        # The batch served last in this round goes last in the next one.
        now = utcnow()
        last_turn = {batch_id: position for position, batch_id in enumerate(served)}
        with transaction(self.sessions) as s:
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
    def __init__(self, dispatcher: Dispatcher, every: float = 0.5, leader: Callable[[], bool] = always) -> None:
        super().__init__(name="dispatcher", daemon=True)
        self.dispatcher, self.every = dispatcher, every
        self.leader = leader  # rounds run only in the replica that holds the farm's lease (control/leader.py)
        self.stopped = threading.Event()
        self._wake = threading.Event()

    def wake(self) -> None:
        """Run a round now (a batch was accepted or retried) instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()

    def run(self) -> None:
        while not self.stopped.is_set():
            self._wake.wait(self.every)
            self._wake.clear()
            if self.stopped.is_set():
                break
            if not self.leader():
                continue
            try:
                self.dispatcher.top_up()
            except Exception:  # the database or Redis may be restarting; the next round tries again
                log.exception("dispatcher round failed")
