"""Server-sent events: a job's or a batch's progress, pushed as it changes.

The rows are read every half second (the rate at which workers write progress), once per job or batch however
many streams follow it (api/event_polls.py); a stream sends an event only when something changed, with a
keep-alive comment in between, and ends after the final state. A tenant holds at most
ZFARM_MAX_EVENT_STREAMS_PER_TENANT streams at once (429 past it). A fresh database session per read: a stream
never holds a connection while it waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.sse import EventSourceResponse, format_sse_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from api.auth import Principal, PrincipalDep
from api.deps import SessionDep
from api.event_polls import EventPolls, Read
from api.public_urls import base_url
from api.routes.batches import _get_batch
from api.routes.jobs import _get_job, job_out
from api.strict_route import StrictRoute
from models import Job, JobStatus
from models.statuses import FINAL_STATUSES

router = APIRouter(tags=["events"], route_class=StrictRoute)
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 10.0
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}},
    429: {"description": "the tenant's event streams are at ZFARM_MAX_EVENT_STREAMS_PER_TENANT (Retry-After)"},
}


@router.get("/v1/jobs/{job_id}/events", responses=SSE_RESPONSES)
def job_events(job_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> EventSourceResponse:
    """`progress` events carry the job record (as GET /v1/jobs/{id}) while it changes; `final` ends the stream."""
    # 404 now, before the stream starts; another tenant's job answers like a missing one (as in routes/jobs.py)
    job_id = _get_job(session, job_id, principal).id  # the full id: the argument may be a prefix
    session.close()

    def read() -> tuple[dict[str, Any], bool]:
        with request.app.state.sessions() as s:
            job = s.get(Job, job_id)
            assert job is not None, "jobs are never deleted while streaming"
            return job_out(job, request).model_dump(mode="json"), job.status in FINAL_STATUSES

    return _respond(request, principal, ("job", job_id, base_url(request)), read)


@router.get("/v1/batches/{batch_id}/events", responses=SSE_RESPONSES)
def batch_events(batch_id: str, session: SessionDep, request: Request, principal: PrincipalDep) -> EventSourceResponse:
    """`progress` events carry the batch's counts by status and its running jobs' steps; `final` ends it."""
    batch = _get_batch(session, batch_id, principal)
    batch_id, rows = batch.id, batch.rows
    session.close()

    def read() -> tuple[dict[str, Any], bool]:
        with request.app.state.sessions() as s:
            snapshot = _batch_snapshot(s, batch_id, rows)
        return snapshot, snapshot["done"] >= snapshot["total"]

    return _respond(request, principal, ("batch", batch_id), read)


def _batch_snapshot(session: Session, batch_id: str, rows: int) -> dict[str, Any]:
    counts = dict(
        session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)).all()
    )
    running = session.execute(
        select(Job.id, Job.progress_step, Job.progress_total, Job.steps).where(
            Job.batch_id == batch_id, Job.status == JobStatus.RUNNING
        )
    ).all()
    total = max(rows, sum(counts.values()))
    done = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
    return {
        "id": batch_id,
        "counts": counts,
        "total": total,
        "done": done,
        "progress": done / total if total else 1.0,
        "running": [{"id": r.id, "step": r.progress_step, "total": r.progress_total or r.steps} for r in running],
    }


async def _stream(
    request: Request, key: tuple[str, ...], read: Read, release: Callable[[], None]
) -> AsyncIterator[bytes]:
    polls: EventPolls = request.app.state.event_polls
    seq = 0
    try:
        async for snapshot in polls.follow(key, read, KEEPALIVE_SECONDS):
            if snapshot is None:
                yield b": keep-alive\n\n"
                continue
            seq += 1
            yield format_sse_event(data_str=snapshot.text, event="final" if snapshot.final else "progress", id=str(seq))
    finally:
        release()


def _respond(request: Request, principal: Principal, key: tuple[str, ...], read: Read) -> EventSourceResponse:
    release = request.app.state.event_polls.admit(principal.tenant)  # 429 past the tenant's cap
    # Released when the stream ends, and by the background task too, should the stream never start.
    return EventSourceResponse(_stream(request, key, read, release), background=BackgroundTask(release))
