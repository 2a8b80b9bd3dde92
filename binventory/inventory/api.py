"""The inventory's HTTP API, mounted on the counting service's FastAPI app (``binventory.app``).

Writes need ``Authorization: Bearer <token>`` (``binventory inventory token create``) or the
dashboard's sign-in cookie; so do reads when ``reads_need_token`` (``binventory serve`` sets it
when it listens beyond loopback, unless ``--public-read``). Errors answer ``{"detail": ...,
"status": ...}`` like the counting routes: 401 for a missing or bad token, 404 for unknown bins,
tasks and SKUs, 409 for a task in the wrong state, 422 for bad quantities, reason codes and
images, 413 for huge uploads.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated
from datetime import datetime
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from binventory.files import atomic_write_bytes
from binventory.inventory import audit
from binventory.inventory.db import Database
from binventory.inventory.models import AuditTask, Observation, utcnow
from binventory.inventory.photos import photo_path, photo_uri
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import Photo, load_bins, register_model, write_observations
from binventory.inventory.tokens import check_token
from binventory.inventory.views import (adjustment_dict, bin_detail, bin_history, bin_page, observation_dict,
                                        task_dict)
from binventory.serving.service import (IMAGE_TYPES, ApiError, CountingService, Served, counting_errors,
                                        media_type_of, read_body)

TOKEN_COOKIE = "binventory_token"  # where the dashboard's sign-in keeps the token
ERRORS = {401: {"description": "missing or bad bearer token"}, 404: {"description": "unknown bin or task"},
          409: {"description": "the task is not in a state that allows this"},
          422: {"description": "bad quantity, reason code or image"}}


class ClaimRequest(BaseModel):
    assignee: str | None = Field(None, description="who recounts; default: the token's name")
    take_over: bool = Field(False, description="reassign a task someone else has claimed (recorded)")


class ResolveRequest(BaseModel):
    counted_quantity: int = Field(..., description="items a person counted in the bin")
    reason_code: str | None = Field(None, description="why the count differs from the record")
    sku_counts: dict[str, int] | None = Field(None, description="optional counts per ASIN")
    note: str | None = None
    take_over: bool = Field(False, description="resolve a task someone else has claimed (recorded as "
                                               "taken_over_from); without it such a task answers 409")


class CancelRequest(BaseModel):
    note: str | None = None


def _domain_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except audit.NotFound as e:
        raise ApiError(404, "not_found", str(e)) from None
    except audit.Conflict as e:
        raise ApiError(409, "conflict", str(e)) from None
    except audit.Invalid as e:
        raise ApiError(422, "invalid", str(e)) from None


def token_user(db: Database, request: Request) -> str | None:
    """The name behind the request's token: an ``Authorization: Bearer`` header, else the
    dashboard's sign-in cookie; None when neither is a live token. The API and the dashboard
    both ask this, once per request (the answer is kept on the request)."""
    if not hasattr(request.state, "token_user"):
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = request.cookies.get(TOKEN_COOKIE, "")
        with db.reader() as session:
            found = check_token(session, token.strip())
        request.state.token_user = found.name if found is not None else None
    return request.state.token_user


def policy_of(served: Served) -> Policy:
    """The thresholds paired with a served model (they are swapped together: inventory/follow.py);
    a model served with none gets the uncalibrated blind default."""
    policy = served.attached.get("policy")
    return policy if isinstance(policy, Policy) else Policy.default()


@dataclass
class InventoryService:
    """What the inventory's routes share, kept on ``app.state.inventory`` (``install``)."""
    db: Database
    counting: CountingService
    image_dir: Path
    reads_need_token: bool = False
    # Each served model is recorded (with its thresholds) with the first upload it judges, not
    # again with every photo: the policy alone is ~100 KB of JSON. Other replicas may record it
    # at the same moment: register_model is an upsert, so that is harmless.
    registered: set[str] = field(default_factory=set)

    @property
    def policy(self) -> Policy:
        """The policy of the model now serving."""
        return policy_of(self.counting.served)


def inventory(request: Request) -> InventoryService:
    return request.app.state.inventory


def database(request: Request) -> Database:
    return request.app.state.inventory.db


def counting_service(request: Request) -> CountingService:
    return request.app.state.counting


