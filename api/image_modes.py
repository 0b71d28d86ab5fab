"""Job modes (issue 12), checked at submission against the input assets: nothing that would fail on the GPU
for a predictable reason is queued. Each problem is (field, value, rule); single jobs answer them as a 422,
batches name the row and column.

- text: the prompt alone (no image fields).
- img2img: `image`, `strength` (default 0.6); renders at the image's own size.
- inpaint: `image` + `mask` (white repaints) or the image's alpha (transparent repaints); the image's size;
  `mask_blur` (with a mask) and `mask_grow`; `strength` default 1.0.
- place: a cutout (`image` with alpha) on a `width` x `height` canvas by `placement`; `mask_grow`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from sqlalchemy.orm import Session

from api.assets import owned
from api.image_schemas import Placement
from api.prompt_checks import problem
from api.schemas import JobCreate
from core.imaging.placement import Placement as Geometry
from core.imaging.placement import PlacementError, place_box
from models import Asset, Job

IMAGE_FIELDS = ("mode", "image", "mask", "strength", "mask_blur", "mask_grow", "placement")
DEFAULT_STRENGTH = {"img2img": 0.6, "inpaint": 1.0, "place": 1.0}
MIN_SIDE, MAX_SIDE = 256, 2048  # the job's own width and height bounds
Problem = tuple[str, Any, str]


@dataclass(frozen=True)
class ModeRequest:
    """The mode fields of one job request or catalog row (defaults not yet applied)."""

    mode: str = "text"
    image: str | None = None
    mask: str | None = None
    strength: float | None = None
    mask_blur: int | None = None
    mask_grow: int | None = None
    placement: Placement | None = None
    width: int = 1024
    height: int = 1024
    size_given: bool = False  # width or height was sent (img2img and inpaint take the image's size otherwise)
    renditions: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class ResolvedMode:
    mode: str
    image: Asset | None
    mask: Asset | None
    parameters: dict[str, Any] | None  # strength, mask_blur, mask_grow, placement, defaults applied
    width: int
    height: int

    def columns(self) -> dict[str, Any]:
        """The job row's mode columns (and its size, which img2img and inpaint take from the image)."""
        return {
            "mode": self.mode,
            "image_asset_id": self.image.id if self.image else None,
            "mask_asset_id": self.mask.id if self.mask else None,
            "mode_parameters": self.parameters,
            "width": self.width,
            "height": self.height,
        }

    def identity(self) -> dict[str, Any]:
        """What the content hash adds for an image mode: the inputs' bytes (sha256) and the mode parameters."""
        if self.mode == "text":
            return {}
        inputs = {role: a.sha256 for role, a in (("image", self.image), ("mask", self.mask)) if a is not None}
        return {"mode": self.mode, "inputs": inputs, "mode_parameters": self.parameters}


def mode_parameters(req: ModeRequest) -> dict[str, Any] | None:
    """The request's mode parameters with their defaults: what the job row stores and the worker reads."""
    if req.mode == "text":
        return None
    params: dict[str, Any] = {"strength": req.strength if req.strength is not None else DEFAULT_STRENGTH[req.mode]}
    if req.mode in ("inpaint", "place"):
        params["mask_grow"] = req.mask_grow or 0
    if req.mode == "inpaint" and req.mask is not None:
        params["mask_blur"] = req.mask_blur or 0
    if req.mode == "place":
        params["placement"] = (req.placement or Placement()).model_dump()
    return params


def resolve(
    req: ModeRequest, image: Asset | None, mask: Asset | None, max_pixels: int
) -> tuple[ResolvedMode, list[Problem]]:
    """The mode as it will run, and every problem found (an empty list means it may be queued)."""
    if req.mode == "text":
        problems = _stray_fields(req) + _main_rendition_problems(req, None)
        return ResolvedMode("text", None, None, None, req.width, req.height), problems
    problems = _misplaced_fields(req, mask)
    width, height = req.width, req.height
    if image is None:
        rule = f"mode {req.mode} starts from an image: send an asset id from POST /v1/assets"
        return ResolvedMode(req.mode, None, mask, None, width, height), [*problems, ("image", req.image, rule)]
    if req.mode in ("img2img", "inpaint"):
        width, height = image.width, image.height
        problems += _own_size_problems(req, image, max_pixels)
    if req.mode == "inpaint":
        problems += _mask_problems(image, mask)
    if req.mode == "place":
        problems += _place_problems(req, image)
    problems += _main_rendition_problems(req, image)
    return ResolvedMode(req.mode, image, mask, mode_parameters(req), width, height), problems


def _stray_fields(req: ModeRequest) -> list[Problem]:
    rule = "only the img2img, inpaint and place modes use this field (mode is text): set mode"
    names = ("image", "mask", "strength", "mask_blur", "mask_grow", "placement")
    return [(n, _shown(getattr(req, n)), rule) for n in names if getattr(req, n) is not None]


