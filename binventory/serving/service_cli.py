"""The counting service's command-line options and its uvicorn server (``binventory serve`` is
assembled in binventory.app, which adds the inventory and the dashboard)."""
from __future__ import annotations

import argparse
import signal
import socket
import threading
from pathlib import Path

from binventory import BinventoryError

# A supervisor that stops the service should wait this long at most for open requests.
GRACEFUL_SHUTDOWN_S = 30


def add_serve_options(p, optional_model: str | None = None) -> None:
    """The counting service's options; ``binventory serve`` (in binventory.app) adds the rest.
    ``optional_model`` makes --model optional, saying where the model comes from without it."""
    p.add_argument("--model", type=Path, required=optional_model is None,
                   help="model artifact (model.pt)" + (f"; {optional_model}" if optional_model else ""))
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx",
                   help="inference engine: onnx (ONNX Runtime, faster on CPU: BENCHMARKS.md) "
                        "uses model.onnx beside the artifact, exported "
                        "first when missing or stale (as 'binventory export' does); torch runs "
                        "the artifact itself")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 exposes the service to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--max-batch", type=int, default=16, help="most images per model call")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first queued image waits for others to join its batch")
    p.add_argument("--max-body-mb", type=float, default=10.0,
                   help="largest accepted upload or S3 object, in MiB (larger: 413)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for inference (unset: the engine decides, usually one per core)")
    p.add_argument("--s3-endpoint-url", default=None,
                   help="S3-compatible endpoint for s3:// URIs (unset: AWS S3)")
    p.add_argument("--no-uri", action="store_true",
                   help="refuse JSON {\"uri\": ...} requests: count uploaded images only")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level")


def check_port_free(host: str, port: int) -> None:
    """Bind the address once, as uvicorn will: a port in use is a plain error before the model
    loads (seconds, an ONNX export the first time), not a log line after it. Another process can
    still take the port in between; uvicorn then says so."""
    if not 0 < port <= 65535:  # 0: any free port; out of range: load_service says so
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise BinventoryError(f"cannot listen on --host {host}: {e.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # uvicorn's option too
        try:
            probe.bind(address)
        except OSError as e:
            raise BinventoryError(f"cannot listen on {host}:{port}: {e.strerror} (another server "
                                  "on that port? choose one with --port)") from None


def load_service(args: argparse.Namespace):
    """Check the options and load the model: (predictor, settings). Loading before binding the
    port makes a wrong path or a broken artifact a plain error (exit 2)."""
    settings = service_settings(args)
    from binventory.serving.predictor import Predictor

    return Predictor.load(args.model, backend=args.backend, threads=args.threads), settings


def service_settings(args: argparse.Namespace):
    """The service's Settings from checked options (BinventoryError when they make no sense)."""
    if not 0 <= args.port <= 65535:
        raise BinventoryError(f"--port must be 0..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise BinventoryError("--threads must be at least 1")
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_body_mb <= 0:
        raise BinventoryError("need --max-batch >= 1, --max-wait-ms >= 0 and --max-body-mb > 0")

    from binventory.serving.service import Settings

    return Settings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                    max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                    s3_endpoint_url=args.s3_endpoint_url,
                    allowed_uri_schemes=() if args.no_uri else ("s3",))


def run_server(app, args: argparse.Namespace) -> int:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the SIGTERM it handled once it has shut down, which would kill the
        # process with the signal's status. A requested stop that went cleanly is a success.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    # startup failed (port in use, warm-up error): uvicorn has logged why
    return 0 if server.started else 1
