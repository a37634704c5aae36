"""Hardening: limits, secrets kept out of logs, the CSP, deploy settings, hostile uploads."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, Client

from arena.asgi_wrappers import RequestBodyLimit
from battles import services
from battles.engine import run_battle
from battles.models import Battle, Document, Event
from tests.conftest import ESSAY

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("aggressor", "defender", "moderator")


def upload(client: Client, name: str = "essay.md", content: bytes = ESSAY.encode(), **extra: object):
    return client.post("/battles/", {"file": SimpleUploadedFile(name, content), "rounds": 1}, **extra)


# --- Limits -------------------------------------------------------------------------------------


def test_new_battles_are_refused_while_the_arena_is_full(client: Client, make_battle, settings) -> None:
    settings.ARENA_MAX_RUNNING_BATTLES = 1
    running = make_battle()
    services.battle_start(battle_id=running.pk)

    response = upload(client)

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert "The arena is full" in response.content.decode()
    assert Battle.objects.count() == 1
    assert client.post(f"/battles/{running.pk}/retry").status_code == 429


def test_battles_per_client_ip_per_hour(client: Client, settings) -> None:
    settings.ARENA_BATTLES_PER_IP_PER_HOUR = 2
    assert upload(client).status_code == 303
    assert upload(client).status_code == 303
    refused = upload(client)
    assert refused.status_code == 429 and refused["Retry-After"] == "3600"
    assert "in the last hour" in refused.content.decode()
    assert upload(client, REMOTE_ADDR="10.9.8.7").status_code == 303  # another client is not affected
    assert Battle.objects.count() == 3


def test_x_forwarded_for_is_only_trusted_when_configured(client: Client, settings) -> None:
    settings.ARENA_BATTLES_PER_IP_PER_HOUR = 1
    assert upload(client, HTTP_X_FORWARDED_FOR="1.2.3.4").status_code == 303
    assert upload(client, HTTP_X_FORWARDED_FOR="5.6.7.8").status_code == 429  # same REMOTE_ADDR
    settings.ARENA_TRUST_X_FORWARDED_FOR = True
    assert upload(client, HTTP_X_FORWARDED_FOR="5.6.7.8").status_code == 303


@pytest.mark.django_db(transaction=True)
async def test_a_battle_ends_cleanly_when_its_token_budget_runs_out(make_battle, settings) -> None:
    settings.ARENA_MAX_TOKENS_PER_BATTLE = 3000
    battle = await sync_to_async(make_battle)(rounds=3)

    finished = await run_battle(battle.pk)

    assert finished.status == Battle.Status.FINISHED
    assert finished.prompt_tokens + finished.completion_tokens <= 3000
    turns = await finished.turns.acount()
    assert 0 < turns < 9
    log = [e async for e in Event.objects.filter(battle=battle).order_by("seq")]
    assert [e.type for e in log[-2:]] == ["verdict", "battle.completed"]
    assert log[-2].data["fallback"] is True
    assert log[-2].data["summary"].startswith("The battle ran out of its token budget (3000 tokens)")


@pytest.mark.django_db(transaction=True)
async def test_open_streams_per_client_ip(make_battle, settings) -> None:
    settings.ARENA_MAX_STREAMS_PER_IP = 2
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk)  # running elsewhere: streams stay open
    client = AsyncClient()
    url = f"/battles/{battle.pk}/events"

    first, second = await client.get(url), await client.get(url)
    third = await client.get(url)
    settings.ARENA_TRUST_X_FORWARDED_FOR = True
    other_ip = await client.get(url, headers={"X-Forwarded-For": "10.0.0.9"})

    assert (first.status_code, second.status_code, other_ip.status_code) == (200, 200, 200)
    assert third.status_code == 429 and third["Retry-After"] == "10"
    del first
    gc.collect()  # a stream that is gone gives its slot back
    assert (await client.get(url)).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_a_stream_stays_open_at_most_the_configured_time(make_battle, settings) -> None:
    settings.ARENA_MAX_STREAM_SECONDS = 0.3
    settings.ARENA_TAIL_POLL_SECONDS = 0.05
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk)  # nothing will ever happen

    response = await AsyncClient().get(f"/battles/{battle.pk}/events")
    body = await asyncio.wait_for(_read(response), timeout=10)

    assert body.startswith("retry: ")  # it closed by itself; the browser reconnects and resumes


async def _read(response) -> str:  # noqa: ANN001
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


# --- Uploads ------------------------------------------------------------------------------------


def test_one_file_per_request(client: Client) -> None:
    response = client.post(
        "/battles/",
        {
            "file": [SimpleUploadedFile("a.md", b"One claim."), SimpleUploadedFile("b.md", b"Two.")],
            "rounds": 1,
        },
    )
    assert response.status_code == 400
    assert "one file at a time" in response.content.decode()
    assert not Document.objects.exists()


@pytest.mark.parametrize(
    "name, shown",
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("C:\\Users\\x\\plan.md", "plan.md"),
        ('<img src=x onerror="alert(1)">.md', None),
        ("bell\x07and\x1b[31mred.md", None),
        ("x" * 600 + ".md", None),
    ],
)
def test_hostile_file_names_are_reduced_to_a_safe_display_name(
    client: Client, name: str, shown: str | None
) -> None:
    assert upload(client, name).status_code == 303
    document = Document.objects.get()
    assert Path(document.file.path).parent == Path(settings.MEDIA_ROOT) / "documents"
    assert re.fullmatch(r"[0-9a-f]{32}", Path(document.file.path).name)
    if shown:
        assert document.original_name == shown
    assert len(document.original_name) <= 120
    assert not re.search(r"[<>\"'\x00-\x1f/\\\\]", document.original_name)
    page = client.get(f"/battles/{Battle.objects.get().pk}/").content.decode()
    assert "<img src=x" not in page


async def _asgi(app: RequestBodyLimit, headers: list, chunks: list[bytes]) -> tuple[list[dict], bool]:
    sent: list[dict] = []
    called = False
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def inner(scope: dict, receive, send) -> None:  # noqa: ANN001
        nonlocal called
        called = True
        while (await receive())["type"] == "http.request":
            pass

    app.app = inner
    await app({"type": "http", "method": "POST", "headers": headers}, receive, send)
    return sent, called


async def test_oversized_request_bodies_are_refused_before_django_reads_them() -> None:
    app = RequestBodyLimit(None, limit=100)  # type: ignore[arg-type]

    sent, called = await _asgi(app, [(b"content-length", b"101")], [b"x" * 101])
    assert sent[0]["status"] == 413 and called is False

    sent, called = await _asgi(app, [], [b"x" * 60, b"x" * 60])  # no Content-Length: counted
    assert sent[0]["status"] == 413

    sent, called = await _asgi(app, [(b"content-length", b"100")], [b"x" * 100])
    assert sent == [] and called is True


# --- Secrets, CSP, deploy settings --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_provider_secrets_reach_no_log_and_no_output(make_battle, settings, caplog, capfd) -> None:
    from tests.support.openai_server import OpenAIServer, Script

    caplog.set_level(logging.DEBUG)
    with OpenAIServer() as server:
        settings.ARENA_ROLE_API_BASES = dict.fromkeys(ROLES, server.api_base)
        settings.ARENA_PROVIDER_RETRIES = 0
        server.queue(Script(text="Partial answer here", break_after=2))
        battle = await sync_to_async(make_battle)(**dict.fromkeys(ROLES, "openai/fake"))
        finished = await run_battle(battle.pk)
        server.queue(Script(status=500))
        again = await run_battle((await sync_to_async(make_battle)(**dict.fromkeys(ROLES, "openai/fake"))).pk)

    assert finished.status == again.status == Battle.Status.FAILED
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert "sk-SECRET" not in text
        assert "Traceback" not in text


def test_pages_carry_a_strict_content_security_policy(client: Client, make_battle, admin_client) -> None:
    battle = make_battle()
    for page_client, url in ((client, "/"), (client, f"/battles/{battle.pk}/"), (admin_client, "/admin/")):
        response = page_client.get(url)
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        # Every script is a file or a JSON data block: nothing inline that the policy would have to allow.
        for tag in re.findall(r"<script\b[^>]*>", response.content.decode()):
            assert "src=" in tag or 'type="application/json"' in tag, tag


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "SECRET_KEY_FILE": "/nonexistent/secret-key", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check() -> None:
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY="k8s-7f3Qz-" + "x1Y2z3W4v5U6t7S8r9Q0p1O2n3M4l5K6j7I8h9G0f",
        ALLOWED_HOSTS="arena.example.com",
        ARENA_HTTPS="true",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_start_up_without_a_secret_key_when_debug_is_off() -> None:
    result = manage("check", DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


@pytest.mark.django_db(transaction=True)
async def test_a_pending_battle_waits_for_a_free_slot_before_it_starts(
    make_battle, settings, monkeypatch
) -> None:
    from battles.live import hub
    from battles.live.streams import spectate
    from tests.test_broadcast import collect, ids

    settings.ARENA_MAX_RUNNING_BATTLES = 1
    monkeypatch.setattr(hub, "QUEUE_POLL_SECONDS", 0.02)
    running, queued = await sync_to_async(make_battle)(), await sync_to_async(make_battle)(rounds=1)
    await sync_to_async(services.battle_start)(battle_id=running.pk)

    watcher = asyncio.create_task(collect(spectate(queued.pk, after=0)))
    await asyncio.sleep(0.2)  # ten chances for the queue to start it wrongly
    assert (await Battle.objects.aget(pk=queued.pk)).status == Battle.Status.PENDING
    assert not watcher.done()

    await sync_to_async(services.battle_mark_failed)(battle_id=running.pk, reason="Freed.")
    messages = await asyncio.wait_for(watcher, timeout=30)

    assert (await Battle.objects.aget(pk=queued.pk)).status == Battle.Status.FINISHED
    assert ids(messages) == [e.seq async for e in Event.objects.filter(battle=queued).order_by("seq")]
