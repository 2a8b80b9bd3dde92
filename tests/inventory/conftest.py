"""Every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from BINVENTORY_TEST_PG_URL (``.ci/run`` starts a throwaway server and sets it);
without it the tests start their own with scripts/pg-throwaway.sh when Debian's postgresql is
installed, and skip the PostgreSQL half with the reason otherwise (never in CI, where a missing
server is a failure).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench.pgtools import fresh_database
from binventory.inventory.db import Database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pg_admin_url():
    url = os.environ.get("BINVENTORY_TEST_PG_URL")
    if url:
        yield url
        return
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL: set BINVENTORY_TEST_PG_URL or install postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql) and "
                    "BINVENTORY_TEST_PG_URL is not set")
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="binventory-pg-"))
    port = str(56000 + os.getpid() % 1000)
    url = subprocess.run([str(ROOT / "scripts" / "pg-throwaway.sh"), str(folder), port],
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run([str(ROOT / "scripts" / "pg-throwaway.sh"), "--stop", str(folder)],
                       capture_output=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The URL of an empty database (no schema yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inventory.db'}"
        return
    url, drop = fresh_database(request.getfixturevalue("pg_admin_url"))
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def db(db_url):
    """A migrated, empty inventory."""
    database = Database.open(db_url, create=True)
    yield database
    database.close()
