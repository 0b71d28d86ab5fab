"""Renditions: extra outputs made on the worker's CPU from one rendered image (a thumbnail beside a master).

Downscaling only (the API refuses anything larger than the render); Lanczos resampling, the usual choice
for photographic downscales. When the aspect ratio differs, `cover` crops the centre so the frame is full,
and `contain` keeps the whole image and pads with white, the background marketplaces ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image as PILImage
from PIL import ImageOps

WHITE = (255, 255, 255)


def make_rendition(image: PILImage.Image, spec: Mapping[str, Any]) -> PILImage.Image:
    size = (int(spec["width"]), int(spec["height"]))
    rgb = image.convert("RGB")
    if rgb.size == size:
        return rgb
    if spec.get("fit", "cover") == "contain":
        return ImageOps.pad(rgb, size, method=PILImage.Resampling.LANCZOS, color=WHITE)
    return ImageOps.fit(rgb, size, method=PILImage.Resampling.LANCZOS)