def _misplaced_fields(req: ModeRequest, mask: Asset | None) -> list[Problem]:
    problems: list[Problem] = []
    if req.mask is not None and req.mode != "inpaint":
        problems.append(("mask", req.mask, f"only inpaint takes a mask (mode is {req.mode})"))
    if req.placement is not None and req.mode != "place":
        problems.append(("placement", _shown(req.placement), f"only place uses a placement (mode is {req.mode})"))
    if req.mask_blur is not None and (req.mode != "inpaint" or req.mask is None):
        rule = "feathers the seam of a mask: only inpaint with a mask uses it (a cutout's alpha is its own seam)"
        problems.append(("mask_blur", req.mask_blur, rule))
    if req.mask_grow is not None and req.mode == "img2img":
        problems.append(("mask_grow", req.mask_grow, "only inpaint and place paint under a mask (mode is img2img)"))
    return problems


def _own_size_problems(req: ModeRequest, image: Asset, max_pixels: int) -> list[Problem]:
    size = f"{image.width}x{image.height}"
    problems: list[Problem] = []
    if req.size_given and (req.width, req.height) != (image.width, image.height):
        rule = f"{req.mode} renders at its image's own size, {size}: leave width and height out (or send those)"
        problems.append(("width", f"{req.width}x{req.height}", rule))
    sides_ok = all(MIN_SIDE <= side <= MAX_SIDE for side in (image.width, image.height))
    if not sides_ok or image.width * image.height > max_pixels:
        rule = (
            f"{req.mode} renders at the image's own size, so each side must be {MIN_SIDE}..{MAX_SIDE} and the "
            f"image at most {max_pixels} pixels: resize it, or use place"
        )
        problems.append(("image", size, rule))
    return problems


def _mask_problems(image: Asset, mask: Asset | None) -> list[Problem]:
    if mask is None:
        if image.has_alpha:
            return []
        rule = "inpaint needs a mask (white repaints, black keeps), or an image with transparency to repaint"
        return [("mask", None, rule)]
    if (mask.width, mask.height) != (image.width, image.height):
        rule = f"must be the size of its image, {image.width}x{image.height}"
        return [("mask", f"{mask.width}x{mask.height}", rule)]
    return []


def _place_problems(req: ModeRequest, image: Asset) -> list[Problem]:
    if not image.has_alpha or not image.product_box:
        rule = "place needs a cutout: a PNG or WebP with transparency around the product (this image is opaque)"
        return [("image", image.id, rule)]
    placement = req.placement or Placement()
    _, _, product_w, product_h = image.product_box
    try:
        place_box((product_w, product_h), (req.width, req.height), Geometry(**placement.model_dump()))
    except PlacementError as exc:
        return [(exc.field, exc.value, exc.rule)]
    return []


def _main_rendition_problems(req: ModeRequest, image: Asset | None) -> list[Problem]:
    has_cutout = req.mode in ("inpaint", "place") and image is not None and image.has_alpha
    if has_cutout:
        return []
    rule = (
        "a white-background main image is made from the job's cutout: only place and inpaint jobs whose image "
        f"has transparency have one (mode is {req.mode}"
        + (", image opaque)" if image is not None and not image.has_alpha else ")")
    )
    return [
        (f"renditions.{i}.background", r.get("background"), rule)
        for i, r in enumerate(req.renditions)
        if r.get("background") is not None
    ]


def _shown(value: object) -> object:
    return value.model_dump() if isinstance(value, Placement) else value


def request_of(body: JobCreate) -> ModeRequest:
    return ModeRequest(
        mode=body.mode,
        image=body.image,
        mask=body.mask,
        strength=body.strength,
        mask_blur=body.mask_blur,
        mask_grow=body.mask_grow,
        placement=body.placement,
        width=body.width,
        height=body.height,
        size_given=bool({"width", "height"} & body.model_fields_set),
        renditions=[r.model_dump() for r in body.renditions],
    )


def resolve_job(body: JobCreate, session: Session, tenant: str | None, max_pixels: int) -> ResolvedMode:
    """A single job's mode: 404 for an asset the tenant does not own, 422 naming every other problem."""
    found: dict[str, Asset | None] = {}
    for role in ("image", "mask"):
        asset_id = getattr(body, role)
        found[role] = owned(session, asset_id, tenant) if asset_id else None
        if asset_id and found[role] is None:
            raise HTTPException(404, detail=f"{role}: asset {asset_id!r} not found")
    resolved, problems = resolve(request_of(body), found["image"], found["mask"], max_pixels)
    if problems:
        raise HTTPException(422, detail=[problem(*p) for p in problems])
    return resolved


def replay_matches(body: JobCreate, job: Job) -> bool:
    """Whether a repeated request (same Idempotency-Key) asks for the same image mode as the job it made."""
    req = request_of(body)
    return (req.mode, req.image, req.mask, mode_parameters(req)) == (
        job.mode,
        job.image_asset_id,
        job.mask_asset_id,
        job.mode_parameters,
    )
