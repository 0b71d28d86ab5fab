"""Catalog campaigns: a batch (one catalog + one template) and saved prompt templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, new_id, utcnow
from models.types import UTCDateTime


class Batch(Base):
    """What was asked for; the per-SKU state lives on the jobs (jobs.batch_id)."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    name: Mapped[str] = mapped_column(String(200))
    template: Mapped[str] = mapped_column(Text)
    key_column: Mapped[str] = mapped_column(String(100))
    defaults: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    preset: Mapped[str | None] = mapped_column(String(64), default=None)
    renditions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)  # made for every job
    seed: Mapped[int] = mapped_column(BigInteger)
    dedup: Mapped[bool] = mapped_column(default=True)
    source: Mapped[str] = mapped_column(String(16))  # json, csv or jsonl
    rows: Mapped[int] = mapped_column(Integer)
    jobs_reused: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None, unique=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The bulk dispatcher serves the batch whose jobs it sent least recently first: round-robin.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class PromptTemplate(Base):
    """A named prompt template, saved once and reused by batches (`template_name`)."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_templates_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # "" on an open farm: a unique constraint treats NULLs as distinct, so names would not be unique.
    tenant: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(100))
    template: Mapped[str] = mapped_column(Text)
    parts: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    negative_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    preset: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
