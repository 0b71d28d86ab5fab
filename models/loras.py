"""LoRA adapters ("brand styles"): one row per adapter a tenant may name in its jobs.

The file itself lives in storage under a key built from its sha256 (`core.storage.lora_key`); jobs record the
sha256 they were submitted with, so a new upload under the same name never changes what a queued job renders
and never reuses the old upload's images (the sha256 is in the content hash).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, utcnow
from models.jobs import Job
from models.statuses import JobStatus
from models.types import UTCDateTime

EVERY_TENANT = "*"  # an adapter an admin published to every tenant (no tenant name can be "*")
OPEN_FARM = ""  # the owner when the farm runs without keys


class Lora(Base):
    __tablename__ = "loras"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_loras_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))  # a tenant, OPEN_FARM or EVERY_TENANT
    name: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(300))
    bytes: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    targets: Mapped[list[str]] = mapped_column(JSON)  # module patterns, e.g. layers.*.attention.to_q
    modules: Mapped[int] = mapped_column(Integer)  # how many linear modules it changes
    trigger_words: Mapped[str | None] = mapped_column(Text, default=None)
    default_scale: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def owner(tenant: str | None) -> str:
    return OPEN_FARM if tenant is None else tenant


def visible(session: Session, tenant: str | None, names: Iterable[str] | None = None) -> dict[str, Lora]:
    """Adapters a tenant may use, by name: its own, else those published to every tenant."""
    query = select(Lora).where(Lora.tenant.in_([owner(tenant), EVERY_TENANT]))
    if names is not None:
        query = query.where(Lora.name.in_(list(names)))
    found: dict[str, Lora] = {}
    for row in session.scalars(query.order_by(Lora.name)):
        if row.name not in found or row.tenant != EVERY_TENANT:
            found[row.name] = row  # the tenant's own adapter wins over a published one of the same name
    return found


def unfinished_users(session: Session, sha256: str, tenant: str | None) -> int:
    """Queued or running jobs that render with this adapter file (all tenants when `tenant` is EVERY_TENANT)."""
    query = (
        select(Job.id)
        .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]), Job.adapters.contains(sha256))
        .limit(1000)
    )
    if tenant != EVERY_TENANT:
        query = query.where(Job.tenant.is_(None) if tenant in (None, OPEN_FARM) else Job.tenant == tenant)
    return len(session.scalars(query).all())


def other_references(session: Session, sha256: str, but: int) -> bool:
    """Whether another adapter row or an unfinished job still needs this file in storage."""
    rows = session.scalar(select(Lora.id).where(Lora.sha256 == sha256, Lora.id != but).limit(1))
    return rows is not None or unfinished_users(session, sha256, EVERY_TENANT) > 0


def signature(loras: Iterable[Mapping[str, Any]]) -> str | None:
    """What the worker's adapter slot must hold for a job: sha256@scale of each adapter, sorted (their sum does
    not depend on the order). Jobs with different signatures are never rendered in one call."""
    parts = sorted(f"{lora['sha256']}@{float(lora['scale']):g}" for lora in loras)
    return ";".join(parts) or None


def prompt_with_triggers(prompt: str, loras: Iterable[Mapping[str, Any]] | None) -> str:
    """The prompt the text encoder reads when a job asks for its adapters' trigger words."""
    words = [str(lora["trigger_words"]).strip() for lora in loras or () if lora.get("trigger_words")]
    words = [w for w in words if w]
    return ", ".join([*words, prompt]) if words else prompt


def held_adapters(state: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A worker's `adapters` column as people read it: each adapter held, and whether it is in the slot now."""
    state = state or {}
    in_slot = {part.split("@", 1)[0] for part in (state.get("slot") or "").split(";") if part}
    return [{**item, "in_slot": item["sha256"] in in_slot} for item in state.get("held") or []]


def lora_parameters(loras: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The adapters in an image's embedded parameters (PNG text chunk, WebP/JPEG EXIF): name, sha256, scale."""
    listed = [{"name": lora["name"], "sha256": lora["sha256"], "scale": lora["scale"]} for lora in loras or ()]
    return {"loras": listed} if listed else {}