def reader(request: Request, inv: InventoryService = Depends(inventory)) -> None:
    if inv.reads_need_token and token_user(inv.db, request) is None:
        raise ApiError(401, "unauthorized", "this service listens beyond loopback: reads need a valid "
                                            "'Authorization: Bearer <token>' header too "
                                            "(binventory inventory token create)")


def writer(request: Request, db: Database = Depends(database)) -> str:
    """The name behind the request's token (every write needs one)."""
    name = token_user(db, request)
    if name is None:
        raise ApiError(401, "unauthorized", "writes need a valid 'Authorization: Bearer <token>' "
                                            "header (binventory inventory token create)")
    return name


# What a route asks for; FastAPI provides it per request.
DB = Annotated[Database, Depends(database)]
Actor = Annotated[str, Depends(writer)]
router = APIRouter(prefix="/v1", tags=["inventory"], responses=ERRORS, dependencies=[Depends(reader)])


def install(app, db: Database, policy: Policy, image_dir: str | Path, *, reads_need_token: bool = False) -> None:
    """Serve the inventory API on ``app`` (the counting service's app: its ``state.counting``)."""
    app.state.counting.attach(policy=policy)
    app.state.inventory = InventoryService(db, app.state.counting, Path(image_dir), reads_need_token)
    app.include_router(router)


@router.get("/bins", summary="Bins with their expected quantity and latest decision")
def list_bins(db: DB, q: str | None = Query(None, description="bin code prefix"),
              observed: bool | None = Query(None, description="photographed at least once, or never"),
              open_task: bool | None = Query(None, description="with an open or claimed audit task, or none"),
              decision: str | None = Query(None, description="the last photo's decision: confirm, flag or review"),
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)):
    with db.reader() as session:
        return _domain_errors(bin_page, session, q, limit, offset, observed=observed, open_task=open_task,
                              decision=decision)


@router.get("/bins/{code}", summary="A bin's contents (SKUs and expected quantities)")
def get_bin(code: str, db: DB):
    with db.reader() as session:
        return _domain_errors(bin_detail, session, code)


@router.get("/bins/{code}/history", summary="A bin's observations, audit tasks and ledger")
def history(code: str, db: DB, limit: int = Query(50, ge=1, le=500)):
    with db.reader() as session:
        found = _domain_errors(bin_history, session, code, observations=(limit, 0), ledger=(limit, 0),
                               tasks=limit)
        return {"bin": code, "observations": found["observations"], "tasks": found["tasks"],
                "ledger": found["ledger"]}


@router.get("/bins/{code}/observations", summary="A bin's observations, newest first")
def bin_observations(code: str, db: DB, limit: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0)):
    with db.reader() as session:
        found = _domain_errors(audit.get_bin, session, code)
        return [observation_dict(o) for o in audit.observations(session, found.id, limit, offset)]


@router.post("/bins/{code}/observations", status_code=201,
             summary="A robot uploads a photo of a bin and gets the decision",
             openapi_extra={"requestBody": {"required": True, "content": {
                 t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES}}})
async def observe(code: str, request: Request, actor: Actor,
                  captured_at: datetime | None = Query(None, description="when the photo was taken"),
                  inv: InventoryService = Depends(inventory),
                  counting: CountingService = Depends(counting_service)):
    media_type = media_type_of(request, IMAGE_TYPES)
    with inv.db.reader() as session:
        view = load_bins(session, [code]).get(code)
    if view is None:
        raise ApiError(404, "not_found", f"unknown bin {code!r}")
    data = await read_body(request, counting.settings.max_body_bytes)
    with counting_errors():
        probs, served = await counting.infer(data)  # the model that counted it judges it too
    return await run_in_threadpool(_record, inv, served, view, data, media_type, probs, captured_at, code)


