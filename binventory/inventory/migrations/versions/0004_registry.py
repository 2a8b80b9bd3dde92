"""The model registry: a model row gains its lineage (``parent``, the ``data`` it trained on), a
``state`` (candidate, active, retired), when that state last changed, and its last
``comparison`` against the model it would replace.

Existing rows become candidates: which model a deployment serves was, until now, a command-line
choice the database never saw (the most recently used row need not be the one ``serve`` runs), so
the migration does not guess. Nothing is active until someone runs ``binventory model promote``.

At most one row is active: a partial unique index, as ``uq_audit_task_active`` does for tasks,
so two replicas promoting at once cannot leave two active models.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    with op.batch_alter_table("model") as batch:
        batch.add_column(sa.Column("parent", sa.String(128), nullable=True))
        batch.add_column(sa.Column("data", sa.JSON, nullable=True))
        batch.add_column(sa.Column("state", sa.String(16), nullable=False,
                                   server_default="candidate"))
        batch.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("comparison", sa.JSON, nullable=True))
        batch.create_check_constraint("ck_model_state",
                                      "state IN ('candidate', 'active', 'retired')")
    op.create_index("uq_model_active", "model", ["state"], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index("uq_model_active", table_name="model")
    with op.batch_alter_table("model") as batch:
        batch.drop_constraint("ck_model_state", type_="check")
        for column in ("comparison", "state_changed_at", "state", "data", "parent"):
            batch.drop_column(column)
