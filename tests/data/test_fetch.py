"""``binventory data fetch`` end to end against a real (moto) S3 server on 127.0.0.1."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.response import StreamingBody

from binventory import BinventoryError
from binventory.cli import main
from binventory.data import fetch as fetch_mod
from binventory.data.fetch import REPORT_NAME, fetch, load_subset
from tests.s3 import fill_public_bucket, moto_server
from tests.conftest import jpeg_bytes, metadata_json

REPO = Path(__file__).resolve().parents[2]
UDACITY_LIST = REPO.parent / "shared" / "abid-sample" / "lists" / "udacity_file_list.json"

SMALL = "abid-small"
BIG = "abid-big"
IDS = ["00523", "523", "00001", "corrupt", "nometa"]
N_BIG = 60


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def small(endpoint) -> dict[str, bytes]:
    """Bucket objects by key: valid images, '00523' != '523', a corrupt image, no metadata."""
    objects = {}
    for seed, image_id in enumerate(["00523", "523", "00001"]):
        objects[f"bin-images/{image_id}.jpg"] = jpeg_bytes((32, 24), seed=seed)
        objects[f"metadata/{image_id}.json"] = json.dumps(metadata_json(seed + 1)).encode()
    objects["bin-images/corrupt.jpg"] = jpeg_bytes((32, 24), seed=9)[:150]  # truncated JPEG
    objects["metadata/corrupt.json"] = json.dumps(metadata_json(2)).encode()
    objects["bin-images/nometa.jpg"] = jpeg_bytes((32, 24), seed=10)
    fill_public_bucket(endpoint, SMALL, objects)
    fill_public_bucket(endpoint, SMALL + "-mirror", {f"abid/v1/{k}": v for k, v in objects.items()})
    return objects


@pytest.fixture(scope="module")
def big(endpoint) -> dict[str, bytes]:
    """120 objects with ~100 KB noise images, so a one-worker fetch takes long enough to kill."""
    objects = {}
    for i in range(N_BIG):
        objects[f"bin-images/{i:05d}.jpg"] = jpeg_bytes((256, 192), seed=100 + i, quality=95)
        objects[f"metadata/{i:05d}.json"] = json.dumps(metadata_json(i % 6)).encode()
    fill_public_bucket(endpoint, BIG, objects)
    return objects


def _local(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for d in ("bin-images", "metadata") if (out / d).is_dir()
            for p in sorted((out / d).iterdir()) if not p.name.startswith(".")}


def _parts(out: Path) -> list[Path]:
    return sorted(out.rglob("*.part"))


def _fetch(ids, out, endpoint, **kwargs):
    kwargs = {"bucket": SMALL, "endpoint_url": endpoint, "workers": 4, "progress": False, **kwargs}
    return fetch(ids, out, **kwargs)


# ---- fetch() ----------------------------------------------------------------------------------

def test_downloads_everything_and_reports_missing(endpoint, small, tmp_path):
    out = tmp_path / "abid"
    report = _fetch(IDS, out, endpoint)
    assert _local(out) == small  # byte-identical, corrupt image included, 00523 != 523
    assert report.downloaded == len(small) and report.skipped == 0 and not report.failed
    assert report.missing == ["metadata/nometa.json"]
    assert "missing 1" in report.describe() and "metadata/nometa.json" in report.describe()
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["downloaded"] == len(small) and saved["missing"] == ["metadata/nometa.json"]
    assert saved["bucket"] == SMALL and saved["failed"] == []
    assert not _parts(out)


@pytest.mark.slow
def test_rerun_downloads_nothing(endpoint, small, tmp_path):
    out = tmp_path / "abid"
    _fetch(IDS, out, endpoint)
    files = [out / key for key in _local(out)]
    mtimes = [p.stat().st_mtime_ns for p in files]
    report = _fetch(IDS, out, endpoint)
    assert (report.downloaded, report.skipped, report.missing) == (0, len(small),
                                                                  ["metadata/nometa.json"])
    assert [p.stat().st_mtime_ns for p in files] == mtimes  # not even rewritten


@pytest.mark.slow
def test_rerun_repairs_wrong_files_and_leftover_parts(endpoint, small, tmp_path):
    out = tmp_path / "abid"
    _fetch(IDS, out, endpoint)
    same_size = out / "bin-images/00523.jpg"
    data = bytearray(same_size.read_bytes())
    data[-10] ^= 0xFF  # same size, so only the MD5 check can catch it
    same_size.write_bytes(bytes(data))
    (out / "metadata/523.json").write_text("{}")
    (out / "bin-images/00001.jpg").unlink()
    (out / "bin-images/.00001.jpg.part").write_bytes(b"half a download")
    (out / "metadata/.00001.json.part").write_bytes(b"stale")  # next to a complete file
    report = _fetch(IDS, out, endpoint)
    assert report.downloaded == 3 and report.skipped == len(small) - 3
    assert _local(out) == small
    assert not _parts(out)


def test_prefix(endpoint, small, tmp_path):
    report = _fetch(["00523"], tmp_path, endpoint, bucket=SMALL + "-mirror", prefix="/abid/v1/")
    assert report.downloaded == 2
    assert (tmp_path / "bin-images/00523.jpg").read_bytes() == small["bin-images/00523.jpg"]


class CorruptingClient:
    """The real client, except that the first ``times`` GETs of ``key`` return altered bytes."""

    def __init__(self, real, key: str, times: int):
        self._real, self.key, self.left = real, key, times

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_object(self, **kwargs):
        response = self._real.get_object(**kwargs)
        if kwargs["Key"] == self.key and self.left > 0:
            self.left -= 1
            data = response["Body"].read()
            response["Body"] = StreamingBody(io.BytesIO(b"X" + data[1:]), len(data))
        return response


def test_checksum_mismatch_is_retried_then_reported(endpoint, small, tmp_path):
    real = fetch_mod.make_client(endpoint, workers=1, retries=3)
    client = CorruptingClient(real, "bin-images/523.jpg", times=1)
    report = _fetch(["523"], tmp_path / "a", endpoint, workers=1, retries=3, client=client)
    assert report.downloaded == 2 and not report.failed and client.left == 0
    assert (tmp_path / "a/bin-images/523.jpg").read_bytes() == small["bin-images/523.jpg"]

    client = CorruptingClient(real, "bin-images/523.jpg", times=99)
    report = _fetch(["00523", "523"], tmp_path / "b", endpoint, workers=1, retries=2,
                    client=client)
    assert report.downloaded == 3 and client.left == 97
    assert [k for k, _ in report.failed] == ["bin-images/523.jpg"]
    assert "does not match" in report.failed[0][1] and "failed 1" in report.describe()
    assert not (tmp_path / "b/bin-images/523.jpg").exists() and not _parts(tmp_path / "b")


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "--workers must be at least 1"),
    ({"retries": 0}, "--retries must be at least 1"),
    ({"ids": []}, "id list is empty"),
    ({"ids": ["../etc"]}, "invalid ABID image id"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    kwargs = {"ids": ["00523"], **kwargs}
    with pytest.raises(BinventoryError, match=message):
        fetch(kwargs.pop("ids"), tmp_path, endpoint_url="http://127.0.0.1:1", progress=False,
              **kwargs)


def test_unknown_bucket_is_a_clear_error(endpoint, tmp_path):
    with pytest.raises(BinventoryError, match="bucket 'no-such-bucket' does not exist"):
        _fetch(["00523"], tmp_path, endpoint, bucket="no-such-bucket")


# ---- the CLI ----------------------------------------------------------------------------------

def _cli_args(endpoint, out, *rest, bucket=SMALL):
    return ["data", "fetch", "--endpoint-url", endpoint, "--bucket", bucket, "--out", str(out),
            *rest]


@pytest.mark.slow
def test_killed_fetch_resumes(endpoint, big, tmp_path):
    out = tmp_path / "abid"
    ids = [f"{i:05d}" for i in range(N_BIG)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "binventory", *_cli_args(endpoint, out, "--ids", *ids,
                                                         "--workers", "1", bucket=BIG)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not _local(out):
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The kill landed mid-run (the fetch died of it with files still to get), and every file
    # under its final name is complete.
    partial = _local(out)
    assert proc.returncode == -signal.SIGKILL
    assert partial and len(partial) < len(big)
    assert all(big[key] == data for key, data in partial.items())

    assert main(_cli_args(endpoint, out, "--ids", *ids, "--workers", "4", bucket=BIG)) == 0
    assert _local(out) == big
    assert not _parts(out)
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["skipped"] >= len(partial) and report["downloaded"] + report["skipped"] == len(big)


def test_cli_limit_and_list(endpoint, small, tmp_path, capsys):
    out = tmp_path / "limit"
    assert main(_cli_args(endpoint, out, "--ids", "00523", "523", "00001", "--limit", "2")) == 0
    assert sorted(_local(out)) == ["bin-images/00523.jpg", "bin-images/523.jpg",
                                   "metadata/00523.json", "metadata/523.json"]
    assert "downloaded 4" in capsys.readouterr().out

    id_list = tmp_path / "ids.txt"
    id_list.write_text("# ids to get\nmetadata/00001.json\ncorrupt\nnometa  # no metadata\n")
    out = tmp_path / "list"
    assert main(_cli_args(endpoint, out, "--list", str(id_list))) == 0  # missing is not failure
    assert _local(out) == {k: v for k, v in small.items()
                           if k.split("/")[1].split(".")[0] in {"00001", "corrupt", "nometa"}}
    assert "not in the bucket: metadata/nometa.json" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_subset_with_local_list(endpoint, small, tmp_path):
    file_list = tmp_path / "file_list.json"
    file_list.write_text(json.dumps({"1": ["data/metadata/523.json", "data/metadata/x.json"],
                                     "3": ["data/metadata/00523.json"]}))
    out = tmp_path / "abid"
    assert main(_cli_args(endpoint, out, "--subset", "udacity", "--subset-list", str(file_list),
                          "--limit", "2")) == 0
    assert sorted(_local(out)) == ["bin-images/00523.jpg", "bin-images/523.jpg",
                                   "metadata/00523.json", "metadata/523.json"]


def test_cli_unreachable_endpoint(tmp_path, capsys):
    code = main(_cli_args("http://127.0.0.1:1", tmp_path, "--ids", "00523", "--retries", "1"))
    err = capsys.readouterr().err
    assert code == 2
    assert "could not reach http://127.0.0.1:1" in err and "Traceback" not in err


# ---- load_subset ------------------------------------------------------------------------------

TINY_LIST = {"1": ["data/metadata/a.json", "data/metadata/b.json"],
             "2": ["data/metadata/00523.json"],
             "3": ["data/metadata/523.json", "data/metadata/c.json", "data/metadata/d.json"]}


def test_load_subset_interleaves_counts(tmp_path):
    path = tmp_path / "file_list.json"
    path.write_text(json.dumps(TINY_LIST))
    ids = load_subset("udacity", tmp_path / "out", path)
    assert list(ids.items()) == [("a", 1), ("00523", 2), ("523", 3), ("b", 1), ("c", 3), ("d", 3)]
    assert not (tmp_path / "out").exists()  # an explicit list is not cached


def test_load_subset_downloads_once_and_caches(tmp_path, monkeypatch):
    source = tmp_path / "remote.json"
    source.write_text(json.dumps(TINY_LIST))
    monkeypatch.setitem(fetch_mod.SUBSETS, "udacity", source.as_uri())
    out = tmp_path / "out"
    assert len(load_subset("udacity", out, None)) == 6
    cached = out / "lists" / "udacity_file_list.json"
    assert json.loads(cached.read_text()) == TINY_LIST
    source.unlink()  # offline now: the cached copy is used
    assert len(load_subset("udacity", out, None)) == 6


def test_load_subset_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(fetch_mod.SUBSETS, "udacity", "http://127.0.0.1:1/file_list.json")
    with pytest.raises(BinventoryError, match="could not download.*--subset-list FILE"):
        load_subset("udacity", tmp_path, None)
    assert not (tmp_path / "lists" / "udacity_file_list.json").exists()


@pytest.mark.parametrize("text, message", [
    ("{not json", "not a valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"one": ["data/metadata/a.json"]}', "'one' is not a count"),
    ('{"1": "data/metadata/a.json"}', "not a list of paths"),
    ('{"1": [3]}', "not a list of paths"),
    ('{"1": ["data/metadata/bad id!.json"]}', "invalid ABID image id"),
    ("{}", "names no images"),
])
def test_load_subset_malformed(tmp_path, text, message):
    path = tmp_path / "file_list.json"
    path.write_text(text)
    with pytest.raises(BinventoryError, match=message):
        load_subset("udacity", tmp_path, path)


def test_load_subset_bad_name_and_path(tmp_path):
    with pytest.raises(BinventoryError, match="unknown subset 'imagenet'"):
        load_subset("imagenet", tmp_path, None)
    with pytest.raises(BinventoryError, match="subset list not found"):
        load_subset("udacity", tmp_path, tmp_path / "nope.json")


@pytest.mark.abid
def test_real_udacity_list():
    if not UDACITY_LIST.is_file():
        pytest.skip(f"Udacity file list not found at {UDACITY_LIST} (development data, optional)")
    ids = load_subset("udacity", UDACITY_LIST.parent, UDACITY_LIST)
    assert len(ids) == 10_441
    assert set(ids.values()) == {1, 2, 3, 4, 5}
    assert list(ids.values())[:10] == [1, 2, 3, 4, 5] * 2
