"""The inventory: SKUs, bins and their contents, models, observations, audit tasks, the ledger and
API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

# The ledger is append-only: the database itself refuses to change or delete a row.
SQLITE_TRIGGERS = [
    "CREATE TRIGGER adjustment_no_update BEFORE UPDATE ON adjustment "
    "BEGIN SELECT RAISE(ABORT, 'adjustment is append-only'); END",
    "CREATE TRIGGER adjustment_no_delete BEFORE DELETE ON adjustment "
    "BEGIN SELECT RAISE(ABORT, 'adjustment is append-only'); END",
]
POSTGRES_TRIGGERS = [
    "CREATE FUNCTION adjustment_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'adjustment is append-only'; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER adjustment_no_change BEFORE UPDATE OR DELETE ON adjustment "
    "FOR EACH ROW EXECUTE FUNCTION adjustment_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "sku",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("asin", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("length", sa.Float), sa.Column("width", sa.Float),
        sa.Column("height", sa.Float), sa.Column("weight", sa.Float),
    )
    op.create_table(
        "bin",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "bin_content",
        sa.Column("bin_id", sa.Integer, sa.ForeignKey("bin.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sku_id", sa.Integer, sa.ForeignKey("sku.id"), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.CheckConstraint("quantity >= 0", name="ck_bin_content_quantity"),
    )
    op.create_table(
        "model",
        sa.Column("version", sa.String(128), primary_key=True),
        sa.Column("path", sa.Text, nullable=False, server_default=""),
        sa.Column("metrics", sa.JSON), sa.Column("policy", sa.JSON),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=False),
    )
    op.create_table(
        "observation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bin_id", sa.Integer, sa.ForeignKey("bin.id", ondelete="CASCADE"), nullable=False),
        sa.Column("image_uri", sa.Text, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("captured_at", TS, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("predicted_count", sa.Integer, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("expected_quantity", sa.Integer, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("bin_id", "image_sha256", "model_version", name="uq_observation_key"),
        sa.CheckConstraint("decision IN ('confirm', 'flag', 'review')", name="ck_observation_decision"),
    )
    op.create_index("ix_observation_bin_id", "observation", ["bin_id"])
    op.create_index("ix_observation_created", "observation", ["created_at"])
    op.create_table(
        "audit_task",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bin_id", sa.Integer, sa.ForeignKey("bin.id", ondelete="CASCADE"), nullable=False),
        sa.Column("observation_id", sa.Integer, sa.ForeignKey("observation.id")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("predicted_count", sa.Integer),
        sa.Column("expected_quantity", sa.Integer),
        sa.Column("variance", sa.Integer),
        sa.Column("assignee", sa.String(128)),
        sa.Column("counted_quantity", sa.Integer),
        sa.Column("reason_code", sa.String(32)),
        sa.Column("note", sa.Text),
        sa.Column("resolved_by", sa.String(128)),
        sa.Column("resolved_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('open', 'in_progress', 'resolved', 'cancelled')",
                           name="ck_audit_task_status"),
        sa.CheckConstraint("counted_quantity IS NULL OR counted_quantity >= 0",
                           name="ck_audit_task_counted"),
    )
    op.create_index("ix_audit_task_bin_id", "audit_task", ["bin_id"])
    op.create_index("ix_audit_task_queue", "audit_task", ["status", "priority"])
    # At most one open or in-progress task per bin: new evidence updates it, never duplicates it.
    active = sa.text("status IN ('open', 'in_progress')")
    op.create_index("uq_audit_task_active", "audit_task", ["bin_id"], unique=True,
                    sqlite_where=active, postgresql_where=active)
    op.create_table(
        "adjustment",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bin_id", sa.Integer, sa.ForeignKey("bin.id"), nullable=False),
        sa.Column("sku_id", sa.Integer, sa.ForeignKey("sku.id"), nullable=False),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.Column("quantity_before", sa.Integer, nullable=False),
        sa.Column("quantity_after", sa.Integer, nullable=False),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("audit_task.id")),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("delta <> 0", name="ck_adjustment_delta"),
    )
    op.create_index("ix_adjustment_bin_id", "adjustment", ["bin_id"])
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
    )
    triggers = POSTGRES_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS adjustment_no_change ON adjustment")
        op.execute("DROP FUNCTION IF EXISTS adjustment_append_only()")
    for table in ("api_token", "adjustment", "audit_task", "observation", "model", "bin_content",
                  "bin", "sku"):
        op.drop_table(table)  # SQLite drops a table's triggers with it
