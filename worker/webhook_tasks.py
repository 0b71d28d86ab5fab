"""The webhook Celery task, run by `zfarm webhooks` (a threads-pool worker that never imports torch)."""

from __future__ import annotations

import threading

from celery import Task
from sqlalchemy.orm import Session, sessionmaker

from broker_config.celery_app import app
from broker_config.task_names import DELIVER_WEBHOOK
from models import make_engine, make_session_factory
from worker.webhooks import deliver_once
from zfarm.settings import get_settings

_sessions: sessionmaker[Session] | None = None
_lock = threading.Lock()


def _get_sessions() -> sessionmaker[Session]:
    # One engine for the whole process; the threads pool shares it (nothing here forks).
    global _sessions
    with _lock:
        if _sessions is None:
            _sessions = make_session_factory(make_engine(get_settings().resolved_database_url))
        return _sessions


@app.task(name=DELIVER_WEBHOOK, bind=True, max_retries=None)
def deliver_webhook(self: Task, delivery_id: str) -> str:
    outcome = deliver_once(delivery_id, _get_sessions(), get_settings())
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.state
