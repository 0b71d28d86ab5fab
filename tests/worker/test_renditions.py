"""Renditions made from a rendered image: exact size, crop or pad, and keys built by the server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.storage import image_key
from worker.renditions import make_rendition


def _halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: a crop and a pad are told apart by their edge colours."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_cover_fills_the_frame_by_cropping_the_centre() -> None:
    made = make_rendition(_halves(400, 200), {"width": 100, "height": 100, "fit": "cover"})
    assert made.size == (100, 100)
    # the centre square of a 2:1 image keeps both halves and no padding
    assert made.getpixel((2, 50)) == (255, 0, 0)
    assert made.getpixel((97, 50)) == (0, 0, 255)


def test_contain_keeps_the_whole_image_and_pads_with_white() -> None:
    made = make_rendition(_halves(400, 200), {"width": 100, "height": 100, "fit": "contain"})
    assert made.size == (100, 100)
    assert made.getpixel((50, 2)) == (255, 255, 255)  # padding above
    assert made.getpixel((50, 97)) == (255, 255, 255)  # and below
    assert made.getpixel((2, 50)) == (255, 0, 0) and made.getpixel((97, 50)) == (0, 0, 255)


def test_same_size_is_the_image_itself_and_downscale_keeps_the_aspect() -> None:
    image = _halves(256, 256)
    assert np.array_equal(np.asarray(make_rendition(image, {"width": 256, "height": 256})), np.asarray(image))
    small = make_rendition(image, {"width": 64, "height": 64})
    assert small.size == (64, 64) and small.getpixel((0, 0)) == (255, 0, 0)


def test_rendition_keys_sit_beside_the_master_and_refuse_names_from_outside() -> None:
    job = "ab" + "0" * 30
    assert image_key(job, 0, "png") == f"jobs/ab/{job}/0.png"
    assert image_key(job, 1, "webp", "thumb") == f"jobs/ab/{job}/1-thumb.webp"
    assert image_key(job, 0, "jpeg", "512x512") == f"jobs/ab/{job}/0-512x512.jpg"
    for bad in ("../x", "Thumb", "a/b", "-x"):
        with pytest.raises(ValueError, match="rendition must be a rendition name"):
            image_key(job, 0, "png", bad)
