"""What holds across the whole arena: provider secrets reach no log or output, every page carries a
strict Content-Security-Policy, and production settings pass Django's deploy check."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from battles.engine import run_battle
from battles.models import Battle

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("aggressor", "defender", "moderator")


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


@pytest.mark.django_db
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
