"""The whole service in one FastAPI app, and ``binventory serve``: the counting routes
(binventory.serving), the inventory API (binventory.inventory.api) and the dashboard
(binventory.web) share one process, one model and one micro-batcher."""
from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

# FastAPI, torch and the database load with the app, not with the command line: every
# 'binventory' command (and the SageMaker job, which installs no serving libraries) builds
# this parser.
if TYPE_CHECKING:
    from fastapi import FastAPI

    from binventory.serving.predictor import Predictor
    from binventory.serving.service import Settings

log = logging.getLogger(__name__)


def create_app(predictor: Predictor, settings: Settings | None = None, *, db=None, policy=None,
               image_dir: str | Path | None = None, reads_need_token: bool = False,
               allow_policy_mismatch: bool = False, follow_registry: float | None = None,
               load_model: Callable[[str], Predictor] | None = None) -> FastAPI:
    """The counting service, plus the inventory API and the dashboard when ``db`` (a
    binventory.inventory.db.Database) is given; ``policy`` defaults to the uncalibrated blind
    policy. A policy calibrated for another model is refused (BinventoryError) unless
    ``allow_policy_mismatch``; then /readyz and every dashboard page say so. With
    ``reads_need_token`` the inventory's reads need a token as its writes do; health, readiness,
    metrics, counting and the sign-in page stay open. With ``follow_registry`` (seconds) it
    serves the registry's active model, polled that often, loading it with ``load_model(path)``
    (default: Predictor.load with ``predictor``'s backend): binventory.inventory.follow."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from binventory.serving.service import create_app as create_counting_app

    app = create_counting_app(predictor, settings)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}",
                             "status": "invalid_request"}, 422)

    if db is None:
        return app
    from binventory.inventory import api
    from binventory.inventory.photos import default_image_dir
    from binventory.inventory.policy import Policy, check_policy
    from binventory.web import install as install_dashboard

    policy = policy or Policy.default()
    mismatch = check_policy(policy, predictor, allow_mismatch=allow_policy_mismatch,
                            override="--allow-policy-mismatch")
    app.state.counting.readiness["policy_mismatch"] = mismatch
    api.install(app, db, policy, image_dir or default_image_dir(), reads_need_token=reads_need_token)
    install_dashboard(app, policy_mismatch=mismatch)
    if follow_registry is not None:
        _follow(app, db, follow_registry, load_model or _loader(predictor.backend))
    return app


def _follow(app: FastAPI, db, poll_s: float, load_model: Callable[[str], Predictor]) -> None:
    from binventory.inventory.follow import RegistryFollower

    def fitted():  # a model swapped in passed check_policy: nothing is mismatched any more
        app.state.counting.readiness["policy_mismatch"] = app.state.policy_mismatch = None

    app.state.follower = RegistryFollower(app.state.counting, db, load_model, poll_s, on_swap=fitted)
    app.state.counting.background.append(app.state.follower.run)


def _loader(backend: str, threads: int | None = None) -> Callable[[str], Predictor]:
    """How the registry's artifacts load: model.pt, or an exported model.onnx beside its model.pt."""
    from binventory.serving.predictor import Predictor

    def load(path: str) -> Predictor:
        path = Path(path)
        if path.suffix == ".onnx":
            return Predictor.load(path.with_suffix(".pt"), "onnx", onnx_path=path, threads=threads)
        return Predictor.load(path, backend, threads=threads)
    return load


