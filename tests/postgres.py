"""A real PostgreSQL server for tests and benchmarks: Debian's `postgresql` binaries, a private cluster in a
temporary directory, a free loopback port, run by an unprivileged user, stopped by its PID.

    server = PostgresServer.start()          # raises PostgresUnavailable (with the reason) if it cannot
    url = server.create_database("fleet")    # postgresql+psycopg://edge:...@127.0.0.1:PORT/fleet
    ...
    server.stop()                            # stops the server, removes the cluster

PostgreSQL refuses to run as root: as root (here and in CI) the cluster belongs to `nobody` (no user is created);
as anyone else, to the caller. Durability is off (fsync, synchronous_commit): a test cluster is thrown away.
This module never touches a system cluster, a system user or anything outside its own directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support import free_port

BINARIES = ("initdb", "postgres")
SUPERUSER = "edge"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_UNPRIVILEGED = "nobody"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot run here; the message says why and what installs it."""


def find_binaries() -> Path:
    """The folder holding initdb and postgres: PATH first, then Debian's /usr/lib/postgresql/<major>/bin (newest)."""
    on_path = [shutil.which(name) for name in BINARIES]
    if all(on_path):
        return Path(os.path.realpath(str(on_path[0]))).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True):
        if all((Path(folder) / name).is_file() for name in BINARIES):
            return Path(folder)
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb/postgres on PATH or under /usr/lib/postgresql/*/bin): "
        ".ci/run installs Debian's `postgresql` package (or: apt-get install postgresql)"
    )


def _major(folder: str) -> int:
    version = Path(folder).parent.name
    return int(version) if version.isdigit() else 0


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix that drops root to `nobody` (and its uid/gid), or nothing when not root."""
    if os.geteuid() != 0:
        return [], None, None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise PostgresUnavailable("running as root and `setpriv` (util-linux) is missing: cannot drop to nobody")
    try:
        user = pwd.getpwnam(_UNPRIVILEGED)
    except KeyError as exc:
        raise PostgresUnavailable("running as root and there is no `nobody` user to run PostgreSQL as") from exc
    prefix = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
    return prefix, user.pw_uid, user.pw_gid


@dataclass
class PostgresServer:
    """One running cluster. `url_for(name)` / `create_database(name)` give SQLAlchemy URLs (psycopg 3)."""

    directory: Path
    port: int
    password: str
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    @classmethod
    def start(cls, timeout: float = 60.0) -> PostgresServer:
        """initdb into a new temporary directory and start `postgres` on a free port; wait until it answers."""
        binaries = find_binaries()
        prefix, uid, gid = _run_as()
        # Under the system temp dir (world-traversable), not pytest's 0700 one: `nobody` must reach it.
        directory = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        try:
            if uid is not None and gid is not None:
                os.chown(directory, uid, gid)
            password = secrets.token_hex(16)
            _initdb(binaries, prefix, directory, password)
            port = free_port()
            process = _spawn(binaries, prefix, directory, port)
            server = cls(directory=directory, port=port, password=password, process=process)
            server._wait_ready(timeout)
            return server
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database `name` (lower-case letters, digits, _); its SQLAlchemy URL."""
        if not _DATABASE_NAME.match(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _ (at most 63)")
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of this server's PID, then remove its directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        path = self.directory / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.is_file() else ""

    def _dsn(self, database: str) -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} password={self.password} dbname={database}"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise PostgresUnavailable(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresUnavailable(f"postgres did not answer within {timeout}s: {exc}") from exc
            time.sleep(0.05)


def _initdb(binaries: Path, prefix: list[str], directory: Path, password: str) -> None:
    data = directory / "data"
    password_file = directory / "superuser-password"
    password_file.write_text(password)
    with contextlib.suppress(OSError):
        os.chown(password_file, directory.stat().st_uid, directory.stat().st_gid)
    command = [
        *prefix,
        str(binaries / "initdb"),
        f"--pgdata={data}",
        f"--username={SUPERUSER}",
        f"--pwfile={password_file}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=_environment())
    password_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise PostgresUnavailable(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def _spawn(binaries: Path, prefix: list[str], directory: Path, port: int) -> subprocess.Popen[bytes]:
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(directory),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
        "shared_buffers": "64MB",
        "timezone": "UTC",
        "logging_collector": "off",
    }
    options = [f"--{name}={value}" for name, value in settings.items()]
    log = (directory / "postgres.log").open("ab")
    try:
        return subprocess.Popen(
            [*prefix, str(binaries / "postgres"), "-D", str(directory / "data"), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(),
            start_new_session=True,  # Ctrl-C on the test run reaches pytest, which stops this server itself
        )
    finally:
        log.close()


def _environment() -> dict[str, str]:
    """A neutral environment: no PG* variables of the caller, C locale, a home `nobody` may read."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in ("LANG", "LC_ALL")}
    return {**keep, "LC_ALL": "C", "HOME": "/"}
