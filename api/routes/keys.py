from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from sqlalchemy import select

from api.auth import AdminDep
from api.deps import SessionDep
from api.keys import create_key
from api.schemas import KeyCreate, KeyOut
from api.strict_route import StrictRoute
from models import ApiKey
from models.base import utcnow

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=StrictRoute)


def key_out(row: ApiKey, key: str | None = None) -> KeyOut:
    return KeyOut.model_validate({**{c: getattr(row, c) for c in KeyOut.model_fields if c != "key"}, "key": key})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyOut)
def post_key(body: KeyCreate, session: SessionDep, _admin: AdminDep) -> KeyOut:
    row, key = create_key(session, **body.model_dump())
    return key_out(row, key)


@router.get("", response_model=list[KeyOut])
def list_keys(session: SessionDep, _admin: AdminDep) -> list[KeyOut]:
    return [key_out(k) for k in session.scalars(select(ApiKey).order_by(ApiKey.id))]


@router.delete("/{key_id}", response_model=KeyOut)
def revoke_key(key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep, _admin: AdminDep) -> KeyOut:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise HTTPException(404, detail=f"API key {key_id} not found")
    row.revoked_at = row.revoked_at or utcnow()
    session.commit()
    return key_out(row)