def add_parsers(commands, formatter) -> None:
    from binventory.serving.service_cli import add_serve_options

    p = commands.add_parser(
        "serve", formatter_class=formatter,
        help="run the HTTP service: counting, inventory API and dashboard",
        description="Serve POST /v1/count (a JPEG/PNG body, or JSON {\"uri\": \"s3://bucket/key\"}) "
                    "with micro-batching: concurrent requests share one model call of up to "
                    "--max-batch images, waiting at most --max-wait-ms for company. With the "
                    "inventory (default; --no-inventory turns it off) it also serves the bins, "
                    "observations and audit tasks under /v1 (writes need a bearer token from "
                    "'binventory inventory token create'; so do reads, and the dashboard's pages, "
                    "when --host is not a loopback address, unless --public-read) and the "
                    "dashboard at /. Also "
                    "/healthz, /readyz (after a warm-up inference), /metrics (Prometheus) and "
                    "/docs (OpenAPI). SIGTERM or Ctrl-C stops accepting, finishes open requests "
                    "and queued batches, then exits.",
        epilog="examples:\n"
               "  binventory serve --model runs/best/model.pt\n"
               "  binventory serve --model model.pt --policy policy.json --db postgresql+psycopg://u:p@db/inv\n"
               "  curl -s --data-binary @bin.jpg -H 'Content-Type: image/jpeg' "
               "http://127.0.0.1:8000/v1/count")
    add_serve_options(p, optional_model="optional with --follow-registry: the registry's active "
                                        "model is served (--model only until one is active)")
    g = p.add_argument_group("inventory")
    g.add_argument("--db", default=None,
                   help="database URL (default: $BINVENTORY_DB_URL, else sqlite:///data/inventory.db)")
    g.add_argument("--policy", type=Path, default=None,
                   help="decision thresholds from 'binventory inventory calibrate' (default: "
                        "uncalibrated, conservative blind thresholds)")
    g.add_argument("--image-dir", type=Path, default=None,
                   help="the image store: uploaded bin photos are kept there, and every stored "
                        "photo path is relative to it, as 'reconcile --image-dir' wrote it "
                        "(default: $BINVENTORY_DATA_DIR/observations, else data/observations)")
    g.add_argument("--no-inventory", action="store_true", help="serve counting only: no database")
    g.add_argument("--public-read", action="store_true",
                   help="let anyone who reaches the port read bins, SKUs, quantities, photos and the "
                        "ledger without a token (by default, off a loopback --host, reads need one)")
    g.add_argument("--allow-policy-mismatch", action="store_true",
                   help="serve with a --policy calibrated for another model (its thresholds do not "
                        "fit this model's probabilities); the dashboard and /readyz say so")
    g.add_argument("--follow-registry", action="store_true",
                   help="serve the model registry's active model ('binventory model promote'), with "
                        "its policy: checked every --registry-poll seconds and swapped in between "
                        "batches, without a restart or a failed request; a model that cannot load "
                        "is shown on /readyz and the one before keeps serving")
    g.add_argument("--registry-poll", type=float, default=10.0, metavar="S",
                   help="seconds between looks at the registry with --follow-registry")
    p.set_defaults(func=_serve)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server listening on ``host`` (127.0.0.0/8, ::1,
    localhost). Any other name might resolve to a public address, so it counts as not."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from binventory.serving.service_cli import check_port_free, run_server

    check_port_free(args.host, args.port)
    return run_server(serve_app(args), args)


def serve_app(args: argparse.Namespace) -> FastAPI:
    """The app ``binventory serve`` runs with these options: loads the model, opens the database."""
    from binventory import BinventoryError
    from binventory.serving.service_cli import load_service, service_settings

    if args.follow_registry and args.no_inventory:
        raise BinventoryError("--follow-registry reads the registry in the inventory database: "
                              "drop --no-inventory")
    if args.model is None and not args.follow_registry:
        raise BinventoryError("serve needs --model (or --follow-registry, to serve the registry's "
                              "active model)")
    predictor, settings = load_service(args) if args.model else (None, service_settings(args))
    db = policy = None
    if not args.no_inventory:
        from binventory.inventory.db import Database
        from binventory.inventory.policy import Policy

        policy = Policy.load(args.policy) if args.policy else Policy.default()
        db = Database.open(args.db, create=True)  # an empty database gets the schema; an old one refuses
        log.info("inventory at %s", db.engine.url.render_as_string(hide_password=True))
    if predictor is None:  # --follow-registry without --model: start on the active model
        predictor, policy = _active_at_start(db, _loader(args.backend, args.threads))
    reads_need_token = db is not None and not (args.public_read or is_loopback(args.host))
    if reads_need_token:
        log.info("listening on %s, beyond loopback: reads need a token too ('binventory inventory "
                 "token create NAME'; --public-read opens them)", args.host)
    return create_app(predictor, settings, db=db, policy=policy, image_dir=args.image_dir,
                      reads_need_token=reads_need_token, allow_policy_mismatch=args.allow_policy_mismatch,
                      follow_registry=args.registry_poll if args.follow_registry else None,
                      load_model=_loader(args.backend, args.threads))


def _active_at_start(db, load_model: Callable[[str], Predictor]):
    from binventory import BinventoryError
    from binventory.inventory.follow import active_model, load_active

    model = active_model(db)
    if model is None:
        raise BinventoryError("the registry has no active model to follow: promote one ('binventory "
                              "model promote ID') or name one with --model")
    return load_active(model, load_model)
