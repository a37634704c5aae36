"""The live arena against a real daphne process, with real HTTP clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.documents import ESSAY
from tests.support.live import ROOT, LiveDatabase, LiveServer, provider_env
from tests.support.openai_server import OpenAIServer, Script
from tests.support.sse_client import Message, Parser
from tests.support.waiting import Lines

pytestmark = pytest.mark.e2e

STREAM_TIMEOUT = httpx.Timeout(60.0)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, live_database: LiveDatabase, provider: OpenAIServer
) -> Iterator[LiveServer]:
    with LiveServer(
        tmp_path_factory.mktemp("live"),
        live_database,
        ARENA_SPARRING_DELAY_MS="2",
        ARENA_SSE_HEARTBEAT_SECONDS="0.3",
        **provider_env(provider.api_base),
    ) as live:
        yield live


async def spectate(
    server: LiveServer,
    battle_id: str,
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    stop_after: int = 0,
) -> tuple[list[Message], Parser, httpx.Response]:
    """Watch a battle; stop after `stop_after` logged events (0: until the server closes the stream)."""
    parser = Parser()
    messages: list[Message] = []
    async with (
        httpx.AsyncClient(timeout=STREAM_TIMEOUT) as client,
        client.stream("GET", f"{server.url}/battles/{battle_id}/events{query}", headers=headers) as response,
    ):
        async for text in response.aiter_text():
            messages += parser.feed(text)
            if stop_after and len(logged(messages)) >= stop_after:
                break
    return messages, parser, response


def logged(messages: list[Message]) -> list[tuple[int, str, object]]:
    """The messages that are log events (they carry an id), as (seq, type, data)."""
    return [(int(m.id), m.event, m.json()) for m in messages if m.id is not None]


async def test_every_spectator_receives_exactly_the_stored_log(server: LiveServer) -> None:
    battle_id = server.create_battle(ESSAY, rounds=2)

    results = await asyncio.gather(*(spectate(server, battle_id) for _ in range(5)))

    stored = server.stored_log(battle_id)
    assert stored[-1][1] == "battle.completed"
    for messages, _, _ in results:
        assert logged(messages) == stored
    counts = [m.json()["count"] for messages, _, _ in results for m in messages if m.event == "spectators"]
    assert counts and all(1 <= c <= 5 for c in counts)


async def test_a_spectator_cut_off_mid_battle_resumes_with_nothing_lost_or_repeated(
    server: LiveServer,
) -> None:
    battle_id = server.create_battle(ESSAY, rounds=2)

    first, parser, _ = await spectate(server, battle_id, stop_after=40)
    resumed, _, _ = await spectate(server, battle_id, headers={"Last-Event-ID": parser.last_event_id})

    seen = logged(first) + logged(resumed)
    assert int(parser.last_event_id) >= 40
    assert seen == server.stored_log(battle_id)  # complete, in order, no duplicates


async def test_resume_works_with_the_query_parameter_and_after_the_battle_is_over(server: LiveServer) -> None:
    battle_id = server.create_battle(ESSAY, rounds=1)
    whole, _, _ = await spectate(server, battle_id)
    stored = server.stored_log(battle_id)
    assert logged(whole) == stored

    rest, _, _ = await spectate(server, battle_id, query="?last_event_id=10")
    assert logged(rest) == stored[10:]
    nothing, parser, _ = await spectate(server, battle_id, headers={"Last-Event-ID": str(len(stored))})
    assert logged(nothing) == [] and parser.retry == 2000


async def test_the_model_is_called_once_per_turn_however_many_watch(
    server: LiveServer, provider: OpenAIServer
) -> None:
    provider.queue(
        Script(text="An attack in several words.", chunk_delay=0.02),
        Script(text="A defence in several words.", chunk_delay=0.02),
        Script(text="SCORES: aggressor=4 defender=6", chunk_delay=0.02),
    )
    before = len(provider.requests)
    battle_id = on_fake_model(server)

    results = await asyncio.gather(*(spectate(server, battle_id) for _ in range(8)))

    assert len(provider.requests) - before == 4  # three turns and the verdict request
    stored = server.stored_log(battle_id)
    assert all(logged(messages) == stored for messages, _, _ in results)
    assert [d["content"] for _, t, d in stored if t == "turn.completed"] == [
        "An attack in several words.",
        "A defence in several words.",
        "SCORES: aggressor=4 defender=6",
    ]


def on_fake_model(server: LiveServer) -> str:
    """A one-round battle whose three agents call the local OpenAI-compatible server."""
    fake = {f"{role}_model": "openai/fake" for role in ("aggressor", "defender", "moderator")}
    return server.create_battle(ESSAY, rounds=1, **fake)


async def test_headers_and_framing(server: LiveServer) -> None:
    battle_id = server.create_battle(ESSAY, rounds=1)
    async with (
        httpx.AsyncClient(timeout=STREAM_TIMEOUT) as client,
        client.stream("GET", f"{server.url}/battles/{battle_id}/events") as response,
    ):
        raw = "".join([text async for text in response.aiter_text()])

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert raw.startswith("retry: 2000\n\n")
    blocks = [b for b in raw.split("\n\n") if b and not b.startswith(("retry:", ":"))]
    stored = server.stored_log(battle_id)
    event_blocks = [b for b in blocks if b.startswith("id: ")]
    assert len(event_blocks) == len(stored)
    for block, (seq, type_, data) in zip(event_blocks, stored, strict=True):
        lines = block.split("\n")
        assert lines[0] == f"id: {seq}"
        assert lines[1] == f"event: {type_}"
        assert lines[2].startswith("data: ") and len(lines) == 3
        assert json.loads(lines[2].removeprefix("data: ")) == data


async def test_a_heartbeat_goes_out_while_nothing_else_does(
    server: LiveServer, provider: OpenAIServer
) -> None:
    provider.queue(Script(text="Slow words arrive here", chunk_delay=0.5))
    provider.queue(Script(text="Fine."), Script(text="SCORES: aggressor=5 defender=5"))
    battle_id = on_fake_model(server)

    _, parser, _ = await spectate(server, battle_id)

    assert "ping" in parser.comments


async def test_a_battle_runs_to_its_end_when_every_spectator_leaves(server: LiveServer) -> None:
    battle_id = server.create_battle(ESSAY, rounds=2)

    first, _, _ = await spectate(server, battle_id, stop_after=3)  # starts it, then leaves
    assert logged(first)[0][1] == "battle.started"
    later, _, _ = await spectate(server, battle_id)  # reads until the server ends the stream

    assert logged(later)[-1][1] == "battle.completed"
    assert logged(later) == server.stored_log(battle_id)
    assert server.battle_status(battle_id) == "finished"


async def test_unknown_battles_and_bad_ids_are_refused(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        missing = await client.get("/battles/00000000-0000-0000-0000-000000000000/events")
        assert missing.status_code == 404
        battle_id = server.create_battle(ESSAY)
        bad = await client.get(f"/battles/{battle_id}/events", headers={"Last-Event-ID": "abc"})
        assert bad.status_code == 400
    assert server.battle_status(battle_id) == "pending"  # refusing a stream does not start the battle


def test_a_battle_run_from_the_terminal_can_be_watched_live(server: LiveServer, tmp_path: Path) -> None:
    document = tmp_path / "essay.md"
    document.write_text(ESSAY)
    env = {**server.env, "ARENA_SPARRING_DELAY_MS": "15"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runbattle", str(document), "--rounds", "1", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    # battle.started is committed: the battle is running.
    first = json.loads(Lines(process.stdout).next(what="battle.started"))
    battle_id = first["data"]["battle_id"]

    messages, _, _ = asyncio.run(spectate(server, battle_id))

    assert process.wait(timeout=120) == 0
    assert logged(messages) == server.stored_log(battle_id)
    assert logged(messages)[-1][1] == "battle.completed"


async def test_two_servers_on_one_database_serve_the_same_battle(
    tmp_path_factory: pytest.TempPathFactory, live_database: LiveDatabase
) -> None:
    first = LiveServer(tmp_path_factory.mktemp("first"), live_database, ARENA_SPARRING_DELAY_MS="5")
    second = LiveServer(tmp_path_factory.mktemp("second"), live_database)
    try:
        with ThreadPoolExecutor(2) as pool:  # started side by side: each start is mostly imports
            list(pool.map(LiveServer.start, (first, second)))
        battle_id = first.create_battle(ESSAY, rounds=1)
        started, _, _ = await spectate(first, battle_id, stop_after=3)  # it runs in the first server
        followed, _, _ = await spectate(second, battle_id)  # the second follows it through the log

        assert logged(started)[0][1] == "battle.started"
        assert logged(followed) == live_database.stored_log(battle_id)
        assert logged(followed)[-1][1] == "battle.completed"
        assert first.terminate(timeout=10) == 0  # SIGTERM: daphne shuts down cleanly
        second.kill()
        assert second.process is not None and second.process.returncode == -9
    finally:
        first.stop()
        second.stop()
