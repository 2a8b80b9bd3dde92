"""The HTTP counting service: ``POST /v1/count`` plus health, readiness and Prometheus metrics.

``create_app`` builds a FastAPI app around a loaded Predictor. The counting routes live in an
APIRouter so other APIs (the inventory) can share the app; the service itself keeps no state
beyond the model, the micro-batcher and its metrics (no database). ``CountingService.swap``
changes the model while serving: between batches, without failing a request.

Bad input is always the client's problem, never a 500: every way an upload or a referenced
object can be wrong maps to a 4xx (or 502 when S3 itself fails) with
``{"detail": "...", "status": "<code>"}``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from binventory import BinventoryError
from binventory.data.provenance import training_data_warning
from binventory.serving.batching import BatcherStopped, MicroBatcher
from binventory.serving.inputs import read_s3_object
from binventory.serving.metrics import Metrics, MetricsMiddleware
from binventory.serving.predictor import ImageError, Predictor

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png")
SUPPORTED_URI_SCHEMES = ("s3",)  # file:// would expose the server's disk; http(s) is not needed yet


@dataclass
class Settings:
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_body_bytes: int = 10 * 1024 * 1024   # also the limit for an image fetched from S3
    s3_endpoint_url: str | None = None       # None: AWS S3 (the ABID bucket); else MinIO, moto...
    allowed_uri_schemes: tuple[str, ...] = ("s3",)  # () turns off counting by URI

    def __post_init__(self):
        if self.max_batch < 1 or self.max_wait_ms < 0 or self.max_body_bytes < 1:
            raise BinventoryError("need max_batch >= 1, max_wait_ms >= 0 and max_body_bytes >= 1")
        unknown = set(self.allowed_uri_schemes) - set(SUPPORTED_URI_SCHEMES)
        if unknown:
            raise BinventoryError(f"unsupported URI schemes {sorted(unknown)}; "
                                  f"supported: {SUPPORTED_URI_SCHEMES}")


class ApiError(Exception):
    """A client-visible failure: HTTP status, machine-readable code and a human message."""

    def __init__(self, http_status: int, status: str, detail: str):
        super().__init__(detail)
        self.http_status, self.status, self.detail = http_status, status, detail


class CountResponse(BaseModel):
    count: int
    label: str
    confidence: float
    probabilities: dict[str, float]
    model_version: str
    latency_ms: float


class UriRequest(BaseModel):
    uri: str


class ErrorResponse(BaseModel):
    detail: str
    status: str


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_COUNT_BODY = {"requestBody": {"required": True, "content": {
    "image/jpeg": _BINARY, "image/png": _BINARY,
    "application/json": {"schema": UriRequest.model_json_schema(),
                         "example": {"uri": "s3://aft-vbi-pds/bin-images/00523.jpg"}}}}}
_ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in (
    (403, "the S3 object is not publicly readable"), (404, "the S3 object does not exist"), (413, "body or S3 object over the size limit"),
    (415, "not a JPEG or PNG (content type or bytes)"),
    (422, "corrupt image (truncated, undecodable, decompression bomb, empty) or bad JSON/URI"),
    (502, "S3 unreachable or failing"), (503, "model not ready (starting or stopping)"))}


@dataclass(frozen=True)
class Served:
    """One model as served: its predictor and what APIs mounted beside the counting routes pair
    with it (the inventory: the policy calibrated for it). Swapped whole, so a request that
    reads it once decodes, counts and judges with one consistent model."""
    predictor: Predictor
    attached: Mapping[str, object] = field(default_factory=dict)
    trained_on: dict | None = None  # what /readyz says the model learned from (found once)

    def __post_init__(self):
        if self.trained_on is None:
            object.__setattr__(self, "trained_on", training_data(self.predictor))


class CountingService:
    """The model behind the routes: decoding, batching, S3 fetching, readiness, model swaps."""

    def __init__(self, predictor: Predictor, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.served = Served(predictor)
        # Every image is submitted with its own model's run_batch: this default runs none.
        self.batcher = MicroBatcher(predictor.predict_arrays, settings.max_batch, settings.max_wait_ms,
                                    on_batch=metrics.observe_batch)
        self.ready = False
        # What APIs mounted beside the counting routes add to /readyz's answer (the inventory:
        # whether its policy fits this model), so the service itself needs to know none of them.
        self.readiness: dict = {}
        # Coroutines they want running while the service is (the inventory's registry follower).
        self.background: list[Callable[[], Awaitable[None]]] = []
        self._s3 = None
        self._s3_lock = threading.Lock()

    @property
    def predictor(self) -> Predictor:
        """The model now serving (a request in flight may still be counted by the one before)."""
        return self.served.predictor

    def attach(self, **attached) -> None:
        """Pair ``attached`` with the model now serving (swapped away with it)."""
        self.served = Served(self.predictor, {**self.served.attached, **attached},
                             self.served.trained_on)

    async def start(self) -> None:
        await self.batcher.start()
        # The first inference allocates and tunes kernels; pay for it before taking traffic.
        size = self.predictor.preprocess.image_size
        await self.batcher.submit(np.zeros((size, size, 3), np.uint8), self.predictor.predict_arrays)
        self.ready = True
        self.metrics.serving(self.predictor.model_id)
        log.info("model %s ready (%s backend)", self.predictor.model_id, self.predictor.backend)

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()  # finishes queued batches first

    async def swap(self, predictor: Predictor, **attached) -> Served:
        """Serve ``predictor`` (with ``attached`` paired to it) from the next request on. Images
        already decoded for the model before are still counted by it, in batches of their own,
        so no request fails or gets a mixed answer; the swap itself is one assignment."""
        size = predictor.preprocess.image_size
        # Warm up off the event loop and beside the batch worker: batches keep running meanwhile.
        await run_in_threadpool(predictor.predict_arrays, np.zeros((1, size, size, 3), np.uint8))
        before, self.served = self.served, Served(predictor, attached)
        self.metrics.serving(predictor.model_id, before.predictor.model_id)
        self.metrics.swaps.inc()
        log.info("now serving model %s (was %s)", predictor.model_id, before.predictor.model_id)
        return self.served

    async def infer(self, data: bytes) -> tuple[np.ndarray, Served]:
        """Calibrated class probabilities of one encoded image, and the model that computed
        them; raises ImageError."""
        served = self.served  # read once: the decoding (its image size) and the batch must agree
        # check_image_bytes bounds JPEG and PNG sizes from the header and maps every decoder
        # failure to an ImageError, so bad bytes never escape as a 500.
        image = await run_in_threadpool(served.predictor.decode, data)
        return await self.batcher.submit(image, served.predictor.predict_arrays), served

    async def probabilities(self, data: bytes) -> np.ndarray:
        """Calibrated class probabilities of one encoded image; raises ImageError."""
        return (await self.infer(data))[0]

    async def count(self, data: bytes) -> dict:
        row, served = await self.infer(data)
        return served.predictor.to_predictions(row[None])[0].to_dict()

    def fetch(self, uri: str) -> bytes:
        """An image's bytes from an ``s3://bucket/key`` URI (runs in a worker thread)."""
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        bucket, key = _parse_uri(uri, self.settings.allowed_uri_schemes)
        try:
            return read_s3_object(self._s3_client(), bucket, key, self.settings.max_body_bytes)
        except ImageError as e:  # over the size limit
            raise ApiError(413, e.status, f"{uri} is {e.reason}") from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            http = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404") or http == 404:
                raise ApiError(404, "not_found", f"{uri} does not exist") from None
            if code in ("AccessDenied", "403") or http == 403:
                raise ApiError(403, "forbidden", f"{uri} is not publicly readable") from None
            if http == 400:  # e.g. KeyTooLongError: the URI is wrong, not S3
                raise ApiError(422, "bad_uri", f"S3 refused {uri!r}: {code}") from None
            raise ApiError(502, "s3_error", f"S3 failed on {uri}: {code or http}") from None
        except ParamValidationError as e:
            raise ApiError(422, "bad_uri", f"invalid S3 location {uri!r}: {e}") from None
        except (BotoCoreError, OSError) as e:  # unreachable, or the connection broke mid-read
            raise ApiError(502, "s3_unreachable", f"cannot read {uri} from S3: {e}") from None

    def _s3_client(self):
        with self._s3_lock:  # created on first use: most deployments never count by URI
            if self._s3 is None:
                from binventory.data.fetch import make_client
                # Few retries: a client is waiting, and an outage should turn into a 502 quickly.
                self._s3 = make_client(self.settings.s3_endpoint_url, workers=32, retries=2)
            return self._s3


