"""batches templates job lanes

Revision ID: 0002
Revises: 0004
Create Date: 2026-11-23

Catalog campaigns (issue 3). Written as a child of 0001; chained after 0004 here because main already
holds 0004 (a second head would stop `alembic upgrade head`). Re-chain freely when merging.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("key_column", sa.String(length=100), nullable=False),
        sa.Column("defaults", sa.JSON(), nullable=True),
        sa.Column("preset", sa.String(length=64), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("dedup", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("jobs_reused", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_batches_idempotency_key")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_tenant"), ["tenant"], unique=False)

    op.create_table(
        "templates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=True),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("preset", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("tenant", "name", name="uq_templates_tenant_name"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("item_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("row_number", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("lane", sa.String(length=16), server_default="interactive", nullable=False))
        batch_op.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("reused_from", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_jobs_batch_row", ["batch_id", "row_number"], unique=False)
        batch_op.create_index("ix_jobs_content_hash_status", ["content_hash", "status"], unique=False)
        batch_op.create_index("ix_jobs_lane_status_enqueued", ["lane", "status", "enqueued_at"], unique=False)
        batch_op.create_unique_constraint(batch_op.f("uq_jobs_idempotency_key"), ["idempotency_key"])
        batch_op.create_foreign_key(batch_op.f("fk_jobs_batch_id_batches"), "batches", ["batch_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_batch_id_batches"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_jobs_idempotency_key"), type_="unique")
        batch_op.drop_index("ix_jobs_lane_status_enqueued")
        batch_op.drop_index("ix_jobs_content_hash_status")
        batch_op.drop_index("ix_jobs_batch_row")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("reused_from")
        batch_op.drop_column("content_hash")
        batch_op.drop_column("lane")
        batch_op.drop_column("row_number")
        batch_op.drop_column("item_key")
        batch_op.drop_column("batch_id")

    op.drop_table("templates")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_tenant"))

    op.drop_table("batches")
