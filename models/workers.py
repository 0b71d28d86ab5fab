from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow
from models.types import UTCDateTime


class WorkerState(StrEnum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    BUSY = "busy"
    OFFLINE = "offline"


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
    state: Mapped[str] = mapped_column(String(16), default=WorkerState.LOADING)
    current_job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    load_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    warmup_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # LoRA adapters it holds on the device: {"slot": signature in the pipeline or null, "held": [{name, sha256}]}
    adapters: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


def live_precisions(session: Session, offline_after_seconds: float) -> set[str]:
    """The precision tiers of the workers alive now (a row that has not said its tier yet runs bf16)."""
    stale = utcnow() - timedelta(seconds=offline_after_seconds)
    rows = session.scalars(
        select(Worker.precision).where(Worker.last_heartbeat >= stale, Worker.state != WorkerState.OFFLINE).distinct()
    )
    return {precision or "bf16" for precision in rows}
