"""Checks that one image file is a complete, decodable, reasonably sized JPEG.

Every failure maps to a status code and a human reason, so an index run can list bad files
instead of crashing on them or dropping them.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

# ABID originals are a few hundred pixels a side; 50 MP leaves room for any real camera while
# refusing decompression bombs (a small file that decodes to gigabytes).
MAX_PIXELS = 50_000_000
MAX_BYTES = 64 * 1024 * 1024

JPEG_SOI = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_EOI = b"\xff\xd9"

_SIGNATURES = {
    b"\x89PNG": "PNG",
    b"GIF8": "GIF",
    b"RIFF": "RIFF/WebP",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"%PDF": "PDF",
    b"<": "HTML/XML text",
}


@dataclass
class ImageCheck:
    status: str  # "ok" or a failure code
    reason: str = ""
    nbytes: int = 0
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    decoded: object = field(default=None, repr=False)  # what ``decode`` returned, when given

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _describe_format(data: bytes) -> str:
    for magic, name in _SIGNATURES.items():
        if data.startswith(magic):
            return f"looks like {name}"
    return f"starts with bytes {data[:4].hex()}"


def _has_eoi(data: bytes) -> bool:
    return data.rstrip(b"\x00\r\n").endswith(JPEG_EOI)


def _refuse_bomb(check: ImageCheck, size: tuple[int, int], max_pixels: int) -> bool:
    """Mark the check as a decompression bomb when width x height exceeds the limit."""
    width, height = size
    if width * height <= max_pixels:
        return False
    check.width, check.height = width, height
    check.status = "decompression_bomb"
    check.reason = f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}"
    return True


def check_image_bytes(data: bytes, max_pixels: int = MAX_PIXELS,
                      decode: Callable[[Image.Image], object] | None = None,
                      allow_png: bool = False) -> ImageCheck:
    """Check an image held in memory, decoding it once.

    ``decode`` receives the opened image and does the one full decode (the serving stage passes
    its resize there, so an upload is not decoded twice); its result is ``check.decoded``.
    ``allow_png`` also accepts PNG (uploads); the dataset itself is JPEG only.
    """
    check = ImageCheck(status="ok", nbytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    if not data:
        check.status, check.reason = "empty_file", "file is empty (0 bytes)"
        return check
    is_png = allow_png and data.startswith(PNG_SIGNATURE)
    if not is_png and not data.startswith(JPEG_SOI):
        wanted = "a JPEG or PNG" if allow_png else "a JPEG"
        check.status, check.reason = "not_jpeg", f"not {wanted} ({_describe_format(data)})"
        return check
    if is_png and data[12:16] == b"IHDR":
        # A PNG states its size in the first chunk: refuse a bomb before Pillow parses anything
        # (it would reject a tampered header's CRC as merely undecodable).
        size = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if _refuse_bomb(check, size, max_pixels):
            return check
    try:
        with warnings.catch_warnings():
            # Pillow warns (and raises past 2x its own limit) on huge images; we decide ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                check.width, check.height = img.size
                if _refuse_bomb(check, img.size, max_pixels):
                    return check
                if decode is None:
                    img.load()
                else:
                    check.decoded = decode(img)
    except Image.DecompressionBombError as e:
        check.status, check.reason = "decompression_bomb", str(e)
        return check
    except OSError as e:
        message = str(e)
        if "truncated" in message.lower() or (check.width is not None and not _has_eoi(data)):
            check.status, check.reason = "truncated", f"image data is truncated ({message})"
        else:
            check.status, check.reason = "undecodable", f"cannot decode: {message}"
        return check
    except Exception as e:  # Pillow raises several types on garbage; none may stop an index run.
        check.status, check.reason = "undecodable", f"cannot decode: {type(e).__name__}: {e}"
        return check
    # libjpeg fills a cut-off scan with grey and only warns; a missing end marker gives it away.
    if not is_png and not _has_eoi(data):
        check.status, check.reason = "truncated", "JPEG end-of-image marker is missing"
        check.decoded = None
    return check


def check_image_file(path: str | Path, max_pixels: int = MAX_PIXELS,
                     max_bytes: int = MAX_BYTES) -> ImageCheck:
    """Check an image file on disk; never raises for bad content."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return ImageCheck(status="too_large", nbytes=size,
                              reason=f"file is {size:,} bytes, over the limit of {max_bytes:,}")
        data = path.read_bytes()
    except OSError as e:
        return ImageCheck(status="unreadable", reason=f"cannot read file: {e.strerror or e}")
    return check_image_bytes(data, max_pixels=max_pixels)