def _record(inv: InventoryService, served: Served, view, data: bytes, media_type: str,
            probs: np.ndarray, captured_at, code: str) -> dict:
    sha = hashlib.sha256(data).hexdigest()
    path = inv.image_dir / sha[:2] / (sha + (".png" if media_type == "image/png" else ".jpg"))
    if not path.exists():
        atomic_write_bytes(path, data)
    predictor, policy = served.predictor, policy_of(served)
    decision = policy.decide(probs[None], predictor.classes, [view.expected], [view.records])[0]
    photo = Photo(code, photo_uri(path, inv.image_dir), sha, captured_at or utcnow())
    with inv.db.session() as session:
        if predictor.model_id not in inv.registered:
            register_model(session, predictor, policy)
        obs_id = write_observations(session, [view], [photo], probs[None], predictor.classes.names,
                                    predictor.model_id, [decision])[0]
        duplicate = obs_id is None
        if duplicate:
            obs_id = session.scalar(select(Observation.id).where(
                Observation.bin_id == view.bin_id, Observation.image_sha256 == sha,
                Observation.model_version == predictor.model_id))
        obs = session.get(Observation, obs_id)
        task = session.scalar(select(AuditTask).where(AuditTask.observation_id == obs_id))
        answer = {**observation_dict(obs), "duplicate": duplicate,
                  "task": task_dict(task) if task is not None else None}
    inv.registered.add(predictor.model_id)  # committed
    return answer


@router.get("/observations/{obs_id}/image", summary="The photo of an observation", response_class=Response)
async def observation_image(obs_id: int, inv: InventoryService = Depends(inventory),
                            counting: CountingService = Depends(counting_service)):
    with inv.db.reader() as session:
        obs = session.get(Observation, obs_id)
    if obs is None:
        raise ApiError(404, "not_found", f"unknown observation {obs_id}")
    if obs.image_uri.startswith("s3://"):
        data = await run_in_threadpool(counting.fetch, obs.image_uri)
    else:
        try:
            data = await run_in_threadpool(photo_path(obs.image_uri, inv.image_dir).read_bytes)
        except OSError:
            raise ApiError(404, "not_found", f"the photo of observation {obs_id} is gone") from None
    kind = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    return Response(data, media_type=kind, headers={"Cache-Control": "max-age=86400"})


@router.get("/audit-tasks", summary="The audit queue, highest priority first")
def tasks(db: DB, status: str | None = "open", bin: str | None = Query(None, description="one bin's code"),
          bin_prefix: str | None = Query(None, description="bins whose code starts so"),
          reason: str | None = Query(None, description="flag or review"),
          reason_code: str | None = Query(None, description="the reason a resolution gave"),
          min_priority: float | None = Query(None, description="priority at least this"),
          limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)):
    with db.reader() as session:
        rows, total = _domain_errors(audit.list_tasks, session, status=status or None, bin_code=bin,
                                     bin_prefix=bin_prefix, reason=reason, reason_code=reason_code,
                                     min_priority=min_priority, limit=limit, offset=offset)
        return {"total": total, "tasks": [task_dict(t) for t in rows]}


@router.get("/audit-tasks/{task_id}", summary="One audit task")
def get_task(task_id: int, db: DB):
    with db.reader() as session:
        return task_dict(_domain_errors(audit.get_task, session, task_id))


@router.post("/audit-tasks/{task_id}/claim", summary="Take a task (open -> in_progress)")
def claim(task_id: int, actor: Actor, db: DB, body: ClaimRequest | None = None):
    body = body or ClaimRequest()  # no body: the token's holder claims it
    with db.session() as session:
        return task_dict(_domain_errors(audit.claim, session, task_id, body.assignee or actor,
                                        take_over=body.take_over))


@router.post("/audit-tasks/{task_id}/resolve", summary="Record a recount; writes the ledger")
def resolve(task_id: int, body: ResolveRequest, actor: Actor, db: DB):
    with db.session() as session:
        task, adjustments = _domain_errors(
            audit.resolve, session, task_id, counted_quantity=body.counted_quantity, actor=actor,
            reason_code=body.reason_code, sku_counts=body.sku_counts, note=body.note,
            take_over=body.take_over)
        return {"task": task_dict(task), "adjustments": [adjustment_dict(a) for a in adjustments]}


@router.post("/audit-tasks/{task_id}/cancel", summary="Drop a task without a recount")
def cancel(task_id: int, actor: Actor, db: DB, body: CancelRequest | None = None):
    body = body or CancelRequest()
    with db.session() as session:
        return task_dict(_domain_errors(audit.cancel, session, task_id, actor, body.note))


@router.get("/ledger", summary="Adjustments, newest first")
def get_ledger(db: DB, bin: str | None = None, limit: int = Query(100, ge=1, le=1000),
               offset: int = Query(0, ge=0)):
    with db.reader() as session:
        bin_id = _domain_errors(audit.get_bin, session, bin).id if bin else None
        return [adjustment_dict(a) for a in audit.ledger(session, bin_id, limit, offset)]
