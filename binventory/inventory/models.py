"""The inventory's tables (SQLAlchemy 2 declarative). Alembic's migrations create them; this module
only describes them for queries. Timestamps are UTC; quantities are never negative.

    sku            a product: ASIN, name, dimensions (in) and weight (lb) from the record
    bin            a storage bin, known by its code (an ABID image id for imported ABID bins)
    bin_content    what the inventory says a bin holds: expected quantity per SKU
    model          each counting model that made observations or was registered: its metrics,
                   policy, lineage and registry state (candidate, active, retired)
    observation    one photo of a bin, the model's count, and the decision taken on it
    audit_task     a recount a person should make: open -> in_progress -> resolved / cancelled
    adjustment     the append-only ledger of every change an audit made to a bin's contents
    api_token      bearer tokens for write access (only their SHA-256 is stored)
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from binventory.inventory.reasons import AGREED_REASON, REASON_CODES  # noqa: F401 (re-exported)

DECISIONS = ("confirm", "flag", "review")
TASK_STATUSES = ("open", "in_progress", "resolved", "cancelled")
ACTIVE_STATUSES = ("open", "in_progress")
MODEL_STATES = ("candidate", "active", "retired")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Sku(Base):
    __tablename__ = "sku"
    id: Mapped[int] = mapped_column(primary_key=True)
    asin: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text, default="")
    length: Mapped[float | None] = mapped_column(Float)
    width: Mapped[float | None] = mapped_column(Float)
    height: Mapped[float | None] = mapped_column(Float)
    weight: Mapped[float | None] = mapped_column(Float)


class Bin(Base):
    __tablename__ = "bin"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    contents: Mapped[list[BinContent]] = relationship(back_populates="bin", order_by="BinContent.sku_id")


class BinContent(Base):
    __tablename__ = "bin_content"
    bin_id: Mapped[int] = mapped_column(ForeignKey("bin.id", ondelete="CASCADE"), primary_key=True)
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    bin: Mapped[Bin] = relationship(back_populates="contents")
    sku: Mapped[Sku] = relationship(lazy="joined")
    __table_args__ = (CheckConstraint("quantity >= 0", name="ck_bin_content_quantity"),)


class Model(Base):
    __tablename__ = "model"
    version: Mapped[str] = mapped_column(String(128), primary_key=True)  # the artifact's unique id
    name: Mapped[str] = mapped_column(String(128), default="", server_default="")
    path: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict | None] = mapped_column(JSON)
    policy: Mapped[dict | None] = mapped_column(JSON)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    parent: Mapped[str | None] = mapped_column(String(128))  # the model it was fine-tuned from
    data: Mapped[list | None] = mapped_column(JSON)  # the artifact's training manifests
    state: Mapped[str] = mapped_column(String(16), default="candidate", server_default="candidate")
    state_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    comparison: Mapped[dict | None] = mapped_column(JSON)  # its last `model compare` as candidate
    __table_args__ = (
        CheckConstraint("state IN ('candidate', 'active', 'retired')", name="ck_model_state"),
        # One active model, whatever replicas promote at once (binventory.inventory.registry).
        Index("uq_model_active", "state", unique=True, sqlite_where=text("state = 'active'"),
              postgresql_where=text("state = 'active'")),
    )


class Observation(Base):
    __tablename__ = "observation"
    id: Mapped[int] = mapped_column(primary_key=True)
    bin_id: Mapped[int] = mapped_column(ForeignKey("bin.id", ondelete="CASCADE"), index=True)
    image_uri: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_version: Mapped[str] = mapped_column(String(128))
    predicted_count: Mapped[int] = mapped_column(Integer)
    probabilities: Mapped[dict] = mapped_column(JSON)
    expected_quantity: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    bin: Mapped[Bin] = relationship(lazy="joined")  # every answer names the bin
    __table_args__ = (
        # The idempotency key: the same photo of the same bin judged by the same model once.
        UniqueConstraint("bin_id", "image_sha256", "model_version", name="uq_observation_key"),
        CheckConstraint("decision IN ('confirm', 'flag', 'review')", name="ck_observation_decision"),
        Index("ix_observation_created", "created_at"),
    )


class AuditTask(Base):
    __tablename__ = "audit_task"
    id: Mapped[int] = mapped_column(primary_key=True)
    bin_id: Mapped[int] = mapped_column(ForeignKey("bin.id", ondelete="CASCADE"), index=True)
    observation_id: Mapped[int | None] = mapped_column(ForeignKey("observation.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str] = mapped_column(String(16))  # the decision that opened it: flag or review
    predicted_count: Mapped[int | None] = mapped_column(Integer)
    expected_quantity: Mapped[int | None] = mapped_column(Integer)
    variance: Mapped[int | None] = mapped_column(Integer)
    assignee: Mapped[str | None] = mapped_column(String(128))
    taken_over_from: Mapped[str | None] = mapped_column(String(128))  # the claimer a take-over overrode
    counted_quantity: Mapped[int | None] = mapped_column(Integer)
    reason_code: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    bin: Mapped[Bin] = relationship(lazy="joined")
    observation: Mapped[Observation | None] = relationship()
    __table_args__ = (
        CheckConstraint("status IN ('open', 'in_progress', 'resolved', 'cancelled')",
                        name="ck_audit_task_status"),
        CheckConstraint("counted_quantity IS NULL OR counted_quantity >= 0",
                        name="ck_audit_task_counted"),
        Index("ix_audit_task_queue", "status", "priority"),
        Index("uq_audit_task_active", "bin_id", unique=True,
              sqlite_where=text("status IN ('open', 'in_progress')"),
              postgresql_where=text("status IN ('open', 'in_progress')")),
    )


class Adjustment(Base):
    __tablename__ = "adjustment"
    id: Mapped[int] = mapped_column(primary_key=True)
    bin_id: Mapped[int] = mapped_column(ForeignKey("bin.id"), index=True)
    sku_id: Mapped[int] = mapped_column(ForeignKey("sku.id"))
    delta: Mapped[int] = mapped_column(Integer)
    quantity_before: Mapped[int] = mapped_column(Integer)
    quantity_after: Mapped[int] = mapped_column(Integer)
    reason_code: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("audit_task.id"))
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sku: Mapped[Sku] = relationship(lazy="joined")
    bin: Mapped[Bin] = relationship(lazy="joined")
    __table_args__ = (CheckConstraint("delta <> 0", name="ck_adjustment_delta"),)


class ApiToken(Base):
    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
