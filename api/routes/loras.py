"""LoRA adapters (brand styles): upload a safetensors file under a name, list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status
from fastapi import Path as FPath
from sqlalchemy import select

from api.auth import Principal, PrincipalDep
from api.deps import SessionDep, SettingsDep, StorageDep
from api.lora_files import check_adapter, save_upload
from api.refusals import Refusal
from api.schemas import LORA_NAME, MAX_LORA_SCALE, LoraList, LoraOut
from api.strict_route import StrictRoute
from core.lora_keys import MAX_RANK, table_for
from core.storage import lora_key
from models.base import utcnow
from models.loras import EVERY_TENANT, Lora, other_references, owner, unfinished_users, visible

router = APIRouter(prefix="/v1/loras", tags=["loras"], route_class=StrictRoute)
NameDep = Annotated[str, FPath(pattern=LORA_NAME)]


def lora_out(row: Lora) -> LoraOut:
    return LoraOut(
        name=row.name,
        sha256=row.sha256,
        rank=row.rank,
        alpha=row.alpha,
        targets=row.targets,
        modules=row.modules,
        bytes=row.bytes,
        trigger_words=row.trigger_words,
        default_scale=row.default_scale,
        shared=row.tenant == EVERY_TENANT,
        created_at=row.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=LoraOut,
    responses={413: {"description": "file over ZFARM_MAX_LORA_BYTES"}, 422: {"description": "not an adapter"}},
)
def upload_lora(
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="a .safetensors LoRA adapter for the Z-Image transformer")],
    name: Annotated[str, Form(pattern=LORA_NAME)],
    trigger_words: Annotated[str | None, Form(max_length=500)] = None,
    default_scale: Annotated[float, Form(ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE, allow_inf_nan=False)] = 1.0,
    everyone: Annotated[bool, Form(description="admin keys: publish it to every tenant")] = False,
) -> LoraOut:
    """Checks the file, stores it by its sha256, and names it for this tenant (a new upload replaces the name)."""
    if everyone and not principal.is_admin:
        raise HTTPException(403, detail="everyone: only an admin key may publish an adapter to every tenant")
    try:
        saved = save_upload(file.file, settings.max_lora_bytes)
    except Refusal as exc:
        raise exc.to_http() from exc
    try:
        info = check_adapter(saved.path, file.filename or "", table_for(settings.model), MAX_RANK)
        key = lora_key(saved.sha256)
        if not storage.exists(key):  # stored by content: the same file uploaded again is stored once
            storage.put_file(key, saved.path)
    except Refusal as exc:
        raise exc.to_http() from exc
    finally:
        saved.path.unlink(missing_ok=True)
    tenant = EVERY_TENANT if everyone else owner(principal.tenant)
    row = session.scalar(select(Lora).where(Lora.tenant == tenant, Lora.name == name)) or Lora(tenant=tenant, name=name)
    replaced = row.sha256 if row.sha256 != saved.sha256 else None
    row.sha256, row.storage_key, row.bytes = saved.sha256, key, saved.bytes
    row.rank, row.alpha, row.targets, row.modules = info.rank, info.alpha, info.targets, len(info.ranks)
    row.trigger_words = (trigger_words or "").strip() or None
    row.default_scale, row.created_at = default_scale, utcnow()
    session.add(row)
    session.commit()
    # The name's previous file goes once nothing needs it (queued jobs still render with the file they named).
    if replaced and not other_references(session, replaced, but=-1):
        storage.delete(lora_key(replaced))
    return lora_out(row)


@router.get("", response_model=LoraList)
def list_loras(session: SessionDep, principal: PrincipalDep) -> LoraList:
    """The adapters this tenant may use: its own and those published to every tenant."""
    return LoraList(loras=[lora_out(row) for row in visible(session, principal.tenant).values()])


@router.get("/{name}", response_model=LoraOut)
def get_lora(name: NameDep, session: SessionDep, principal: PrincipalDep) -> LoraOut:
    row = visible(session, principal.tenant, [name]).get(name)
    if row is None:
        raise HTTPException(404, detail=f"adapter {name!r} not found")
    return lora_out(row)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_lora(name: NameDep, session: SessionDep, storage: StorageDep, principal: PrincipalDep) -> Response:
    """Refused (409) while queued or running jobs use it; the file goes once nothing else refers to it."""
    row = _owned(session, principal, name)
    users = unfinished_users(session, row.sha256, row.tenant if row.tenant == EVERY_TENANT else principal.tenant)
    if users:
        raise HTTPException(
            409, detail=f"adapter {name!r} is used by {users} queued or running job(s); delete it once they end"
        )
    session.delete(row)
    session.flush()
    if not other_references(session, row.sha256, but=row.id):
        storage.delete(row.storage_key)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _owned(session: SessionDep, principal: Principal, name: str) -> Lora:
    mine = session.scalar(select(Lora).where(Lora.tenant == owner(principal.tenant), Lora.name == name))
    if mine is not None:
        return mine
    shared = session.scalar(select(Lora).where(Lora.tenant == EVERY_TENANT, Lora.name == name))
    if shared is not None and principal.is_admin:
        return shared
    if shared is not None:
        raise HTTPException(403, detail=f"adapter {name!r} was published to every tenant: only an admin key deletes it")
    raise HTTPException(404, detail=f"adapter {name!r} not found")
