"""Image modes on the pipeline: img2img and inpaint (place is inpaint on a canvas) from the loaded weights.

`ZImageImg2ImgPipeline` and `ZImageInpaintPipeline` are built with `from_pipe` from the text pipeline the
worker loaded: they share its modules (one copy of the weights, the same memory policy, compiled blocks and
VAE settings). After decoding, the kept pixels are put back from the input (`Conditioning.finish`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ZImageImg2ImgPipeline, ZImageInpaintPipeline, ZImagePipeline
from diffusers.utils import logging as diffusers_logging
from PIL import Image as PILImage

from worker.image_inputs import ImageInputs
from worker.pixels import guard_output, to_pil
from worker.render import OutputHook, RenderRequest, StepCallback


@dataclass(frozen=True)
class ImagePipelines:
    img2img: ZImageImg2ImgPipeline
    inpaint: ZImageInpaintPipeline

    @classmethod
    def sharing(cls, pipe: ZImagePipeline) -> ImagePipelines:
        """Built before a memory policy is applied: from_pipe casts the shared modules to the dtype it is given,
        which must be theirs (it would cast to float32 otherwise)."""
        dtype = pipe.transformer.dtype
        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # the same-dtype cast warns about a cast it does not make
        try:
            img2img = ZImageImg2ImgPipeline.from_pipe(pipe, dtype=dtype)
            inpaint = ZImageInpaintPipeline.from_pipe(pipe, dtype=dtype)
        finally:
            diffusers_logging.set_verbosity(level)
        for derived in (img2img, inpaint):
            derived.set_progress_bar_config(disable=True)
        return cls(img2img=img2img, inpaint=inpaint)


def denoising_steps(steps: int, strength: float) -> int:
    """How many steps the image pipelines run: the last `strength` share of the schedule (their get_timesteps)."""
    start = int(max(steps - min(steps * strength, steps), 0))
    return steps - start


def render_from_image(
    pipes: ImagePipelines,
    req: RenderRequest,
    on_step: StepCallback | None = None,
    output_hook: OutputHook | None = None,
) -> list[PILImage.Image]:
    """One job's images; each image is its seed alone (one generator and one copy of the inputs per image)."""
    inputs: ImageInputs = req.inputs  # type: ignore[assignment]
    cond = inputs.conditioning
    count = req.num_images
    total = denoising_steps(req.steps, inputs.strength)

    def _callback(_pipe: object, step: int, _t: object, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(step + 1, total)
        return kwargs

    cfg = req.guidance_scale > 0
    call: dict[str, object] = {
        "prompt": [req.prompt] * count,
        "negative_prompt": [req.negative_prompt or ""] * count if cfg else None,
        # One copy per image: the pipelines encode image i with generator i, so a job's image i equals its
        # seed rendered alone (with one copy, image 0's generator would encode the input for all of them).
        "image": [cond.init] * count,
        "strength": inputs.strength,
        "width": cond.init.width,
        "height": cond.init.height,
        "num_inference_steps": req.steps,
        "guidance_scale": req.guidance_scale,
        "generator": [torch.Generator("cpu").manual_seed(seed) for seed in req.seeds],
        "output_type": "pt",
        "callback_on_step_end": _callback,
    }
    if cond.repaint is not None:
        call["mask_image"] = [cond.repaint] * count
    output = (pipes.img2img if cond.repaint is None else pipes.inpaint)(**call)
    # Checked and made 8-bit on the device, as text renders are (worker/pixels.py), then the kept pixels put back.
    pixels = output.images
    if output_hook is not None:
        pixels = output_hook(pixels)
    guard_output(pixels)
    return [cond.finish(image) for image in to_pil(pixels)]
