from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ColumnElement, Float, Integer, String, and_, case, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow
from models.types import UTCDateTime


class WorkerState(StrEnum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    BUSY = "busy"
    OFFLINE = "offline"
    FAILED = "failed"  # could not start (its model did not load): takes no jobs; `error` says why


# States in which a worker takes no jobs, whatever its heartbeat says.
NOT_SERVING = (WorkerState.OFFLINE, WorkerState.FAILED)


class Worker(Base):
    """One row per worker process (one per GPU card); refreshed by its heartbeat."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    gpu_name: Mapped[str | None] = mapped_column(String(200), default=None)
    gpu_memory_total_mib: Mapped[int | None] = mapped_column(Integer, default=None)
    gpu_memory_used_mib: Mapped[int | None] = mapped_column(Integer, default=None)
    memory_policy: Mapped[str | None] = mapped_column(String(32), default=None)
    model_id: Mapped[str | None] = mapped_column(String(500), default=None)
    precision: Mapped[str | None] = mapped_column(String(8), default=None)  # the tier it runs; None before it said
    # The largest image its card takes (core/capability.py); None: an older row, taken to be the large budget.
    max_pixels: Mapped[int | None] = mapped_column(Integer, default=None)
    state: Mapped[str] = mapped_column(String(16), default=WorkerState.LOADING)
    current_job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    load_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    warmup_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # LoRA adapters it holds on the device: {"slot": signature in the pipeline or null, "held": [{name, sha256}]}
    adapters: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)


def stale_before(offline_after: float) -> datetime:
    return utcnow() - timedelta(seconds=offline_after)


def is_live(offline_after: float) -> ColumnElement[bool]:
    """A worker that can take jobs now: a fresh heartbeat and a state that serves."""
    return and_(Worker.last_heartbeat >= stale_before(offline_after), Worker.state.not_in(NOT_SERVING))


def shown_state(offline_after: float) -> ColumnElement[Any]:
    """The state people see: `failed` stays failed (with its reason); a stale heartbeat reads `offline`."""
    return case(
        (Worker.state == WorkerState.FAILED, WorkerState.FAILED.value),
        (Worker.last_heartbeat < stale_before(offline_after), WorkerState.OFFLINE.value),
        else_=Worker.state,
    )


def live_precisions(session: Session, offline_after_seconds: float) -> set[str]:
    """The precision tiers of the workers alive now (a row that has not said its tier yet runs bf16)."""
    rows = session.scalars(select(Worker.precision).where(is_live(offline_after_seconds)).distinct())
    return {precision or "bf16" for precision in rows}


def live_max_pixels(session: Session, offline_after_seconds: float, default: int) -> dict[str, int]:
    """Per precision tier, the largest image some live worker of it takes (`default` for rows that did not say)."""
    rows = session.execute(select(Worker.precision, Worker.max_pixels).where(is_live(offline_after_seconds))).all()
    out: dict[str, int] = {}
    for precision, pixels in rows:
        tier = precision or "bf16"
        out[tier] = max(out.get(tier, 0), pixels or default)
    return out
