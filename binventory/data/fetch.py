"""Download ABID images and metadata from S3, anonymously, into the local ABID layout.

The public bucket needs no AWS account, so the client is unsigned: a user's own credentials
(possibly for another account or expired) never get in the way. Every object goes through a
temporary ``.<name>.part`` file that is checked against the bucket's size and MD5 before it is
renamed into place, so a file under its final name is always complete and a rerun only has to
fetch what is missing or differs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                 IncompleteReadError, ReadTimeoutError, ResponseStreamingError)
from botocore.exceptions import ConnectionError as BotoConnectionError
from tqdm import tqdm

from binventory import BinventoryError
from binventory.files import atomic_write_bytes
from binventory.data.abid import (BUCKET, UDACITY_LIST_URL, check_image_id, image_key,
                                  metadata_key, subset_ids)

log = logging.getLogger(__name__)

REPORT_NAME = "fetch-report.json"
LIST_TIMEOUT_S = 30
_CHUNK = 1 << 16
# Single-part uploads have the object's MD5 as ETag; multipart ("<md5>-<parts>") ones do not.
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class _ChecksumError(Exception):
    pass


# botocore already retries failed *requests* (Config retries); these are the failures it cannot
# see: a body cut off or stalled while we stream it, or bytes that do not match the bucket.
_RETRY_DOWNLOAD = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError,
                   ConnectionClosedError, _ChecksumError)


@dataclass
class FetchReport:
    downloaded: int = 0
    skipped: int = 0  # already complete locally
    missing: list[str] = field(default_factory=list)  # keys the bucket does not have
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, error message)

    def describe(self, show: int = 5) -> str:
        lines = [f"downloaded {self.downloaded}, already complete {self.skipped}, "
                 f"missing {len(self.missing)}, failed {len(self.failed)}"]
        if self.missing:
            more = f" (+{len(self.missing) - show} more)" if len(self.missing) > show else ""
            lines.append("not in the bucket: " + ", ".join(self.missing[:show]) + more)
            if not (self.downloaded or self.skipped or self.failed):
                lines.append("none of the keys exist: check --bucket and --prefix")
        for key, error in self.failed[:show]:
            lines.append(f"failed: {key}: {error}")
        if len(self.failed) > show:
            lines.append(f"... and {len(self.failed) - show} more failures")
        if self.failed:
            lines.append("rerun the same command to retry the failed files")
        return "\n".join(lines)


def make_client(endpoint_url: str | None = None, workers: int = 16, retries: int = 5):
    """An anonymous S3 client, shared by all download threads (boto3 clients are thread-safe)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(signature_version=UNSIGNED, max_pool_connections=workers,
                    # total_max_attempts counts the first try, matching "--retries: attempts".
                    retries={"total_max_attempts": retries, "mode": "standard"},
                    connect_timeout=10, read_timeout=60)
    try:
        # The public bucket lives in us-east-1; naming it avoids a redirect for users whose
        # default region is elsewhere. Other endpoints get whatever the user configured.
        region = "us-east-1" if endpoint_url is None else None
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config,
                                              region_name=region)
    except ValueError as e:  # botocore's "Invalid endpoint: ..."
        raise BinventoryError(f"invalid --endpoint-url {endpoint_url!r}: {e}") from None


def fetch(ids: list[str], out: Path, *, bucket: str = BUCKET, prefix: str = "",
          endpoint_url: str | None = None, workers: int = 16, retries: int = 5,
          progress: bool = True, client=None) -> FetchReport:
    """Download the image and metadata of each id into ``out``; see the module docstring."""
    for name, value in (("workers", workers), ("retries", retries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BinventoryError(f"--{name} must be at least 1, got {value!r}")
    if not bucket:
        raise BinventoryError("--bucket must not be empty")
    ids = list(dict.fromkeys(check_image_id(i) for i in ids))
    if not ids:
        raise BinventoryError("nothing to fetch: the id list is empty")
    out = Path(out)
    prefix = prefix.strip("/")
    jobs = []
    for image_id in ids:
        for rel in (image_key(image_id), metadata_key(image_id)):
            jobs.append((f"{prefix}/{rel}" if prefix else rel, out / rel))
    try:
        for folder in {dest.parent for _, dest in jobs}:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BinventoryError(f"cannot create the output folder: {e}") from None
    if client is None:
        client = make_client(endpoint_url, workers, retries)

    report = FetchReport()
    with tqdm(total=len(jobs), unit="file", desc="fetch", disable=None if progress else True) as bar:
        # One object first, alone: an unreachable endpoint or a wrong bucket then gives one clear
        # error instead of thousands of identical failures, each after its own retries.
        first = _fetch_one(client, bucket, *jobs[0], retries)
        _stop_if_hopeless(first, bucket, endpoint_url)
        _record(report, first)
        bar.update()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
        try:
            futures = [pool.submit(_fetch_one, client, bucket, key, dest, retries)
                       for key, dest in jobs[1:]]
            for future in as_completed(futures):
                _record(report, future.result())
                bar.update()
        finally:
            # On Ctrl-C, drop the queue rather than waiting for thousands of downloads.
            pool.shutdown(wait=True, cancel_futures=True)
    report.missing.sort()
    report.failed.sort()
    _write_report(report, out / REPORT_NAME, bucket=bucket, prefix=prefix,
                  endpoint_url=endpoint_url)
    return report


@dataclass
class _Result:
    outcome: str  # "downloaded", "skipped", "missing" or "failed"
    key: str
    error: BaseException | None = None


def _record(report: FetchReport, result: _Result) -> None:
    if result.outcome == "downloaded":
        report.downloaded += 1
    elif result.outcome == "skipped":
        report.skipped += 1
    elif result.outcome == "missing":
        report.missing.append(result.key)
    else:
        report.failed.append((result.key, _message(result.error)))


def _message(error: BaseException | None) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '') or error}"
    return f"{type(error).__name__}: {error}"


