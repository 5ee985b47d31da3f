"""The database setting: a PostgreSQL URL carries a password, which nothing shows; a bare `postgresql://` opens
with psycopg 3, the driver the package ships with; each database gets its own connection settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.adapters.db.engine import database_url, make_engine
from control_plane.cli.commands.server import setting_rows, settings_text
from control_plane.settings import ServerSettings, masked_url

SECRET = "hunter2-s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            f"postgresql+psycopg://edge:{SECRET}@db.example:5432/cp",
            "postgresql+psycopg://edge:***@db.example:5432/cp",
            id="password-in-user-part",
        ),
        pytest.param(
            "postgresql://edge:p@ss/w:rd@db/cp", "postgresql://edge:***@db/cp", id="unescaped-at-and-slash-in-password"
        ),
        pytest.param(
            f"postgresql+psycopg:///cp?host=/run/postgresql&password={SECRET}&user=edge",
            "postgresql+psycopg:///cp?host=/run/postgresql&password=***&user=edge",
            id="password-as-query-parameter",
        ),
        pytest.param("postgresql+psycopg://edge@db/cp", "postgresql+psycopg://edge@db/cp", id="no-password"),
        pytest.param("sqlite:////var/lib/edge-cp/cp.db", "sqlite:////var/lib/edge-cp/cp.db", id="sqlite-absolute"),
        pytest.param("sqlite:///a:b@c.db", "sqlite:///a:b@c.db", id="sqlite-file-name-with-at"),
    ],
)
def test_a_database_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_settings_never_show_the_database_password() -> None:
    settings = ServerSettings(database_url=f"postgresql+psycopg://edge:{SECRET}@db/cp")
    assert settings.resolved_database_url == f"postgresql+psycopg://edge:{SECRET}@db/cp"
    assert settings.database_shown == "postgresql+psycopg://edge:***@db/cp"
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert SECRET not in str(settings_text(list(setting_rows(ServerSettings))))


def test_without_a_database_url_the_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/control-plane.db"


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        pytest.param("postgresql://edge:pw@db/cp", "postgresql+psycopg", id="bare-postgresql-means-psycopg"),
        pytest.param("postgresql+psycopg://edge:pw@db/cp", "postgresql+psycopg", id="psycopg"),
        pytest.param("sqlite:///x.db", "sqlite", id="sqlite"),
    ],
)
def test_the_driver_each_url_opens_with(url: str, driver: str) -> None:
    assert database_url(url).drivername == driver


def test_a_postgresql_engine_checks_its_connections_and_opens_none_yet() -> None:
    engine = make_engine(f"postgresql://edge:{SECRET}@127.0.0.1:1/cp")  # nothing listens: nothing is opened yet
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
        assert SECRET not in repr(engine)
    finally:
        engine.dispose()
