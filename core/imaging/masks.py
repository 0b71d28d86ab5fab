"""Masks as 8-bit greyscale images. A keep mask is 255 where the input's pixel is kept exactly, 0 where the
model paints, and in between where the two are blended; a repaint mask (what the pipeline paints) is its
opposite, binarized. Users send masks the diffusers way: white repaints, black keeps.
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageFilter

MAX_MASK_PIXELS = 64  # mask_grow and mask_blur: wider than this is a different mask, not a softer seam


def keep_from_mask(mask: Image.Image) -> Image.Image:
    """White (>= 128) repaints, black keeps; a transparent mask pixel counts as black (kept)."""
    if mask.mode in ("RGBA", "LA"):
        black = Image.new("RGBA", mask.size, (0, 0, 0, 255))
        mask = Image.alpha_composite(black, mask.convert("RGBA"))
    return mask.convert("L").point(lambda v: 255 if v < 128 else 0)


def keep_from_alpha(image: Image.Image) -> Image.Image:
    """Opaque pixels are kept, transparent ones repainted, partly transparent ones blended by their alpha."""
    if image.mode != "RGBA":
        return Image.new("L", image.size, 255)
    return image.getchannel("A")


def grow(mask: Image.Image, pixels: int) -> Image.Image:
    """Dilates the white area by `pixels` (a square neighbourhood): one box blur per axis, then any trace is on."""
    if pixels <= 0:
        return mask
    if pixels > MAX_MASK_PIXELS:
        raise ValueError(f"grow must be at most {MAX_MASK_PIXELS} pixels (got {pixels})")
    on = mask.point(lambda v: 255 if v > 0 else 0)
    # A box of 2r+1 <= 129 pixels keeps one white pixel's trace >= 1 after rounding, so the threshold finds it.
    across = on.filter(ImageFilter.BoxBlur((pixels, 0))).point(lambda v: 255 if v > 0 else 0)
    return across.filter(ImageFilter.BoxBlur((0, pixels))).point(lambda v: 255 if v > 0 else 0)


def repaint_from_keep(keep: Image.Image, grow_pixels: int = 0) -> Image.Image:
    """What the pipeline paints: every pixel not kept whole, grown so the scene reaches under the seam."""
    repaint = keep.point(lambda v: 0 if v == 255 else 255)
    return grow(repaint, grow_pixels)


def feather(keep: Image.Image, pixels: int) -> Image.Image:
    """Softens the seam outward, into the painted side only: every pixel kept before is still kept whole."""
    if pixels <= 0:
        return keep
    if pixels > MAX_MASK_PIXELS:
        raise ValueError(f"blur must be at most {MAX_MASK_PIXELS} pixels (got {pixels})")
    soft = grow(keep.point(lambda v: 255 if v == 255 else 0), pixels).filter(ImageFilter.GaussianBlur(pixels / 2))
    return ImageChops.lighter(keep, soft)
