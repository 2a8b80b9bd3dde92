"""Several `binventory serve` replicas on one PostgreSQL, as users scale the inventory API: robots
upload photos of an overlapping set of bins through every replica at once while people resolve
audit tasks; then the database must hold exactly what was accepted.

    python bench/replicas.py [--replicas 3] [--clients 16] [--bins 24] [--duration 60]
                             [--db postgresql+psycopg://...] [--json out.json]

Without --db it makes a throwaway database on the server of $BINVENTORY_TEST_PG_URL (and drops
it after). Photos: the real ABID sample in ../shared/abid-sample when present (its metadata gives
the bins' records), else synthetic bins. Each upload pairs a random bin with a random photo, so
one bin gets different photos at once from different replicas (and sometimes the same one
twice). The model is a random MobileNetV2 at 96 px: the database work is what is measured.

Prints uploads/s, p50/p99 latency and every non-2xx answer, then checks: no answer >= 500; at
most one active task per bin, and one for every bin with doubtful evidence newer than its last
closed task; every accepted upload stored once (duplicates answered with the stored one); each
bin's quantities equal its imported record plus its ledger. Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

from pgtools import fresh_database  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "abid-sample"
QUIET_S = 2.0  # the resolvers stop this long before the uploaders (see check)


def cli(*args: str, capture: bool = False) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "binventory", *args], cwd=REPO, env=env, check=True,
                          capture_output=capture, text=True)
    return done.stdout.strip() if capture else ""


def dataset(work: Path, bins: int, photos: int) -> tuple[Path, list[bytes], str]:
    """An ABID-style folder with ``bins`` bins' metadata, and ``photos`` photos to upload."""
    root = work / "abid"
    (root / "metadata").mkdir(parents=True)
    if (SAMPLE / "metadata").is_dir() and any((SAMPLE / "bin-images").glob("*.jpg")):
        images = sorted((SAMPLE / "bin-images").glob("*.jpg"))[:max(bins, photos)]
        source = f"real ABID sample ({SAMPLE})"
        for path in images[:bins]:
            shutil.copy(SAMPLE / "metadata" / f"{path.stem}.json", root / "metadata")
    else:
        from binventory.data.synth import generate
        generate(work / "synth", n=max(bins, photos), seed=0, progress=False)
        images = sorted((work / "synth" / "bin-images").glob("*.jpg"))
        source = "synthetic bins"
        for path in images[:bins]:
            shutil.copy(work / "synth" / "metadata" / f"{path.stem}.json", root / "metadata")
    return root, [p.read_bytes() for p in images[:photos]], source


def random_model(work: Path) -> Path:
    from binventory.data.preprocess import Preprocess
    from binventory.model.artifact import save_artifact
    from binventory.model.classes import CountClasses
    from binventory.model.factory import create_model

    path = work / "model.pt"
    save_artifact(path, create_model("mobilenet_v2", 7, weights="none"), classes=CountClasses(0, 5, True),
                  preprocess=Preprocess(image_size=96), name="bench-replicas")
    return path


