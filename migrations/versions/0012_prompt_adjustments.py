"""prompt adjustments: what the farm changed in a request (enhance, default negative prompt)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("adjustments", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("requested_prompt", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("requested_prompt")
        batch_op.drop_column("adjustments")
