"""Database connections and migrations.

SQLite by default (``inventory.db`` in the data directory), PostgreSQL with a
``postgresql+psycopg://user:pass@host/db`` URL. The URL comes from ``--db``, else the
``BINVENTORY_DB_URL`` environment variable, else the default file. Alembic migrations ship inside
the package and run programmatically, from ``binventory inventory migrate`` only (and from the
commands that make a new inventory, on a database with no schema yet): opening a database never
changes the schema of one that has it, so a read, or each of several service replicas starting at
once, cannot migrate it under the others; an out-of-date schema is a clear error naming the command.
On PostgreSQL every migration holds an advisory lock, so concurrent ones run one after another.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

# Alembic logs each plugin (on import) and step at INFO; binventory reports what a migration did.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from binventory import BinventoryError

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock's key for schema changes (any fixed bigint; "binv" in ASCII).
MIGRATION_LOCK = 0x62696E76
MIGRATE_COMMAND = "binventory inventory migrate"


def data_dir() -> Path:
    return Path(os.environ.get("BINVENTORY_DATA_DIR", "data"))


def resolve_url(url: str | None = None) -> str:
    url = url or os.environ.get("BINVENTORY_DB_URL")
    if url:
        return url
    return f"sqlite:///{data_dir() / 'inventory.db'}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")      # off by default in SQLite
    cursor.execute("PRAGMA journal_mode = WAL")     # readers (the dashboard) never block writers
    cursor.execute("PRAGMA synchronous = NORMAL")   # durable at each checkpoint; safe with WAL
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.close()


def make_engine(url: str | None = None, must_exist: bool = False) -> Engine:
    """An engine for ``url`` (see ``resolve_url``). ``must_exist``: a SQLite file that is not
    there is an error, instead of an empty database made by connecting to it."""
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BinventoryError(f"not a database URL: {url!r} (expected sqlite:///path/to/file.db "
                              "or postgresql+psycopg://user:password@host/db)") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if must_exist and not path.exists():
                raise BinventoryError(f"there is no database at {path}: create it with "
                                      f"`{MIGRATE_COMMAND}` or import bins with `binventory "
                                      "inventory import-abid DIR`, or give the one to use "
                                      "(--db or $BINVENTORY_DB_URL)")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise BinventoryError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or "
                          "postgresql+psycopg")


def _alembic_config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _lock_schema(connection: Connection) -> None:
    """Hold the migration lock until the transaction ends (PostgreSQL; SQLite locks the file)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def upgrade(engine: Engine, revision: str = "head", *, only_if_empty: bool = False) -> None:
    """Upgrade to ``revision``; with ``only_if_empty``, only a database with no schema yet (the
    check is made under the lock, so a second caller waits and finds the schema made)."""
    try:
        with engine.begin() as connection:
            _lock_schema(connection)
            if only_if_empty and MigrationContext.configure(connection).get_current_revision():
                return
            command.upgrade(_alembic_config(connection), revision)
    except OperationalError as e:
        raise BinventoryError(f"cannot reach the database {_shown(engine)}: {e.orig}") from None


def downgrade(engine: Engine, revision: str = "base") -> None:
    with engine.begin() as connection:
        _lock_schema(connection)
        command.downgrade(_alembic_config(connection), revision)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` ('head', 'base' or an id), up or down as it lies."""
    script = ScriptDirectory(str(MIGRATIONS))
    try:
        target = None if revision == "base" else script.get_revision(revision).revision
    except (CommandError, RevisionError):
        raise BinventoryError(f"unknown schema revision {revision!r}") from None
    current = current_revision(engine)
    below = set() if current is None else {r.revision for r in script.iterate_revisions(current, "base")}
    if current is not None and target != current and (target is None or target in below):
        downgrade(engine, revision)
    else:
        upgrade(engine, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def check_schema(engine: Engine) -> None:
    """Refuse a database whose schema is not this binventory's newest, saying what to run."""
    try:
        current = current_revision(engine)
    except OperationalError as e:
        raise BinventoryError(f"cannot reach the database {_shown(engine)}: {e.orig}") from None
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise BinventoryError(f"the database {_shown(engine)} has no inventory schema yet: create it "
                              f"with `{MIGRATE_COMMAND}` (or import bins with `binventory inventory "
                              "import-abid`)")
    try:
        ScriptDirectory(str(MIGRATIONS)).get_revision(current)
    except (CommandError, RevisionError):
        raise BinventoryError(f"the database {_shown(engine)} is at schema revision {current!r}, "
                              f"which this binventory does not know (its newest is {head!r}): "
                              "a newer binventory migrated it; run that version") from None
    raise BinventoryError(f"the database {_shown(engine)} is at schema revision {current!r}, not the "
                          f"newest {head!r}: run `{MIGRATE_COMMAND}` (once, with every service "
                          "replica stopped or able to run the new schema)")


def dialect_insert(session: Session):
    """The dialect's ``insert``, which has ON CONFLICT (SQLite and PostgreSQL alike)."""
    return postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert


class Database:
    """An engine and its sessions. ``session()`` is one transaction: commit on success, rollback
    on any exception, so a failure half-way never leaves half a batch behind."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, *, create: bool = False) -> Database:
        """Open a database at the newest schema, else refuse (see ``check_schema``). ``create``:
        a database with no schema yet gets one (for the commands that make a new inventory);
        without it, a SQLite file that does not exist is refused, not made."""
        engine = make_engine(url, must_exist=not create)
        try:
            if create:
                upgrade(engine, only_if_empty=True)
            check_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self):
        with self._sessions() as session, session.begin():
            yield session

    def reader(self) -> Session:
        """A session for reads only (the caller closes it)."""
        return self._sessions()

    def close(self) -> None:
        self.engine.dispose()
