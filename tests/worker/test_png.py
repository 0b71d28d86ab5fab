"""PNG written on several cores: lossless, readable by Pillow with its metadata, the same bytes every time."""

from __future__ import annotations

import io

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image as PILImage

from worker import png
from worker.images import _SRGB, encode_image
from worker.pixels import to_pil


def _photo_like(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx % 256, yy % 256, (xx + yy) // 2 % 256], -1)
    return np.clip(base + rng.integers(-4, 5, base.shape), 0, 255).astype(np.uint8)


def test_png_round_trips_with_parameters_profile_and_software() -> None:
    for h, w in ((300, 517), (1024, 768), (1, 1)):  # bands of 128 rows: a partial last band, several, one pixel
        pixels = _photo_like(h, w)
        data = png.encode_png(pixels, _SRGB, text={"Software": "zfarm"}, itxt={"parameters": '{"prompt": "café"}'})
        image = PILImage.open(io.BytesIO(data))
        image.load()
        assert np.array_equal(np.asarray(image), pixels)
        assert image.info["parameters"] == '{"prompt": "café"}' and image.info["Software"] == "zfarm"
        assert image.info["icc_profile"] == _SRGB
        assert png.encode_png(pixels, _SRGB, {}, {}) == png.encode_png(pixels, _SRGB, {}, {})


def test_png_of_a_smooth_image_is_near_pillows_size() -> None:
    pixels = _photo_like(512, 512)
    ours = encode_image(PILImage.fromarray(pixels), "png", 95, {"seed": 1}).data
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    assert len(ours) < 1.25 * len(buf.getvalue())


def test_device_side_8bit_conversion_equals_the_pipelines_numpy_one() -> None:
    pixels = torch.rand(2, 3, 33, 47)
    pixels[0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255, 1.0])  # halfway cases round to even
    ours = [np.asarray(im) for im in to_pil(pixels)]
    theirs = [np.asarray(im) for im in DiffusionPipeline.numpy_to_pil(pixels.permute(0, 2, 3, 1).numpy())]
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
