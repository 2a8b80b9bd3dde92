"""binventory.files: atomic writes and file hashes."""
import hashlib

from binventory.files import atomic_write_bytes, sha256_file


def test_sha256_file_reads_past_its_block_size(tmp_path):
    data = bytes(range(256)) * (10 * 1024 + 3)  # 2.5 MiB and a bit: three reads, a short last one
    path = atomic_write_bytes(tmp_path / "blob.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(atomic_write_bytes(tmp_path / "empty", b"")) == hashlib.sha256(b"").hexdigest()
