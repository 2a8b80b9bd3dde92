"""HTTP service load test: latency at low load and throughput at saturation, on 127.0.0.1 only.

    python bench/serve_load.py [--model model.pt] [--duration 10] [--clients 16]
    python bench/serve_load.py --url http://127.0.0.1:8000   # a service that is already running

Without --url it starts ``binventory serve`` on a free local port (and stops it with SIGTERM).
Without --model it serves a randomly initialized MobileNetV2 at 224 px: the same compute as a
trained one, so the timings hold. Images: the real ABID sample in ../shared/abid-sample when
present, otherwise synthetic bins. Each phase stops at --duration seconds or --max-requests.

Targets: p50 <= 30 ms for one image at low load, >= 150 images/s at saturation, 0 errors.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "abid-sample"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def load_images(n: int, workdir: Path) -> tuple[list[bytes], str]:
    folder = SAMPLE / "bin-images"
    if folder.is_dir() and any(folder.glob("*.jpg")):
        paths, source = sorted(folder.glob("*.jpg"))[:n], f"real ABID sample ({folder})"
    else:
        from binventory.data.synth import generate
        generate(workdir / "synth", n=n, seed=0, progress=False)
        paths, source = sorted((workdir / "synth" / "bin-images").glob("*.jpg")), "synthetic bins"
    return [p.read_bytes() for p in paths], source


def random_model(workdir: Path) -> Path:
    from binventory.data.preprocess import Preprocess
    from binventory.model.artifact import save_artifact
    from binventory.model.classes import CountClasses
    from binventory.model.factory import create_model

    path = workdir / "bench-model.pt"
    save_artifact(path, create_model("mobilenet_v2", 7, weights="none"), classes=CountClasses(0, 5, True),
                  preprocess=Preprocess(image_size=224), name="bench-random")
    return path


def start_server(model: Path, args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "binventory", "serve", "--model", str(model), "--port", str(port),
           "--backend", args.backend, "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning",
           # The counting route is what is measured; the inventory (and whatever database the
           # default URL names, at whatever schema revision) stays out of it.
           "--no-inventory"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    sys.exit("the server was not ready within 120 s")


async def run_phase(url: str, images: list[bytes], clients: int, duration: float,
                    max_requests: int) -> dict:
    latencies, server_ms, errors = [], [], {}
    issued = 0
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(http: httpx.AsyncClient, k: int) -> None:
        nonlocal issued
        while time.perf_counter() < stop_at and issued < max_requests:
            data = images[(issued + k) % len(images)]
            issued += 1
            started = time.perf_counter()
            try:
                r = await http.post(f"{url}/v1/count", content=data,
                                    headers={"Content-Type": "image/jpeg"})
                key = None if r.status_code == 200 else str(r.status_code)
            except httpx.HTTPError as e:
                key = type(e).__name__
            if key is None:
                latencies.append(time.perf_counter() - started)
                server_ms.append(r.json()["latency_ms"])
            else:
                errors[key] = errors.get(key, 0) + 1

    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http, k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "ok": len(latencies), "errors": errors, "seconds": elapsed,
            "rate": len(latencies) / elapsed,
            "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
            "server_p50": float(np.median(server_ms)) if server_ms else float("nan")}


def batch_summary(url: str) -> str:
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(("binventory_batch_size_sum", "binventory_batch_size_count")):
            name, value = line.split(" ")
            values[name] = float(value)
    count = values.get("binventory_batch_size_count", 0)
    return f"{count:.0f} batches, mean size {values.get('binventory_batch_size_sum', 0) / max(count, 1):.1f}"


def row(name: str, r: dict, target: str, met: bool) -> str:
    errors = sum(r["errors"].values())
    detail = f" ({r['errors']})" if errors else ""
    return (f"| {name} | {r['clients']} | {r['ok']:,} | {errors}{detail} | {r['rate']:.1f} | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | {r['server_p50']:.1f} | {target} | "
            f"{'yes' if met else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark this running service (127.0.0.1 only)")
    parser.add_argument("--model", type=Path, help="model artifact (default: random MobileNetV2 224 px)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--max-requests", type=int, default=5000, help="requests per phase at most")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients at saturation")
    parser.add_argument("--images", type=int, default=200, help="distinct images to cycle through")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="inference threads (server)")
    args = parser.parse_args()
    if args.url and urlsplit(args.url).hostname not in LOCAL_HOSTS:
        sys.exit("--url must point at 127.0.0.1 (this benchmark never sends traffic elsewhere)")

    with tempfile.TemporaryDirectory() as tmp:
        images, source = load_images(args.images, Path(tmp))
        proc, url = None, args.url
        if url is None:
            model = args.model or random_model(Path(tmp))
            proc, url = start_server(model, args)
        try:
            version = httpx.get(f"{url}/readyz", timeout=10).json().get("model_version")
            asyncio.run(run_phase(url, images, 2, 1.0, 20))  # connection setup, first-call costs
            low = asyncio.run(run_phase(url, images, 1, args.duration, args.max_requests))
            high = asyncio.run(run_phase(url, images, args.clients, args.duration, args.max_requests))
            batches = batch_summary(url)
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)

    print(f"\n{platform.node()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"model {version} ({args.backend}), {len(images)} images: {source}; server max_batch "
          f"{args.max_batch}, max_wait_ms {args.max_wait_ms}; {batches}\n")
    print("| phase | clients | ok | errors | images/s | p50 ms | p99 ms | server p50 ms | target | met |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(row("low load", low, "p50 <= 30 ms", low["p50"] <= 30 and not low["errors"]))
    print(row("saturation", high, ">= 150 images/s, 0 errors", high["rate"] >= 150 and not high["errors"]))


if __name__ == "__main__":
    main()
