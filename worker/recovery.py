"""Retries for the failures a retry can cure: CUDA out of memory (once, under a stricter policy) and NaN or
black output (once with a float32 VAE decode; then, for jobs with guidance > 0, once more at half the
guidance, since a high guidance scale can push the latents out of range)."""

from __future__ import annotations

from dataclasses import replace

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
        for try_index in (0, 1, 2):
            try:
                return runtime.render_many(reqs, on_step, try_index=try_index), notes
            except torch.OutOfMemoryError as exc:
                if try_index >= 1:
                    raise RenderError(f"CUDA out of memory again after one retry ({notes[-1]})") from exc
                notes.append(runtime.relieve_memory())
            except RenderError as exc:
                if try_index == 2 or (try_index == 1 and not any(r.guidance_scale > 0 for r in reqs)):
                    retries = "one retry" if len(notes) == 1 else f"{len(notes)} retries"
                    raise RenderError(f"{exc}, again after {retries} ({'; '.join(notes)})") from exc
                if try_index == 0:
                    notes.append(runtime.upcast_vae())
                else:
                    reqs, note = lower_guidance(reqs)
                    notes.append(note)
        raise AssertionError("unreachable: the loop returns or raises")
    finally:
        runtime.restore()


def lower_guidance(reqs: list[RenderRequest]) -> tuple[list[RenderRequest], str]:
    """The same requests at half their guidance scale, and the note that says so (asked and used)."""
    lowered = [replace(r, guidance_scale=r.guidance_scale / 2) for r in reqs]
    asked = ", ".join(sorted({f"{r.guidance_scale:g}" for r in reqs}))
    used = ", ".join(sorted({f"{r.guidance_scale:g}" for r in lowered}))
    return lowered, f"NaN or black output with a float32 VAE too: retried at guidance {used} (asked {asked})"
