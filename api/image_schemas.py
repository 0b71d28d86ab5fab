"""Request and response shapes of image inputs (issue 12): assets, job modes, placement."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["text", "img2img", "inpaint", "place"]
IMAGE_MODES = ("img2img", "inpaint", "place")
ASSET_ID = r"^[0-9a-f]{32}$"
MAX_MASK_PIXELS = 64  # core.imaging.masks.MAX_MASK_PIXELS: a softer seam, not a different mask


class Placement(BaseModel):
    """Where a cutout's product goes on a `place` canvas."""

    model_config = ConfigDict(extra="forbid")

    fit: float = Field(
        0.7, gt=0, le=1, description="the product fits inside fit*width x fit*height, aspect kept, as large as it can"
    )
    anchor: Literal["center", "bottom"] = Field(
        "center", description="center, or bottom: standing on the bottom edge of the centred fit box"
    )
    offset_x: int = Field(0, ge=-2048, le=2048, description="pixels to the right (negative: left)")
    offset_y: int = Field(0, ge=-2048, le=2048, description="pixels down (negative: up)")


class AssetOut(BaseModel):
    id: str
    sha256: str = Field(description="of the uploaded bytes: the same bytes from the same tenant are the same asset")
    width: int
    height: int
    format: str = Field(description="what was uploaded: png, jpeg or webp (stored as an 8-bit sRGB PNG)")
    has_alpha: bool = Field(description="some pixel is transparent: a cutout")
    conversions: list[str] = Field(description="what ingestion changed: orientation, colour profile, bit depth")
    product_box: list[int] | None = Field(description="x, y, width, height of the non-transparent pixels")
    filename: str | None
    bytes: int = Field(description="size of the stored PNG")
    created_at: datetime
    url: str = Field(description="the stored image's bytes")


class InputOut(BaseModel):
    """An input image as a job's record names it."""

    id: str
    sha256: str
    width: int
    height: int
    has_alpha: bool
    url: str
