from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.assets import Asset
from models.base import Base, new_id, utcnow
from models.statuses import JobStatus
from models.types import StatusType, UTCDateTime
from models.webhooks import WebhookDelivery


class Lane(StrEnum):
    """Which Redis queue a job waits in: interactive jobs go first; bulk (batch) jobs are fed in by turns."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_batch_row", "batch_id", "row_number"),
        Index("ix_jobs_lane_status_enqueued", "lane", "status", "enqueued_at"),
        Index("ix_jobs_content_hash_status", "content_hash", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Changed only by models/lifecycle.py, through named transitions.
    status: Mapped[JobStatus] = mapped_column(StatusType(), default=JobStatus.QUEUED)
    tenant: Mapped[str | None] = mapped_column(String(64), default=None, index=True)

    # what to render
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    # What the farm changed in the request before rendering (enhance words, the default negative prompt), and
    # the prompt as sent when the rendered one differs from it.
    adjustments: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    requested_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance_scale: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(BigInteger)
    num_images: Mapped[int] = mapped_column(Integer, default=1)
    output_format: Mapped[str] = mapped_column(String(8), default="png")
    quality: Mapped[int] = mapped_column(Integer, default=95)
    truncate_prompt: Mapped[bool] = mapped_column(default=False, server_default=false())
    # bf16 (exact) or fp8 (faster, not exact): only workers running this precision take the job (core/queues.py).
    precision: Mapped[str] = mapped_column(String(8), default="bf16", server_default="bf16")
    # Extra outputs made on the worker's CPU from each rendered image (api.schemas.Rendition, as dicts).
    renditions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    # LoRA adapters (models/loras.py), resolved at submission: name, sha256, scale, trigger_words, rank.
    loras: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    # Their signature (models.loras.signature): jobs render together only with equal signatures.
    adapters: Mapped[str | None] = mapped_column(String(300), default=None)
    add_trigger_words: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Image inputs (issue 12): `text` renders from the prompt alone; img2img, inpaint and place start from assets.
    mode: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    image_asset_id: Mapped[str | None] = mapped_column(ForeignKey("assets.id"), default=None)
    mask_asset_id: Mapped[str | None] = mapped_column(ForeignKey("assets.id"), default=None)
    # strength, mask_blur, mask_grow, placement: as resolved at submission (defaults applied)
    mode_parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    # catalog campaigns: which batch and row, how it is queued, and what makes it the same as another job
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), default=None)
    item_key: Mapped[str | None] = mapped_column(String(200), default=None)  # the row's key, e.g. the SKU
    row_number: Mapped[int | None] = mapped_column(Integer, default=None)  # 1-based data row in the catalog
    lane: Mapped[str] = mapped_column(String(16), default=Lane.INTERACTIVE, server_default=Lane.INTERACTIVE.value)
    # sha256 of (model id and revision, normalized parameters, seed): equal hashes give equal images.
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    reused_from: Mapped[str | None] = mapped_column(String(32), default=None)  # the job whose images it shares
    # Whether it may reuse a finished job's images: checked at submission and again when a worker claims it.
    dedup: Mapped[bool] = mapped_column(default=True, server_default=true())
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None, unique=True)
    # The catalog review: a person approves or rejects a batch row's image (api/routes/review.py). A re-rolled
    # row gets a new job; the old one leaves the batch (batch_id cleared) and names its successor here.
    review: Mapped[str | None] = mapped_column(String(16), default=None)  # approved, rejected or none yet
    review_note: Mapped[str | None] = mapped_column(String(500), default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    superseded_by: Mapped[str | None] = mapped_column(String(32), default=None)
    rerolled_from_batch: Mapped[str | None] = mapped_column(String(32), default=None)

    # when
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    gpu_seconds: Mapped[float | None] = mapped_column(Float, default=None)

    # how it went
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    recovery: Mapped[str | None] = mapped_column(Text, default=None)  # e.g. an OOM retried under a stricter policy
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    # live progress: the worker writes the denoising step at most twice a second while it runs
    progress_step: Mapped[int | None] = mapped_column(Integer, default=None)
    progress_total: Mapped[int | None] = mapped_column(Integer, default=None)

    # where and with what: the reproducibility record
    worker_name: Mapped[str | None] = mapped_column(String(200), default=None)
    device_name: Mapped[str | None] = mapped_column(String(200), default=None)
    memory_policy: Mapped[str | None] = mapped_column(String(32), default=None)
    model_id: Mapped[str | None] = mapped_column(String(500), default=None)
    model_revision: Mapped[str | None] = mapped_column(String(100), default=None)
    versions: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    # Every stored file; `masters` and `renditions_of` tell the rendered images from what was made of them.
    images: Mapped[list[Image]] = relationship(
        back_populates="job",
        order_by="[Image.index, Image.rendition]",
        cascade="all, delete-orphan",
        lazy="selectin",
    )
    image_asset: Mapped[Asset | None] = relationship(foreign_keys=[image_asset_id], lazy="selectin")
    mask_asset: Mapped[Asset | None] = relationship(foreign_keys=[mask_asset_id], lazy="selectin")
    webhook: Mapped[WebhookDelivery | None] = relationship(
        back_populates="job", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def masters(self) -> list[Image]:
        return [im for im in self.images if im.rendition == MASTER]

    def renditions_of(self, index: int) -> list[Image]:
        return [im for im in self.images if im.index == index and im.rendition != MASTER]

    def image_seed(self, index: int) -> int:
        # Per-image seeds are consecutive from the job seed, wrapping inside the accepted range.
        return (self.seed + index) % (2**63)


MASTER = ""  # Image.rendition of the rendered image itself; renditions carry their name


class Image(Base):
    """One stored file: a rendered image (rendition "") or a rendition made from it."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "index", "rendition", name="uq_images_job_id_index_rendition"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    # "" rather than NULL: a unique constraint treats NULLs as distinct, so two masters could slip in.
    rendition: Mapped[str] = mapped_column(String(32), default=MASTER, server_default=MASTER)
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="images")
