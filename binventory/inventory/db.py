"""Database connections and migrations.

SQLite by default (``inventory.db`` in the data directory), PostgreSQL with a
``postgresql+psycopg://user:pass@host/db`` URL. The URL comes from ``--db``, else the
``BINVENTORY_DB_URL`` environment variable, else the default file. Alembic migrations ship inside
the package and run programmatically: ``binventory inventory migrate`` (every command that opens
the database also brings it to the newest schema).
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
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from binventory import BinventoryError

MIGRATIONS = Path(__file__).with_name("migrations")


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


def make_engine(url: str | None = None) -> Engine:
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BinventoryError(f"not a database URL: {url!r} (expected sqlite:///path/to/file.db "
                              "or postgresql+psycopg://user:password@host/db)") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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


def upgrade(engine: Engine, revision: str = "head") -> None:
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
    except OperationalError as e:
        raise BinventoryError(f"cannot reach the database {engine.url!r}: {e.orig}") from None


def downgrade(engine: Engine, revision: str = "base") -> None:
    with engine.begin() as connection:
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


class Database:
    """An engine and its sessions. ``session()`` is one transaction: commit on success, rollback
    on any exception, so a failure half-way never leaves half a batch behind."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, migrate: bool = True) -> Database:
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        elif current_revision(engine) != head_revision():
            raise BinventoryError(f"the database at {engine.url!r} is not at the newest schema: "
                                  "run `binventory inventory migrate`")
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
