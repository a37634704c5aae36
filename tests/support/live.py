"""Real daphne processes serving the arena on 127.0.0.1, and the databases they serve, for end-to-end tests.

Live servers use the test run's own engine: SQLite by default, PostgreSQL when the run's DATABASE_URL
is a PostgreSQL one. A migrated database is made once per run and copied for each test module.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 60
POSTGRESQL_ENGINE = "django.db.backends.postgresql"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path, *, timeout: float) -> None:
    """Return once `url` answers 200; RuntimeError (with the process's log) if the process exits
    or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited: {log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)  # readiness poll, bounded by the deadline
    raise RuntimeError(f"{process.args[:3]} did not start: {log.read_text()}")


def base_env() -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "arena.settings_test",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "ARENA_SPARRING_DELAY_MS": "0",
    }


def provider_env(api_base: str) -> dict[str, str]:
    """Settings for a server whose battles may also use `openai/fake` on the local fake provider."""
    return {
        "ARENA_API_BASE": api_base,
        "ARENA_PROVIDER_RETRIES": "0",
        "ARENA_MODEL_CHOICES": "arena/sparring,openai/fake",
    }


def libpq_url(url: str) -> str:
    """libpq reads postgres:// and postgresql:// URLs only; django-environ also takes pgsql:// etc."""
    return urlsplit(url)._replace(scheme="postgresql").geturl()


