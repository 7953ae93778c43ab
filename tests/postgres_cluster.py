"""Private PostgreSQL clusters for the tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

A cluster listens on a free loopback port (and a Unix socket in its own directory), with password
(SCRAM) authentication for TCP, and is tuned for tests: ``fsync=off`` (an OS crash is not what
the tests simulate; ``synchronous_commit`` stays on, so an acknowledged commit survives a stopped
or killed server). Run as root, the server runs as the ``postgres`` user (``runuser``), which
the Debian package creates. Missing server binaries raise ``RuntimeError``: the run fails, it
never skips (``make test`` installs the Debian package ``postgresql``).

``session_cluster()`` starts one cluster for the whole test session on first use, with a
template database already holding the store's schema, and stops it at exit; ``new_database()``
clones that template into a fresh database (``CREATE DATABASE ... TEMPLATE``, a file copy) and
``drop_database()`` drops it again. Tests that stop the server make a ``PostgresCluster`` of their
own.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Final

import anyio
import psycopg
from psycopg import sql

__all__ = ["PostgresCluster", "drop_database", "new_database", "session_cluster"]

USER: Final = "kms_test"
PASSWORD: Final = "t0p-s3cret-pässword"
TEMPLATE: Final = "kms_template"
_SERVER_USER: Final = "postgres"
_SETTINGS: Final = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "max_connections": "300",
    "shared_buffers": "64MB",
}


def _bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding the server binaries."""
    found = [
        Path(path).parent
        for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if os.access(Path(path).parent / "pg_ctl", os.X_OK)
    ]
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin:"
            " install the Debian package postgresql (`make test` does)"
        )
    return max(found, key=lambda path: int(path.parent.name.split(".")[0]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresCluster:
    """One private cluster: ``start()``, ``stop()``, ``dsn(dbname)``, admin statements.

    ``durable=True`` keeps PostgreSQL's own defaults (``fsync`` and ``full_page_writes`` on), for
    benchmarks that compare durable writes.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="kms-iface-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, _SERVER_USER, _SERVER_USER)
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_root:
            shutil.chown(pwfile, _SERVER_USER, _SERVER_USER)
        self._run(
            "initdb",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--username={USER}",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "-D",
            str(self.data),
        )
        pwfile.unlink()
        settings = dict(_SETTINGS, port=str(self.port), unix_socket_directories=f"'{self.root}'")
        if durable:
            settings.update(fsync="on", full_page_writes="on")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._as_root:
            command = ["runuser", "-u", _SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{log}"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        """Stop the server if it runs and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str, password: str = PASSWORD) -> str:
        """A libpq DSN for ``dbname`` over TCP on the loopback, with the password."""
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=self.port, user=USER, password=password, dbname=dbname
        )

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A fresh autocommit connection (close it) as the cluster's superuser."""
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def create_database(self, name: str, template: str = "template1") -> str:
        """``CREATE DATABASE name TEMPLATE template``; the new database's DSN."""
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


_session: PostgresCluster | None = None
_session_lock = threading.Lock()


async def _install_schema(dsn: str) -> None:
    from kms_iface.stores.postgres import PostgresStore

    async with PostgresStore(dsn, pool_size=1):
        pass


def session_cluster() -> PostgresCluster:
    """The test session's cluster, started (with the schema template) on first use."""
    global _session
    with _session_lock:
        if _session is None:
            cluster = PostgresCluster()
            atexit.register(cluster.destroy)
            cluster.start()
            anyio.run(_install_schema, cluster.create_database(TEMPLATE))
            _session = cluster
        return _session


def new_database() -> str:
    """A fresh database (the store's schema, no content) on the session cluster: its DSN."""
    return session_cluster().create_database(f"kms_{uuid.uuid4().hex}", TEMPLATE)


def drop_database(dsn: str) -> None:
    """Drop the database ``new_database`` made (its open connections are terminated)."""
    session_cluster().drop_database(str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]))
