"""The model registry: register, promote, rollback, one active model even under concurrent
promotions, the migration of existing model rows, and the `binventory model` commands (SQLite and
PostgreSQL)."""
import subprocess
import sys
import threading
from datetime import datetime, timezone
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from binventory import BinventoryError
from binventory.cli import main
from binventory.inventory import compare, registry
from binventory.inventory.audit import Conflict, NotFound
from binventory.inventory.db import Database, make_engine, upgrade
from binventory.inventory.models import Model
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import register_model
from binventory.model.artifact import load_artifact, save_artifact
from binventory.serving.predictor import Predictor
from tests.tiny import save_tiny_model


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    return [save_tiny_model(folder / f"m{i}.pt", name=f"m{i}", seed=i) for i in range(3)]


@pytest.fixture
def ids(db, artifacts):
    with db.session() as s:
        return [registry.register(s, path).version for path in artifacts]


def states(db) -> dict[str, str]:
    with db.reader() as s:
        return dict(s.execute(select(Model.version, Model.state)).all())


def test_register_is_idempotent_and_keeps_the_state(db, artifacts):
    policy = Policy(t_confirm=0.8, t_flag=0.1)
    with db.session() as s:
        first = registry.register(s, artifacts[0])
        assert (first.state, first.name, first.parent, first.data) == ("candidate", "m0", None, [])
        assert first.path == str(artifacts[0].resolve())
        registry.promote(s, first.version)
    with db.session() as s:
        again = registry.register(s, artifacts[0], policy=policy)
        assert (again.version, again.state) == (first.version, "active")
        assert again.policy["t_confirm"] == 0.8
    assert len(states(db)) == 1


def test_register_keeps_the_lineage_a_fine_tuned_artifact_names(db, artifacts, tmp_path):
    base = load_artifact(artifacts[0])
    data = [{"manifest": "audits/manifest.parquet", "hash": "ab12", "images": 40,
             "labelled_until": "2026-11-30T10:00:00+00:00"}]
    child = save_artifact(tmp_path / "child.pt", base.model, classes=base.classes,
                          preprocess=base.preprocess, name="child", parent=base.model_id, data=data)
    with db.session() as s:
        row = registry.register(s, child)
        assert (row.name, row.parent, row.data) == ("child", base.model_id, data)
    assert compare.labelled_until(row) == datetime(2026, 11, 30, 10, tzinfo=timezone.utc)


def test_a_policy_for_another_model_is_refused(db, artifacts):
    with db.session() as s, pytest.raises(BinventoryError, match="calibrated for model 'other'"):
        registry.register(s, artifacts[0], policy=Policy(model_version="other"))
    assert states(db) == {}


def test_models_that_judged_photos_are_candidates(db, artifacts):
    predictor = Predictor.load(artifacts[1])
    with db.session() as s:
        register_model(s, predictor, Policy.default(), str(artifacts[1]))
    assert states(db) == {predictor.model_id: "candidate"}
    with db.session() as s:
        assert registry.promote(s, predictor.model_id).state == "active"


def test_promote_retires_the_active_and_rollback_walks_back(db, ids):
    a, b, c = ids
    with db.session() as s:
        registry.promote(s, a)  # none active: the first promotion needs no comparison
    with db.session() as s, pytest.raises(Conflict, match=f"model {b} was never compared with "
                                                          f"the active model {a}"):
        registry.promote(s, b)
    for model in (b, c):
        with db.session() as s:
            registry.promote(s, model, force=True)
    assert states(db) == {a: "retired", b: "retired", c: "active"}
    with db.session() as s:
        assert registry.rollback_target(s).version == b
        assert registry.rollback(s).version == b
    assert states(db) == {a: "retired", b: "active", c: "candidate"}
    with db.session() as s:
        assert registry.rollback(s).version == a
    assert states(db) == {a: "active", b: "candidate", c: "candidate"}
    with db.reader() as s:
        assert registry.rollback_target(s) is None
    with db.session() as s, pytest.raises(Conflict, match=f"model {a} is the only model that was "
                                                          "ever active"):
        registry.rollback(s)
    with db.session() as s, pytest.raises(Conflict, match="already the active model"):
        registry.promote(s, a)


def test_rollback_and_promote_say_what_is_missing(db, ids):
    with db.session() as s, pytest.raises(Conflict, match="no active model to roll back"):
        registry.rollback(s)
    with db.session() as s, pytest.raises(NotFound, match="no model 'nope' in the registry"):
        registry.promote(s, "nope")
    with db.reader() as s:
        assert registry.active(s) is None