def migrate(database_url: str) -> None:
    env = {**base_env(), "DATABASE_URL": database_url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def migrated_database(folder: Path) -> LiveDatabase:
    """A new migrated database on the engine of this test run (see the module docstring).

    Make it once per run and `copy()` it per test module: a copy is much faster than migrating.
    SQLite files go in `folder`; PostgreSQL databases are named after this process, so two runs at
    once never meet.
    """
    run_url = os.environ.get("DATABASE_URL", "")
    if run_url and environ.Env.db_url_config(run_url)["ENGINE"] == POSTGRESQL_ENGINE:
        database = PostgresDatabase.create(run_url, f"test_arena_{os.getpid()}_live")
    else:
        database = SQLiteDatabase(folder / "template.sqlite3")
    migrate(database.url)
    return database


class LiveDatabase:
    """A database that live servers and `runbattle` processes use, and that tests read directly.

    It outlives the servers that use it (several may share one); whoever made it drops it.
    """

    url: str  # the DATABASE_URL of the processes that use it

    def copy(self) -> LiveDatabase:
        """A new database with the same content (the source must not be in use)."""
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def fetch(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query. Placeholders are `%s` on both engines; UUIDs are bound as Django
        stores them."""
        raise NotImplementedError

    def execute(self, statement: str, params: Sequence[object] = ()) -> None:
        """Run one statement that returns no rows, committed (placeholders as in `fetch`)."""
        raise NotImplementedError

    def stored_log(self, battle_id: str) -> list[tuple[int, str, Any]]:
        """A battle's event log as (seq, type, data)."""
        rows = self.fetch(
            "SELECT seq, type, CAST(data AS TEXT) FROM battles_event WHERE battle_id = %s ORDER BY seq",
            [uuid.UUID(battle_id)],
        )
        return [(seq, type_, json.loads(data)) for seq, type_, data in rows]

    def battle_status(self, battle_id: str) -> str | None:
        rows = self.fetch("SELECT status FROM battles_battle WHERE id = %s", [uuid.UUID(battle_id)])
        return rows[0][0] if rows else None


class SQLiteDatabase(LiveDatabase):
    """A SQLite file; copies are made next to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._copies = itertools.count(1)

    def copy(self) -> SQLiteDatabase:
        path = self.path.with_name(f"{self.path.stem}-{next(self._copies)}.sqlite3")
        # SQLite's backup, not a file copy: it includes what is still in the write-ahead log.
        with closing(sqlite3.connect(self.path)) as source, closing(sqlite3.connect(path)) as target:
            source.backup(target)
        return SQLiteDatabase(path)

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):  # WAL mode leaves two companion files
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def fetch(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        values = [p.hex if isinstance(p, uuid.UUID) else p for p in params]  # Django stores 32 hex digits
        with closing(sqlite3.connect(self.path)) as db:
            return db.execute(query.replace("%s", "?"), values).fetchall()

    def execute(self, statement: str, params: Sequence[object] = ()) -> None:
        values = [p.hex if isinstance(p, uuid.UUID) else p for p in params]
        with closing(sqlite3.connect(self.path, timeout=20)) as db, db:  # `with db`: commit
            db.execute(statement.replace("%s", "?"), values)


class PostgresDatabase(LiveDatabase):
    """A database on a PostgreSQL server; copies are made with `CREATE DATABASE … TEMPLATE`."""

    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name
        self.url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
        self._copies = itertools.count(1)

    @classmethod
    def create(cls, server_url: str, name: str, *, template: str | None = None) -> PostgresDatabase:
        """A new empty database (or a copy of `template`) on the server `server_url` points at."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with _maintenance_connection(server_url) as connection:
            connection.execute(statement)
        return cls(server_url, name)

    def copy(self) -> PostgresDatabase:
        return PostgresDatabase.create(
            self.server_url, f"{self.name}_{next(self._copies)}", template=self.name
        )

    def drop(self) -> None:
        """Drop it, even while a killed server's connections linger."""
        with _maintenance_connection(self.server_url) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )

    def fetch(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(libpq_url(self.url), autocommit=True) as connection:
            return connection.execute(query, params).fetchall()

    def execute(self, statement: str, params: Sequence[object] = ()) -> None:
        with psycopg.connect(libpq_url(self.url), autocommit=True) as connection:
            connection.execute(statement, params)


def _maintenance_connection(server_url: str) -> psycopg.Connection[Any]:
    """A connection to the server's `postgres` database: CREATE and DROP DATABASE run outside any
    transaction, and never from inside the database they create or drop."""
    url = urlsplit(libpq_url(server_url))._replace(path="/postgres").geturl()
    return psycopg.connect(url, autocommit=True)


class LiveServer:
    """daphne on a free port, serving `database`, with its log and media in `folder`. Always call stop().

    Several servers may serve one database (pass the same one); each needs its own folder. Extra
    keyword arguments are environment variables for this server (settings, e.g. MEDIA_ROOT to share
    uploads between servers).
    """

    def __init__(self, folder: Path, database: LiveDatabase, **env: str) -> None:
        self.folder = folder
        self.database = database
        self.port = free_port()
        self.env = {
            **base_env(),
            "DATABASE_URL": database.url,
            "MEDIA_ROOT": str(folder / "media"),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "daphne.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        with self.log.open("ab") as log:  # appends: a server started again after kill() keeps its history
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "arena.asgi:application",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_serving(self.process, self.url + "/", self.log, timeout=START_TIMEOUT_SECONDS)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate it if it runs (kill it when it does not exit in time). Safe to call twice."""
        if self.process and self.process.poll() is None:
            try:
                self.terminate(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM, then wait for it to exit (TimeoutExpired past `timeout`); its exit code."""
        assert self.process is not None, "the server was never started"
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing in the server gets to clean up. Then wait for it."""
        assert self.process is not None, "the server was never started"
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_battle(self, text: str, *, name: str = "essay.md", rounds: int = 1, **fields: str) -> str:
        """Upload through the real form (CSRF and all); return the new battle's id."""
        with httpx.Client(base_url=self.url) as client:
            page = client.get("/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            assert token, "the upload form has no CSRF token"
            response = client.post(
                "/battles/",
                data={"csrfmiddlewaretoken": token.group(1), "rounds": str(rounds), **fields},
                files={"file": (name, text.encode(), "text/markdown")},
                headers={"Referer": self.url + "/"},
            )
        assert response.status_code == 303, response.text
        return response.headers["Location"].rstrip("/").split("/")[-1]

    def create_staff_user(self) -> tuple[str, str]:
        """A superuser in this server's database, made with Django's own command."""
        username, password = "operator", "correct-horse-battery-staple"
        env = {
            **self.env,
            "DJANGO_SUPERUSER_USERNAME": username,
            "DJANGO_SUPERUSER_PASSWORD": password,
            "DJANGO_SUPERUSER_EMAIL": "operator@example.com",
        }
        subprocess.run(
            [sys.executable, "manage.py", "createsuperuser", "--noinput"],
            cwd=ROOT,
            env=env,
            check=False,
            capture_output=True,
        )
        return username, password

    def stored_log(self, battle_id: str) -> list[tuple[int, str, Any]]:
        return self.database.stored_log(battle_id)

    def battle_status(self, battle_id: str) -> str | None:
        return self.database.battle_status(battle_id)
