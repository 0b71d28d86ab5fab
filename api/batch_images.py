"""Batches with images (issue 12): each image row's `image` and `mask` become assets (a file of the batch's
`images` zip, ingested like an upload, or an asset id the tenant owns) and its mode is checked, all before
anything is stored. A refused batch leaves no job, no asset and no file behind."""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.orm import Session

from api.assets import existing, owned
from api.catalog_images import column_of
from api.catalog_rows import JobSpec
from api.image_modes import ModeRequest, ResolvedMode, resolve
from api.image_schemas import ASSET_ID, Placement
from api.refusals import Problems, refuse
from api.schemas import Rendition, rendition_problems
from core.imaging.ingest import ImageRefused, IngestedImage, ingest
from core.settings import FarmSettings
from core.storage import Storage, asset_key
from models import Asset
from models.base import new_id, utcnow

SPOOL_BYTES = 8 * 1024 * 1024  # a normalized image larger than this waits on disk, not in memory


class ImagesZip:
    """The `images` part: members found by exact name, or by a file name that only one member has."""

    def __init__(self, data: bytes, max_member_bytes: int) -> None:
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise refuse(f"must be a zip file: {exc}", field="images", value=f"{len(data)} bytes") from exc
        self.max_member_bytes = max_member_bytes
        self.names = [i.filename for i in self.zip.infolist() if not i.is_dir() and "__MACOSX/" not in i.filename]
        self.by_base: dict[str, list[str]] = {}
        for name in self.names:
            self.by_base.setdefault(name.rsplit("/", 1)[-1], []).append(name)

    def find(self, cell: str) -> tuple[str | None, str | None]:
        """(member, None) or (None, the rule broken)."""
        if cell in self.names:
            return cell, None
        matches = self.by_base.get(cell.rsplit("/", 1)[-1], [])
        if len(matches) == 1:
            return matches[0], None
        if matches:
            return None, f"names {len(matches)} files of the images zip ({', '.join(matches[:3])}): give the path"
        return None, "no file by this name in the images zip, and no asset with this id"

    def read(self, name: str) -> bytes:
        """The member's bytes, never more than the limit (a zip's declared sizes can lie)."""
        with self.zip.open(name) as member:
            data = member.read(self.max_member_bytes + 1)
        if len(data) > self.max_member_bytes:
            raise ImageRefused(name, f"is over {self.max_member_bytes} bytes once unzipped")
        return data


@dataclass
class RowImages:
    """Per spec (in order) its resolved mode; the new assets to store once the batch is accepted."""

    resolved: list[ResolvedMode]
    new_assets: list[tuple[Asset, IO[bytes]]] = field(default_factory=list)

    def store(self, session: Session, storage: Storage) -> None:
        """Adds the new assets and writes their files (the caller commits, with the jobs that use them)."""
        for asset, _ in self.new_assets:
            session.add(asset)
        session.flush()
        for asset, spool in self.new_assets:
            spool.seek(0)
            storage.put(asset.storage_key, spool.read())
            spool.close()


