"""Swapping the served model while requests keep coming: none fails, none is counted by a mix of
two models, and once the swap returns every new request gets the new model."""
from __future__ import annotations

import asyncio
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from binventory.serving.batching import MicroBatcher
from binventory.serving.predictor import Predictor
from binventory.serving.service import Settings, create_app
from tests.serving.test_service import assert_same, expected, no_server_errors, post_image
from tests.tiny import image_bytes, save_tiny_model

with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

IMAGES = [image_bytes(300 + i, "PNG" if i % 4 == 0 else "JPEG") for i in range(8)]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Predictor, Predictor]:
    """Two models that differ in weights, id and image size (32 px and 48 px): an image decoded
    for one cannot even be stacked into a batch of the other's."""
    folder = tmp_path_factory.mktemp("models")
    small = Predictor.load(save_tiny_model(folder / "a.pt", name="model-a", seed=0))
    large = Predictor.load(save_tiny_model(folder / "b.pt", name="model-b", seed=1, image_size=48))
    assert small.preprocess.image_size != large.preprocess.image_size
    return small, large


def test_batches_never_mix_models_and_keep_their_rows():
    calls: list[tuple[str, list[int]]] = []

    def runner(name: str, factor: int):
        def run(x):
            calls.append((name, [int(v) for v in x[:, 0]]))
            return x * factor
        return run

    double, triple = runner("double", 2), runner("triple", 3)

    async def scenario():
        batcher = MicroBatcher(double, max_batch=8, max_wait_ms=200)
        await batcher.start()
        # Interleaved, as requests decoded just before and just after a swap reach the queue.
        plan = [(i, double if i in (0, 1, 4) else triple) for i in range(7)]
        waiting = [asyncio.ensure_future(batcher.submit(np.array([i]), run)) for i, run in plan]
        results = await asyncio.gather(*waiting)
        await batcher.stop()
        return plan, results

    plan, results = asyncio.run(scenario())
    assert [int(r[0]) for r in results] == [i * (2 if run is double else 3) for i, run in plan]
    # Consecutive images for one model share a batch; a change of model starts a new batch.
    assert calls == [("double", [0, 1]), ("triple", [2, 3]), ("double", [4]), ("triple", [5, 6])]


def test_a_queued_request_finishes_on_the_model_it_was_decoded_for(two_models):
    small, large = two_models
    app = create_app(small, Settings(max_batch=8, max_wait_ms=2000))
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        before = pool.submit(post_image, c, IMAGES[1])
        deadline = time.monotonic() + 10
        while app.state.counting.batcher.queued() == 0:  # not yet decoded (at 32 px) and queued
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # ... where it waits up to 2 s for company: the 48 px image after the swap comes first.
        c.portal.call(app.state.counting.swap, large)
        after = post_image(c, IMAGES[1])
        assert before.result().status_code == 200 and after.status_code == 200
        assert_same(before.result().json(), expected(small, IMAGES[1]))
        assert_same(after.json(), expected(large, IMAGES[1]))
        no_server_errors(c)


def test_swapping_models_under_concurrent_load_fails_no_request(two_models):
    small, large = two_models
    want = {p.model_id: [expected(p, data) for data in IMAGES] for p in two_models}
    app = create_app(small, Settings(max_batch=8, max_wait_ms=2))
    service = app.state.counting
    answers: list[tuple[int, object]] = []
    stop = threading.Event()

    def client_loop(c, k):
        n = 0
        while not stop.is_set():
            i = (k + n) % len(IMAGES)
            answers.append((i, post_image(c, IMAGES[i], "image/png" if i % 4 == 0 else "image/jpeg")))
            n += 1

    order = [large, small, large, small, large, small, large]
    with TestClient(app) as c, ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client_loop, c, k) for k in range(8)]
        try:
            for new in order:
                time.sleep(0.3)
                c.portal.call(service.swap, new)
                # Whatever was decoded for the model before may still finish on it; a request
                # made after the swap returned is counted by the new model.
                r = post_image(c, IMAGES[3])
                assert r.status_code == 200 and r.json()["model_version"] == new.model_id
                assert c.get("/readyz").json()["model_version"] == new.model_id
            time.sleep(0.2)
        finally:
            stop.set()  # a failure must not leave the clients posting forever
        for f in clients:
            f.result()
        metrics = c.get("/metrics").text
        no_server_errors(c)

    assert len(answers) > 50
    assert [r.status_code for _, r in answers if r.status_code != 200] == []
    served = {r.json()["model_version"] for _, r in answers}
    assert served == {small.model_id, large.model_id}
    for i, r in answers:  # each answer is the named model's own on this image: no batch mixed them
        assert_same(r.json(), want[r.json()["model_version"]][i])
    serving = [line for line in metrics.splitlines() if line.startswith("binventory_model_info{")]
    assert serving == [f'binventory_model_info{{model_version="{large.model_id}"}} 1.0']
    assert f"binventory_model_swaps_total {float(len(order))}" in metrics
