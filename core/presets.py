"""Named parameter sets for catalog work: marketplace sizes and formats, shipped and configurable.

The bounds repeat those of `api.schemas.JobCreate` (tests check that every shipped preset passes it), so
a bad preset in ZFARM_PRESETS stops the process at start instead of failing rows later.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PRESET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class ParameterSet(BaseModel):
    """Job parameters that a preset or a batch's `defaults` may set; unset fields keep the job defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int | None = Field(None, ge=256, le=2048, multiple_of=16)
    height: int | None = Field(None, ge=256, le=2048, multiple_of=16)
    steps: int | None = Field(None, ge=1, le=50)
    guidance_scale: float | None = Field(None, ge=0.0, le=20.0, allow_inf_nan=False)
    num_images: int | None = Field(None, ge=1, le=8)
    output_format: Literal["png", "webp", "jpeg"] | None = None
    quality: int | None = Field(None, ge=1, le=100)
    negative_prompt: str | None = Field(None, max_length=4000)

    def parameters(self) -> dict[str, object]:
        """The job parameters this set fixes (a preset's description is not one)."""
        return self.model_dump(exclude={"description"}, exclude_none=True)


class Preset(ParameterSet):
    description: str = ""


SHIPPED: dict[str, Preset] = {
    "square-1024": Preset(description="1:1 master, 1024x1024 PNG", width=1024, height=1024, output_format="png"),
    "square-2000": Preset(
        description="1:1 marketplace main image, 2000x2000 JPEG q92 (zoomable on most marketplaces)",
        width=2000,
        height=2000,
        output_format="jpeg",
        quality=92,
    ),
    "portrait-768": Preset(description="3:4 portrait, 768x1024 PNG", width=768, height=1024, output_format="png"),
    "portrait-832": Preset(description="2:3 portrait, 832x1216 PNG", width=832, height=1216, output_format="png"),
    "landscape-1216": Preset(description="3:2 landscape, 1216x832 PNG", width=1216, height=832, output_format="png"),
    "banner-1536": Preset(
        description="2:1 banner, 1536x768 JPEG q90", width=1536, height=768, output_format="jpeg", quality=90
    ),
    "thumbnail-512": Preset(
        description="1:1 thumbnail, 512x512 WebP q85", width=512, height=512, output_format="webp", quality=85
    ),
}
