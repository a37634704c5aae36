"""The arena in a real browser: Debian's chromium, driven by Playwright, against a real daphne."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.documents import ESSAY
from tests.support.live import ROOT, LiveDatabase, LiveServer, base_env, provider_env
from tests.support.openai_server import OpenAIServer, Script
from tests.support.proxy import CuttableProxy
from tests.support.waiting import Lines

pytestmark = [pytest.mark.e2e, pytest.mark.one_pass]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BATTLE_TIMEOUT_MS = 60_000

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    # On a laptop without it, say so; in CI (.ci/run installs it) a missing browser is a failure.
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
ROLES = ("aggressor", "defender", "moderator")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Console errors include Content-Security-Policy violations and missing files. Dropped connections
    # (net::ERR_…) are left to the tests that cause them.
    page.on(
        "console",
        lambda message: (
            message.type == "error" and "net::ERR_" not in message.text and errors.append(message.text)
        ),
    )
    page.on("response", lambda response: response.status == 404 and errors.append(f"404 {response.url}"))
    yield page
    context.close()
    assert errors == [], f"Errors on the page: {errors}"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, live_database: LiveDatabase, provider: OpenAIServer
) -> Iterator[LiveServer]:
    with LiveServer(
        tmp_path_factory.mktemp("browser"),
        live_database,
        # Slow enough to watch a turn stream in and to cut the connection in the middle of it.
        ARENA_SPARRING_DELAY_MS="15",
        ARENA_SSE_RETRY_MS="500",
        **provider_env(provider.api_base),
    ) as live:
        yield live


def transcript(server: LiveServer, battle_id: str) -> dict:
    return httpx.get(f"{server.url}/battles/{battle_id}/transcript.json").json()


def panel_texts(page: Page, role: str) -> list[str]:
    return page.locator(f"#panel-{role} .turn .turn-text").all_text_contents()


def assert_panels_match(page: Page, data: dict) -> None:
    for role in ROLES:
        assert panel_texts(page, role) == [t["content"] for t in data["turns"] if t["role"] == role]


def test_upload_watch_the_battle_and_see_the_verdict(page: Page, server: LiveServer) -> None:
    page.goto(server.url + "/")
    page.set_input_files(
        "#id_file", files=[{"name": "essay.md", "mimeType": "text/markdown", "buffer": ESSAY.encode()}]
    )
    page.fill("#id_rounds", "1")
    page.click("#start-battle")

    page.wait_for_url(re.compile(r"/battles/[0-9a-f-]{36}/$"))
    battle_id = page.url.rstrip("/").split("/")[-1]
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#round-counter")).to_have_text("Round 1 of 1")
    expect(page.locator("#spectators")).to_contain_text("1 watching")
    expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "finished", timeout=BATTLE_TIMEOUT_MS
    )

    data = transcript(server, battle_id)
    expect(page.locator("#verdict")).to_be_visible()
    winner = {"aggressor": "Aggressor wins", "defender": "Defender wins", "draw": "Draw"}[
        data["verdict"]["winner"]
    ]
    expect(page.locator("#verdict-winner")).to_contain_text(winner)
    expect(page.locator("#verdict-summary")).to_have_text(data["verdict"]["summary"])
    assert_panels_match(page, data)
    expect(page.locator(".panel.speaking")).to_have_count(0)
    expect(page.locator("#share-link")).to_have_value(f"{server.url}/battles/{battle_id}/")

    # A finished battle opened later replays the same transcript.
    page.reload()
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "finished")
    assert_panels_match(page, data)


def test_model_output_is_shown_as_text_and_never_run(
    page: Page, server: LiveServer, provider: OpenAIServer
) -> None:
    hostile = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> **bold** &amp;'
    provider.queue(Script(text=hostile), Script(text=hostile), Script(text="SCORES: aggressor=1 defender=2"))
    fake = {f"{role}_model": "openai/fake" for role in ROLES}
    battle_id = server.create_battle(ESSAY, rounds=1, **fake)

    page.goto(f"{server.url}/battles/{battle_id}/")

    expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "finished", timeout=BATTLE_TIMEOUT_MS
    )
    assert panel_texts(page, "aggressor") == [hostile]
    assert panel_texts(page, "defender") == [hostile]
    expect(page.locator(".panels img, .panels script")).to_have_count(0)
    assert page.evaluate("window.__xss") is None


def test_a_failed_battle_offers_retry(page: Page, server: LiveServer, provider: OpenAIServer) -> None:
    provider.queue(Script(status=500))
    fake = {f"{role}_model": "openai/fake" for role in ROLES}
    battle_id = server.create_battle(ESSAY, rounds=1, **fake)

    page.goto(f"{server.url}/battles/{battle_id}/")

    expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "failed", timeout=BATTLE_TIMEOUT_MS
    )
    expect(page.locator("#error-message")).to_have_text("The model provider had an internal error.")
    provider.queue(
        Script(text="Attack."), Script(text="Defence."), Script(text="SCORES: aggressor=3 defender=4")
    )
    page.click("#retry-button")
    page.wait_for_url(re.compile(r"/battles/[0-9a-f-]{36}/$"))
    assert battle_id not in page.url
    expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "finished", timeout=BATTLE_TIMEOUT_MS
    )


def test_the_page_says_the_verdict_is_coming_while_the_moderator_writes_it(
    page: Page, server: LiveServer, provider: OpenAIServer
) -> None:
    last_turn = "SCORES: aggressor=3 defender=4\nWINNER: defender\nFINAL SCORES: aggressor=3 defender=4"
    # The structured verdict request hangs until released.
    provider.queue(
        Script(text="Attack."),
        Script(text="Defence."),
        Script(text=last_turn),
        Script(stall_after=0, stall_headers=True),
    )
    battle_id = server.create_battle(ESSAY, rounds=1, **{f"{role}_model": "openai/fake" for role in ROLES})

    page.goto(f"{server.url}/battles/{battle_id}/")

    expect(page.locator("#verdict-pending")).to_be_visible(timeout=BATTLE_TIMEOUT_MS)
    expect(page.locator("#verdict")).to_be_hidden()
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "live")
    provider.release_stalls()
    expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "finished", timeout=BATTLE_TIMEOUT_MS
    )
    expect(page.locator("#verdict-pending")).to_be_hidden()
    expect(page.locator("#verdict-winner")).to_contain_text("Defender wins")


def test_the_page_reconnects_when_the_stream_drops_and_ends_complete(page: Page, server: LiveServer) -> None:
    proxy = CuttableProxy(server.port)
    try:
        battle_id = server.create_battle(ESSAY, rounds=1)
        page.goto(f"{proxy.url}/battles/{battle_id}/")
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live")
        # Wait until the Aggressor is mid-turn, then drop every connection.
        expect(page.locator("#panel-aggressor .turn-text")).to_contain_text("Round 1.")

        proxy.cut()

        expect(page.locator("#connection-status")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#connection-status")).to_have_attribute(
            "data-state", "finished", timeout=BATTLE_TIMEOUT_MS
        )
        assert_panels_match(page, transcript(server, battle_id))
        assert proxy.cuts == 1
    finally:
        proxy.close()


def test_staff_replay_a_finished_battle_at_high_speed(page: Page, server: LiveServer) -> None:
    battle_id = server.create_battle(ESSAY, rounds=1)
    httpx.get(f"{server.url}/battles/{battle_id}/events", timeout=60)  # watch it to its end
    username, password = server.create_staff_user()

    page.goto(f"{server.url}/admin/battles/battle/{battle_id}/change/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.click("#replay-button")
    page.wait_for_url(re.compile(rf"/admin/battles/battle/{battle_id}/replay/"))
    page.select_option("#replay-speed", "50")

    expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "finished", timeout=BATTLE_TIMEOUT_MS
    )
    data = transcript(server, battle_id)
    expect(page.locator("#verdict")).to_be_visible()
    expect(page.locator("#verdict-summary")).to_have_text(data["verdict"]["summary"])
    assert_panels_match(page, data)


def test_the_replay_page_needs_staff(page: Page, server: LiveServer) -> None:
    battle_id = server.create_battle(ESSAY, rounds=1)
    httpx.get(f"{server.url}/battles/{battle_id}/events", timeout=60)
    page.goto(f"{server.url}/admin/battles/battle/{battle_id}/replay/")
    assert "/admin/login/" in page.url
    expect(page.locator("#panel-aggressor")).to_have_count(0)


def test_a_turn_cut_off_by_a_crash_is_shown_once_as_rerun(
    page: Page, server: LiveServer, live_database: LiveDatabase, tmp_path: Path
) -> None:
    """runbattle is killed mid-turn; the server takes the battle over (no spectator needed), and the
    page, fed a log with a cut-off turn and its rerun, ends showing each turn once, complete."""
    essay = tmp_path / "essay.md"
    essay.write_text(ESSAY)
    env = {
        **base_env(),
        "DATABASE_URL": live_database.url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "ARENA_SPARRING_DELAY_MS": "15",
        "ARENA_LEASE_SECONDS": "1",  # its lease runs out a second after it dies
    }
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "runbattle", str(essay), "--rounds", "1", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert runner.stdout is not None
        lines = Lines(runner.stdout)
        battle_id = json.loads(lines.next(what="battle.started"))["data"]["battle_id"]
        while True:  # each line has a deadline; the battle has fewer lines than that
            event = json.loads(lines.next(what="the Defender's first token"))
            if event["event"] == "token" and event["data"]["turn"] == 2:
                break  # the Defender is speaking
        runner.kill()
    finally:
        runner.kill()
        runner.wait()

    page.goto(f"{server.url}/battles/{battle_id}/")
    expect(page.locator("#connection-status")).to_have_attribute(
        "data-state", "finished", timeout=BATTLE_TIMEOUT_MS
    )

    log = server.stored_log(battle_id)
    assert [data["turn"] for _, type_, data in log if type_ == "turn.interrupted"] == [2]
    data = transcript(server, battle_id)
    assert [t["turn"] for t in data["turns"]] == [1, 2, 3]
    assert_panels_match(page, data)  # the Defender's panel holds one turn: the rerun, complete
