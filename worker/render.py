"""One pipeline call for one job or for compatible jobs together: per-image generators, progress, output guard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from diffusers import ZImagePipeline
from PIL import Image as PILImage

from worker.pixels import RenderError, guard_output, to_pil

if TYPE_CHECKING:
    from worker.image_inputs import ImageInputs

__all__ = ["RenderCanceled", "RenderError", "RenderRequest", "guard_output", "render", "render_many"]


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
    extra: dict[str, Any] = field(default_factory=dict)
    # Image modes (img2img, inpaint, place): the inputs read from storage; None renders from text alone.
    inputs: ImageInputs | None = None

    @property
    def num_images(self) -> int:
        return len(self.seeds)


StepCallback = Callable[[int, int], None]
OutputHook = Callable[[torch.Tensor], torch.Tensor]
# Encodes a list of prompts into one embedding tensor each (worker/text_encoding.py), or None for the pipeline's own.
PromptEncoder = Callable[[list[str]], list[torch.Tensor]]


def render(
    pipe: ZImagePipeline,
    req: RenderRequest,
    on_step: StepCallback | None = None,
    encode: PromptEncoder | None = None,
    output_hook: OutputHook | None = None,
) -> list[PILImage.Image]:
    return render_many(pipe, [req], on_step, encode, output_hook)[0]


def render_many(
    pipe: ZImagePipeline,
    reqs: list[RenderRequest],
    on_step: StepCallback | None = None,
    encode: PromptEncoder | None = None,
    output_hook: OutputHook | None = None,
) -> list[list[PILImage.Image]]:
    """Compatible requests (same size, steps, guidance) in one pipeline call; the images of each, in order."""
    first = reqs[0]
    if any(_shape(r) != _shape(first) for r in reqs):
        shapes = [_shape(r) for r in reqs]
        raise ValueError(f"requests rendered together must share size, steps and guidance (got {shapes})")
    # 1. One CPU generator per image: image i equals a render of that seed alone, on any hardware.
    generators = [torch.Generator("cpu").manual_seed(seed) for r in reqs for seed in r.seeds]
    prompts = [r.prompt for r in reqs for _ in r.seeds]
    cfg = first.guidance_scale > 0
    negatives = [r.negative_prompt or "" for r in reqs for _ in r.seeds]

    def _callback(_pipe: ZImagePipeline, step: int, _t: object, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(step + 1, first.steps)
        return kwargs

    # 2. Prompts: the pipeline's own (padded) encoding, or ours on the real tokens; the pipeline edits prompt
    # lists in place, so each call gets fresh lists.
    if encode is None:
        text: dict[str, object] = {"prompt": prompts, "negative_prompt": negatives if cfg else None}
    else:
        text = {"prompt_embeds": _encode_unique(encode, prompts)}
        if cfg:
            text["negative_prompt_embeds"] = _encode_unique(encode, negatives)
    # 3. Denoise and decode.
    output = pipe(
        **text,
        height=first.height,
        width=first.width,
        num_inference_steps=first.steps,
        guidance_scale=first.guidance_scale,
        generator=generators,
        output_type="pt",
        callback_on_step_end=_callback,
    )
    # 4. Check before converting (the 8-bit conversion would turn NaN into a black image silently), on the device.
    pixels = output.images
    if output_hook is not None:
        pixels = output_hook(pixels)
    guard_output(pixels)
    images = to_pil(pixels)
    out, start = [], 0
    for r in reqs:
        out.append(images[start : start + r.num_images])
        start += r.num_images
    return out


def _shape(req: RenderRequest) -> tuple[int, int, int, float]:
    return (req.width, req.height, req.steps, req.guidance_scale)


def _encode_unique(encode: PromptEncoder, prompts: list[str]) -> list[torch.Tensor]:
    # A job of n images repeats its prompt n times: encode it once.
    unique = list(dict.fromkeys(prompts))
    embeds = dict(zip(unique, encode(unique), strict=True))
    return [embeds[p] for p in prompts]
