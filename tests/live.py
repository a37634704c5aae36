"""A real daphne process serving the arena on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def migrated_database(folder: Path) -> Path:
    """A migrated SQLite file (made once per folder; copy it for each server)."""
    path = folder / "template.sqlite3"
    if not path.exists():
        env = {**base_env(), "DATABASE_URL": f"sqlite:///{path}"}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return path


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


class LiveServer:
    """daphne on a free port with its own database and media folder. Always call stop()."""

    def __init__(self, folder: Path, template: Path, **env: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.database = folder / "arena.sqlite3"
        shutil.copy(template, self.database)
        self.env = {
            **base_env(),
            "DATABASE_URL": f"sqlite:///{self.database}",
            "MEDIA_ROOT": str(folder / "media"),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "daphne.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        with self.log.open("wb") as log:
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
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)  # readiness poll, bounded by the deadline
        self.stop()
        raise RuntimeError(f"daphne did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
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
        import json

        with sqlite3.connect(self.database) as db:
            rows = db.execute(
                "SELECT seq, type, data FROM battles_event WHERE battle_id = ? ORDER BY seq",
                (battle_id.replace("-", ""),),
            ).fetchall()
        return [(seq, type_, json.loads(data)) for seq, type_, data in rows]

    def battle_status(self, battle_id: str) -> str | None:
        with sqlite3.connect(self.database) as db:
            row = db.execute(
                "SELECT status FROM battles_battle WHERE id = ?", (battle_id.replace("-", ""),)
            ).fetchone()
        return row[0] if row else None
