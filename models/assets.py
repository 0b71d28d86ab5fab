"""Input images (assets): uploaded once per tenant, stored normalized (8-bit sRGB PNG), referenced by jobs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, new_id, utcnow
from models.types import UTCDateTime


class Asset(Base):
    __tablename__ = "assets"
    # The same bytes from the same tenant are the same asset. (With no tenant, an open farm, two identical
    # uploads racing may both insert: NULLs never collide in a unique constraint. The first one is used.)
    __table_args__ = (UniqueConstraint("tenant", "sha256", name="uq_assets_tenant_sha256"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    sha256: Mapped[str] = mapped_column(String(64))  # of the uploaded bytes
    stored_sha256: Mapped[str] = mapped_column(String(64))  # of the normalized file the worker reads
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))  # what was uploaded: png, jpeg, webp
    has_alpha: Mapped[bool] = mapped_column()
    # What ingestion changed, in words: EXIF orientation applied, ICC profile converted, 16-bit reduced...
    conversions: Mapped[list[str]] = mapped_column(JSON, default=list)
    # x, y, width, height of the non-transparent pixels (a cutout's product); None when nothing is transparent
    product_box: Mapped[list[int] | None] = mapped_column(JSON, default=None)
    filename: Mapped[str | None] = mapped_column(String(255), default=None)  # as uploaded; informational only
    source_bytes: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(300))  # server-built (core.storage.asset_key)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
