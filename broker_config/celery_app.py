"""The Celery app, shared by the API (sending) and the worker (consuming)."""

from __future__ import annotations

from celery import Celery


def make_celery(redis_url: str | None = None) -> Celery:
    """The farm's Celery app; `redis_url` overrides ZFARM_REDIS_URL (tests, tools talking to another farm)."""
    celery = Celery("zfarm")
    celery.config_from_object("broker_config.celeryconfig")
    if redis_url is not None:
        celery.conf.broker_url = redis_url
    return celery


app = make_celery()
