"""Queue names derived from the configured one (ZFARM_QUEUE): the two lanes of a farm."""

from __future__ import annotations


def bulk_queue_name(queue: str) -> str:
    """Batch jobs wait here; workers read the interactive queue first (see celeryconfig)."""
    return f"{queue}.bulk"


def direct_queue_name(bulk_queue: str, worker: str) -> str:
    """One worker's own bulk queue: batch jobs whose LoRA adapters it already holds (control/affinity.py)."""
    return f"{bulk_queue}@{worker}"