def test_a_comparison_with_another_model_does_not_pass_the_gate(db, ids):
    a, b, c = ids
    with db.session() as s:
        registry.promote(s, a)
        registry.record_comparison(s, c, {"against": b, "verdict": "better", "reasons": []})
    with db.session() as s, pytest.raises(Conflict, match=f"compared with {b}, not with the active "
                                                          f"model {a}"):
        registry.promote(s, c)
    with db.session() as s:
        registry.record_comparison(s, c, {"against": a, "verdict": "better", "reasons": []})
        assert registry.promote(s, c).state == "active"


def test_the_database_holds_one_active_model(db, ids):
    with db.session() as s:
        registry.promote(s, ids[0])
    with pytest.raises(IntegrityError), db.session() as s:
        s.execute(text("UPDATE model SET state = 'active' WHERE version = :v"), {"v": ids[1]})
    with pytest.raises(IntegrityError), db.session() as s:
        s.execute(text("UPDATE model SET state = 'serving' WHERE version = :v"), {"v": ids[1]})


def test_concurrent_promotions_take_turns_and_leave_one_active(db_url, artifacts):
    db = Database.open(db_url, create=True)
    paths = artifacts * 2  # six promotions of three models at once, replicas racing
    with db.session() as s:
        ids = [registry.register(s, p).version for p in artifacts]
        registry.promote(s, ids[0])
    barrier, errors = threading.Barrier(len(paths)), []

    def promote(model_id):
        barrier.wait()
        try:
            with db.session() as s:
                registry.promote(s, model_id, force=True)
        except Exception as e:  # noqa: BLE001 - the test reports every failure
            # but one: promoting the model another replica has just made active
            if "already the active model" not in str(e):
                errors.append(e)

    threads = [threading.Thread(target=promote, args=(ids[i % 3],)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    final = states(db)
    db.close()
    assert errors == []
    assert list(final.values()).count("active") == 1
    assert set(final.values()) <= {"active", "retired"}


def test_existing_model_rows_become_candidates(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0003")
    with engine.begin() as c:
        c.execute(text("INSERT INTO model (version, name, path, registered_at, last_used_at) "
                       "VALUES ('old', 'old', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    upgrade(engine)
    db = Database(engine)
    with db.reader() as s:
        row = registry.get(s, "old")
        assert (row.state, row.parent, row.data, row.comparison) == ("candidate", None, None, None)
        assert registry.active(s) is None
    db.close()


def test_model_commands(db_url, artifacts, capsys):
    assert main(["model", "register", str(artifacts[0]), "--db", db_url]) == 0
    first = capsys.readouterr().out
    assert first.startswith("model mobilenet_v2-") and first.strip().endswith("(m0) is in the registry: candidate")
    a = first.split()[1]
    assert main(["model", "register", str(artifacts[1]), "--db", db_url]) == 0
    b = capsys.readouterr().out.split()[1]
    assert main(["model", "promote", a, "--db", db_url]) == 0
    assert main(["model", "promote", b, "--db", db_url]) == 2
    assert f"model {b} was never compared" in capsys.readouterr().err
    assert main(["model", "promote", b, "--db", db_url, "--force"]) == 0
    capsys.readouterr()
    assert main(["model", "list", "--db", db_url]) == 0
    table = capsys.readouterr().out
    assert "model registry: 2 models" in table
    assert a in table and b in table  # whole, to copy into `promote`, even in a pipe
    assert table.index("active") < table.index("retired")  # the active model first
    assert main(["model", "rollback", "--db", db_url]) == 0
    assert capsys.readouterr().out.strip() == f"model {a} is active again; {b} is a candidate"
    assert main(["model", "rollback", "--db", db_url]) == 2
    assert "there is none to roll back to" in capsys.readouterr().err
    assert main(["model", "register", "nope.pt", "--db", db_url]) == 2
    assert "model file not found: nope.pt" in capsys.readouterr().err


def test_active_is_one_indexed_lookup(db, ids):
    """The service polls active(): it must find the row through the partial unique index."""
    with db.session() as s:
        registry.promote(s, ids[1])
    with db.reader() as s:
        assert registry.active(s).version == ids[1]
        if db.dialect == "sqlite":
            plan = " ".join(str(r) for r in s.execute(text(
                "EXPLAIN QUERY PLAN SELECT * FROM model WHERE state = 'active'")))
            assert "uq_model_active" in plan


@pytest.mark.parametrize("argv", [["model"], ["model", "compare"], ["model", "list"]])
def test_model_help_imports_no_heavy_library(argv):
    probe = ("import sys, contextlib, io\n"
             "from binventory.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
             "    main(sys.argv[1:])\n"
             "print(' '.join(m for m in ('torch', 'numpy', 'sqlalchemy', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe, *argv, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