@dataclass
class _Resolver:
    session: Session
    settings: FarmSettings
    tenant: str | None
    zip: ImagesZip | None
    problems: Problems
    members: dict[str, Asset | str] = field(default_factory=dict)  # by member name: its asset, or why not
    by_sha: dict[str, Asset] = field(default_factory=dict)
    new: list[tuple[Asset, IO[bytes]]] = field(default_factory=list)

    def asset(self, cell: str) -> Asset | str:
        if re.fullmatch(ASSET_ID, cell) and (found := owned(self.session, cell, self.tenant)) is not None:
            return found
        if cell.startswith(("http://", "https://")):
            return "URLs are not fetched: put the file in the images zip, or upload it (POST /v1/assets) and use its id"
        if self.zip is None:
            return "no asset with this id (upload it with POST /v1/assets), and no images zip was sent"
        name, rule = self.zip.find(cell)
        if name is None:
            return str(rule)
        if name not in self.members:
            self.members[name] = self._ingest(name)
        return self.members[name]

    def _ingest(self, name: str) -> Asset | str:
        try:
            data = self.zip.read(name)  # type: ignore[union-attr]
            image = ingest(data, self.settings.max_asset_pixels)
        except ImageRefused as exc:
            return f"{name}: {exc.rule}"
        if (known := self.by_sha.get(image.sha256)) is not None:
            return known
        known = existing(self.session, self.tenant, image.sha256)
        if known is None:
            known = self._stage(image, name, len(data))
        self.by_sha[image.sha256] = known
        return known

    def _stage(self, image: IngestedImage, name: str, source_bytes: int) -> Asset:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed by RowImages.store)
        spool.write(image.data)
        asset_id = new_id()
        asset = Asset(
            id=asset_id,
            tenant=self.tenant,
            sha256=image.sha256,
            stored_sha256=image.stored_sha256,
            width=image.width,
            height=image.height,
            format=image.format,
            has_alpha=image.has_alpha,
            conversions=list(image.conversions),
            product_box=list(image.product_box) if image.product_box else None,
            filename=name.rsplit("/", 1)[-1][:255],
            source_bytes=source_bytes,
            bytes=len(image.data),
            storage_key=asset_key(asset_id),
            created_at=utcnow(),
        )
        self.new.append((asset, spool))
        return asset

    def row(self, spec: JobSpec) -> ResolvedMode | None:
        where = {"row": spec.row, "line": spec.line}
        found: dict[str, Asset | None] = {"image": None, "mask": None}
        for role, cell in spec.inputs.items():
            got = self.asset(cell)
            if isinstance(got, str):
                self.problems.add(got, column=role, value=cell, **where)
            else:
                found[role] = got
        if any(found[c] is None for c in spec.inputs):
            return None
        params = _applicable(spec)
        placement = Placement.model_validate(params["placement"]) if params.get("placement") else None
        req = ModeRequest(
            mode=params["mode"],
            image=spec.inputs.get("image"),
            mask=spec.inputs.get("mask"),
            strength=params.get("strength"),
            mask_blur=params.get("mask_blur"),
            mask_grow=params.get("mask_grow"),
            placement=placement,
            width=params["width"],
            height=params["height"],
            size_given=spec.size_given,
            renditions=params.get("renditions") or [],
        )
        resolved, problems = resolve(req, found["image"], found["mask"], self.settings.max_pixels)
        if resolved.mode in ("img2img", "inpaint") and not problems:
            renditions = [Rendition.model_validate(r) for r in params.get("renditions") or []]
            problems += rendition_problems(resolved.width, resolved.height, renditions)
        for name, value, rule in problems:
            column = column_of(name, spec.columns)
            self.problems.add(rule, column=column, field=None if column else name, value=value, **where)
        return None if problems else resolved


# The mode fields each mode reads. A batch's value for a field the row's mode does not read is not used for that
# row (a `place` batch's placement means nothing to a row that switches to inpaint); a row's own cell is checked.
_READS = {
    "text": (),
    "img2img": ("strength",),
    "inpaint": ("strength", "mask_grow", "mask_blur"),
    "place": ("strength", "mask_grow", "placement"),
}


def _applicable(spec: JobSpec) -> dict[str, Any]:
    params = dict(spec.params)
    row_placement = any(c.startswith("placement_") for c in spec.columns)
    for name in ("strength", "mask_blur", "mask_grow", "placement"):
        from_row = name in spec.columns or (name == "placement" and row_placement)
        if not from_row and name not in _READS[params["mode"]]:
            params[name] = None
    if params["mode"] == "inpaint" and "mask" not in spec.inputs and "mask_blur" not in spec.columns:
        params["mask_blur"] = None  # feathers a mask's seam: not used where the alpha channel is the mask
    return params


def resolve_rows(
    session: Session, settings: FarmSettings, tenant: str | None, specs: list[JobSpec], images: bytes | None
) -> RowImages:
    """Every row's mode and inputs, or a Refusal naming each problem's row and column (nothing stored)."""
    if images is not None and all(s.params.get("mode", "text") == "text" for s in specs):
        rule = "is read only by rows whose mode is img2img, inpaint or place (every row here is text): set mode"
        raise refuse(rule, field="images")
    resolver = _Resolver(
        session, settings, tenant, ImagesZip(images, settings.max_upload_bytes) if images else None, Problems()
    )
    resolved = []
    for spec in specs:
        resolved.append(resolver.row(spec))
        if resolver.problems.full:
            break
    if resolver.problems.items:
        for _, spool in resolver.new:
            spool.close()
        resolver.problems.raise_if_any()
    return RowImages(resolved=resolved, new_assets=resolver.new)  # type: ignore[arg-type]
