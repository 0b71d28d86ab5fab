"""API keys: a tenant sees only its own jobs; an admin key sees workers, metrics and keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select

from api.deps import SessionDep
from models import ApiKey

KEY_PREFIX = "zf_"


@dataclass(frozen=True)
class Principal:
    tenant: str | None  # None when the farm runs open (embedded, loopback only)
    is_admin: bool
    key_id: int | None = None
    max_queued_jobs: int | None = None
    submits_per_minute: int | None = None


OPEN = Principal(tenant=None, is_admin=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key")


def current_principal(request: Request, session: SessionDep) -> Principal:
    if not request.app.state.settings.auth:
        return OPEN
    key = _presented_key(request)
    if key is None:
        raise HTTPException(
            401,
            detail="an API key is required: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == hash_key(key), ApiKey.revoked_at.is_(None)))
    if row is None:
        raise HTTPException(401, detail="unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return Principal(row.tenant, row.is_admin, row.id, row.max_queued_jobs, row.submits_per_minute)


def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(403, detail="this route needs an admin API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
