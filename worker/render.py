"""One pipeline call for one job: per-image generators, progress, cancel, and a guard on bad output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import ZImagePipeline
from PIL import Image as PILImage


class RenderError(RuntimeError):
    """A render that finished but produced unusable output (NaN or all black)."""


class RenderCanceled(Exception):
    """Raised from the step callback when the job was canceled while running."""


@dataclass(frozen=True)
class RenderRequest:
    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seeds: list[int]
    negative_prompt: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.seeds)


StepCallback = Callable[[int, int], None]
OutputHook = Callable[[np.ndarray], np.ndarray]


def render(
    pipe: ZImagePipeline, req: RenderRequest, on_step: StepCallback | None = None, output_hook: OutputHook | None = None
) -> list[PILImage.Image]:
    # 1. One CPU generator per image: image i equals a render of that seed alone, on any hardware.
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in req.seeds]

    def _callback(_pipe: ZImagePipeline, step: int, _t: object, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(step + 1, req.steps)
        return kwargs

    # 2. Denoise and decode; the pipeline edits prompt lists in place, so each call gets fresh lists.
    negative = [req.negative_prompt] * req.num_images if req.negative_prompt else None
    output = pipe(
        prompt=[req.prompt] * req.num_images,
        negative_prompt=negative,
        height=req.height,
        width=req.width,
        num_inference_steps=req.steps,
        guidance_scale=req.guidance_scale,
        generator=generators,
        output_type="np",
        callback_on_step_end=_callback,
    )
    # 3. Check before converting: the PIL conversion would turn NaN into a black image silently.
    arrays = np.asarray(output.images)
    if output_hook is not None:
        arrays = output_hook(arrays)
    guard_output(arrays)
    return pipe.numpy_to_pil(arrays)


def guard_output(arrays: np.ndarray) -> None:
    if not np.isfinite(arrays).all():
        raise RenderError("the pipeline produced NaN or infinite pixels")
    for i, arr in enumerate(arrays):
        if float(arr.max()) < 1.0 / 255.0:
            raise RenderError(f"image {i} is all black")