def flag_everything_policy(work: Path) -> Path:
    from binventory.inventory.policy import Policy
    from binventory.inventory.verify import BlindVerifier

    # Most uploads open or join a task: that is the write the replicas can race on.
    return Policy(BlindVerifier(), t_confirm=0.99, t_flag=0.3).save(work / "policy.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replicas(n: int, model: Path, policy: Path, db_url: str, work: Path) -> list:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    replicas = []
    for i in range(n):
        port = free_port()
        log = (work / f"replica{i}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "binventory", "serve", "--model", str(model), "--policy", str(policy),
             "--db", db_url, "--image-dir", str(work / "photos"), "--port", str(port),
             "--backend", "torch", "--threads", "1", "--log-level", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        replicas.append((proc, f"http://127.0.0.1:{port}", work / f"replica{i}.log"))
    deadline = time.monotonic() + 180
    for proc, url, log in replicas:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"a replica exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"a replica was not ready within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
    return replicas


async def load(urls: list[str], token: str, codes: list[str], photos: list[bytes], clients: int,
               resolvers: int, duration: float, seed: int) -> dict:
    rng = random.Random(seed)
    statuses: Counter = Counter()
    latencies: list[float] = []
    accepted: list[dict] = []  # (bin, sha256, id, duplicate) of every 201
    resolved = 0
    stop_at = time.perf_counter() + duration
    headers = {"Authorization": f"Bearer {token}"}

    async def uploader(http: httpx.AsyncClient, k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            code, data = rng.choice(codes), rng.choice(photos)
            started = time.perf_counter()
            try:
                r = await http.post(f"{urls[i % len(urls)]}/v1/bins/{code}/observations", content=data,
                                    headers={**headers, "Content-Type": "image/jpeg"})
            except httpx.HTTPError as e:
                statuses[type(e).__name__] += 1
                continue
            finally:
                i += 1
            statuses[r.status_code] += 1
            if r.status_code == 201:
                latencies.append(time.perf_counter() - started)
                body = r.json()
                accepted.append({"bin": code, "sha256": body["image_sha256"], "id": body["id"],
                                 "duplicate": body["duplicate"]})

    async def resolver(http: httpx.AsyncClient, k: int) -> None:
        nonlocal resolved
        i = k
        while time.perf_counter() < stop_at - QUIET_S:
            base, i = urls[i % len(urls)], i + 1
            try:
                page = (await http.get(f"{base}/v1/audit-tasks", params={"limit": 20},
                                       headers=headers)).json()
                if not page["tasks"]:
                    await asyncio.sleep(0.2)
                    continue
                task = rng.choice(page["tasks"])
                counted = max(0, (task["predicted_count"] or 0))
                r = await http.post(f"{base}/v1/audit-tasks/{task['id']}/resolve", headers=headers,
                                    json={"counted_quantity": counted, "reason_code": "miscount"})
            except httpx.HTTPError as e:
                statuses[f"resolve {type(e).__name__}"] += 1
                continue
            statuses[f"resolve {r.status_code}"] += 1
            resolved += r.status_code == 200
            await asyncio.sleep(0.1)  # a person is slower than a robot

    async def people(http: httpx.AsyncClient) -> float:
        await asyncio.gather(*(resolver(http, k) for k in range(resolvers)))
        return time.time()

    limits = httpx.Limits(max_connections=clients + resolvers)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        started = time.perf_counter()
        resolutions_done, *_ = await asyncio.gather(people(http), *(uploader(http, k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"seconds": elapsed, "uploads": len(accepted), "uploads_per_s": len(accepted) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "resolved": resolved, "resolutions_done": resolutions_done, "accepted": accepted}


def check(db_url: str, accepted: list[dict], records: dict[tuple[str, str], int],
          resolutions_done: float) -> dict[str, str]:
    """What the database must hold after the run; an empty dict when it does. A photo judged
    while a person resolves its bin's task may join that recount, so the check for an active
    task looks at the doubtful photos judged after the last resolution had been answered."""
    failures = {}
    engine = create_engine(db_url)
    with engine.connect() as c:
        obs = c.execute(text("SELECT o.id, b.code, o.image_sha256 FROM observation o "
                             "JOIN bin b ON b.id = o.bin_id")).all()
        keys = Counter((code, sha) for _, code, sha in obs)
        stored = {(code, sha): i for i, code, sha in obs}
        wanted = {(a["bin"], a["sha256"]) for a in accepted}
        if set(keys) != wanted or max(keys.values(), default=1) != 1:
            failures["uploads stored once"] = (f"{len(obs)} observations for {len(wanted)} distinct "
                                               "accepted uploads")
        if any(stored.get((a["bin"], a["sha256"])) != a["id"] for a in accepted):
            failures["answers"] = "an upload was answered with another observation than the stored one"
        if sum(not a["duplicate"] for a in accepted) != len(wanted):
            failures["duplicates"] = "a repeated upload was not answered as a duplicate, or vice versa"
        active = Counter(code for (code,) in c.execute(text(
            "SELECT b.code FROM audit_task t JOIN bin b ON b.id = t.bin_id "
            "WHERE t.status IN ('open', 'in_progress')")))
        if any(n > 1 for n in active.values()):
            failures["one active task"] = f"bins with several: {[k for k, n in active.items() if n > 1]}"
        open_work = {code for (code,) in c.execute(text(
            "SELECT b.code FROM observation o JOIN bin b ON b.id = o.bin_id "
            "WHERE o.decision <> 'confirm' AND o.created_at > to_timestamp(:done)"), {"done": resolutions_done})}
        if open_work - set(active):
            failures["open work has a task"] = f"bins without one: {sorted(open_work - set(active))[:10]}"
        now = {(code, asin): q for code, asin, q in c.execute(text(
            "SELECT b.code, s.asin, c.quantity FROM bin_content c JOIN bin b ON b.id = c.bin_id "
            "JOIN sku s ON s.id = c.sku_id"))}
        deltas: dict = defaultdict(int)
        for code, asin, delta in c.execute(text(
                "SELECT b.code, s.asin, a.delta FROM adjustment a JOIN bin b ON b.id = a.bin_id "
                "JOIN sku s ON s.id = a.sku_id")):
            deltas[code, asin] += delta
        lines = set(now) | set(records) | set(deltas)
        wrong = [k for k in lines if records.get(k, 0) + deltas.get(k, 0) != now.get(k, 0)]
        if wrong:
            failures["ledger"] = f"quantities that are not record + ledger: {sorted(wrong)[:10]}"
    engine.dispose()
    return failures


def imported_records(db_url: str) -> dict[tuple[str, str], int]:
    engine = create_engine(db_url)
    with engine.connect() as c:
        rows = c.execute(text("SELECT b.code, s.asin, c.quantity FROM bin_content c "
                              "JOIN bin b ON b.id = c.bin_id JOIN sku s ON s.id = c.sku_id")).all()
    engine.dispose()
    return {(code, asin): q for code, asin, q in rows}


def run(args, work: Path, db_url: str) -> dict:
    root, photos, source = dataset(work, args.bins, args.photos)
    cli("inventory", "migrate", "--db", db_url)
    cli("inventory", "import-abid", str(root), "--db", db_url, "--workers", "1")
    token = cli("inventory", "token", "create", "bench", "--db", db_url, capture=True).splitlines()[-1]
    records = imported_records(db_url)
    codes = sorted({code for code, _ in records} | {p.stem for p in (root / "metadata").glob("*.json")})
    replicas = start_replicas(args.replicas, args.model or random_model(work), flag_everything_policy(work),
                              db_url, work)
    try:
        urls = [url for _, url, _ in replicas]
        result = asyncio.run(load(urls, token, codes, photos, args.clients, args.resolvers,
                                  args.duration, args.seed))
    finally:
        for proc, _, _ in replicas:
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in replicas:
            proc.wait(timeout=60)
    result["failures"] = check(db_url, result["accepted"], records, result["resolutions_done"])
    errors = {k: v for k, v in result["statuses"].items() if k.split()[-1].isdigit() and int(k.split()[-1]) >= 500}
    if errors:
        result["failures"]["no 5xx"] = f"{errors}"
    broken = {k: v for k, v in result["statuses"].items() if not k.split()[-1].isdigit()}
    if broken:
        result["failures"]["no dropped connections"] = f"{broken}"
    result.update(replicas=args.replicas, clients=args.clients, resolvers=args.resolvers,
                  bins=len(codes), photos=len(photos), source=source)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16, help="concurrent uploading robots")
    parser.add_argument("--resolvers", type=int, default=2, help="concurrent people resolving tasks")
    parser.add_argument("--bins", type=int, default=24, help="bins the uploads are spread over")
    parser.add_argument("--photos", type=int, default=200, help="distinct photos to upload")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--model", type=Path, default=None, help="model artifact (default: random, 96 px)")
    parser.add_argument("--db", default=None, help="an empty PostgreSQL database (default: a throwaway "
                                                   "one on $BINVENTORY_TEST_PG_URL's server)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    drop = None
    db_url = args.db
    if db_url is None:
        admin = os.environ.get("BINVENTORY_TEST_PG_URL")
        if not admin:
            sys.exit("give --db, or set BINVENTORY_TEST_PG_URL (scripts/pg-throwaway.sh starts a server)")
        db_url, drop = fresh_database(admin, "bench_replicas")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args, Path(tmp), db_url)
    finally:
        if drop is not None:
            drop()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}; "
          f"{result['replicas']} replicas, {result['clients']} uploaders + {result['resolvers']} resolvers, "
          f"{result['bins']} bins, {result['photos']} photos: {result['source']}")
    print(f"{result['uploads']:,} uploads in {result['seconds']:.0f} s: {result['uploads_per_s']:.1f} uploads/s, "
          f"p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms; {result['resolved']} tasks resolved")
    print(f"answers: {result['statuses']}")
    for name, why in result["failures"].items():
        print(f"FAILED {name}: {why}")
    if not result["failures"]:
        print("checks: 0 answers >= 500; one active task per bin with open work; every accepted upload "
              "stored once; quantities = record + ledger")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
