"""Audit tasks record a take-over: who had claimed a task when another person resolved or
reassigned it (``take_over``), so the queue can show whose work was taken.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_task") as batch:
        batch.add_column(sa.Column("taken_over_from", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_task") as batch:
        batch.drop_column("taken_over_from")
