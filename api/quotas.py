"""Per-tenant limits: queued jobs at once, and submits per minute (a moving window kept in Redis)."""

from __future__ import annotations

import time

from fastapi import HTTPException
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.auth import Principal
from core.settings import FarmSettings
from models import Job, JobStatus

RETRY_AFTER_QUEUE_SECONDS = 30


class Quotas:
    def __init__(self, redis_url: str, settings: FarmSettings) -> None:
        self.settings = settings
        self.limiter = MovingWindowRateLimiter(storage_from_string(redis_url))

    def check_submit(self, session: Session, principal: Principal, new_jobs: int = 1) -> None:
        if principal.tenant is None:
            return
        self.check_rate(principal)
        cap = principal.max_queued_jobs or self.settings.max_queued_jobs_per_tenant
        waiting = (
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.tenant == principal.tenant, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            )
            or 0
        )
        if waiting + new_jobs > cap:
            raise HTTPException(
                429,
                detail=f"tenant {principal.tenant!r} has {waiting} jobs waiting; the cap is {cap}",
                headers={"Retry-After": str(RETRY_AFTER_QUEUE_SECONDS)},
            )

    def check_rate(self, principal: Principal) -> None:
        """One submit in the tenant's moving minute: jobs, batches and image uploads (POST /v1/assets) alike."""
        if principal.tenant is None:
            return
        per_minute = principal.submits_per_minute or self.settings.submits_per_minute_per_tenant
        item = RateLimitItemPerMinute(per_minute, namespace="zfarm-submits")
        if not self.limiter.hit(item, principal.tenant):
            reset = self.limiter.get_window_stats(item, principal.tenant).reset_time
            raise HTTPException(
                429,
                detail=f"tenant {principal.tenant!r} is over {per_minute} submits per minute",
                headers={"Retry-After": str(max(1, int(reset - _now())))},
            )


def _now() -> float:
    return time.time()
