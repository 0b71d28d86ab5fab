"""batch webhooks: a delivery announces a job or a batch

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=32), nullable=True))
        batch_op.alter_column("job_id", existing_type=sa.String(length=32), nullable=True)
        batch_op.create_foreign_key(
            batch_op.f("fk_webhook_deliveries_batch_id_batches"), "batches", ["batch_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_batch_id"), ["batch_id"], unique=False)
        batch_op.create_check_constraint(
            batch_op.f("ck_webhook_deliveries_one_subject"), "(job_id IS NULL) <> (batch_id IS NULL)"
        )


def downgrade() -> None:
    # Batch deliveries have no place in the older schema: their rows go.
    op.execute(sa.text("DELETE FROM webhook_deliveries WHERE batch_id IS NOT NULL"))
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_webhook_deliveries_one_subject"), type_="check")
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_batch_id"))
        batch_op.drop_constraint(batch_op.f("fk_webhook_deliveries_batch_id_batches"), type_="foreignkey")
        batch_op.alter_column("job_id", existing_type=sa.String(length=32), nullable=False)
        batch_op.drop_column("batch_id")
