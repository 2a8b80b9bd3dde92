"""The HTTP counting service: answers, every error code, micro-batching, ops routes, a real server."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from binventory.cli import main
from binventory.model.artifact import load_artifact
from binventory.serving.batching import BatcherStopped, MicroBatcher
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings, create_app
from tests.s3 import fill_public_bucket, moto_server
from tests.conftest import bomb_jpeg, jpeg_bytes
from tests.tiny import image_bytes, save_tiny_model

with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
BODY_LIMIT = 64 * 1024
BUCKET = "bins"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def predictor(model_path) -> Predictor:
    return Predictor.load(model_path)


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server() as endpoint:
        fill_public_bucket(endpoint, BUCKET, {"bin-images/00001.jpg": image_bytes(1),
                                              "big.jpg": b"\xff" * (BODY_LIMIT + 1),
                                              "notes.txt": b"not an image"})
        yield endpoint


def no_server_errors(client: TestClient) -> None:
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics and 'status="internal_error"' not in metrics


@pytest.fixture(scope="module")
def client(predictor, s3_endpoint):
    app = create_app(predictor, Settings(max_body_bytes=BODY_LIMIT, s3_endpoint_url=s3_endpoint))
    with TestClient(app) as c:
        yield c
        no_server_errors(c)


def post_image(client, data: bytes, content_type="image/jpeg"):
    return client.post("/v1/count", content=data, headers={"Content-Type": content_type})


def expected(predictor: Predictor, data: bytes) -> dict:
    return predictor.predict([data])[0].to_dict()


def assert_same(answer: dict, want: dict) -> None:
    assert answer["count"] == want["count"] and answer["label"] == want["label"]
    assert answer["model_version"] == want["model_version"]
    assert answer["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
    assert answer["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("fmt, content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_counts_an_uploaded_image(client, predictor, fmt, content_type):
    data = image_bytes(7, fmt)
    r = post_image(client, data, content_type + "; charset=binary")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_same(body, expected(predictor, data))
    assert set(body["probabilities"]) == {"0", "1", "2", "3", "4", "5", "6+"}
    assert body["latency_ms"] > 0


def chunks(total: int, size: int = 8192):
    for start in range(0, total, size):
        yield b"\xff" * min(size, total - start)


def test_oversized_bodies_get_413(client):
    r = post_image(client, b"\xff" * (BODY_LIMIT + 1))  # declared by Content-Length
    assert r.status_code == 413 and r.json()["status"] == "too_large"
    r = client.post("/v1/count", content=chunks(4 * BODY_LIMIT),  # chunked: no Content-Length
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["status"] == "too_large"
    assert "content-length" not in r.request.headers


def test_a_lying_content_length_cannot_exhaust_memory(predictor):
    """Raw ASGI: the header says 10 bytes, the client sends 100 MB; reading stops at the limit."""
    app = create_app(predictor, Settings(max_body_bytes=BODY_LIMIT))
    chunk, sent, replies = b"\xff" * 65536, [], []

    async def receive():
        sent.append(1)
        return {"type": "http.request", "body": chunk, "more_body": len(sent) < 1600}

    async def send(message):
        replies.append(message)

    async def run():
        async with app.router.lifespan_context(app):
            await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                       "method": "POST", "scheme": "http", "path": "/v1/count", "raw_path": b"/v1/count",
                       "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000),
                       "client": ("127.0.0.1", 5000),
                       "headers": [(b"content-type", b"image/jpeg"), (b"content-length", b"10")]},
                      receive, send)

    asyncio.run(run())
    assert replies[0]["status"] == 413
    assert json.loads(replies[1]["body"])["status"] == "too_large"
    assert len(sent) <= BODY_LIMIT // len(chunk) + 2


@pytest.mark.parametrize("data, content_type, status", [
    (b"just some text", "text/plain", "unsupported_media_type"),
    (jpeg_bytes(), "application/octet-stream", "unsupported_media_type"),
    (jpeg_bytes(), "", "unsupported_media_type"),
    (b"GIF89a" + bytes(200), "image/jpeg", "not_jpeg"),
    (b"<html>hello</html>", "image/png", "not_jpeg"),
])
def test_non_images_get_415(client, data, content_type, status):
    r = post_image(client, data, content_type)
    assert r.status_code == 415, r.text
    assert r.json()["status"] == status and r.json()["detail"]


def png_bomb() -> bytes:
    """A real PNG header claiming 30000 x 30000 pixels."""
    data = bytearray(image_bytes(3, "PNG"))
    data[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("data, content_type, status", [
    (jpeg_bytes((64, 48), seed=9)[:600], "image/jpeg", "truncated"),
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "image/jpeg", "undecodable"),
    (bomb_jpeg(), "image/jpeg", "decompression_bomb"),
    (png_bomb(), "image/png", "decompression_bomb"),
    (image_bytes(4, "PNG")[:60], "image/png", "truncated"),  # a cut PNG, named as such
    (b"", "image/jpeg", "empty_file"),
])
def test_corrupt_images_get_422(client, data, content_type, status):
    r = post_image(client, data, content_type)
    assert r.status_code == 422, r.text
    assert r.json()["status"] == status


@pytest.mark.parametrize("body, status", [
    ("{not json", "bad_json"),
    ("[" * 50_000, "bad_json"),  # RecursionError in the parser
    (b"\xff\xfe{}", "bad_json"),
    ('["s3://bins/x.jpg"]', "bad_json"),
    ('{"url": "s3://bins/x.jpg"}', "bad_json"),
    ('{"uri": 5}', "bad_json"),
    ('{"uri": "file:///etc/passwd"}', "bad_uri"),
    ('{"uri": "/etc/passwd"}', "bad_uri"),
    ('{"uri": "http://127.0.0.1/x.jpg"}', "bad_uri"),
    ('{"uri": "s3://bins"}', "bad_uri"),
    ('{"uri": "s3://no spaces allowed/x.jpg"}', "bad_uri"),
    ('{"uri": "s3://bins/' + "k" * 2000 + '"}', "bad_uri"),
])
def test_bad_json_and_uris_get_422(client, body, status):
    r = client.post("/v1/count", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["status"] == status


def test_counts_an_s3_object(client, predictor):
    r = client.post("/v1/count", json={"uri": f"s3://{BUCKET}/bin-images/00001.jpg"})
    assert r.status_code == 200, r.text
    assert_same(r.json(), expected(predictor, image_bytes(1)))


@pytest.mark.parametrize("uri, code, status", [
    (f"s3://{BUCKET}/bin-images/99999.jpg", 404, "not_found"),
    ("s3://no-such-bucket/bin-images/00001.jpg", 404, "not_found"),
    (f"s3://{BUCKET}/big.jpg", 413, "too_large"),
    (f"s3://{BUCKET}/notes.txt", 415, "not_jpeg"),
])
def test_s3_errors(client, uri, code, status):
    r = client.post("/v1/count", json={"uri": uri})
    assert r.status_code == code, r.text
    assert r.json()["status"] == status


def test_unreachable_s3_gets_502(predictor):
    app = create_app(predictor, Settings(s3_endpoint_url="http://127.0.0.1:1"))
    with TestClient(app) as c:
        r = c.post("/v1/count", json={"uri": f"s3://{BUCKET}/bin-images/00001.jpg"})
        assert r.status_code == 502, r.text
        assert r.json()["status"] == "s3_unreachable"
        no_server_errors(c)


def test_uris_can_be_turned_off(predictor):
    with TestClient(create_app(predictor, Settings(allowed_uri_schemes=()))) as c:
        r = c.post("/v1/count", json={"uri": f"s3://{BUCKET}/bin-images/00001.jpg"})
        assert r.status_code == 422 and r.json()["status"] == "bad_uri"


def batch_sizes(metrics_text: str) -> tuple[float, float]:
    """(batches of size 1, all batches) from the batch size histogram."""
    lines = dict(line.rsplit(" ", 1) for line in metrics_text.splitlines() if line and line[0] != "#")
    return float(lines['binventory_batch_size_bucket{le="1.0"}']), float(lines["binventory_batch_size_count"])


def test_concurrent_requests_share_batches_and_get_their_own_rows(predictor):
    images = [image_bytes(100 + i, "PNG" if i % 3 == 0 else "JPEG") for i in range(12)]
    want = [expected(predictor, data) for data in images]
    assert len({w["label"] for w in want}) > 1  # a mix-up of rows would show
    app = create_app(predictor, Settings(max_batch=8, max_wait_ms=150))
    with TestClient(app) as c:
        with ThreadPoolExecutor(len(images)) as pool:
            replies = list(pool.map(
                lambda d: post_image(c, d, "image/png" if d.startswith(b"\x89PNG") else "image/jpeg"),
                images))
        for r, w in zip(replies, want):
            assert r.status_code == 200, r.text
            assert_same(r.json(), w)
        stats = app.state.counting.batcher.stats
        assert stats.max_size > 1 and stats.max_size <= 8
        assert stats.images == len(images) + 1  # + the warm-up image
        singles, batches = batch_sizes(c.get("/metrics").text)
        assert batches == stats.batches and singles < batches
        no_server_errors(c)


def test_ops_routes(predictor, client):
    app = create_app(predictor)
    cold = TestClient(app)  # no lifespan: the model was never warmed up
    assert cold.get("/healthz").status_code == 200
    r = cold.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not_ready"

    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["model_version"] == predictor.model_id
    assert r.json()["model_name"] == "test-v1"
    post_image(client, image_bytes(5))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for name in ("binventory_http_requests_total", "binventory_http_request_seconds_bucket",
                 "binventory_batch_size_bucket", "binventory_batch_seconds_count",
                 "binventory_errors_total", "binventory_queue_depth"):
        assert name in r.text
    assert 'route="/v1/count",status="200"' in r.text
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json()["status"] == "not_found"
    assert client.get("/v1/count").status_code == 405

    spec = client.get("/openapi.json").json()["paths"]["/v1/count"]["post"]
    assert set(spec["requestBody"]["content"]) == {"image/jpeg", "image/png", "application/json"}
    assert {"413", "415", "422", "404", "502"} <= set(spec["responses"])
    assert client.get("/docs").status_code == 200


def test_batcher_drains_its_queue_on_stop_and_survives_failures():
    def run_batch(x):
        if (x < 0).any():
            raise ValueError("boom")
        return x * 2

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch=4, max_wait_ms=1000)
        await batcher.start()
        waiting = [asyncio.ensure_future(batcher.submit(np.array([i]))) for i in range(6)]
        await asyncio.sleep(0.05)
        await batcher.stop()  # long before max_wait_ms: queued work still gets done
        assert [w.result()[0] for w in waiting] == [0, 2, 4, 6, 8, 10]
        assert sorted(batcher.stats.sizes.elements()) == [2, 4]
        with pytest.raises(BatcherStopped):
            await batcher.submit(np.array([1]))

        batcher = MicroBatcher(run_batch, max_batch=2, max_wait_ms=0)
        await batcher.start()
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit(np.array([-1]))
        assert (await batcher.submit(np.array([3])))[0] == 6
        await batcher.stop()

    asyncio.run(scenario())


def test_serve_reports_a_missing_model(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nope.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_server_serves_and_stops_cleanly_on_sigterm(model_path, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Its own data folder: serve keeps an inventory there, never in the repository's data/.
    env = dict(os.environ, PYTHONPATH=str(REPO), BINVENTORY_DATA_DIR=str(tmp_path / "data"))
    env.pop("BINVENTORY_DB_URL", None)
    log_path = tmp_path / "server.log"  # a file, not a pipe nobody reads that could fill up
    log_file = log_path.open("wb")
    # A long batching wait keeps a request queued while SIGTERM arrives: it must still be answered.
    proc = subprocess.Popen([sys.executable, "-m", "binventory", "serve", "--model", str(model_path),
                             "--port", str(port), "--max-wait-ms", "1500", "--threads", "1",
                             "--max-body-mb", "0.0625"],
                            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.2)
        data = image_bytes(11)
        headers = {"Content-Type": "image/jpeg"}
        r = httpx.post(f"{url}/v1/count", content=data, headers=headers, timeout=10)
        assert r.status_code == 200 and r.json()["model_version"] == load_artifact(model_path).model_id
        # Through real uvicorn: a chunked upload over the 64 KiB limit is cut off with a 413.
        r = httpx.post(f"{url}/v1/count", content=chunks(1 << 20), headers=headers, timeout=10)
        assert r.status_code == 413 and "content-length" not in r.request.headers

        late = {}
        sender = threading.Thread(target=lambda: late.update(
            r=httpx.post(f"{url}/v1/count", content=data, headers=headers, timeout=20)))
        sender.start()
        time.sleep(0.5)  # the request is now waiting in the batcher
        proc.send_signal(signal.SIGTERM)
        sender.join(30)
        assert late["r"].status_code == 200, late["r"].text
        assert proc.wait(timeout=30) == 0
        log = log_path.read_text()
        assert "Shutting down" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()


def test_api_docs_load_their_assets_from_the_server(client):
    """/docs and /redoc name no CDN: every script and style they load is served here."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", html)
        assets += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
        scripts = [a for a in assets if a.endswith(".js")]
        assert scripts and not [a for a in assets if "//" in a], (page, assets)
        for asset in assets:
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 100, asset
