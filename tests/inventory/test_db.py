"""Migrations up and down, on SQLite and PostgreSQL, and the database's own guarantees."""
import threading

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from binventory import BinventoryError
from binventory.inventory.db import Database, current_revision, downgrade, head_revision, make_engine, upgrade

TABLES = {"sku", "bin", "bin_content", "model", "observation", "audit_task", "adjustment", "api_token"}


def test_migrations_up_down_up(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert TABLES <= set(inspect(engine).get_table_names())
    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine)  # a second upgrade after a downgrade works: the downgrade left nothing behind
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def _connect_once(db_url):
    """Makes the empty database a SQLite URL names (a PostgreSQL one exists already)."""
    engine = make_engine(db_url)
    engine.connect().close()
    engine.dispose()


def test_opening_never_migrates_an_existing_schema(db_url):
    _connect_once(db_url)
    with pytest.raises(BinventoryError, match="no inventory schema yet: create it with `binventory inventory migrate`"):
        Database.open(db_url)
    engine = make_engine(db_url)
    assert current_revision(engine) is None and not TABLES & set(inspect(engine).get_table_names())
    Database.open(db_url, create=True).close()  # what import-abid, token create and serve do
    assert current_revision(engine) == head_revision()
    downgrade(engine, "0001")  # as a replica of the next release finds it before the migration
    for create in (False, True):
        with pytest.raises(BinventoryError, match=f"at schema revision '0001', not the newest "
                                                  f"'{head_revision()}': run `binventory inventory migrate`"):
            Database.open(db_url, create=create)
    assert current_revision(engine) == "0001"
    upgrade(engine)
    with engine.begin() as c:  # as a newer binventory would leave it
        c.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    for create in (False, True):
        with pytest.raises(BinventoryError, match="schema revision 'f00d', which this binventory does not know"):
            Database.open(db_url, create=create)
    assert current_revision(engine) == "f00d"
    engine.dispose()


def test_read_only_commands_refuse_an_empty_database_and_name_the_fix(db_url, capsys):
    from binventory.cli import main

    _connect_once(db_url)
    for args in (["inventory", "status"], ["inventory", "tasks"], ["inventory", "token", "list"]):
        assert main([*args, "--db", db_url]) == 2
        assert "no inventory schema yet: create it with `binventory inventory migrate`" in capsys.readouterr().err
    engine = make_engine(db_url)
    assert current_revision(engine) is None and not TABLES & set(inspect(engine).get_table_names())
    engine.dispose()


def test_commands_on_a_missing_sqlite_file_say_so_and_create_nothing(tmp_path, capsys):
    from binventory.cli import main

    path = tmp_path / "typo" / "inventory.db"
    for args in (["inventory", "status"], ["inventory", "tasks"], ["inventory", "token", "list"],
                 ["inventory", "claim", "1", "--assignee", "alice"]):
        assert main([*args, "--db", f"sqlite:///{path}"]) == 2
        err = capsys.readouterr().err
        assert f"there is no database at {path}: create it with `binventory inventory migrate`" in err
    assert not path.parent.exists()


def test_concurrent_migrations_take_turns(db_url):
    """Several replicas' deploy steps may run `inventory migrate` at once on a new database."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers through its file lock; the advisory lock is PostgreSQL's")
    engines = [make_engine(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    errors = []

    def migrate_once(engine):
        barrier.wait()
        try:
            upgrade(engine)
        except Exception as e:  # noqa: BLE001 -- any failure is the finding
            errors.append(e)

    threads = [threading.Thread(target=migrate_once, args=(e,), daemon=True) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a migration hung"
    assert errors == []
    assert current_revision(engines[0]) == head_revision()
    for engine in engines:
        engine.dispose()


def _ledger_row(db):
    with db.session() as s:
        s.execute(text("INSERT INTO bin (id, code, created_at) VALUES (1, 'b1', CURRENT_TIMESTAMP)"))
        s.execute(text("INSERT INTO sku (id, asin, name) VALUES (1, 'A1', 'x')"))
        s.execute(text("INSERT INTO adjustment (bin_id, sku_id, delta, quantity_before, quantity_after, "
                       "reason_code, actor, created_at) VALUES (1, 1, -1, 3, 2, 'miscount', 'me', "
                       "CURRENT_TIMESTAMP)"))


@pytest.mark.parametrize("statement", ["UPDATE adjustment SET delta = 5", "DELETE FROM adjustment"])
def test_ledger_is_append_only(db, statement):
    _ledger_row(db)
    with pytest.raises(DBAPIError, match="append-only"):
        with db.session() as s:
            s.execute(text(statement))
    with db.session() as s:
        assert s.execute(text("SELECT delta FROM adjustment")).scalar_one() == -1


def test_negative_quantities_are_refused(db):
    _ledger_row(db)
    with pytest.raises(IntegrityError):
        with db.session() as s:
            s.execute(text("INSERT INTO bin_content (bin_id, sku_id, quantity) VALUES (1, 1, -2)"))


def test_bad_url_is_a_clear_error():
    with pytest.raises(BinventoryError, match="not a database URL"):
        make_engine("nonsense")
    with pytest.raises(BinventoryError, match="unsupported database"):
        make_engine("mysql://u@h/db")


def test_migrate_command_goes_up_and_down(db_url, capsys):
    from binventory.cli import main

    assert main(["inventory", "migrate", "--db", db_url]) == 0
    assert capsys.readouterr().out.strip().endswith(f"empty -> {head_revision()}")
    assert main(["inventory", "migrate", "--db", db_url, "--revision", head_revision()]) == 0
    assert main(["inventory", "migrate", "--db", db_url, "--revision", "base"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{head_revision()} -> empty")
    assert main(["inventory", "migrate", "--db", db_url, "--revision", "nope"]) == 2
    assert "unknown schema revision 'nope'" in capsys.readouterr().err
