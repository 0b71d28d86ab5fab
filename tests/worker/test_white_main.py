"""The white-background main image: pure white around the product, the product filling `fill` of the frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.image_helpers import cutout, decoded
from worker.images import encode_image
from worker.renditions import make_rendition

MAIN = {"name": "main", "background": "white", "fill": 0.85, "width": 2000, "height": 2000, "format": "jpeg"}


def _product_bbox(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of every pixel that is not pure white."""
    ys, xs = np.nonzero((pixels != 255).any(axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(
    ("size", "fill", "box"),
    [((2000, 2000), 0.85, (60, 40, 240, 360)), ((1600, 1000), 0.7, (10, 150, 290, 250)), ((800, 800), 1.0, None)],
)
def test_the_background_is_pure_white_and_the_product_fills_its_share(
    size: tuple[int, int], fill: float, box: tuple[int, int, int, int] | None
) -> None:
    source = cutout(box=box) if box else cutout()
    made = make_rendition(
        Image.new("RGB", (64, 64)), {**MAIN, "width": size[0], "height": size[1], "fill": fill}, source
    )
    assert made.size == size and made.mode == "RGB"
    pixels = np.asarray(made)
    x0, y0, x1, y1 = _product_bbox(pixels)
    outside = np.ones(pixels.shape[:2], dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert (pixels[outside] == 255).all()
    # The limiting side takes `fill` of the frame to within one pixel; the other keeps the aspect.
    share = max((x1 - x0) / (fill * size[0]), (y1 - y0) / (fill * size[1]))
    limiting = (x1 - x0, fill * size[0]) if (x1 - x0) / size[0] >= (y1 - y0) / size[1] else (y1 - y0, fill * size[1])
    assert abs(limiting[0] - limiting[1]) <= 1, (limiting, share)
    # Centred.
    assert abs((x0 + x1) / 2 - size[0] / 2) <= 1 and abs((y0 + y1) / 2 - size[1] / 2) <= 1


def test_it_is_made_from_the_cutout_not_the_render() -> None:
    render = Image.new("RGB", (512, 512), (0, 255, 0))
    made = np.asarray(make_rendition(render, MAIN, cutout()))
    assert not ((made[..., 1] == 255) & (made[..., 0] == 0)).any()  # nothing of the green render
    assert made.shape == (2000, 2000, 3)  # larger than the render: a main image is not a downscale


def test_a_main_image_without_a_cutout_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs the job's cutout"):
        make_rendition(Image.new("RGB", (64, 64)), MAIN, None)


def test_as_jpeg_the_white_stays_white_away_from_the_product_edge() -> None:
    made = make_rendition(Image.new("RGB", (64, 64)), MAIN, cutout())
    jpeg = np.asarray(decoded(encode_image(made, "jpeg", 92, {}).data))
    x0, y0, x1, y1 = _product_bbox(np.asarray(made))
    margin = 16  # JPEG codes 8x8 blocks, chroma 16x16: only blocks that touch the product can change
    far = np.ones(jpeg.shape[:2], dtype=bool)
    far[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = False
    assert (jpeg[far] == 255).all()
