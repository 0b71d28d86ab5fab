"""Encoding rendered images: PNG with the generation parameters in a text chunk, WebP, JPEG; sRGB."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage
from PIL import ImageCms
from PIL.PngImagePlugin import PngInfo

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    sha256: str
    format: str


def encode_image(image: PILImage.Image, fmt: str, quality: int, parameters: dict[str, Any]) -> EncodedImage:
    """Parameters must not hold job ids or times: the same seed and parameters must give the same bytes."""
    buf = io.BytesIO()
    rgb = image.convert("RGB")
    meta = json.dumps(parameters, sort_keys=True, ensure_ascii=False)
    if fmt == "png":
        info = PngInfo()
        info.add_itxt("parameters", meta)
        info.add_text("Software", "zfarm")
        rgb.save(buf, format="PNG", pnginfo=info, icc_profile=_SRGB)
    elif fmt == "webp":
        exif = PILImage.Exif()
        exif[0x010E] = meta  # ImageDescription
        rgb.save(buf, format="WEBP", quality=quality, icc_profile=_SRGB, exif=exif.tobytes())
    elif fmt == "jpeg":
        exif = PILImage.Exif()
        exif[0x010E] = meta
        rgb.save(buf, format="JPEG", quality=quality, icc_profile=_SRGB, exif=exif.tobytes())
    else:
        raise ValueError(f"output_format must be one of png, webp, jpeg (got {fmt!r})")
    data = buf.getvalue()
    return EncodedImage(data=data, sha256=hashlib.sha256(data).hexdigest(), format=fmt)
