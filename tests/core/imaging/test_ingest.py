"""Uploads: refused before decoding when they would cost memory, normalized to one 8-bit sRGB PNG otherwise."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from core.imaging.ingest import ImageRefused, ingest
from tests.image_helpers import SRGB_COLORANTS_D50, decoded, encoded, matrix_icc_profile, raw_png

BUDGET = 2048 * 2048


def test_a_png_is_stored_as_is_with_its_record() -> None:
    image = Image.effect_noise((64, 48), 40).convert("RGB")
    data = encoded(image)
    got = ingest(data, BUDGET)
    assert (got.width, got.height, got.format, got.has_alpha, got.conversions) == (64, 48, "png", False, ())
    assert np.array_equal(np.asarray(decoded(got.data)), np.asarray(image))
    again = ingest(data, BUDGET)
    assert (again.sha256, again.stored_sha256, again.data) == (got.sha256, got.stored_sha256, got.data)


def test_a_declared_50000_square_is_refused_without_decoding() -> None:
    bomb = raw_png(50_000, 50_000)  # 65 bytes that declare 2.5 gigapixels
    tracemalloc.start()
    with pytest.raises(ImageRefused, match="pixels"):
        ingest(bomb, BUDGET)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000  # an allocation of the image would be 7.5 GB


def test_over_the_farm_budget_is_refused_before_decoding() -> None:
    # No pixel data at all: had it been decoded, the refusal would say "truncated".
    with pytest.raises(ImageRefused) as refused:
        ingest(raw_png(3000, 3000), BUDGET)
    assert refused.value.value == "3000x3000"
    assert "9000000 pixels; at most 4194304" in refused.value.rule


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_file_is_refused(fmt: str) -> None:
    data = encoded(Image.effect_noise((256, 256), 60).convert("RGB"), fmt)
    with pytest.raises(ImageRefused, match="truncated or corrupt"):
        ingest(data[: len(data) // 2], BUDGET)


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        b"GIF89a not really",
    ],
)
def test_content_that_is_not_png_jpeg_or_webp_is_refused_whatever_its_name(data: bytes) -> None:
    with pytest.raises(ImageRefused, match="not a PNG, JPEG or WebP image"):
        ingest(data, BUDGET)


def test_a_still_gif_is_refused_too() -> None:
    with pytest.raises(ImageRefused, match="not a PNG, JPEG or WebP"):
        ingest(encoded(Image.new("RGB", (32, 32), "red"), "GIF"), BUDGET)


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animations_are_refused(fmt: str) -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue", "green")]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageRefused, match="animated") as refused:
        ingest(data, BUDGET)
    assert refused.value.value == "3 frames"


def test_sixteen_bit_grey_is_reduced_to_eight_bits_and_said() -> None:
    values = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 61 % 65536).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in values)
    got = ingest(raw_png(32, 32, bit_depth=16, colour_type=0, rows=rows), BUDGET)
    assert "16 bits per channel reduced to 8" in got.conversions
    pixels = np.asarray(decoded(got.data).convert("L"), dtype=np.int32)
    assert np.abs(pixels - (values.astype(np.int32) >> 8)).max() <= 1


def test_sixteen_bit_rgb_is_said() -> None:
    values = np.full((16, 16, 3), 0xABCD, dtype=">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in values)
    got = ingest(raw_png(16, 16, bit_depth=16, colour_type=2, rows=rows), BUDGET)
    assert "16 bits per channel reduced to 8" in got.conversions
    assert decoded(got.data).getpixel((3, 3)) == (0xAB, 0xAB, 0xAB)


def test_cmyk_is_converted_to_rgb_and_said() -> None:
    got = ingest(encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95), BUDGET)
    assert any("CMYK converted to RGB" in note for note in got.conversions)
    red, green, blue = decoded(got.data).getpixel((16, 16))
    assert red > 240 and green < 15 and blue < 15


def test_exif_orientation_is_applied_once() -> None:
    image = Image.new("RGB", (60, 40), "white")
    image.paste((255, 0, 0), (0, 0, 8, 8))  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers turn it 90 degrees clockwise
    got = ingest(encoded(image, "JPEG", quality=100, exif=exif.tobytes()), BUDGET)
    assert (got.width, got.height) == (40, 60)
    assert "EXIF orientation 6 applied" in got.conversions
    stored = decoded(got.data)
    red, green, _ = stored.getpixel((36, 3))  # the marker is now top-right
    assert red > 200 and green < 60
    assert not stored.getexif().get(0x0112)


def test_an_icc_profile_is_converted_to_srgb() -> None:
    r, g, b = SRGB_COLORANTS_D50
    swapped = matrix_icc_profile("zfarm swapped primaries", colorants=(g, r, b))
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    got = ingest(encoded(image, "PNG", icc_profile=swapped), BUDGET)
    assert "RGB with ICC profile 'zfarm swapped primaries' converted to sRGB" in got.conversions
    red, green, blue = decoded(got.data).getpixel((5, 5))
    assert green > 230 and red < 25 and blue < 25  # this profile's red is sRGB's green
    assert "icc_profile" not in decoded(got.data).info


def test_an_unreadable_icc_profile_is_refused() -> None:
    with pytest.raises(ImageRefused, match="ICC profile"):
        ingest(encoded(Image.new("RGB", (32, 32)), "PNG", icc_profile=b"not a profile at all" * 8), BUDGET)


def test_alpha_is_detected_and_an_opaque_alpha_channel_dropped() -> None:
    clear = Image.new("RGBA", (32, 32), (10, 20, 30, 255))
    clear.putpixel((3, 3), (0, 0, 0, 0))
    got = ingest(encoded(clear), BUDGET)
    assert got.has_alpha and decoded(got.data).mode == "RGBA"
    assert got.product_box == (0, 0, 32, 32)
    assert decoded(got.data).getpixel((3, 3))[3] == 0
    opaque = ingest(encoded(Image.new("RGBA", (32, 32), (10, 20, 30, 255))), BUDGET)
    assert not opaque.has_alpha and decoded(opaque.data).mode == "RGB"
    assert "alpha channel fully opaque: dropped" in opaque.conversions


def test_a_palette_png_with_transparency_becomes_rgba() -> None:
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 1), 1)
    got = ingest(encoded(palette, transparency=1), BUDGET)
    assert got.has_alpha
    assert decoded(got.data).getpixel((1, 1))[3] == 0 and decoded(got.data).getpixel((5, 5)) == (255, 0, 0, 255)


def test_webp_with_alpha_is_accepted() -> None:
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image.paste((200, 10, 10, 255), (8, 8, 24, 24))
    got = ingest(encoded(image, "WEBP", lossless=True), BUDGET)
    assert got.format == "webp" and got.has_alpha
    assert got.product_box == (8, 8, 16, 16)


@pytest.mark.parametrize("data", [b"", raw_png(8, 200)])
def test_empty_and_tiny_images_are_refused(data: bytes) -> None:
    with pytest.raises(ImageRefused, match="empty|too small"):
        ingest(data, BUDGET)