def _parse_uri(uri: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in allowed:
        raise ApiError(422, "bad_uri", f"uri must be one of {[s + '://' for s in allowed]}, "
                                       f"got {uri[:200]!r}")
    # Not urlsplit: S3 keys may legitimately contain '?' and '#'.
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ApiError(422, "bad_uri", f"uri must look like s3://bucket/key, got {uri[:200]!r}")
    if len(key.encode("utf-8", "surrogatepass")) > 1024:  # S3's own limit on key length
        raise ApiError(422, "bad_uri", f"S3 keys are at most 1024 bytes, got {len(key.encode()):,}")
    return bucket, key


def media_type_of(request: Request, accepted: Sequence[str]) -> str:
    """The request's media type (without parameters such as charset); 415 unless ``accepted``."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in accepted:
        names = " or ".join([", ".join(accepted[:-1]), accepted[-1]] if len(accepted) > 1 else accepted)
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be {names}, got {media_type or 'none'!r}")
    return media_type


@contextmanager
def counting_errors():
    """What counting an upload can raise, as the client's errors: the image's own faults (415
    for another format, 422 for a broken or oversized image) and a model that is stopping (503)."""
    try:
        yield
    except ImageError as e:
        raise ApiError(415 if e.status == "not_jpeg" else 422, e.status,
                       f"not a usable JPEG or PNG image: {e.reason}") from None
    except BatcherStopped as e:
        raise ApiError(503, "not_ready", str(e)) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body of {int(declared):,} bytes is over the limit "
                                         f"of {limit:,}")
    # The header may be absent (chunked) or lie, so count what actually arrives too.
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, "too_large", f"body is over the limit of {limit:,} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-upload") from None
    return b"".join(chunks)


def _uri_from_json(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise ApiError(422, "bad_json", f"body is not valid JSON: {str(e)[:200]}") from None
    uri = payload.get("uri") if isinstance(payload, dict) else None
    if not isinstance(uri, str):
        raise ApiError(422, "bad_json", 'JSON body must be an object like {"uri": "s3://bucket/key"}')
    return uri


def counting_router(service: CountingService) -> APIRouter:
    router = APIRouter(tags=["counting"])

    @router.post("/v1/count", response_model=CountResponse, openapi_extra=_COUNT_BODY,
                 responses=_ERRORS, summary="Count the items in one bin photo")
    async def count(request: Request):
        """Send the image itself (``image/jpeg`` or ``image/png``) or JSON ``{"uri": "s3://..."}``."""
        started = time.perf_counter()
        media_type = media_type_of(request, (*IMAGE_TYPES, "application/json"))
        body = await read_body(request, service.settings.max_body_bytes)
        if media_type == "application/json":
            body = await run_in_threadpool(service.fetch, _uri_from_json(body))
        with counting_errors():
            prediction = await service.count(body)
        return {**prediction, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}

    return router


def training_data(predictor: Predictor) -> dict:
    """What /readyz says the model learned from (the artifact's summary, see
    binventory.data.provenance), with a warning when that was synthetic bins only."""
    summary = predictor.counting.metrics.get("training_data")
    warning = training_data_warning(summary)
    if warning:
        log.warning("%s", warning)
    # Older artifacts do not say what they learned from: say that, rather than nothing.
    return {"training_data": summary if isinstance(summary, dict) else {"kind": "unknown"},
            "training_data_warning": warning}


def create_app(predictor: Predictor, settings: Settings | None = None) -> FastAPI:
    """A FastAPI app counting with ``predictor``; the micro-batcher runs during its lifespan."""
    settings = settings or Settings()
    metrics = Metrics(settings.max_batch)
    service = CountingService(predictor, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        tasks = [asyncio.create_task(run()) for run in service.background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # uvicorn gets here after it stopped accepting and open requests finished.
            await service.stop()

    # /docs and /redoc with their scripts and styles served from the package, not a CDN: the
    # dashboard and its API documentation work on a floor network with no internet
    app = FastAPIOffline(title="binventory", summary="Count items in warehouse bin photos",
                         version=predictor.model_id or "unversioned", lifespan=lifespan)
    app.state.counting = service  # for tests and for APIs mounted later
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(counting_router(service))

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="The model is loaded and warmed up")
    async def readyz():
        if not service.ready:
            return JSONResponse({"detail": "model not ready", "status": "not_ready"}, 503)
        served = service.served
        return {"status": "ready", "model_version": served.predictor.model_id,
                "model_name": served.predictor.model_name, "backend": served.predictor.backend,
                **served.trained_on, **service.readiness}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus():
        body, content_type = metrics.render(service.batcher.queued())
        return PlainTextResponse(body, media_type=content_type)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        metrics.errors.labels(e.status).inc()
        return JSONResponse({"detail": e.detail, "status": e.status}, e.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        status = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse({"detail": str(e.detail), "status": status}, e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        metrics.errors.labels("internal_error").inc()
        return JSONResponse({"detail": "internal error", "status": "internal_error"}, 500)

    return app


