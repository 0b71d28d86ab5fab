"""Where a cutout goes: its product box (the opaque pixels), scaled to fit a frame, anchored, offset.

The product is the cutout's alpha bounding box (pixels with any opacity). It is scaled, keeping its aspect,
to the largest size that fits inside `fit` x width by `fit` x height, then placed by `anchor` (`center`, or
`bottom`: standing on the bottom edge of that fit box) and moved by `offset_x` / `offset_y` pixels (right,
down). The same geometry makes `place` canvases and white-background main images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from PIL import Image

Anchor = Literal["center", "bottom"]
ANCHORS: tuple[str, ...] = ("center", "bottom")


@dataclass(frozen=True)
class Placement:
    fit: float = 0.7
    anchor: Anchor = "center"
    offset_x: int = 0
    offset_y: int = 0


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height


class PlacementError(ValueError):
    """A placement that cannot be made: `field` names the placement field at fault."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(f"{field}: {rule} (got {value!r})")
        self.field, self.value, self.rule = field, value, rule


def product_box(cutout: Image.Image) -> Box:
    """The bounding box of the pixels that are not fully transparent."""
    if cutout.mode != "RGBA":
        raise PlacementError("image", cutout.mode, "must have an alpha channel (a cutout) to find the product")
    bbox = cutout.getchannel("A").getbbox()
    if bbox is None:
        raise PlacementError("image", "fully transparent", "must have some opaque pixels: the product")
    left, top, right, bottom = bbox
    return Box(left, top, right - left, bottom - top)


def fitted_size(size: tuple[int, int], frame: tuple[int, int], fit: float) -> tuple[int, int]:
    """The largest size with this aspect inside fit*frame (each side at least 1 pixel)."""
    width, height = size
    max_w, max_h = fit * frame[0], fit * frame[1]
    scale = min(max_w / width, max_h / height)
    # Floor, with a hair of tolerance for float error: the product must never exceed the fit box.
    new_w = max(1, min(math.floor(width * scale + 1e-6), math.floor(max_w + 1e-6)))
    new_h = max(1, min(math.floor(height * scale + 1e-6), math.floor(max_h + 1e-6)))
    return new_w, new_h


def place_box(size: tuple[int, int], canvas: tuple[int, int], placement: Placement) -> Box:
    """Where a product of `size` lands on `canvas`; refused when the offsets push it off the canvas."""
    width, height = fitted_size(size, canvas, placement.fit)
    x = (canvas[0] - width) // 2 + placement.offset_x
    if placement.anchor == "bottom":
        fit_bottom = canvas[1] - math.floor((canvas[1] - placement.fit * canvas[1]) / 2 + 1e-6)
        y = fit_bottom - height + placement.offset_y
    else:
        y = (canvas[1] - height) // 2 + placement.offset_y
    box = Box(x, y, width, height)
    where = f"the {width}x{height} product off the {canvas[0]}x{canvas[1]} canvas"
    if box.x < 0 or box.right > canvas[0]:
        rule = f"moves {where} (x from {box.x} to {box.right}); keep it inside"
        raise PlacementError("placement.offset_x", placement.offset_x, rule)
    if box.y < 0 or box.bottom > canvas[1]:
        rule = f"moves {where} (y from {box.y} to {box.bottom}); keep it inside"
        raise PlacementError("placement.offset_y", placement.offset_y, rule)
    return box


@dataclass(frozen=True)
class PlacedCutout:
    layer: Image.Image  # RGBA, canvas-sized: the scaled product at its place, transparent elsewhere
    box: Box


def place_cutout(cutout: Image.Image, canvas: tuple[int, int], placement: Placement) -> PlacedCutout:
    """The product cropped to its box, scaled (Lanczos, alpha premultiplied by Pillow) and put on a clear canvas."""
    found = product_box(cutout)
    product = cutout.crop((found.x, found.y, found.right, found.bottom))
    box = place_box(product.size, canvas, placement)
    if product.size != (box.width, box.height):
        product = product.resize((box.width, box.height), Image.Resampling.LANCZOS)
    layer = Image.new("RGBA", canvas, (0, 0, 0, 0))
    layer.paste(product, (box.x, box.y))
    return PlacedCutout(layer=layer, box=box)
