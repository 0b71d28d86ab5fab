"""Renditions: extra outputs made on the worker's CPU, beside each rendered image. Two kinds:

- a resize of the render (a thumbnail beside a master): downscaling only (the API refuses anything larger
  than the render); Lanczos resampling, the usual choice for photographic downscales. When the aspect ratio
  differs, `cover` crops the centre so the frame is full, and `contain` keeps the whole image and pads with
  white, the background marketplaces ask for.
- a white-background main image (`background: white`): made from the job's cutout, not from the render, at
  the cutout's own resolution, so it may be larger than the render. The product (the cutout's opaque pixels)
  is scaled, aspect kept, to fit inside `fill` x width by `fill` x height, centred on pure RGB 255 white.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image as PILImage
from PIL import ImageOps

from core.imaging.placement import Placement, place_cutout

WHITE = (255, 255, 255)


def make_rendition(
    image: PILImage.Image, spec: Mapping[str, Any], cutout: PILImage.Image | None = None
) -> PILImage.Image:
    size = (int(spec["width"]), int(spec["height"]))
    if spec.get("background") == "white":
        if cutout is None:  # the API refuses these for jobs without a cutout; this is the last check
            raise ValueError(f"rendition {spec.get('name')!r}: a white main image needs the job's cutout")
        return white_main(cutout, size, float(spec["fill"]))
    rgb = image.convert("RGB")
    if rgb.size == size:
        return rgb
    if spec.get("fit", "cover") == "contain":
        return ImageOps.pad(rgb, size, method=PILImage.Resampling.LANCZOS, color=WHITE)
    return ImageOps.fit(rgb, size, method=PILImage.Resampling.LANCZOS)


def white_main(cutout: PILImage.Image, size: tuple[int, int], fill: float) -> PILImage.Image:
    """Every pixel outside the product is exactly (255, 255, 255); the product's edge blends by its alpha."""
    placed = place_cutout(cutout, size, Placement(fit=fill))
    canvas = PILImage.new("RGB", size, WHITE)
    canvas.paste(placed.layer.convert("RGB"), mask=placed.layer.getchannel("A"))
    return canvas
