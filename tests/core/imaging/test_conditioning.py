"""What the pipelines are given per mode, and the promise of the finish: kept pixels come back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.imaging.conditioning import for_img2img, for_inpaint, for_place, pad
from core.imaging.masks import feather, grow, keep_from_mask
from core.imaging.placement import Placement
from tests.image_helpers import cutout


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _photo(size: tuple[int, int] = (200, 152)) -> Image.Image:
    return _noise(size, 1)


def _mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)  # white repaints
    return mask


def test_inpaint_keeps_every_pixel_the_mask_keeps_exactly() -> None:
    photo = _photo()
    cond = for_inpaint(photo, _mask(photo.size, (50, 40, 150, 120)), blur=6, grow_pixels=4)
    assert cond.init.size == (208, 160) and cond.repaint is not None and cond.repaint.size == (208, 160)
    out = cond.finish(_noise(cond.init.size, 2))  # any decoded image: the promise does not depend on it
    assert out.size == photo.size
    kept = np.asarray(keep_from_mask(_mask(photo.size, (50, 40, 150, 120)))) == 255
    assert np.array_equal(np.asarray(out)[kept], np.asarray(photo)[kept])
    # Inside the repainted area, away from the feathered seam, the generated pixels are used.
    generated = np.asarray(_noise(cond.init.size, 2))[:152, :200]
    assert np.array_equal(np.asarray(out)[70:90, 80:120], generated[70:90, 80:120])


def test_the_pipeline_repaints_the_grown_mask_and_the_padding() -> None:
    photo = _photo()
    cond = for_inpaint(photo, _mask(photo.size, (50, 40, 150, 120)), blur=0, grow_pixels=5)
    repaint = np.asarray(cond.repaint) == 255
    assert repaint[40:120, 45:155].all() and not repaint[40:120, 44].any()  # grown by 5 to the left
    assert repaint[152:, :].all() and repaint[:, 200:].all()  # padding is painted, then cut off


def test_inpaint_without_a_mask_uses_the_alpha_channel() -> None:
    image = cutout(size=(256, 256), box=(60, 60, 200, 200))
    cond = for_inpaint(image, None, blur=0, grow_pixels=0)
    out = np.asarray(cond.finish(_noise((256, 256), 3)))
    rgba = np.asarray(image)
    opaque = rgba[..., 3] == 255
    assert np.array_equal(out[opaque], rgba[..., :3][opaque])
    clear = rgba[..., 3] == 0
    assert np.array_equal(out[clear], np.asarray(_noise((256, 256), 3))[clear])


def test_a_mask_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="mask is 100x100; the image is 200x152"):
        for_inpaint(_photo(), Image.new("L", (100, 100)), blur=0, grow_pixels=0)


def test_place_keeps_the_placed_product_exactly() -> None:
    cond = for_place(cutout(), (512, 384), Placement(fit=0.8, anchor="bottom"), grow_pixels=3)
    assert cond.placed is not None and cond.keep is not None and cond.kept_pixels is not None
    out = np.asarray(cond.finish(_noise((512, 384), 4)))
    opaque = np.asarray(cond.keep) == 255
    assert opaque.sum() > 10_000
    assert np.array_equal(out[opaque], np.asarray(cond.kept_pixels)[opaque])
    assert cond.placed.height == int(0.8 * 384)


def test_img2img_starts_from_the_photo_and_keeps_nothing() -> None:
    photo = _photo((256, 256))
    cond = for_img2img(photo)
    assert cond.repaint is None and cond.keep is None
    assert np.array_equal(np.asarray(cond.init), np.asarray(photo))
    generated = _noise((256, 256), 5)
    assert np.array_equal(np.asarray(cond.finish(generated)), np.asarray(generated))


def test_feather_never_touches_kept_pixels_and_fades_outward() -> None:
    keep = Image.new("L", (100, 100), 0)
    keep.paste(255, (0, 0, 50, 100))
    soft = np.asarray(feather(keep, 8))
    assert (soft[:, :50] == 255).all()
    assert soft[50, 52] > soft[50, 58] > soft[50, 66] and soft[50, 80] == 0


def test_grow_dilates_by_exactly_the_pixels_asked() -> None:
    mask = Image.new("L", (100, 100), 0)
    mask.putpixel((50, 50), 255)
    grown = np.asarray(grow(mask, 10)) == 255
    assert grown[40:61, 40:61].all() and grown.sum() == 21 * 21


def test_pad_stretches_the_image_into_the_padding() -> None:
    photo = _photo((200, 152))
    padded = pad(photo)
    assert padded.size == (208, 160)
    assert np.array_equal(np.asarray(padded)[:152, :200], np.asarray(photo))