def _stop_if_hopeless(result: _Result, bucket: str, endpoint_url: str | None) -> None:
    error = result.error
    if isinstance(error, BotoConnectionError):
        where = endpoint_url or "the AWS S3 endpoint"
        raise BinventoryError(f"could not reach {where}: {error} "
                              "(check the network or --endpoint-url)")
    if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") == "NoSuchBucket":
        raise BinventoryError(f"bucket {bucket!r} does not exist at "
                              f"{endpoint_url or 'AWS S3'} (check --bucket)")


def _fetch_one(client, bucket: str, key: str, dest: Path, retries: int) -> _Result:
    # Never raises: one bad object must not end a run of thousands.
    try:
        if dest.exists():
            head = client.head_object(Bucket=bucket, Key=key)
            if _is_complete(dest, head["ContentLength"], head.get("ETag")):
                _part_path(dest).unlink(missing_ok=True)  # left by an older, killed run
                return _Result("skipped", key)
        for attempt in range(1, retries + 1):
            try:
                _download(client, bucket, key, dest)
                return _Result("downloaded", key)
            except _RETRY_DOWNLOAD as e:
                if attempt == retries:
                    raise
                log.debug("retrying %s after attempt %d: %s", key, attempt, e)
                time.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        return _Result("missing" if code in _MISSING_CODES else "failed", key, e)
    except (BotoCoreError, _ChecksumError, OSError) as e:
        return _Result("failed", key, e)
    except Exception as e:  # noqa: BLE001 - an unexpected error is reported, not fatal
        log.debug("unexpected error for %s", key, exc_info=True)
        return _Result("failed", key, e)
    raise AssertionError("unreachable")


def _part_path(dest: Path) -> Path:
    # Hidden and with a foreign suffix, so dataset readers never mistake it for an image.
    return dest.with_name(f".{dest.name}.part")


def _plain_md5(etag: str | None) -> str | None:
    etag = (etag or "").strip('"').lower()
    return etag if _PLAIN_MD5.match(etag) else None


def _file_md5(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
    return md5.hexdigest()


def _is_complete(path: Path, size: int, etag: str | None) -> bool:
    if path.stat().st_size != size:
        return False
    expected = _plain_md5(etag)
    return expected is None or _file_md5(path) == expected


def _download(client, bucket: str, key: str, dest: Path) -> None:
    part = _part_path(dest)
    response = client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with open(part, "wb") as f:
            for chunk in body.iter_chunks(_CHUNK):
                f.write(chunk)
                md5.update(chunk)
                size += len(chunk)
        if size != response["ContentLength"]:
            raise _ChecksumError(f"got {size} bytes, the bucket has {response['ContentLength']}")
        expected = _plain_md5(response.get("ETag"))
        if expected is not None and md5.hexdigest() != expected:
            raise _ChecksumError(f"MD5 {md5.hexdigest()} does not match ETag {expected}")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        body.close()


def _write_report(report: FetchReport, path: Path, **context) -> None:
    data = {**context, **asdict(report)}
    try:
        atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
    except OSError as e:  # the downloads themselves are done; don't lose them over this
        log.warning("could not write %s: %s", path, e)


# ---- named subsets --------------------------------------------------------------------------

SUBSETS = {"udacity": UDACITY_LIST_URL}


def load_subset(name: str, out: Path, subset_list: Path | None) -> dict[str, int]:
    """{id: count} of a named subset, interleaved across counts (see ``abid.subset_ids``).

    Reads ``subset_list`` when given; otherwise a copy cached under ``<out>/lists/``, downloaded
    once so that reruns (and offline reruns) use the very same list.
    """
    if name not in SUBSETS:
        raise BinventoryError(f"unknown subset {name!r} (known: {', '.join(SUBSETS)})")
    if subset_list is not None:
        path = Path(subset_list)
        if not path.is_file():
            raise BinventoryError(f"subset list not found: {path}")
        return _parse_subset_list(path.read_bytes(), str(path))
    path = Path(out) / "lists" / f"{name}_file_list.json"
    if path.is_file():
        return _parse_subset_list(path.read_bytes(), str(path))
    url = SUBSETS[name]
    try:
        with urllib.request.urlopen(url, timeout=LIST_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise BinventoryError(f"could not download the {name} file list from {url} ({e}); "
                              "download it another way and pass --subset-list FILE") from None
    ids = _parse_subset_list(data, url)  # check before caching: never cache an error page
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:
        raise BinventoryError(f"cannot cache the {name} file list at {path}: {e}") from None
    return ids


def _parse_subset_list(data: bytes, source: str) -> dict[str, int]:
    try:
        file_list = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BinventoryError(f"{source}: not a valid JSON file list ({e})") from None
    if not isinstance(file_list, dict):
        raise BinventoryError(f"{source}: expected a JSON object of count -> list of paths")
    for key, paths in file_list.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BinventoryError(f"{source}: entry {key!r} is not a list of paths")
    try:
        ids = subset_ids(file_list)
    except BinventoryError as e:
        raise BinventoryError(f"{source}: {e}") from None
    if not ids:
        raise BinventoryError(f"{source}: the file list names no images")
    return ids
