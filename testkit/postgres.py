"""A throwaway PostgreSQL server from Debian's packages, on a free loopback port.

`postgres_server(log_dir)` runs `initdb` into a temporary directory and then `postgres` in the
foreground under the process supervisor (so the session's leak check covers it), listening on
127.0.0.1 only, with trust authentication for one database user; it yields the SQLAlchemy URL.
PostgreSQL refuses to run as root: as root, both run as the `postgres` user the Debian package
creates (`runuser`), and the data directory is handed to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from testkit.processes import StartError, free_port, running, tcp_open

USER = "results"
DATABASE = "results"
SERVER_USER = "postgres"


def binary(name: str) -> str:
    """`initdb`, `postgres`: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    found = candidates[-1] if candidates else shutil.which(name)
    if found is None:
        raise StartError(
            f"PostgreSQL's {name} not found: install the Debian package postgresql "
            "(scripts/install-system-deps.sh)"
        )
    return found


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVER_USER, "--", *argv]


@contextlib.contextmanager
def postgres_server(log_dir: Path) -> Iterator[str]:
    """A running server for the block; its data directory is removed afterwards. The directory
    is a fresh one right under the system's temp dir: the server user must be able to reach it,
    and a test's tmp_path sits in a directory only its owner may enter."""
    work_dir = Path(tempfile.mkdtemp(prefix="testkit-postgres-"))
    try:
        with _server(work_dir, log_dir) as url:
            yield url
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@contextlib.contextmanager
def _server(work_dir: Path, log_dir: Path) -> Iterator[str]:
    data = work_dir / "pgdata"
    sockets = work_dir / "pgsock"
    data.mkdir(parents=True)
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (work_dir, data, sockets):
            shutil.chown(path, SERVER_USER, SERVER_USER)
    done = subprocess.run(
        _as_server_user(
            [
                binary("initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise StartError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
    port = free_port()
    argv = _as_server_user(
        [
            binary("postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]
    )  # fmt: skip
    with running("postgres", argv, log_dir, ready_port=port, timeout=60) as process:
        try:
            # The server accepts connections a moment before it accepts logins.
            process.wait_ready(lambda: tcp_open(port) and _create_database(port), timeout=60)
            yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{DATABASE}"
        finally:
            # Fast shutdown (SIGINT): SIGTERM would wait for every client to disconnect.
            process.signal(signal.SIGINT)


def _create_database(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            f"host=127.0.0.1 port={port} user={USER} dbname=postgres", autocommit=True
        ) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if exists is None:
                connection.execute(f'CREATE DATABASE "{DATABASE}"')
    except psycopg.OperationalError:
        return False
    return True
