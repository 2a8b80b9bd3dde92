"""Models get a human-readable name beside their unique id (the ``version`` column).

Before this, a model's version was "<backbone>-<data hash>" and every retrained model on the same
data shared it; ids are now unique per artifact and the readable part moves to ``name``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.add_column(sa.Column("name", sa.String(128), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.drop_column("name")
