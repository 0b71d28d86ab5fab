"""From the VAE's output to 8-bit images on the GPU: one small copy to the host instead of a float one.

The pipeline's `output_type="np"` copies float32 pixels to the host (12 MiB per 1024x1024 image), then the NaN and
black checks and the 8-bit conversion run there in NumPy, all between the GPU's last kernel and the next job's
first one. Here the checks and the conversion run on the device and only the 8-bit pixels (3 MiB) come back.
The arithmetic is the pipeline's own (`numpy_to_pil`: float32 x 255, round half to even, to uint8), so the bytes
are the same as before.
"""

from __future__ import annotations

import torch
from PIL import Image as PILImage


class RenderError(RuntimeError):
    """A render that finished but produced unusable output (NaN or all black)."""


def guard_output(images: torch.Tensor) -> None:
    """images: (batch, 3, H, W) in [0, 1]. NaN/inf anywhere, or an image darker than one 8-bit level, is refused."""
    flat = images.detach().float().flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    brightest = torch.nan_to_num(flat, nan=0.0).amax(dim=1)
    # One device-to-host copy for both checks of every image.
    finite_list, brightest_list = torch.stack([finite.float(), brightest]).cpu().tolist()
    if not all(finite_list):
        raise RenderError("the pipeline produced NaN or infinite pixels")
    for i, peak in enumerate(brightest_list):
        if peak < 1.0 / 255.0:
            raise RenderError(f"image {i} is all black")


def to_pil(images: torch.Tensor) -> list[PILImage.Image]:
    """(batch, 3, H, W) floats in [0, 1] -> RGB images, rounded exactly as `DiffusionPipeline.numpy_to_pil`."""
    pixels = (images.permute(0, 2, 3, 1).float() * 255).round().to(torch.uint8).cpu().numpy()
    return [PILImage.fromarray(p) for p in pixels]
