"""Reading an S3 object under a size limit: one reader for batch prediction and POST /v1/count."""
import warnings

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config

from binventory.serving.inputs import read_bytes, read_s3_object
from binventory.serving.predictor import ImageError, Predictor
from binventory.serving.service import Settings, create_app
from tests.s3 import fill_public_bucket, moto_server
from tests.tiny import image_bytes, save_tiny_model

with warnings.catch_warnings():  # starlette asks for httpx2; the project tests with httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

PHOTO = image_bytes(1)
LIMIT = len(PHOTO)


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        fill_public_bucket(url, "bins", {"at-limit.jpg": PHOTO, "over.jpg": PHOTO + b"\0"})
        yield url


@pytest.fixture(scope="module")
def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED))


def test_the_reader_takes_the_limit_and_refuses_one_byte_more(s3):
    assert read_s3_object(s3, "bins", "at-limit.jpg", LIMIT) == PHOTO
    assert read_bytes("s3://bins/at-limit.jpg", s3, LIMIT) == PHOTO
    for read in (lambda: read_s3_object(s3, "bins", "over.jpg", LIMIT),
                 lambda: read_bytes("s3://bins/over.jpg", s3, LIMIT)):
        with pytest.raises(ImageError) as e:
            read()
        assert e.value.status == "too_large" and f"{LIMIT:,} bytes" in e.value.reason


def test_count_by_uri_has_the_same_limit(endpoint, tmp_path):
    predictor = Predictor.load(save_tiny_model(tmp_path / "model.pt"))
    app = create_app(predictor, Settings(max_body_bytes=LIMIT, s3_endpoint_url=endpoint))
    with TestClient(app) as client:
        assert client.post("/v1/count", json={"uri": "s3://bins/at-limit.jpg"}).status_code == 200
        r = client.post("/v1/count", json={"uri": "s3://bins/over.jpg"})
        assert r.status_code == 413 and r.json() == {
            "status": "too_large", "detail": f"s3://bins/over.jpg is over the limit of {LIMIT:,} bytes"}
