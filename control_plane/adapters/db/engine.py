"""Engine creation and schema migration to head at startup, for the two databases the control plane supports:
SQLite (WAL, foreign keys on; the default) and PostgreSQL through psycopg 3 (`postgresql+psycopg://...`).

What differs between them is decided here and in the migrations, never in a repository. Nothing here logs or
prints a database URL: it may carry a password (SQLAlchemy's own repr of an engine masks it).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x6564676563700001  # PostgreSQL advisory lock key of schema upgrades ("edgecp", 1)

# PostgreSQL: connections are checked before use (a restarted server or a dropped idle connection is replaced,
# not handed to a request), and recycled hourly. The pool is sized for the API's worker threads plus the MQTT
# writer and the rollout executor; past pool + overflow a caller waits `pool_timeout` seconds.
_POSTGRES_POOL: dict[str, Any] = {"pool_size": 10, "max_overflow": 20, "pool_timeout": 30, "pool_recycle": 3600}


def database_url(url: str) -> URL:
    """The URL the engine opens: a bare `postgresql://` means psycopg 3 (the `postgres` extra's driver)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    parsed = database_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() == "psycopg" and find_spec("psycopg") is None:
            raise RuntimeError("PostgreSQL needs psycopg 3: pip install 'edge-orchestrator[postgres]'")
        # Every session speaks UTC: a naive timestamp then means UTC on both databases (convert.utc).
        connect_args = {"options": "-c timezone=UTC", "connect_timeout": 10}
        engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True, **_POSTGRES_POOL)
        event.listen(engine, "connect", _postgres_text_without_nul)
        return engine
    return create_engine(parsed)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _postgres_text_without_nul(dbapi_connection: Any, _record: Any) -> None:
    """PostgreSQL refuses a NUL character in text (SQLite keeps it): one such string from a device would fail the
    whole transaction it is written in, the other devices' messages with it. It is stored as U+FFFD instead."""
    from control_plane.adapters.db.postgres_text import register_nul_safe_text  # psycopg: only when it is used

    register_nul_safe_text(dbapi_connection)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (the newest migration shipped in this package by default), in one
    transaction.

    SQLite rebuilds a table to change a constraint ("batch" migrations); foreign key enforcement is off for the
    migration so the rebuild of a referenced table (builds) does not trip over its own references. PostgreSQL
    alters tables in place; its DDL is transactional, so a failed upgrade leaves the schema as it was, and control
    planes starting together on one database take turns (an advisory lock held until the upgrade commits).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    is_sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if is_sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        finally:
            if is_sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
