"""Encoding rendered images: PNG with the generation parameters in a text chunk, WebP, JPEG; sRGB."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms

from worker.png import encode_png

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
        # Several cores instead of Pillow's one: the PNG is on the job's latency path (worker/png.py).
        data = encode_png(np.asarray(rgb), _SRGB, text={"Software": "zfarm"}, itxt={"parameters": meta})
        return EncodedImage(data=data, sha256=hashlib.sha256(data).hexdigest(), format=fmt)
    if fmt == "webp":
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
