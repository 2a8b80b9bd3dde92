"""``serve --follow-registry``: the service serves the registry's active model, without a restart.

Every ``poll_s`` seconds each replica reads the active model from its database
(``binventory.inventory.registry.active``). When that is not the model it serves, it loads the
artifact and its policy in a worker thread, checks they fit each other, and swaps both in together
between batches (``CountingService.swap``): requests in flight finish on the old model, later
ones are counted and judged by the new one, none fails. When only the active model's policy
changed (calibrated again), the new policy is paired with the model in one step too. Replicas share nothing but the database,
so each follows on its own, within one poll interval of a promotion.

A model that cannot be served (its file is gone, the artifact is broken, its policy was calibrated
for another model) is logged, shown on /readyz under ``registry``, and tried again at the next
poll; meanwhile the model before keeps serving.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

from starlette.concurrency import run_in_threadpool

from binventory import BinventoryError
from binventory.inventory.db import Database
from binventory.inventory.policy import Policy, check_policy
from binventory.serving.predictor import Predictor
from binventory.serving.service import CountingService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveModel:
    """What the registry's active row says, read out of its session."""
    version: str
    path: str
    policy: dict | None


def active_model(db: Database) -> ActiveModel | None:
    from binventory.inventory.registry import active

    with db.reader() as session:
        row = active(session)
        return None if row is None else ActiveModel(row.version, row.path or "", row.policy)


def load_active(model: ActiveModel, load: Callable[[str], Predictor]) -> tuple[Predictor, Policy]:
    """The registry's active model ready to serve, with its policy; raises BinventoryError."""
    if not model.path:
        raise BinventoryError(f"the registry has no artifact path for model {model.version}")
    try:
        predictor = load(model.path)
    except BinventoryError:
        raise
    except Exception as e:  # torch.load and ONNX Runtime raise whatever a broken file makes them
        raise BinventoryError(f"cannot load {model.path}: {type(e).__name__}: {e}") from None
    if predictor.model_id != model.version:
        raise BinventoryError(f"{model.path} holds model {predictor.model_id}, but the registry "
                              f"says it holds {model.version}: register the artifact again")
    policy = Policy.from_dict(model.policy) if model.policy else Policy.default()
    check_policy(policy, predictor)
    return predictor, policy


class RegistryFollower:
    """Keeps ``service`` serving the registry's active model; ``run`` is its background task."""

    def __init__(self, service: CountingService, db: Database, load: Callable[[str], Predictor],
                 poll_s: float = 10.0, on_swap: Callable[[], None] | None = None):
        if poll_s <= 0:
            raise BinventoryError(f"--registry-poll must be more than 0 seconds, got {poll_s}")
        self.service, self.db, self.load, self.poll_s = service, db, load, poll_s
        self.on_swap = on_swap  # what else must follow the model (the dashboard's mismatch banner)
        self.active: str | None = None
        self.error: str | None = None
        self._applied: ActiveModel | None = None  # the registry row now served
        self._report()

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_s)

    async def poll(self) -> bool:
        """Look once; swap when the active model (or its policy) changed, and say whether it did.
        Never raises:
        whatever goes wrong is logged and shown on /readyz, and the next poll tries again."""
        try:
            swapped = await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a database outage or a bad model must not stop the serving
            self._set_error(str(e) if isinstance(e, BinventoryError) else f"{type(e).__name__}: {e}")
            return False
        self._set_error(None)
        return swapped

    async def _follow(self) -> bool:
        model = await run_in_threadpool(active_model, self.db)
        self.active = model.version if model else None
        if model is None or model == self._applied:
            return False  # no active model yet (keep serving the one we started with), or no news
        if model.version == self.service.predictor.model_id:
            policy = Policy.from_dict(model.policy) if model.policy else Policy.default()
            check_policy(policy, self.service.predictor)
            self.service.attach(policy=policy)
            log.info("model %s: now judging with the registry's policy", model.version)
        else:
            predictor, policy = await run_in_threadpool(load_active, model, self.load)
            await self.service.swap(predictor, policy=policy)
        self._applied = model
        if self.on_swap is not None:
            self.on_swap()
        return True

    def _set_error(self, error: str | None) -> None:
        if error and error != self.error:  # once per failure, not at every poll
            log.error("keeps serving model %s: cannot follow the registry's active model %s: %s",
                      self.service.predictor.model_id, self.active, error)
        self.error = error
        self._report()

    def _report(self) -> None:
        self.service.readiness["registry"] = {"follow": True, "poll_s": self.poll_s,
                                              "active": self.active, "error": self.error}
