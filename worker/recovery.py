"""One retry for the failures a retry can cure: CUDA out of memory and NaN or black output."""

from __future__ import annotations

import torch

from worker.render import RenderError, RenderRequest, StepCallback
from worker.runtime import Runtime


def render_with_recovery(runtime: Runtime, req: RenderRequest, on_step: StepCallback | None) -> tuple[list, list[str]]:
    """Returns the images and what recovery was needed; raises RenderError when the retry fails too."""
    [images], notes = render_many_with_recovery(runtime, [req], on_step)
    return images, notes


def render_many_with_recovery(
    runtime: Runtime, reqs: list[RenderRequest], on_step: StepCallback | None
) -> tuple[list[list], list[str]]:
    """Compatible jobs in one call (worker/batching.py), with the same one retry for all of them."""
    notes: list[str] = []
    try:
        for try_index in (0, 1):
            try:
                return runtime.render_many(reqs, on_step, try_index=try_index), notes
            except torch.OutOfMemoryError as exc:
                if try_index == 1:
                    raise RenderError(f"CUDA out of memory again after one retry ({notes[-1]})") from exc
                notes.append(runtime.relieve_memory())
            except RenderError as exc:
                if try_index == 1:
                    raise RenderError(f"{exc}, again after one retry ({notes[-1]})") from exc
                notes.append(runtime.upcast_vae())
        raise AssertionError("unreachable: the loop returns or raises")
    finally:
        runtime.restore()
