"""Three `binventory serve` replicas on one PostgreSQL under concurrent uploads and resolutions
(bench/replicas.py, shortened): no 500, one active task per bin, each accepted upload stored once,
quantities equal to record + ledger."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bench.pgtools import fresh_database

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_three_replicas_on_one_postgresql(pg_admin_url, tmp_path):
    url, drop = fresh_database(pg_admin_url)
    try:
        out = tmp_path / "result.json"
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "replicas.py"), "--db", url,
                               "--duration", "10", "--replicas", "3", "--clients", "16", "--json", str(out)],
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                              text=True, timeout=480)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        result = json.loads(out.read_text())
        assert result["failures"] == {}
        # Every answer was an HTTP status (no dropped connection), and none was a 5xx.
        codes = [k.split()[-1] for k in result["statuses"]]
        assert all(c.isdigit() and int(c) < 500 for c in codes), result["statuses"]
        accepted = {(a["bin"], a["sha256"]) for a in result["accepted"]}
        # The run did what it is for: many uploads through all replicas, some repeated, and
        # resolutions racing with them.
        assert result["uploads"] > 50 and len(accepted) < result["uploads"] and result["resolved"] > 0
        engine = create_engine(url)
        with engine.connect() as c:
            assert c.scalar(text("SELECT count(*) FROM observation")) == len(accepted)
            assert c.scalar(text("SELECT count(*) FROM model")) == 1
            assert c.scalar(text("SELECT max(n) FROM (SELECT count(*) AS n FROM audit_task WHERE status "
                                 "IN ('open', 'in_progress') GROUP BY bin_id) AS per_bin")) == 1
        engine.dispose()
    finally:
        drop()
