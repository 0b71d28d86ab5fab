"""Queue names derived from the configured one (ZFARM_QUEUE): two lanes per precision tier.

bf16 jobs keep the plain names (`render`, `render.bulk`); a job of another tier has its own pair (`render.fp8`,
`render.fp8.bulk`), read only by workers running that tier. Images over the large-image budget (ZFARM_LARGE_PIXELS)
go to the tier's large pair (`render.large`, `render.large.bulk`; `render.fp8.large`...), read only by workers whose
card takes them (core/capability.py). Routing lives here and in the Enqueuer.
"""

from __future__ import annotations

from typing import Literal

# Pixels per image above which a job needs a large card: 1024x1024. Z-Image-Turbo bf16 under the `full` memory policy
# peaks at 21.6 GiB at 1024x1024 and 28.7 GiB at 2048x2048 (batch 1, H200, /work/shared/docs/anchors.md; 21.69 GiB
# through the farm, BENCHMARKS.md), so a 24 GiB card takes up to 1024x1024 and 2048x2048 needs 32 GiB or more.
DEFAULT_LARGE_PIXELS = 1024 * 1024
LARGE = "large"

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


def size_queue(queue: str, large: bool) -> str:
    """The interactive queue of a tier for images over the large-image budget, or the tier's own."""
    return f"{queue}.{LARGE}" if large else queue


def is_large(width: int, height: int, large_pixels: int) -> bool:
    return width * height > large_pixels


def worker_queue_order(interactive: str, worker: str, takes_large: bool) -> list[str]:
    """What one worker reads, in order (kombu's priority strategy takes the first non-empty): the large queues
    first on a card that takes them (no other card can), interactive before bulk, its own bulk queue (jobs with
    the LoRA adapters it holds: control/affinity.py) before the shared one."""
    bulk = bulk_queue_name(interactive)
    own = direct_queue_name(bulk, worker)
    if not takes_large:
        return [interactive, own, bulk]
    large = size_queue(interactive, True)
    return [large, interactive, own, bulk_queue_name(large), bulk]
