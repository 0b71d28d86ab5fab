"""LoRA adapters: the loras table, a job's adapters and their signature, the adapters a worker holds

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loras",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("modules", sa.Integer(), nullable=False),
        sa.Column("trigger_words", sa.Text(), nullable=True),
        sa.Column("default_scale", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loras")),
        sa.UniqueConstraint("tenant", "name", name="uq_loras_tenant_name"),
    )
    op.create_index(op.f("ix_loras_sha256"), "loras", ["sha256"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("loras", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("adapters", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("add_trigger_words", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("adapters", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("adapters")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("add_trigger_words")
        batch_op.drop_column("adapters")
        batch_op.drop_column("loras")
    op.drop_index(op.f("ix_loras_sha256"), table_name="loras")
    op.drop_table("loras")
