"""Input images: upload (multipart `file`), record, bytes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, Response, UploadFile
from sqlalchemy.exc import IntegrityError

from api.assets import MEDIA_TYPE, add_asset, asset_out, existing, owned
from api.auth import PrincipalDep
from api.deps import SessionDep, SettingsDep, StorageDep
from api.image_schemas import AssetOut
from api.prompt_checks import refuse
from api.public_urls import url_for
from api.stored_files import stored_response
from api.strict_route import StrictRoute
from core.imaging.ingest import ImageRefused, ingest
from models import Asset

router = APIRouter(prefix="/v1/assets", tags=["assets"], route_class=StrictRoute)


@router.post(
    "",
    status_code=201,
    response_model=AssetOut,
    responses={200: {"model": AssetOut, "description": "the same bytes were uploaded before: that asset"}},
)
def upload_asset(
    file: Annotated[UploadFile, File(description="a PNG, JPEG or WebP image (content checked, not the name)")],
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    request: Request,
    response: Response,
) -> AssetOut:
    # The body limit (ZFARM_MAX_UPLOAD_BYTES) was enforced before this runs; an upload is a submit for the quota.
    request.app.state.quotas.check_rate(principal)
    data = file.file.read()
    try:
        image = ingest(data, settings.max_asset_pixels)
    except ImageRefused as exc:
        raise refuse("file", exc.value, exc.rule) from exc
    try:
        asset, created = add_asset(session, storage, principal.tenant, image, len(data), file.filename)
        session.commit()
    except IntegrityError:
        session.rollback()  # the same bytes from the same tenant, uploaded at the same moment: that one wins
        found = existing(session, principal.tenant, image.sha256)
        if found is None:
            raise
        asset, created = found, False
    response.status_code = 201 if created else 200
    response.headers["Location"] = url_for(request, "get_asset", asset_id=asset.id)
    return asset_out(asset, request)


def _get(session: SessionDep, asset_id: str, principal: PrincipalDep) -> Asset:
    asset = owned(session, asset_id, principal.tenant)
    if asset is None:
        raise HTTPException(404, detail=f"asset {asset_id!r} not found")
    return asset


@router.get("/{asset_id}", response_model=AssetOut, name="get_asset")
def get_asset(asset_id: str, session: SessionDep, principal: PrincipalDep, request: Request) -> AssetOut:
    return asset_out(_get(session, asset_id, principal), request)


@router.get(
    "/{asset_id}/content",
    name="get_asset_content",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}}},
)
def get_asset_content(
    asset_id: str, session: SessionDep, storage: StorageDep, principal: PrincipalDep, request: Request
) -> Response:
    asset = _get(session, asset_id, principal)
    headers = {"ETag": f'"{asset.stored_sha256}"'}
    return stored_response(
        storage, asset.storage_key, MEDIA_TYPE, headers, asset.bytes, f"asset {asset.id}", request.app.state.presign
    )
