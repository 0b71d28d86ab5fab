"""Placement geometry: the product's box, scaled to fit, anchored, offset; refused when pushed off the canvas."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.imaging.placement import Placement, PlacementError, fitted_size, place_box, place_cutout, product_box
from tests.image_helpers import cutout


def test_the_product_is_the_alpha_bounding_box() -> None:
    box = product_box(cutout(size=(300, 400), box=(60, 40, 240, 360)))
    # The soft rim reaches 2 pixels beyond the shape on each side.
    assert (box.x, box.y, box.right, box.bottom) == (58, 38, 243, 363)


def test_a_cutout_without_alpha_or_without_opaque_pixels_has_no_product() -> None:
    with pytest.raises(PlacementError, match="alpha channel"):
        product_box(Image.new("RGB", (32, 32)))
    with pytest.raises(PlacementError, match="opaque pixels"):
        product_box(Image.new("RGBA", (32, 32), (255, 255, 255, 0)))


@pytest.mark.parametrize(
    ("size", "frame", "fit", "expected"),
    [
        ((100, 200), (1024, 1024), 0.7, (358, 716)),  # height-bound: 0.7 * 1024 = 716.8
        ((400, 100), (1024, 768), 0.5, (512, 128)),  # width-bound
        ((1000, 1000), (2000, 2000), 0.85, (1700, 1700)),
        ((3, 1), (1000, 1000), 1.0, (1000, 333)),
    ],
)
def test_fitted_size_is_the_largest_inside_the_fit_box(
    size: tuple[int, int], frame: tuple[int, int], fit: float, expected: tuple[int, int]
) -> None:
    got = fitted_size(size, frame, fit)
    assert got == expected
    assert got[0] <= fit * frame[0] and got[1] <= fit * frame[1]
    assert abs(got[0] / got[1] - size[0] / size[1]) < 0.01


def test_center_and_bottom_anchors_and_offsets() -> None:
    centered = place_box((100, 200), (1024, 1024), Placement(fit=0.7))
    assert (centered.x, centered.y, centered.width, centered.height) == (333, 154, 358, 716)
    bottom = place_box((100, 200), (1024, 1024), Placement(fit=0.5, anchor="bottom"))
    assert bottom.bottom == 768  # standing on the bottom edge of the centred fit box (1024 - 256)
    moved = place_box((100, 200), (1024, 1024), Placement(fit=0.5, offset_x=-100, offset_y=40))
    plain = place_box((100, 200), (1024, 1024), Placement(fit=0.5))
    assert (moved.x, moved.y) == (plain.x - 100, plain.y + 40)


@pytest.mark.parametrize(
    ("offset_x", "offset_y", "field"), [(900, 0, "placement.offset_x"), (0, -400, "placement.offset_y")]
)
def test_offsets_that_push_the_product_off_the_canvas_are_refused(offset_x: int, offset_y: int, field: str) -> None:
    with pytest.raises(PlacementError) as refused:
        place_box((100, 100), (1024, 1024), Placement(fit=0.7, offset_x=offset_x, offset_y=offset_y))
    assert refused.value.field == field and "off the 1024x1024 canvas" in refused.value.rule


def test_placing_at_scale_one_keeps_every_pixel() -> None:
    image = cutout(size=(300, 400), box=(60, 40, 240, 360))
    found = product_box(image)
    fit = found.height / 512  # exactly the product's own height on a 512x512 canvas
    placed = place_cutout(image, (512, 512), Placement(fit=fit))
    assert (placed.box.width, placed.box.height) == (found.width, found.height)
    crop = placed.layer.crop((placed.box.x, placed.box.y, placed.box.right, placed.box.bottom))
    original = image.crop((found.x, found.y, found.right, found.bottom))
    assert np.array_equal(np.asarray(crop), np.asarray(original))
    assert placed.layer.getchannel("A").getbbox() == (placed.box.x, placed.box.y, placed.box.right, placed.box.bottom)


def test_scaling_does_not_darken_the_edges() -> None:
    # A red product on transparent black: without premultiplied alpha the resize would mix black into the rim.
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((50, 50, 150, 150), fill=(250, 20, 20, 255))
    placed = place_cutout(image, (256, 256), Placement(fit=0.33))
    pixels = np.asarray(placed.layer).reshape(-1, 4)
    rim = pixels[(pixels[:, 3] > 30) & (pixels[:, 3] < 255)]
    assert len(rim) > 0
    assert rim[:, 0].min() > 200
