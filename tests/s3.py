"""A moto S3 server on 127.0.0.1 for tests, with buckets as public as aft-vbi-pds."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from moto.server import ThreadedMotoServer


@contextmanager
def moto_server() -> Iterator[str]:
    """Start a server on a free port; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    access_log = logging.getLogger("werkzeug")  # one line per request drowns failure output
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        access_log.setLevel(level)


def admin_client(endpoint: str):
    # Only the tests' setup signs requests (moto wants some credentials); binventory is unsigned.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing")


def fill_public_bucket(endpoint: str, bucket: str, objects: dict[str, bytes],
                       public: bool = True) -> None:
    """Create a bucket holding objects; public: anyone may read and list, as in aft-vbi-pds
    (so a missing key is a 404, not a 403)."""
    s3 = admin_client(endpoint)
    s3.create_bucket(Bucket=bucket)
    if public:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{bucket}/*"},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
             "Resource": f"arn:aws:s3:::{bucket}"}]}))
    for key, data in objects.items():
        # The ACL too: moto checks anonymous HEADs against "s3:HeadObject", not s3:GetObject.
        s3.put_object(Bucket=bucket, Key=key, Body=data, ACL="public-read" if public else "private")
