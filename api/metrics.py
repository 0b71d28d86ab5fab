"""Prometheus metrics, read at scrape time from SQL (jobs, images, workers, webhooks) and Redis (queues).

Workers report through their rows (state, heartbeat, GPU memory); the API aggregates, so one scrape of
any API replica sees the whole farm, and nothing is lost when a process restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from control.leader import LeaderLease
from core.queues import DEFAULT_PRECISION
from models import DeliveryState, Image, Job, JobStatus, WebhookDelivery, Worker, WorkerState
from models.backlog import required_capability
from models.base import utcnow
from models.jobs import MASTER, Lane
from models.workers import shown_state

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
GPU_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
MIB = 2**20
# kombu's Redis transport keeps messages with a priority in sub-lists named queue + "\x06\x16" + step.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
# Failure reasons from the error text, first match wins; low-cardinality labels for alerting.
FAILURE_REASONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gave_up", ("gave up after%",)),  # dead: past the attempt cap, whatever the last error was
    ("time_limit", ("%time limit%",)),
    ("out_of_memory", ("%out of memory%",)),
    ("bad_output", ("%nan or infinite%", "%all black%")),
    ("prompt_too_long", ("%tokens with the chat template%",)),
    ("worker_lost", ("%went offline%", "%workerlost%", "%worker lost%")),
    ("worker_error", ("worker error%",)),
)


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    # SQLite keeps datetimes as text; julianday() reads them as days.
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def failure_reason() -> ColumnElement:
    error = func.lower(func.coalesce(Job.error, ""))
    whens = [(error.like(p), reason) for reason, patterns in FAILURE_REASONS for p in patterns]
    return case(*whens, else_="other")


class FarmCollector(Collector):
    def __init__(
        self, sessions: sessionmaker[Session], redis_url: str, queues: Sequence[str], offline_after: float
    ) -> None:
        self.sessions, self.redis_url, self.queues, self.offline_after = sessions, redis_url, queues, offline_after

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as s:
            yield from self._jobs(s)
            yield from self._backlog(s)
            yield from self._workers(s)
            yield self._webhooks(s)
        yield from self._queues()

    def _jobs(self, s: Session) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("zfarm_jobs", "Jobs by status.", labels=["status"])
        counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))
        yield jobs
        per_rendition = dict(s.execute(select(Image.rendition, func.count()).group_by(Image.rendition)).all())
        masters = per_rendition.pop(MASTER, 0)
        images = CounterMetricFamily("zfarm_images_rendered", "Images rendered and stored.")
        images.add_metric([], masters)
        yield images
        renditions = CounterMetricFamily("zfarm_renditions_made", "Renditions made on workers from rendered images.")
        renditions.add_metric([], sum(per_rendition.values()))
        yield renditions
        dialect = s.get_bind().dialect.name
        succeeded = Job.status == JobStatus.SUCCEEDED
        yield self._histogram(
            s,
            "zfarm_job_latency_seconds",
            "Seconds from submit to finish, succeeded jobs.",
            seconds_between(dialect, Job.created_at, Job.finished_at),
            LATENCY_BUCKETS,
            succeeded,
        )
        yield self._histogram(
            s, "zfarm_job_gpu_seconds", "Render seconds on the worker, succeeded jobs.", Job.gpu_seconds, GPU_BUCKETS
        )
        failures = CounterMetricFamily("zfarm_job_failures", "Failed and dead jobs by reason.", labels=["reason"])
        reason = failure_reason()
        failed = Job.status.in_([JobStatus.FAILED, JobStatus.DEAD])
        for label, n in s.execute(select(reason, func.count()).where(failed).group_by(reason)).all():
            failures.add_metric([label], n)
        yield failures

    def _backlog(self, s: Session) -> Iterator[Metric]:
        """The work waiting for a GPU, from SQL. Redis holds only a few batch ids at a time (the dispatcher feeds
        them in by turns), so its queue depth is no measure of the backlog: these are."""
        jobs = GaugeMetricFamily(
            "zfarm_backlog_jobs", "Queued jobs waiting for a worker, by lane and required capability.",
            labels=["lane", "requires"],
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            "zfarm_backlog_oldest_seconds",
            "Age of the oldest queued job, by lane (0 when none waits).",
            labels=["lane"],
        )
        requires = required_capability()
        queued = select(Job.lane, requires, func.count(), func.min(Job.created_at)).where(
            Job.status == JobStatus.QUEUED
        )
        rows = s.execute(queued.group_by(Job.lane, requires)).all()
        now, first = utcnow(), dict[str, Any]()
        for lane, need, count, created in rows:
            jobs.add_metric([lane, need], count)
            first[lane] = min(created, first.get(lane, created))
        for lane in Lane:
            if lane.value not in {row[0] for row in rows}:
                jobs.add_metric([lane.value, DEFAULT_PRECISION], 0)
            age = (now - first[lane.value]).total_seconds() if lane.value in first else 0.0
            oldest.add_metric([lane.value], max(0.0, age))
        yield jobs
        yield oldest

    def _histogram(
        self,
        s: Session,
        name: str,
        doc: str,
        value: ColumnElement[Any] | InstrumentedAttribute[Any],
        buckets: Sequence[float],
        *where: ColumnElement[bool],
    ) -> HistogramMetricFamily:
        columns = [func.sum(case((value <= b, 1), else_=0)) for b in buckets]
        row = s.execute(select(*columns, func.count(value), func.sum(value)).where(*where)).one()
        *cumulative, count, total = row
        pairs = [(str(float(b)), int(c or 0)) for b, c in zip(buckets, cumulative, strict=True)]
        pairs.append(("+Inf", int(count or 0)))
        return HistogramMetricFamily(name, doc, buckets=pairs, sum_value=float(total or 0.0))

    def _workers(self, s: Session) -> Iterator[Metric]:
        stale = utcnow() - timedelta(seconds=self.offline_after)
        state = shown_state(self.offline_after)
        by_state: dict[str, int] = dict(s.execute(select(state, func.count()).group_by(state)).all())
        workers = GaugeMetricFamily(
            "zfarm_workers", "Workers by state (offline: no heartbeat; failed: could not start).", labels=["state"]
        )
        for st in WorkerState:
            workers.add_metric([st.value], by_state.get(st.value, 0))
        yield workers
        used = GaugeMetricFamily(
            "zfarm_worker_gpu_memory_used_bytes", "GPU memory in use, per live worker.", labels=["worker", "gpu"]
        )
        total = GaugeMetricFamily(
            "zfarm_worker_gpu_memory_total_bytes", "GPU memory of the card, per live worker.", labels=["worker", "gpu"]
        )
        live = s.scalars(select(Worker).where(Worker.last_heartbeat >= stale).order_by(Worker.name))
        for w in live:
            labels = [w.name, w.gpu_name or w.device]
            if w.gpu_memory_used_mib is not None:
                used.add_metric(labels, w.gpu_memory_used_mib * MIB)
            if w.gpu_memory_total_mib is not None:
                total.add_metric(labels, w.gpu_memory_total_mib * MIB)
        yield used
        yield total

    def _webhooks(self, s: Session) -> Metric:
        deliveries = GaugeMetricFamily("zfarm_webhook_deliveries", "Webhook deliveries by state.", labels=["state"])
        counts = dict(s.execute(select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)).all())
        for st in DeliveryState:
            deliveries.add_metric([st.value], counts.get(st.value, 0))
        return deliveries

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("zfarm_queue_depth", "Messages waiting in each Redis queue.", labels=["queue"])
        up = GaugeMetricFamily("zfarm_broker_up", "1 when Redis answered this scrape.")
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            for queue in self.queues:
                depth.add_metric(
                    [queue], sum(int(cast(int, client.llen(queue + suffix))) for suffix in PRIORITY_SUFFIXES)
                )
            up.add_metric([], 1)
        except redis.RedisError as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0)
        finally:
            client.close()
        yield depth
        yield up


class LeaderCollector(Collector):
    """Whether this replica runs the control loops now, and how often that changed (one leader at a time)."""

    def __init__(self, lease: LeaderLease) -> None:
        self.lease = lease

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "zfarm_control_leader",
            "1 while this API replica holds the farm's lease and runs the dispatcher, reconciler and webhook sweep",
            value=1 if self.lease.is_leader() else 0,
        )
        changes = CounterMetricFamily(
            "zfarm_control_leader_changes", "Times this replica became or stopped being leader", labels=["change"]
        )
        changes.add_metric(["became"], self.lease.became)
        changes.add_metric(["stepped_down"], self.lease.stepped_down)
        yield changes
