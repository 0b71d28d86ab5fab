"""Creating API keys (used by the admin route and by `zfarm keys create`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.auth import hash_key, new_key
from models import ApiKey
from models.base import utcnow


def create_key(
    session: Session,
    *,
    tenant: str,
    name: str = "",
    is_admin: bool = False,
    max_queued_jobs: int | None = None,
    submits_per_minute: int | None = None,
) -> tuple[ApiKey, str]:
    key = new_key()
    row = ApiKey(
        tenant=tenant,
        name=name,
        prefix=key[:10],
        key_sha256=hash_key(key),
        is_admin=is_admin,
        max_queued_jobs=max_queued_jobs,
        submits_per_minute=submits_per_minute,
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return row, key
