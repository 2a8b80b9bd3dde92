"""``predict_batch``: count every image of a folder, an S3 prefix or a manifest into one Parquet.

Output: one row per input image, sorted by ``source``::

    image_id       str    file name without suffix (ABID ids for bin-images/<id>.jpg)
    source         str    absolute path or s3://bucket/key: unique, and the key for resuming
    sha256         str    of the image bytes (null when they could not be read)
    count          int    predicted count (the overflow class counts as max+1); null on error
    label          str    predicted class name, e.g. "3" or "6+"; null on error
    confidence     float  its calibrated probability; null on error
    p_<class>      float  one column per class (p_0 ... p_5, p_6+): calibrated probabilities
    model_version  str    the artifact's version
    error          str    null when ok, else "<status>: <reason>" (status as in validate.py)

A bad image gets a row with its error and no prediction; it never stops the run.

Resuming: rows are written every ``part_rows`` images as atomic part files under
``<out>.parts/``; at the end they are merged (with an existing ``<out>``) into ``<out>``,
atomically, and the parts are removed. A rerun with the same ``out`` first reads ``<out>`` and any
parts left by a killed run and skips those images, except for ``read_error`` rows (a network or
disk failure), which are retried.

Distributed: under torchrun (WORLD_SIZE > 1) rank r takes inputs r, r + W, ... of the sorted list
and writes its own parts; after a gloo barrier rank 0 merges them all.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.distributed as dist
from tqdm import tqdm

from binventory import BinventoryError
from binventory.data.validate import MAX_BYTES
from binventory.files import atomic_write
from binventory.serving.export import ensure_onnx, onnx_path_for
from binventory.serving.inputs import Item, list_inputs, read_bytes
from binventory.serving.predictor import BACKENDS, ImageError, Predictor, decode_image
from binventory.world import world_from_env

PART_ROWS = 1024
READ_ERROR = "read_error"  # transient failures: retried by the next run


@dataclass
class BatchReport:
    out: Path
    inputs: int = 0       # images found (in this rank's shard)
    skipped: int = 0      # already in the output from an earlier run
    predicted: int = 0
    errors: int = 0       # rows written with an error
    seconds: float = 0.0
    exported: bool = False  # model.onnx was (re)written for this run

    def describe(self) -> str:
        rate = self.predicted / self.seconds if self.seconds else 0.0
        return (f"{self.inputs:,} images: {self.predicted:,} counted, {self.errors:,} bad, "
                f"{self.skipped:,} already done ({rate:,.1f} images/s) -> {self.out}")


def prob_column(class_name: str) -> str:
    return f"p_{class_name}"


def output_schema(class_names: list[str]) -> pa.Schema:
    # An explicit schema: a part holding only bad images must not come out with null-typed
    # columns that refuse to concatenate with the others.
    return pa.schema([("image_id", pa.string()), ("source", pa.string()), ("sha256", pa.string()),
                      ("count", pa.int64()), ("label", pa.string()), ("confidence", pa.float64()),
                      *[(prob_column(n), pa.float32()) for n in class_names],
                      ("model_version", pa.string()), ("error", pa.string())])


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _read_rows(out: Path) -> list[pa.Table]:
    """The finished output and any parts a killed run left, oldest first."""
    files = [out] if out.is_file() else []
    if parts_dir(out).is_dir():
        files += sorted(parts_dir(out).glob("part-*.parquet"))  # names sort by time
    try:
        return [pq.read_table(f) for f in files]
    except (pa.ArrowInvalid, OSError) as e:
        raise BinventoryError(f"cannot read earlier predictions in {out}: {e} "
                              "(pass --no-resume to start over)") from None


def _done_sources(out: Path, version: str) -> set[str]:
    done: set[str] = set()
    for table in _read_rows(out):
        versions = set(table.column("model_version").to_pylist())
        if versions - {version}:
            raise BinventoryError(
                f"{out} holds predictions of model {sorted(versions - {version})[0]!r}, not "
                f"{version!r}: pass --no-resume to overwrite it, or choose another --out")
        for source, error in zip(table.column("source").to_pylist(),
                                 table.column("error").to_pylist()):
            if error is None or not error.startswith(READ_ERROR):
                done.add(source)
    return done


def merge_parts(out: Path) -> int:
    """Fold the parts into ``out`` (the newest row of a source wins); returns the row count."""
    parts = parts_dir(out)
    tables = _read_rows(out)
    if not parts.is_dir():
        return sum(t.num_rows for t in tables)
    rows = 0
    if tables:
        table = pa.concat_tables(tables, promote_options="permissive")
        newest = ~table.column("source").to_pandas().duplicated(keep="last").to_numpy()
        table = table.filter(pa.array(newest)).sort_by("source")
        atomic_write(out, lambda tmp: pq.write_table(table, tmp))
        rows = table.num_rows
    # Only now: a crash before this line leaves parts that the next run merges again.
    shutil.rmtree(parts, ignore_errors=True)
    return rows


# ---- one image ---------------------------------------------------------------------------------

@dataclass
class Loaded:
    item: Item
    pixels: np.ndarray | None = None
    sha256: str | None = None
    error: str | None = None


def load_item(item: Item, preprocess, client) -> Loaded:
    # Never raises: one bad image must not end a run of millions.
    try:
        data = read_bytes(item.source, client, MAX_BYTES)
    except ImageError as e:
        return Loaded(item, error=f"{e.status}: {e.reason}")
    except Exception as e:  # noqa: BLE001 - network and disk failures are retried next run
        return Loaded(item, error=f"{READ_ERROR}: {type(e).__name__}: {e}")
    loaded = Loaded(item, sha256=hashlib.sha256(data).hexdigest())
    try:
        loaded.pixels = decode_image(data, preprocess)
    except ImageError as e:  # every decoder failure arrives as one (see check_image_bytes)
        loaded.error = f"{e.status}: {e.reason}"
    return loaded


def loaded_batches(items: list[Item], load, workers: int, batch_size: int):
    """Batches of decoded images, decoded by a thread pool two batches ahead of inference."""
    # Threads, not processes: Pillow's decoder and resize, hashlib and socket reads release the
    # GIL, and one boto3 client can be shared. Bounded look-ahead keeps memory flat.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        try:
            for start in range(0, len(items), batch_size):
                pending.append([pool.submit(load, it) for it in items[start:start + batch_size]])
                if len(pending) > 2:
                    yield [f.result() for f in pending.popleft()]
            while pending:
                yield [f.result() for f in pending.popleft()]
        finally:
            for batch in pending:  # on Ctrl-C: drop what has not started
                for future in batch:
                    future.cancel()


def _rows(batch: list[Loaded], predictor: Predictor) -> list[dict]:
    pixels = [x.pixels for x in batch if x.pixels is not None]
    preds = iter(predictor.to_predictions(predictor.predict_arrays(np.stack(pixels)))
                 if pixels else [])
    rows = []
    for x in batch:
        row = {"image_id": x.item.image_id, "source": x.item.source, "sha256": x.sha256,
               "model_version": predictor.model_id, "error": x.error}
        if x.pixels is not None:
            pred = next(preds)
            row.update(count=pred.count, label=pred.label, confidence=pred.confidence,
                       **{prob_column(n): p for n, p in pred.probabilities.items()})
        rows.append(row)
    return rows


# ---- the run -----------------------------------------------------------------------------------

def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def predict_batch(model_path: str | Path, inputs: str | Path, out: str | Path, *,
                  backend: str = "onnx", batch_size: int = 64, workers: int | None = None,
                  resume: bool = True, endpoint_url: str | None = None,
                  threads: int | None = None, onnx_path: str | Path | None = None,
                  part_rows: int = PART_ROWS, progress: bool = True, client=None) -> BatchReport:
    """Count every image of ``inputs`` into the Parquet file ``out``; see the module docstring.

    With backend "onnx" the ONNX file beside the artifact is exported first when it is missing
    or was exported from a different artifact file.
    """
    if backend not in BACKENDS:
        raise BinventoryError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, value in (("batch-size", batch_size), ("workers", workers or 1),
                        ("part-rows", part_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BinventoryError(f"--{name} must be at least 1, got {value!r}")
    model_path, out = Path(model_path), Path(out)
    if not model_path.is_file():
        raise BinventoryError(f"model file not found: {model_path}")
    launch = world_from_env()
    rank, world, local_world = launch.rank, launch.size, launch.local_size
    cores = os.cpu_count() or 1
    workers = workers or min(8, cores)
    threads = threads or max(1, cores // local_world)  # ranks on one machine share its cores
    # Listed first, by every rank: a wrong --input fails before any export or model loading.
    items, client = list_inputs(inputs, endpoint_url=endpoint_url, client=client, workers=workers)
    report = BatchReport(out=out)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        # gloo on CPU; a long timeout because ranks reach the final barrier minutes apart.
        dist.init_process_group("gloo", timeout=timedelta(hours=24))
    try:
        if rank == 0:
            if not resume:
                out.unlink(missing_ok=True)
                shutil.rmtree(parts_dir(out), ignore_errors=True)
            if backend == "onnx":
                onnx_path, report.exported = ensure_onnx(model_path, onnx_path)
        _barrier(world)  # the others wait for the export and the clean-up
        if backend == "onnx":
            onnx_path = Path(onnx_path) if onnx_path else onnx_path_for(model_path)
        predictor = Predictor.load(model_path, backend=backend, onnx_path=onnx_path, threads=threads)
        # Shard before skipping what is done: every rank then owns the same images whatever the
        # others have finished, so no image is counted twice or missed.
        _run(predictor, items[rank::world], client, out, report, rank=rank, workers=workers,
             batch_size=batch_size, part_rows=part_rows, progress=progress and rank == 0)
        _barrier(world)  # every rank's parts are written
        if rank == 0:
            merge_parts(out)
    finally:
        if own_group:
            dist.destroy_process_group()
    return report


def _run(predictor: Predictor, shard: list[Item], client, out: Path, report: BatchReport, *,
         rank: int, workers: int, batch_size: int, part_rows: int, progress: bool) -> None:
    done = _done_sources(out, predictor.model_id)
    todo = [item for item in shard if item.source not in done]
    report.inputs, report.skipped = len(shard), len(shard) - len(todo)
    schema = output_schema(predictor.classes.names)
    parts = parts_dir(out)
    run_id = f"{time.time_ns():020d}-r{rank:03d}"
    rows: list[dict] = []
    started = time.perf_counter()

    def flush() -> None:
        if rows:
            parts.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pylist(rows, schema=schema)
            path = parts / f"part-{run_id}-{report.predicted + report.errors:09d}.parquet"
            atomic_write(path, lambda tmp: pq.write_table(table, tmp))
            rows.clear()

    def load(item: Item) -> Loaded:
        return load_item(item, predictor.preprocess, client)

    try:
        with tqdm(total=len(todo), unit="img", desc="predict", disable=None if progress else True) as bar:
            for batch in loaded_batches(todo, load, workers, batch_size):
                new = _rows(batch, predictor)
                rows.extend(new)
                errors = sum(r["error"] is not None for r in new)
                report.errors += errors
                report.predicted += len(new) - errors
                if len(rows) >= part_rows:
                    flush()
                bar.update(len(batch))
    finally:
        flush()  # also on Ctrl-C or a crash: the rows already counted are kept for the rerun
        report.seconds = time.perf_counter() - started
