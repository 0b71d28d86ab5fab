"""The one check of a submitted `callback_url` (jobs and batches): signable, and aimed at a public receiver."""

from __future__ import annotations

from pydantic import HttpUrl

from core.settings import FarmSettings
from core.webhook_targets import UnsafeTarget, check_at_submit


def callback_problem(url: HttpUrl | None, settings: FarmSettings) -> tuple[str, str] | None:
    """(value, rule) when the URL must be refused; None when it may be stored (or there is none)."""
    if url is None:
        return None
    value = str(url)
    if not settings.webhook_secret:
        return value, "this farm has no ZFARM_WEBHOOK_SECRET to sign webhooks"
    try:
        check_at_submit(value, settings.webhook_allow)
    except UnsafeTarget as exc:
        return value, str(exc)
    return None
