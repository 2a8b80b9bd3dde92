"""The whole service in one FastAPI app, and ``binventory serve``: the counting routes
(binventory.serving), the inventory API (binventory.inventory.api) and the dashboard
(binventory.web) share one process, one model and one micro-batcher."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings
from binventory.serving.service import create_app as create_counting_app

log = logging.getLogger(__name__)


def create_app(predictor: Predictor, settings: Settings | None = None, *, db=None, policy=None,
               image_dir: str | Path | None = None) -> FastAPI:
    """The counting service, plus the inventory API when ``db`` (a binventory.inventory.db.Database)
    is given; ``policy`` defaults to the uncalibrated blind policy."""
    app = create_counting_app(predictor, settings)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}",
                             "status": "invalid_request"}, 422)

    if db is None:
        return app
    from binventory.inventory.api import inventory_router
    from binventory.inventory.db import data_dir
    from binventory.inventory.policy import Policy

    policy = policy or Policy.default()
    app.state.db, app.state.policy = db, policy
    app.include_router(inventory_router(db, policy, app.state.counting,
                                        image_dir or data_dir() / "observations"))
    from fastapi.staticfiles import StaticFiles

    from binventory.web import STATIC_DIR, dashboard_router

    app.include_router(dashboard_router(db, policy, app.state.counting))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


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
                    "'binventory inventory token create') and the dashboard at /. Also "
                    "/healthz, /readyz (after a warm-up inference), /metrics (Prometheus) and "
                    "/docs (OpenAPI). SIGTERM or Ctrl-C stops accepting, finishes open requests "
                    "and queued batches, then exits.",
        epilog="examples:\n"
               "  binventory serve --model runs/best/model.pt\n"
               "  binventory serve --model model.pt --policy policy.json --db postgresql+psycopg://u:p@db/inv\n"
               "  curl -s --data-binary @bin.jpg -H 'Content-Type: image/jpeg' "
               "http://127.0.0.1:8000/v1/count")
    add_serve_options(p)
    g = p.add_argument_group("inventory")
    g.add_argument("--db", default=None,
                   help="database URL (default: $BINVENTORY_DB_URL, else sqlite:///data/inventory.db)")
    g.add_argument("--policy", type=Path, default=None,
                   help="decision thresholds from 'binventory inventory calibrate' (default: "
                        "uncalibrated, conservative blind thresholds)")
    g.add_argument("--image-dir", type=Path, default=None,
                   help="where uploaded bin photos are kept (default: data/observations)")
    g.add_argument("--no-inventory", action="store_true", help="serve counting only: no database")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from binventory.serving.service_cli import load_service, run_server

    predictor, settings = load_service(args)
    db = policy = None
    if not args.no_inventory:
        from binventory.inventory.db import Database
        from binventory.inventory.policy import Policy

        policy = Policy.load(args.policy) if args.policy else Policy.default()
        db = Database.open(args.db, create=True)  # an empty database gets the schema; an old one refuses
        log.info("inventory at %s", db.engine.url.render_as_string(hide_password=True))
    app = create_app(predictor, settings, db=db, policy=policy, image_dir=args.image_dir)
    return run_server(app, args)
