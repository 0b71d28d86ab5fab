"""Queue names derived from the configured one (ZFARM_QUEUE): two lanes per precision tier.

bf16 jobs keep the plain names (`render`, `render.bulk`); a job of another tier has its own pair (`render.fp8`,
`render.fp8.bulk`), read only by workers running that tier. Routing by precision lives here and in the Enqueuer;
routing by other capabilities (GPU memory, several hosts) would add to the name the same way.
"""

from __future__ import annotations

from typing import Literal

Precision = Literal["bf16", "fp8"]
PRECISIONS: tuple[Precision, ...] = ("bf16", "fp8")
DEFAULT_PRECISION: Precision = "bf16"


def bulk_queue_name(queue: str) -> str:
    """Batch jobs wait here; workers read the interactive queue first (see celeryconfig)."""
    return f"{queue}.bulk"


def direct_queue_name(bulk_queue: str, worker: str) -> str:
    """One worker's own bulk queue: batch jobs whose LoRA adapters it already holds (control/affinity.py)."""
    return f"{bulk_queue}@{worker}"


def precision_queue(queue: str, precision: str) -> str:
    """The interactive queue of a precision tier; `bulk_queue_name` of it is the tier's bulk queue."""
    return queue if precision == DEFAULT_PRECISION else f"{queue}.{precision}"
