"""A job's input images, read from storage (never from a client URL) and turned into what its mode renders from.

The API stored each asset as an 8-bit sRGB PNG with server-built keys and checked sizes, masks and placements
before queueing; this module reads those files back and builds the conditioning (core/imaging/conditioning.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image as PILImage

from core.imaging.conditioning import Conditioning, for_img2img, for_inpaint, for_place
from core.imaging.placement import Placement, PlacementError
from core.storage import Storage
from models import Job

if TYPE_CHECKING:
    from worker.render import RenderRequest

IMAGE_MODES = ("img2img", "inpaint", "place")


class InputError(ValueError):
    """An input that cannot be read or used at render time (the API refuses these; this is the last check)."""


@dataclass(frozen=True)
class ImageInputs:
    mode: str
    strength: float
    conditioning: Conditioning
    # The image asset at full size when it is a cutout (has alpha): white-background main images are made from it.
    cutout: PILImage.Image | None
    # What the PNG text chunk records beside the generation parameters: mode, inputs (ids, sha256), parameters.
    described: dict[str, Any]


def input_spec(job: Job) -> dict[str, Any] | None:
    """What the worker needs of a job's inputs, read at the claim (plain data: no session needed later)."""
    if job.mode == "text" or job.image_asset is None:
        return None
    assets = {"image": job.image_asset, "mask": job.mask_asset}
    refs = {
        role: {"id": a.id, "sha256": a.sha256, "key": a.storage_key} if a is not None else None
        for role, a in assets.items()
    }
    return {"mode": job.mode, **refs, **(job.mode_parameters or {}), "width": job.width, "height": job.height}


def with_inputs(req: RenderRequest, storage: Storage) -> RenderRequest:
    """The request with its input images read and conditioned; unchanged for text jobs."""
    spec = req.extra.get("inputs")
    if not spec:
        return req
    return dataclasses.replace(req, inputs=load_inputs(spec, storage))


def load_inputs(spec: Mapping[str, Any], storage: Storage) -> ImageInputs:
    """`spec` is what the claim read from the job and its assets (worker/jobs.py)."""
    mode = spec["mode"]
    image = read_asset(spec["image"], storage)
    mask = read_asset(spec["mask"], storage) if spec.get("mask") else None
    try:
        conditioning = _conditioning(mode, image, mask, spec)
    except (PlacementError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    return ImageInputs(
        mode=mode,
        strength=float(spec["strength"]),
        conditioning=conditioning,
        cutout=image if image.mode == "RGBA" else None,
        described=described(spec),
    )


def read_asset(asset: Mapping[str, Any], storage: Storage) -> PILImage.Image:
    try:
        with storage.open(asset["key"]) as fh:
            image = PILImage.open(fh, formats=["PNG"])
            image.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"asset {asset['id']} could not be read from storage: {exc}") from exc
    return image


def _conditioning(
    mode: str, image: PILImage.Image, mask: PILImage.Image | None, spec: Mapping[str, Any]
) -> Conditioning:
    if mode == "img2img":
        return for_img2img(image)
    if mode == "inpaint":
        return for_inpaint(image, mask, int(spec.get("mask_blur") or 0), int(spec.get("mask_grow") or 0))
    if mode == "place":
        placement = Placement(**(spec.get("placement") or {}))
        canvas = (int(spec["width"]), int(spec["height"]))
        return for_place(image, canvas, placement, int(spec.get("mask_grow") or 0))
    raise InputError(f"mode must be one of {', '.join(IMAGE_MODES)} (got {mode!r})")


def described(spec: Mapping[str, Any]) -> dict[str, Any]:
    inputs = {
        role: {"id": spec[role]["id"], "sha256": spec[role]["sha256"]} for role in ("image", "mask") if spec.get(role)
    }
    out: dict[str, Any] = {"mode": spec["mode"], "inputs": inputs, "strength": spec["strength"]}
    for name in ("mask_blur", "mask_grow", "placement"):
        if spec.get(name) is not None:
            out[name] = spec[name]
    return out
