"""Why a queued job cannot start yet (`waiting_for` in its record), from the workers' rows.

A job that merely looks queued while no worker can ever take it is the worst kind of silence: the record
names what it waits for instead: a live worker at all, one that runs the job's precision tier, or one whose card
takes the job's image size (core/capability.py).
Computed once per request (a list of 100 jobs asks the database once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.capability import LARGE_CARD_MIB
from core.queues import DEFAULT_LARGE_PIXELS
from models import Job, JobStatus, Worker, WorkerState
from models.workers import is_live, live_max_pixels, live_precisions


@dataclass(frozen=True)
class FarmView:
    live: int  # workers that can take jobs now
    precisions: set[str]  # the precision tiers those workers run
    failed: list[tuple[str, str | None]]  # (name, why) of workers that could not start
    max_pixels: dict[str, int] = field(default_factory=dict)  # per tier, the largest image a live card takes
    large_pixels: int = DEFAULT_LARGE_PIXELS


def farm_view(session: Session, offline_after: float, large_pixels: int = DEFAULT_LARGE_PIXELS) -> FarmView:
    live = len(session.scalars(select(Worker.name).where(is_live(offline_after))).all())
    failed = session.execute(
        select(Worker.name, Worker.error).where(Worker.state == WorkerState.FAILED).order_by(Worker.name)
    ).all()
    return FarmView(
        live,
        live_precisions(session, offline_after),
        [(name, error) for name, error in failed],
        live_max_pixels(session, offline_after, large_pixels),
        large_pixels,
    )


def waiting_reason(job: Job, view: FarmView) -> str | None:
    """No live worker at all (and why one failed to start), or none that runs the job's precision."""
    if job.status != JobStatus.QUEUED:
        return None
    if view.live:
        if job.precision not in view.precisions:
            return (
                f"a worker running precision {job.precision}: none is live "
                f"(start one with ZFARM_PRECISION={job.precision})"
            )
        budget = view.max_pixels.get(job.precision, view.large_pixels)
        if job.width * job.height > budget:
            return (
                f"a worker whose card takes {job.width}x{job.height} images ({job.width * job.height} pixels): live "
                f"{job.precision} workers take at most {budget} (start one on a card with {LARGE_CARD_MIB // 1024} GiB "
                "or more, or set its ZFARM_WORKER_MAX_PIXELS)"
            )
        return None
    if view.failed:
        name, error = view.failed[0]
        more = f" (and {len(view.failed) - 1} more failed)" if len(view.failed) > 1 else ""
        return f"a live worker: none is running; worker {name} failed to start: {error}{more}"
    return "a live worker: none is running (start one with `zfarm worker`, or the whole farm with `zfarm up`)"


def waiting_for(job: Job, request: Request) -> str | None:
    if job.status != JobStatus.QUEUED:
        return None
    view = getattr(request.state, "farm_view", None)
    if view is None:  # once per request, however many jobs it lists
        with request.app.state.sessions() as s:
            settings = request.app.state.settings
            view = farm_view(s, settings.worker_offline_after_seconds, settings.large_pixels)
        request.state.farm_view = view
    return waiting_reason(job, view)
