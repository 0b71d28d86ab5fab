"""API keys: a tenant sees only its own jobs; an admin key sees workers, metrics and keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
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


# Declared as security schemes, so the OpenAPI schema (and /docs' Authorize button) says how to send a key.
BEARER = HTTPBearer(
    auto_error=False, scheme_name="apiKey", description="an API key: `Authorization: Bearer zf_...` (zfarm keys create)"
)
KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKeyHeader", description="the same key in an X-API-Key header"
)


def current_principal(
    request: Request,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    header_key: Annotated[str | None, Security(KEY_HEADER)],
) -> Principal:
    if not request.app.state.settings.auth:
        return OPEN
    key = (bearer.credentials.strip() if bearer else None) or header_key
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
# The `admin` scope puts it in the OpenAPI schema's security requirement: /docs shows which routes need one.
AdminDep = Annotated[Principal, Security(require_admin, scopes=["admin"])]
