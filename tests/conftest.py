from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, PostgresUnavailable
from tests.support import Mosquitto, mosquitto_available

# The databases the control plane supports; tests that take `database_url` run once on each.
DATABASES = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql")]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto broker for the whole session (password file + ACL). See tests/support.py."""
    if not mosquitto_available():
        pytest.fail(
            "mosquitto is not installed: .ci/run installs Debian's `mosquitto` package (or: apt-get install mosquitto)"
        )
    broker = Mosquitto(workdir=Path(tmp_path_factory.mktemp("mosquitto")))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own, which it may restart or break without touching the session broker's
    retained messages."""
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed: .ci/run installs Debian's `mosquitto` package")
    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session (tests/postgres.py), started only if a test asks for it.

    Where it cannot run (not installed), the tests that need it are skipped with the reason; in CI (CI=true, where
    .ci/run installs it) they fail instead, so a PostgreSQL variant never goes quietly untested.
    """
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL must run in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


def new_database(request: pytest.FixtureRequest, kind: str, directory: Path) -> str:
    """A new empty database of `kind` ("sqlite": a file in `directory`; "postgresql": one on the session server)."""
    if kind == "sqlite":
        return f"sqlite:///{directory / 'control-plane.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The SQLAlchemy URL of a new empty database for this test: the test runs once on SQLite, once on PostgreSQL."""
    return new_database(request, str(request.param), tmp_path)
