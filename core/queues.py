"""Queue names derived from the configured one (ZFARM_QUEUE): the two lanes of a farm."""

from __future__ import annotations


def bulk_queue_name(queue: str) -> str:
    """Batch jobs wait here; workers read the interactive queue first (see celeryconfig)."""
    return f"{queue}.bulk"
