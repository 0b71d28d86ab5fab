"""`zfarm keys`: create, list and revoke API keys, writing the database directly (an operator's tool)."""

from __future__ import annotations

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.keys import create_key
from api.schemas import KeyCreate
from core.settings import get_settings
from models import ApiKey, make_engine, make_session_factory
from models.base import utcnow


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (writes the database directly: an operator's tool)."""


def _key_session() -> Session:
    return make_session_factory(make_engine(get_settings().resolved_database_url))()


@keys.command("create")
@click.option("--tenant", required=True)
@click.option("--name", default="")
@click.option("--admin", is_flag=True, help="May list workers, read metrics and manage keys.")
@click.option("--max-queued-jobs", type=int, default=None)
@click.option("--submits-per-minute", type=int, default=None)
def keys_create(
    tenant: str, name: str, admin: bool, max_queued_jobs: int | None, submits_per_minute: int | None
) -> None:
    """Create a key and print it once (only its hash is stored)."""

    body = KeyCreate(
        tenant=tenant, name=name, is_admin=admin, max_queued_jobs=max_queued_jobs, submits_per_minute=submits_per_minute
    )
    with _key_session() as session:
        row, key = create_key(session, **body.model_dump())
    click.echo(f"key {row.id} for tenant {row.tenant}{' (admin)' if row.is_admin else ''}: {key}")
    click.echo("store it now: it is not shown again", err=True)


@keys.command("list")
def keys_list() -> None:
    """List keys (prefixes only)."""

    with _key_session() as session:
        for k in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = "revoked" if k.revoked_at else "active"
            click.echo(f"{k.id:>4} {k.prefix}... tenant={k.tenant} admin={k.is_admin} {state} {k.name}")


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke a key by its id."""

    with _key_session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise click.ClickException(f"API key {key_id} not found")
        row.revoked_at = row.revoked_at or utcnow()
        session.commit()
    click.echo(f"revoked key {key_id}")
