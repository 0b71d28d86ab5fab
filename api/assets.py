"""Input images (assets): checked and normalized on the way in (core/imaging/ingest.py), stored once per tenant
under a server-built key, and looked up for jobs. Another tenant's asset answers exactly like a missing one."""

from __future__ import annotations

import re

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.image_schemas import AssetOut
from api.public_urls import base_url
from core.imaging.ingest import IngestedImage
from core.storage import Storage, asset_key
from models import Asset
from models.base import new_id, utcnow

MEDIA_TYPE = "image/png"


def owned(session: Session, asset_id: str, tenant: str | None) -> Asset | None:
    asset = session.get(Asset, asset_id)
    if asset is None or (tenant is not None and asset.tenant != tenant):
        return None
    return asset


def existing(session: Session, tenant: str | None, sha256: str) -> Asset | None:
    owner = Asset.tenant.is_(None) if tenant is None else Asset.tenant == tenant
    return session.scalar(select(Asset).where(owner, Asset.sha256 == sha256).order_by(Asset.created_at).limit(1))


def add_asset(
    session: Session,
    storage: Storage,
    tenant: str | None,
    image: IngestedImage,
    source_bytes: int,
    filename: str | None,
) -> tuple[Asset, bool]:
    """The tenant's asset for these bytes: the one already stored, or a new row (flushed) and its file.

    The caller commits; a concurrent upload of the same bytes makes the flush raise IntegrityError.
    """
    if (found := existing(session, tenant, image.sha256)) is not None:
        return found, False
    asset_id = new_id()
    asset = Asset(
        id=asset_id,
        tenant=tenant,
        sha256=image.sha256,
        stored_sha256=image.stored_sha256,
        width=image.width,
        height=image.height,
        format=image.format,
        has_alpha=image.has_alpha,
        conversions=list(image.conversions),
        product_box=list(image.product_box) if image.product_box else None,
        filename=clean_filename(filename),
        source_bytes=source_bytes,
        bytes=len(image.data),
        storage_key=asset_key(asset_id),
        created_at=utcnow(),
    )
    session.add(asset)
    session.flush()
    storage.put(asset.storage_key, image.data)
    return asset, True


def clean_filename(name: str | None) -> str | None:
    """Kept for people to recognise their files; never used as a path or key."""
    if not name:
        return None
    base = re.split(r"[\\/]", name)[-1]
    return re.sub(r"[\x00-\x1f\x7f]", "", base)[:255] or None


def asset_url(asset: Asset, base_url: str) -> str:
    return f"{base_url.rstrip('/')}/v1/assets/{asset.id}/content"


def asset_out(asset: Asset, request: Request) -> AssetOut:
    return AssetOut(
        id=asset.id,
        sha256=asset.sha256,
        width=asset.width,
        height=asset.height,
        format=asset.format,
        has_alpha=asset.has_alpha,
        conversions=list(asset.conversions or []),
        product_box=asset.product_box,
        filename=asset.filename,
        bytes=asset.bytes,
        created_at=asset.created_at,
        url=asset_url(asset, base_url(request)),
    )
