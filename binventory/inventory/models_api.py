"""The model registry over HTTP: list the models, promote one, roll back
(binventory.inventory.registry; `binventory model ...` on the command line).

Reads follow the inventory API's rule; promote and rollback need a token like every write. A
model id the registry does not know answers 404; a promotion the gate refuses (its last
comparison did not find it better than the active model), a model already active, or a rollback
with nothing to roll back to answer 409 with the reason in ``detail``."""
from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from binventory.inventory import registry
from binventory.inventory.api import DB, ERRORS, Actor, _domain_errors, reader
from binventory.inventory.models import Model

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["models"], responses=ERRORS, dependencies=[Depends(reader)])


class PromoteRequest(BaseModel):
    force: bool = Field(False, description="promote it even when its last comparison did not "
                                           "find it better than the active model")


def model_dict(m: Model) -> dict:
    """A registry row; its policy (up to ~100 KB of JSON) only as whether there is one."""
    when = (lambda t: t.isoformat() if t is not None else None)
    return {"id": m.version, "name": m.name, "state": m.state, "parent": m.parent, "data": m.data or [],
            "metrics": m.metrics or {}, "path": m.path, "has_policy": bool(m.policy),
            "registered_at": when(m.registered_at), "state_changed_at": when(m.state_changed_at),
            "comparison": m.comparison}


@router.get("/models", summary="The model registry: every model, the active one first")
def list_models(db: DB):
    with db.reader() as session:
        return [model_dict(m) for m in registry.list_models(session)]


@router.post("/models/rollback", summary="Re-activate the model that was active before")
def rollback(actor: Actor, db: DB):
    with db.session() as session:
        before = registry.active(session)
        before = before.version if before is not None else None
        model = _domain_errors(registry.rollback, session)
        log.info("%s rolled the registry back from model %s to %s", actor, before, model.version)
        return {"active": model_dict(model), "candidate": before}


@router.post("/models/{model_id}/promote", summary="Make a model the active one (the gate applies)")
def promote(model_id: str, actor: Actor, db: DB, body: PromoteRequest | None = None):
    force = bool(body and body.force)
    with db.session() as session:
        before = registry.active(session)
        before = before.version if before is not None else None
        model = _domain_errors(registry.promote, session, model_id, force=force)
        log.info("%s promoted model %s%s", actor, model_id, " (forced)" if force else "")
        return {"active": model_dict(model), "retired": before}
