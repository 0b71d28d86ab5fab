"""What a pipeline is given for an image mode, and how its output becomes the delivered image.

`img2img`, `inpaint` and `place` each turn their inputs into a `Conditioning`: the starting image, the mask
the pipeline repaints (white), and the keep mask whose pixels are put back from the input after decoding, so
that every pixel the mask keeps is byte-identical to the input (the VAE round trip changes them otherwise).
The pipelines need sides that are multiples of 16: other sizes are padded (the padding is painted, then cut).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageChops

from core.imaging.masks import feather, keep_from_alpha, keep_from_mask, repaint_from_keep
from core.imaging.placement import Box, Placement, place_cutout

MULTIPLE = 16
NEUTRAL = (128, 128, 128)  # what transparent areas start from: a mid grey biases the scene to no colour


@dataclass(frozen=True)
class Conditioning:
    init: Image.Image  # RGB, padded to multiples of 16: the pipeline's `image`
    repaint: Image.Image | None  # L, same size: the pipeline's `mask_image` (white repaints); None for img2img
    keep: Image.Image | None  # L, output size: 255 = the input's pixel exactly; None keeps nothing
    kept_pixels: Image.Image | None  # RGB, output size: where kept pixels come from
    size: tuple[int, int]  # the delivered image's size (the padding is cut off)
    placed: Box | None = None  # place: where the product landed

    def finish(self, generated: Image.Image) -> Image.Image:
        """The decoded image cut to size, with the kept pixels put back exactly."""
        out = generated.convert("RGB")
        if out.size != self.size:
            out = out.crop((0, 0, *self.size))
        if self.keep is None or self.kept_pixels is None:
            return out
        # Image.composite takes image1 where the mask is 255, bit for bit, and blends in between.
        return Image.composite(self.kept_pixels, out, self.keep)


def for_img2img(image: Image.Image) -> Conditioning:
    rgb = flatten(image, (255, 255, 255))
    return Conditioning(init=pad(rgb), repaint=None, keep=None, kept_pixels=None, size=rgb.size)


def for_inpaint(image: Image.Image, mask: Image.Image | None, blur: int, grow_pixels: int) -> Conditioning:
    """With a mask: white repaints; the seam is feathered `blur` pixels into the repainted side. Without one,
    the image's alpha is the mask (transparent repaints, partly transparent pixels blend)."""
    alpha = keep_from_alpha(image)
    if mask is not None:
        if mask.size != image.size:
            raise ValueError(f"mask is {mask.size[0]}x{mask.size[1]}; the image is {image.size[0]}x{image.size[1]}")
        # Kept where the mask keeps and the image is opaque: a transparent pixel has no colour to keep.
        keep = ImageChops.darker(feather(keep_from_mask(mask), blur), alpha)
    else:
        keep = alpha
    rgb = image.convert("RGB")
    init = flatten(image, NEUTRAL)
    return Conditioning(
        init=pad(init),
        repaint=pad(repaint_from_keep(keep, grow_pixels), fill=255),
        keep=keep,
        kept_pixels=rgb,
        size=image.size,
    )


def for_place(cutout: Image.Image, canvas: tuple[int, int], placement: Placement, grow_pixels: int) -> Conditioning:
    """The cutout's product scaled onto a clear canvas; the scene is painted around it, the product kept."""
    placed = place_cutout(cutout, canvas, placement)
    keep = placed.layer.getchannel("A")
    return Conditioning(
        init=pad(flatten(placed.layer, NEUTRAL)),
        repaint=pad(repaint_from_keep(keep, grow_pixels), fill=255),
        keep=keep,
        kept_pixels=placed.layer.convert("RGB"),
        size=canvas,
        placed=placed.box,
    )


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    base = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(base, image).convert("RGB")


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    return (-(-size[0] // MULTIPLE) * MULTIPLE, -(-size[1] // MULTIPLE) * MULTIPLE)


def pad(image: Image.Image, fill: int | None = None) -> Image.Image:
    """Grows the image to multiples of 16 at the right and bottom: with `fill`, or a stretched copy of itself."""
    target = padded_size(image.size)
    if target == image.size:
        return image
    canvas = (
        Image.new(image.mode, target, fill) if fill is not None else image.resize(target, Image.Resampling.BILINEAR)
    )
    canvas.paste(image, (0, 0))
    return canvas
