"""The Celery app, shared by the API (sending) and the worker (consuming)."""

from __future__ import annotations

from celery import Celery

app = Celery("zfarm")
app.config_from_object("broker_config.celeryconfig")
