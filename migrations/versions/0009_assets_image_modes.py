"""assets (uploaded input images) and job modes: img2img, inpaint, place

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("stored_sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("has_alpha", sa.Boolean(), nullable=False),
        sa.Column("conversions", sa.JSON(), nullable=False),
        sa.Column("product_box", sa.JSON(), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("source_bytes", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
        sa.UniqueConstraint("tenant", "sha256", name="uq_assets_tenant_sha256"),
    )
    op.create_index(op.f("ix_assets_tenant"), "assets", ["tenant"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.String(length=16), server_default="text", nullable=False))
        batch_op.add_column(sa.Column("image_asset_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("mask_asset_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("mode_parameters", sa.JSON(), nullable=True))
        batch_op.create_foreign_key(op.f("fk_jobs_image_asset_id_assets"), "assets", ["image_asset_id"], ["id"])
        batch_op.create_foreign_key(op.f("fk_jobs_mask_asset_id_assets"), "assets", ["mask_asset_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_jobs_mask_asset_id_assets"), type_="foreignkey")
        batch_op.drop_constraint(op.f("fk_jobs_image_asset_id_assets"), type_="foreignkey")
        batch_op.drop_column("mode_parameters")
        batch_op.drop_column("mask_asset_id")
        batch_op.drop_column("image_asset_id")
        batch_op.drop_column("mode")
    op.drop_index(op.f("ix_assets_tenant"), table_name="assets")
    op.drop_table("assets")
