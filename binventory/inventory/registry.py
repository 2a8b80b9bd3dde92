"""The model registry: every model that judged photos or was registered, and which one is active.

A model row (``binventory.inventory.models.Model``, keyed by the artifact's unique ``model_id``)
is in one of three states:

    candidate   registered (or seen judging photos) and not serving
    active      the one model the service follows (at most one row; a partial unique index)
    retired     was active, then another was promoted over it

``promote`` makes a candidate (or a retired model) active and retires the one before; it refuses a
model whose last ``binventory model compare`` (``binventory.inventory.compare``) did not find it
better than the active model, unless forced. ``rollback`` puts the model retired most recently
back in service and returns the rolled-back one to the candidates, so rollbacks walk back through
the promotions one at a time.

Promotions and rollbacks hold a registry lock for their transaction (an advisory lock on
PostgreSQL; SQLite's write lock, taken by the first statement), so two replicas promoting at once
run one after the other and the later one wins; the unique index stays as the last word.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from binventory import BinventoryError
from binventory.inventory.audit import Conflict, NotFound
from binventory.inventory.db import dialect_insert
from binventory.inventory.models import Model, utcnow
from binventory.inventory.policy import Policy

# pg_advisory_xact_lock's key for registry changes (any fixed bigint; "binvreg" in ASCII).
REGISTRY_LOCK = 0x62696E76726567


def _lock(session: Session) -> None:
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REGISTRY_LOCK})
    else:
        # A write that changes nothing still takes SQLite's write lock: reads after it cannot
        # interleave with another promotion's writes.
        session.execute(update(Model).where(text("0 = 1")).values(state=Model.state)
                        .execution_options(synchronize_session=False))
    session.expire_all()  # what this session read before the lock may be out of date


def artifact_facts(path: str | Path) -> dict:
    """What the registry keeps of an artifact. ``parent`` and ``data`` are the lineage that
    fine-tuned artifacts carry; older artifacts have neither."""
    from binventory.model.artifact import load_artifact

    counting = load_artifact(path)
    return {"version": counting.model_id, "name": counting.name, "metrics": counting.metrics or {},
            "parent": getattr(counting, "parent", "") or None,
            "data": list(getattr(counting, "data", None) or [])}


def register(session: Session, artifact_path: str | Path, *, policy: Policy | None = None) -> Model:
    """Add the artifact's model as a candidate; registering it again keeps its state and
    updates where it is (and its policy, when one is given). ``policy`` must be calibrated for
    this model (or for none in particular)."""
    facts = artifact_facts(artifact_path)
    if policy is not None and (problem := policy.mismatch(facts["version"])):
        raise BinventoryError(f"{problem}: calibrate it for this model ('binventory inventory "
                              "calibrate')")
    now = utcnow()
    latest = {"path": str(Path(artifact_path).resolve()), "metrics": facts["metrics"],
              "parent": facts["parent"], "data": facts["data"]}
    if policy is not None:
        latest["policy"] = policy.to_dict()
    stmt = dialect_insert(session)(Model).values(name=facts["name"], version=facts["version"],
                                                 registered_at=now, last_used_at=now,
                                                 state="candidate", state_changed_at=now, **latest)
    session.execute(stmt.on_conflict_do_update(index_elements=[Model.version], set_=latest))
    session.expire_all()
    return get(session, facts["version"])


def get(session: Session, model_id: str) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound(f"no model {model_id!r} in the registry (see `binventory model list`; add "
                       "one with `binventory model register ARTIFACT`)")
    return model


def list_models(session: Session) -> list[Model]:
    """Every model, the active one first, then the newest registered."""
    order = {"active": 0, "candidate": 1, "retired": 2}
    rows = session.scalars(select(Model).order_by(Model.registered_at.desc(), Model.version)).all()
    return sorted(rows, key=lambda m: order.get(m.state, 3))


def active(session: Session) -> Model | None:
    """The active model, or None. One lookup on the partial unique index: the service polls it."""
    return session.scalar(select(Model).where(Model.state == "active"))


def _set_state(session: Session, model: Model, state: str) -> None:
    model.state, model.state_changed_at = state, utcnow()
    session.flush()


def _activate(session: Session, model: Model, old: Model | None, old_state: str) -> Model:
    try:
        if old is not None:
            _set_state(session, old, old_state)
        _set_state(session, model, "active")
    except IntegrityError:  # only without the lock (a foreign writer): the index held
        raise Conflict("another model became active at the same time: look at `binventory "
                       "model list` and try again") from None
    return model


def gate(model: Model, current: Model | None) -> str | None:
    """Why ``model`` may not replace ``current`` without --force, or None when it may."""
    if current is None:
        return None  # nothing to be better than: the first promotion needs no comparison
    comparison = model.comparison or {}
    if not comparison:
        return (f"model {model.version} was never compared with the active model "
                f"{current.version}: run `binventory model compare {model.version}`")
    if comparison.get("against") != current.version:
        return (f"model {model.version} was compared with {comparison.get('against')}, not with "
                f"the active model {current.version}: run `binventory model compare "
                f"{model.version}` again")
    if comparison.get("verdict") != "better":
        reasons = "; ".join(comparison.get("reasons") or ["no reason recorded"])
        return f"model {model.version} is not better than {current.version}: {reasons}"
    return None


def promote(session: Session, model_id: str, *, force: bool = False) -> Model:
    """Make ``model_id`` the active model and retire the one before. Refused (Conflict) when its
    last comparison against the active model did not find it better, unless ``force``."""
    _lock(session)
    model = get(session, model_id)
    current = active(session)
    if current is not None and current.version == model.version:
        raise Conflict(f"model {model_id} is already the active model")
    if not force and (why := gate(model, current)):
        raise Conflict(f"{why} (--force promotes it anyway)")
    return _activate(session, model, current, "retired")


def rollback_target(session: Session) -> Model | None:
    """The model ``rollback`` would re-activate: the one retired most recently."""
    return session.scalar(select(Model).where(Model.state == "retired")
                          .order_by(Model.state_changed_at.desc(), Model.version).limit(1))


def rollback(session: Session) -> Model:
    """Re-activate the model that was active before the current one (the one retired most
    recently); the current one goes back to the candidates. Returns the re-activated model."""
    _lock(session)
    current = active(session)
    if current is None:
        raise Conflict("there is no active model to roll back")
    previous = rollback_target(session)
    if previous is None:
        raise Conflict(f"model {current.version} is the only model that was ever active: "
                       "there is none to roll back to")
    return _activate(session, previous, current, "candidate")


def record_comparison(session: Session, model_id: str, comparison: dict) -> Model:
    model = get(session, model_id)
    model.comparison = comparison
    session.flush()
    return model
