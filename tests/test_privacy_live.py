"""Privacy against a real daphne process: unlisted battles, the owner's delete of a battle people are
watching, and the daily retention purge."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.documents import ESSAY
from tests.support.live import LiveDatabase, LiveServer
from tests.support.sse_client import Message, Parser
from tests.support.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.e2e

STREAM_TIMEOUT = httpx.Timeout(60.0)
DELETED = {"error": "Deleted by its owner.", "retryable": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, live_database: LiveDatabase) -> Iterator[LiveServer]:
    # Slow enough that a three-round battle is still running when its owner deletes it.
    with LiveServer(tmp_path_factory.mktemp("privacy"), live_database, ARENA_SPARRING_DELAY_MS="20") as live:
        yield live


def csrf_token(client: httpx.Client, path: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(path).text)
    assert found, f"{path} has no form"
    return found.group(1)


def upload(client: httpx.Client, *, rounds: int = 1, **fields: str) -> str:
    """Upload through the real form as this browser (its cookies kept); the new battle's id."""
    response = client.post(
        "/battles/",
        data={"csrfmiddlewaretoken": csrf_token(client, "/"), "rounds": str(rounds), **fields},
        files={"file": ("business-plan.md", ESSAY.encode(), "text/markdown")},
        headers={"Referer": str(client.base_url) + "/"},
    )
    assert response.status_code == 303, response.text
    return response.headers["Location"].rstrip("/").split("/")[-1]


def post_form(client: httpx.Client, battle_id: str, action: str, **fields: str) -> httpx.Response:
    arena = f"/battles/{battle_id}/"
    return client.post(
        f"{arena}{action}",
        data={"csrfmiddlewaretoken": csrf_token(client, arena), **fields},
        headers={"Referer": str(client.base_url) + arena},
    )


def browser(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def stored_files(server: LiveServer) -> set[Path]:
    return {p for p in (server.folder / "media").rglob("*") if p.is_file()}


def test_a_second_browser_never_finds_an_unlisted_battle(server: LiveServer) -> None:
    with browser(server) as owner, browser(server) as stranger:
        unlisted = upload(owner)
        public = upload(owner, public="on")

        home = stranger.get("/").text
        assert f"/battles/{public}/" in home and unlisted not in home
        page = stranger.get(f"/battles/{unlisted}/")
        assert page.status_code == 200 and page.headers["X-Robots-Tag"] == "noindex, nofollow"
        assert "business-plan" not in page.text.split("</head>")[0]
        assert 'id="owner-controls"' not in page.text
        assert post_form(stranger, unlisted, "delete").status_code == 403
        assert 'id="owner-controls"' in owner.get(f"/battles/{unlisted}/").text


async def watch(server: LiveServer, battle_id: str, seen: list[Message]) -> httpx.Response:
    """Follow the stream until the server closes it, appending each message to `seen`."""
    parser = Parser()
    async with (
        httpx.AsyncClient(timeout=STREAM_TIMEOUT) as client,
        client.stream("GET", f"{server.url}/battles/{battle_id}/events") as response,
    ):
        async for text in response.aiter_text():
            seen += parser.feed(text)
    return response


async def test_the_owner_deletes_a_battle_while_people_watch(server: LiveServer) -> None:
    with browser(server) as owner:
        battle_id = upload(owner, rounds=3)
        files_before = stored_files(server)
        watchers: list[list[Message]] = [[], []]
        streams = [asyncio.create_task(watch(server, battle_id, seen)) for seen in watchers]
        await async_wait_for(
            lambda: all(any(m.event == "token" for m in seen) for seen in watchers),
            what="both spectators to see the battle under way",
        )

        response = await asyncio.to_thread(post_form, owner, battle_id, "delete")

        assert (response.status_code, response.headers["Location"]) == (303, "/")
        await asyncio.wait_for(asyncio.gather(*streams), timeout=30)  # both streams closed
        for seen in watchers:
            logged = [m for m in seen if m.id is not None]
            assert (logged[-1].event, logged[-1].json()) == ("battle.failed", DELETED)
            assert [int(m.id) for m in logged] == list(range(1, len(logged) + 1))
        assert server.battle_status(battle_id) is None
        assert server.stored_log(battle_id) == []
        assert len(files_before - stored_files(server)) == 1  # its upload
        for path in ("", "events", "document.txt", "transcript.json"):
            assert owner.get(f"/battles/{battle_id}/{path}").status_code == 404, path


def media_files(media: Path) -> set[str]:
    return {str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()}


def test_the_daily_purge_deletes_expired_battles_when_the_server_starts(
    tmp_path: Path, live_database: LiveDatabase
) -> None:
    media = tmp_path / "media"
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    with (
        LiveServer(tmp_path / "first", live_database, MEDIA_ROOT=str(media)) as first,
        browser(first) as owner,
    ):
        old, recent = upload(owner), upload(owner)
    for battle_id, days in ((old, 3), (recent, 0)):
        then = datetime.now(UTC) - timedelta(days=days, minutes=1)
        live_database.execute(
            "UPDATE battles_battle SET status = 'failed', created_at = %s, finished_at = %s WHERE id = %s",
            [then, then, uuid.UUID(battle_id)],
        )
    assert len(media_files(media)) == 2

    with LiveServer(tmp_path / "second", live_database, MEDIA_ROOT=str(media), ARENA_RETENTION_DAYS="1"):
        # Its first request (the start-up check) started the supervisor, which purges at once.
        wait_for(lambda: live_database.battle_status(old) is None, what="the purge at start-up")
        wait_for(lambda: len(media_files(media)) == 1, what="the old battle's file to go")
        assert live_database.battle_status(recent) == "failed"
        [(kept,)] = live_database.fetch(
            "SELECT d.file FROM battles_document d JOIN battles_battle b ON b.document_id = d.id "
            "WHERE b.id = %s",
            [uuid.UUID(recent)],
        )
        assert media_files(media) == {kept}
