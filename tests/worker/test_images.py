from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from worker.images import encode_image


def _image() -> Image.Image:
    return Image.linear_gradient("L").resize((64, 48)).convert("RGB")


def test_png_carries_parameters_in_a_text_chunk_and_is_deterministic() -> None:
    params = {"prompt": "a mug", "seed": 3, "width": 64, "height": 48}
    a, b = encode_image(_image(), "png", 95, params), encode_image(_image(), "png", 95, params)
    assert a.data == b.data and a.sha256 == b.sha256
    png = Image.open(io.BytesIO(a.data))
    assert json.loads(png.text["parameters"]) == params
    assert png.info.get("icc_profile")  # tagged sRGB


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_lossy_formats_respect_quality(fmt: str) -> None:
    low = encode_image(_image(), fmt, 10, {"seed": 1})
    high = encode_image(_image(), fmt, 95, {"seed": 1})
    assert Image.open(io.BytesIO(low.data)).format == fmt.upper()
    assert len(low.data) < len(high.data)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="output_format must be one of"):
        encode_image(_image(), "gif", 90, {})
