"""Batch jobs with LoRA adapters go to a worker that already holds them, so adapters are not swapped per image.

Each worker reads, after the interactive queue, its own bulk queue (`<bulk>@<worker>`) before the shared one
(`zfarm worker`'s queue order). When the dispatcher has chosen the next bulk jobs by turns (fairness is decided
there, as before), it sends a job whose adapters some live worker has in its slot (the `adapters` column the
worker keeps current) to that worker's own queue, at most DIRECT_DEPTH deep, the least filled holder first; every
other job goes to the shared queue as before. So a batch's jobs stay with the workers that took its first ones,
and two brands on two workers each stay put. A worker that goes offline has its own queue drained back to SQL
(`enqueued_at` cleared) for the dispatcher to send again; a duplicate message is skipped at the claim.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from control.broker_inspect import _job_id
from core.queues import DEFAULT_LARGE_PIXELS, DEFAULT_PRECISION, direct_queue_name
from models import Job, JobStatus, Worker
from models.base import utcnow
from models.db import transaction
from models.workers import NOT_SERVING

log = logging.getLogger(__name__)
DIRECT_DEPTH = 2  # ids waiting in one worker's own queue: one to run next, one behind it


@dataclass(frozen=True)
class TierWorkers:
    """One reading of a tier's worker rows, shared by the steps of a dispatcher round (one query, not four)."""

    live: dict[str, str | None] = field(default_factory=dict)  # live workers -> the signature in their slot
    gone: list[str] = field(default_factory=list)  # the tier's other workers: offline, failed or silent


@dataclass
class Affinity:
    sessions: sessionmaker[Session]
    redis: redis.Redis
    bulk_queue: str  # the bulk queue of one precision tier; its workers' own queues are named from it
    offline_after: float = 30.0
    precision: str = DEFAULT_PRECISION
    large_pixels: int = DEFAULT_LARGE_PIXELS  # the budget of a worker row that did not say its own

    def workers(self, session: Session | None = None) -> TierWorkers:
        """Live workers of this tier (a fresh heartbeat, a state that serves) and the tier's other workers."""
        stale = utcnow() - timedelta(seconds=self.offline_after)
        query = select(Worker.name, Worker.adapters, Worker.last_heartbeat, Worker.state, Worker.precision)
        if session is not None:
            rows = list(session.execute(query).all())
        else:
            with self.sessions() as s:
                rows = list(s.execute(query).all())
        rows = [r for r in rows if (r.precision or DEFAULT_PRECISION) == self.precision]
        live = {n: (a or {}).get("slot") for n, a, beat, st, _ in rows if beat >= stale and st not in NOT_SERVING}
        return TierWorkers(live, [name for name, *_ in rows if name not in live])

    def _length(self, worker: str) -> int:
        return int(cast(int, self.redis.llen(direct_queue_name(self.bulk_queue, worker))))

    def waiting(self, workers: TierWorkers | None = None) -> int:
        """Ids in the live workers' own queues: they count toward the bulk queue's depth."""
        live = (workers or self.workers()).live
        if not live:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for worker in live:
            pipe.llen(direct_queue_name(self.bulk_queue, worker))
        return sum(int(n) for n in pipe.execute())

    def route(
        self, ids: list[str], workers: TierWorkers | None = None, session: Session | None = None
    ) -> dict[str, list[str]]:
        """Ids by the queue to send them to, each list in the order given."""
        live = (workers or self.workers(session)).live
        holders = {w: sig for w, sig in live.items() if sig}
        out: dict[str, list[str]] = {}
        if not holders:
            return {self.bulk_queue: list(ids)}
        query = select(Job.id, Job.adapters, Job.width * Job.height).where(Job.id.in_(ids))
        # A holder whose card is too small for a job's images never gets it (core/capability.py).
        budgets = select(Worker.name, Worker.max_pixels).where(Worker.name.in_(holders))
        with contextlib.ExitStack() as stack:
            s = session if session is not None else stack.enter_context(self.sessions())
            rows = list(s.execute(query).tuples().all())
            budget = dict(s.execute(budgets).tuples().all())
        signatures = {job_id: (sig, pixels) for job_id, sig, pixels in rows}
        lengths = {w: self._length(w) for w in holders}
        for job_id in ids:
            wanted, pixels = signatures.get(job_id, (None, 0))
            room = [
                w
                for w, sig in holders.items()
                if wanted
                and sig == wanted
                and lengths[w] < DIRECT_DEPTH
                and pixels <= (budget.get(w) or self.large_pixels)
            ]
            if room:
                worker = min(room, key=lambda w: (lengths[w], w))
                lengths[worker] += 1
                out.setdefault(direct_queue_name(self.bulk_queue, worker), []).append(job_id)
            else:
                out.setdefault(self.bulk_queue, []).append(job_id)
        return out

    def drain_offline(self, workers: TierWorkers | None = None) -> int:
        """Ids left in the own queues of workers that went away go back to SQL to be sent again."""
        gone = (workers or self.workers()).gone
        drained: list[str] = []
        for worker in gone:
            key = direct_queue_name(self.bulk_queue, worker)
            pipe = self.redis.pipeline()
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            messages, _ = pipe.execute()
            drained.extend(i for i in map(_job_id, messages) if i)
        if drained:
            with transaction(self.sessions) as s:
                s.execute(
                    update(Job).where(Job.id.in_(drained), Job.status == JobStatus.QUEUED).values(enqueued_at=None)
                )
            log.info("drained %d job id(s) from the queues of offline workers", len(drained))
        return len(drained)
