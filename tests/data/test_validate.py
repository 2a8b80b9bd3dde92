import io

from PIL import Image

from binventory.data.validate import check_image_bytes, check_image_file
from tests.conftest import bomb_jpeg, jpeg_bytes


def test_valid_jpeg_reports_size_and_hash():
    data = jpeg_bytes((37, 21))
    check = check_image_bytes(data)
    assert check.ok, check.reason
    assert (check.width, check.height) == (37, 21)
    assert check.nbytes == len(data) and len(check.sha256) == 64


def test_each_bad_kind_gets_its_status():
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    full = jpeg_bytes((64, 48), seed=3)
    cases = {
        b"": "empty_file",
        png.getvalue(): "not_jpeg",
        full[: len(full) // 2]: "truncated",
        full[:-2]: "truncated",  # only the end-of-image marker missing
        b"\xff\xd8\xff\xe0" + b"\x00" * 100: "undecodable",
        bomb_jpeg(): "decompression_bomb",
    }
    for data, status in cases.items():
        check = check_image_bytes(data)
        assert check.status == status, (status, check.reason)
        assert check.reason


def test_not_jpeg_reason_names_the_format():
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert "PNG" in check_image_bytes(png.getvalue()).reason


def test_pixel_limit_is_configurable():
    data = jpeg_bytes((40, 30))
    assert check_image_bytes(data, max_pixels=1199).status == "decompression_bomb"
    assert check_image_bytes(data, max_pixels=1200).ok


def test_file_checks(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes())
    assert check_image_file(path).ok
    assert check_image_file(path, max_bytes=10).status == "too_large"
    assert check_image_file(tmp_path / "missing.jpg").status == "unreadable"
