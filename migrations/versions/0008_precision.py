"""precision tiers: the precision a job asks for and the one a worker runs (issue 15)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("precision", sa.String(length=8), server_default="bf16", nullable=False))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("precision", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("precision")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("precision")
