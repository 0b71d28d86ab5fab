"""renditions: extra outputs per rendered image

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("renditions", sa.JSON(), nullable=True))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("renditions", sa.JSON(), nullable=True))
    # Existing rows are rendered images: rendition "" marks those.
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rendition", sa.String(length=32), server_default="", nullable=False))
        batch_op.drop_constraint("uq_images_job_id_index", type_="unique")
        batch_op.create_unique_constraint("uq_images_job_id_index_rendition", ["job_id", "index", "rendition"])


def downgrade() -> None:
    # Renditions have no place in the older schema: their rows go, the rendered images stay.
    op.execute(sa.text("DELETE FROM images WHERE rendition <> ''"))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_constraint("uq_images_job_id_index_rendition", type_="unique")
        batch_op.create_unique_constraint("uq_images_job_id_index", ["job_id", "index"])
        batch_op.drop_column("rendition")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("renditions")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("renditions")
