"""Saved prompt templates, reused by batches through `template_name`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import select

from api.auth import PrincipalDep
from api.batch_schemas import TemplateList, TemplateOut, TemplateSave
from api.deps import SessionDep, SettingsDep
from api.prompt_template import compose_parts, parse_template
from api.refusals import Refusal
from api.strict_route import StrictRoute
from models import PromptTemplate
from models.base import utcnow

router = APIRouter(prefix="/v1/templates", tags=["batches"], route_class=StrictRoute)


def template_out(row: PromptTemplate) -> TemplateOut:
    return TemplateOut(
        name=row.name,
        template=row.template,
        parts=row.parts,
        negative_prompt=row.negative_prompt,
        preset=row.preset,
        columns=parse_template(row.template).columns,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("", response_model=TemplateList)
def list_templates(session: SessionDep, principal: PrincipalDep) -> TemplateList:
    rows = session.scalars(
        select(PromptTemplate).where(PromptTemplate.tenant == (principal.tenant or "")).order_by(PromptTemplate.name)
    )
    return TemplateList(templates=[template_out(r) for r in rows])


@router.get("/{name}", response_model=TemplateOut)
def get_template(name: str, session: SessionDep, principal: PrincipalDep) -> TemplateOut:
    row = _find(session, principal.tenant or "", name)
    if row is None:
        raise HTTPException(404, detail=f"template {name!r} not found")
    return template_out(row)


@router.post("", response_model=TemplateOut, status_code=status.HTTP_201_CREATED)
def save_template(
    body: TemplateSave, session: SessionDep, principal: PrincipalDep, settings: SettingsDep, response: Response
) -> TemplateOut:
    """Saves a template by name (201), or replaces the one of that name (200)."""
    text = body.template if body.template is not None else compose_parts(body.parts.model_dump())  # type: ignore[union-attr]
    try:
        parse_template(text)
    except Refusal as exc:
        raise exc.to_http() from exc
    if body.preset is not None and body.preset not in settings.all_presets:
        known = ", ".join(sorted(settings.all_presets))
        raise HTTPException(
            422,
            detail=[
                {
                    "field": "preset",
                    "value": body.preset,
                    "rule": f"unknown preset: known presets are {known}",
                    "message": f"preset: unknown preset: known presets are {known} (got {body.preset!r})",
                }
            ],
        )
    tenant = principal.tenant or ""
    row = _find(session, tenant, body.name)
    if row is None:
        row = PromptTemplate(tenant=tenant, name=body.name, created_at=utcnow())
        session.add(row)
    else:
        response.status_code = status.HTTP_200_OK
    row.template, row.negative_prompt, row.preset = text, body.negative_prompt, body.preset
    row.parts = body.parts.model_dump() if body.parts is not None else None
    row.updated_at = utcnow()
    session.commit()
    return template_out(row)


def _find(session: SessionDep, tenant: str, name: str) -> PromptTemplate | None:
    return session.scalar(select(PromptTemplate).where(PromptTemplate.tenant == tenant, PromptTemplate.name == name))
