"""The webhook Celery task, run by `zfarm webhooks` (a threads-pool worker that never imports torch)."""

from __future__ import annotations

import threading

from celery import Task
from sqlalchemy.orm import Session, sessionmaker

from broker_config.celery_app import app
from broker_config.task_names import DELIVER_WEBHOOK
from core.settings import get_settings
from core.storage_setup import open_storage, presigner
from models import make_engine, make_session_factory
from models.records import Presign
from worker.webhook_slots import TenantSlots
from worker.webhooks import deliver_once

_sessions: sessionmaker[Session] | None = None
_slots: TenantSlots | None = None
_presign: Presign | None = None
_lock = threading.Lock()


def _process_state() -> tuple[sessionmaker[Session], TenantSlots, Presign | None]:
    # One engine and one Redis client for the whole process; the threads pool shares them (nothing here forks).
    global _sessions, _slots, _presign
    with _lock:
        if _sessions is None or _slots is None:
            s = get_settings()
            _sessions = make_session_factory(make_engine(s.resolved_database_url))
            # A slot outlives its delivery's longest attempt, so a sender killed mid-POST frees it by itself.
            _slots = TenantSlots(s.resolved_redis_url, s.webhook_tenant_concurrency, s.webhook_timeout_seconds + 30)
            # Links are signed locally: the sender never reads the bucket, so it is not checked here.
            _presign = presigner(s, open_storage(s, check=False)) if s.presigned_urls else None
        return _sessions, _slots, _presign


@app.task(name=DELIVER_WEBHOOK, bind=True, max_retries=None)
def deliver_webhook(self: Task, delivery_id: str) -> str:
    sessions, slots, presign = _process_state()
    outcome = deliver_once(delivery_id, sessions, get_settings(), slots, presign)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.state
