"""The turn loop against the sparring model (through litellm), and against a real HTTP provider."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from asgiref.sync import sync_to_async

from battles import events, selectors, services
from battles.engine import BattleRun, run_battle
from battles.engine.verdict import VERDICT_SCHEMA
from battles.events import RecordedEvent
from battles.exceptions import BattleStateError
from battles.models import Battle, Event, Turn
from battles.providers import llm
from tests.support.documents import ESSAY
from tests.support.logs import assert_consistent, stored_events
from tests.support.openai_server import Script, count_prompt_tokens
from tests.support.runs import OTHER, abandoned_mid_turn

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ["aggressor", "defender", "moderator"]


async def run(battle: Battle) -> tuple[Battle, list[RecordedEvent], list[RecordedEvent]]:
    """Run a battle; return it reloaded, the events the listener saw, and the stored log."""
    heard: list[RecordedEvent] = []
    finished = await run_battle(battle.pk, listeners=[heard.extend])
    return finished, heard, await sync_to_async(stored_events)(finished.pk)


def assert_log_invariants(log: list[RecordedEvent], rounds: int) -> None:
    """The event contract: order, gapless seqs, and tokens that add up to each turn's content."""
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert all(a.offset_ms <= b.offset_ms for a, b in zip(log, log[1:], strict=False))
    assert log[0].type == events.BATTLE_STARTED
    assert [e.type for e in log[-2:]] == [events.VERDICT, events.BATTLE_COMPLETED]
    assert all(e.type in events.TYPES for e in log)

    started = [e.data for e in log if e.type == events.TURN_STARTED]
    assert [(s["turn"], s["round"], s["role"]) for s in started] == [
        (i * 3 + j + 1, i + 1, role) for i in range(rounds) for j, role in enumerate(ROLES)
    ]
    texts: dict[int, str] = defaultdict(str)
    current = None
    for event in log:
        if event.type == events.TURN_STARTED:
            current = event.data["turn"]
        elif event.type == events.TOKEN:
            assert event.data["turn"] == current
            texts[current] += event.data["text"]
        elif event.type == events.TURN_COMPLETED:
            assert event.data["turn"] == current
            assert event.data["content"] == texts[current]
            current = None


async def test_a_battle_runs_to_a_verdict_and_the_log_is_complete(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=2)

    finished, heard, log = await run(battle)

    assert finished.status == Battle.Status.FINISHED
    assert_log_invariants(log, rounds=2)
    assert heard == log  # listeners hear exactly the committed log

    first = log[0].data
    assert first == {
        "battle_id": str(battle.pk),
        "document": {"name": "essay.md", "size": len(ESSAY.encode()), "truncated": False, "flags": []},
        "rounds": 2,
        "agents": [{"role": role, "model": "arena/sparring"} for role in ROLES],
    }

    turns = await sync_to_async(list)(Turn.objects.filter(battle=battle).order_by("index"))
    completed = [e.data for e in log if e.type == events.TURN_COMPLETED]
    assert [t.content for t in turns] == [c["content"] for c in completed]
    assert all(t.status == Turn.Status.COMPLETED and t.finished_at for t in turns)

    # The totals are every turn's usage plus the structured verdict request's.
    usage, verdict_usage = log[-1].data["usage"], log[-2].data["usage"]
    assert verdict_usage["prompt_tokens"] > 0 and verdict_usage["completion_tokens"] > 0
    for kind in ("prompt_tokens", "completion_tokens"):
        assert usage[kind] == sum(c["usage"][kind] for c in completed) + verdict_usage[kind]
    assert (finished.prompt_tokens, finished.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert log[-1].data["cost_usd"] == 0.0  # the sparring model is free
    assert log[-1].data["duration_ms"] >= log[-2].offset_ms

    verdict = log[-2].data
    assert verdict["fallback"] is False
    assert verdict["source"] == "structured" == finished.verdict_source
    assert verdict["winner"] == finished.winner
    assert verdict["scores"] == {"aggressor": finished.aggressor_score, "defender": finished.defender_score}
    assert verdict["summary"] == finished.summary
    moderator_scores = [c["scores"] for c in completed if c["role"] == "moderator"]
    assert all(s and set(s) == {"aggressor", "defender"} for s in moderator_scores)
    assert all(c["scores"] is None for c in completed if c["role"] != "moderator")


async def test_agents_argue_about_the_actual_document(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)
    _, _, log = await run(battle)
    aggressor, defender, _ = [e.data["content"] for e in log if e.type == events.TURN_COMPLETED]
    quotes = re.findall(r'^\d+\. "(.+)"$', aggressor, re.MULTILINE)
    assert quotes and all(q in ESSAY for q in quotes)
    assert re.findall(r'^\d+\. "(.+)"$', defender, re.MULTILINE) == quotes


async def test_a_battle_runs_only_once(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)
    await run_battle(battle.pk)
    with pytest.raises(BattleStateError):
        await run_battle(battle.pk)
    assert await Event.objects.filter(battle=battle, type=events.BATTLE_STARTED).acount() == 1


async def test_turns_are_capped_by_max_tokens_but_not_the_verdict_request(make_battle, settings) -> None:
    settings.ARENA_MAX_TOKENS_PER_TURN = 5
    battle = await sync_to_async(make_battle)(rounds=1)

    finished, _, log = await run(battle)

    assert finished.status == Battle.Status.FINISHED
    tokens_per_turn: dict[int, int] = defaultdict(int)
    for e in log:
        if e.type == events.TOKEN:
            tokens_per_turn[e.data["turn"]] += 1
    assert set(tokens_per_turn.values()) == {5}
    # The verdict is no turn: its structured request is not capped to five tokens, and it holds.
    verdict = log[-2].data
    assert (verdict["source"], verdict["fallback"]) == ("structured", False)
    assert verdict["usage"]["completion_tokens"] > 5
    assert finished.verdict_fallback is False


@pytest.mark.usefixtures("paced_sparring")
async def test_a_taken_over_battle_continues_from_its_last_completed_turn(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle, turn=2)
    assert await sync_to_async(selectors.battles_to_take_over)() == [battle.pk]

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="gone", owner=OTHER)
    progress = await sync_to_async(selectors.battle_progress)(battle=taken)
    await BattleRun(taken, progress=progress, owner=OTHER).run()

    log = await sync_to_async(stored_events)(battle.pk)
    assert_consistent(log, rounds=1)
    interrupted = [e for e in log if e.type == events.TURN_INTERRUPTED]
    assert [e.data for e in interrupted] == [{"turn": 2, "reason": "gone"}]
    # Turn 2 started twice: before the crash, and again after the turn.interrupted that closed it.
    restarts = [e.seq for e in log if e.type == events.TURN_STARTED and e.data["turn"] == 2]
    assert len(restarts) == 2 and restarts[0] < interrupted[0].seq < restarts[1]
    assert [e.type for e in log].count(events.TURN_STARTED) == 4  # turn 1 was not run again

    finished = await Battle.objects.aget(pk=battle.pk)
    assert finished.status == Battle.Status.FINISHED
    assert (finished.takeovers, finished.lease_owner, finished.lease_expires_at) == (1, "", None)
    turns = await sync_to_async(list)(Turn.objects.filter(battle=battle).order_by("index", "started_at"))
    assert [(t.index, t.status) for t in turns] == [
        (1, "completed"),
        (2, "interrupted"),
        (2, "completed"),
        (3, "completed"),
    ]
    # The transcript counts the retried turn once, with its complete text.
    transcript = await sync_to_async(selectors.battle_transcript)(battle=finished)
    assert [(t["turn"], t["status"]) for t in transcript["turns"]] == [
        (1, "completed"),
        (2, "completed"),
        (3, "completed"),
    ]
    completed = {e.data["turn"]: e.data["content"] for e in log if e.type == events.TURN_COMPLETED}
    assert [t["content"] for t in transcript["turns"]] == [completed[1], completed[2], completed[3]]


# --- The real litellm HTTP path, against an OpenAI-compatible server on 127.0.0.1 --------------------

SECRET = "sk-SECRET-fake"


@pytest.fixture
def provider(openai_server, settings):
    """Every role on `openai/fake` served by the local fake server, with no retries unless a test says."""
    settings.ARENA_ROLE_API_BASES = dict.fromkeys(ROLES, openai_server.api_base)
    settings.ARENA_ROLE_API_KEYS = dict.fromkeys(ROLES, "sk-test-key")
    settings.ARENA_PROVIDER_RETRIES = 0
    return openai_server


async def make_http_battle(make_battle, **kwargs) -> Battle:
    return await sync_to_async(make_battle)(rounds=1, **dict.fromkeys(ROLES, "openai/fake"), **kwargs)


def assert_nothing_leaks(battle: Battle, log: list[RecordedEvent]) -> None:
    assert SECRET not in battle.error
    assert all(SECRET not in str(e.data) for e in log)


STRUCTURED_ANSWER = '{"winner": "defender", "aggressor": 5, "defender": 8, "summary": "The survey held."}'


async def test_a_battle_streams_through_a_real_http_provider(make_battle, provider) -> None:

    provider.queue(
        Script(text="I attack the claim that tests always pay."),
        Script(text="They do, as the survey shows."),
        Script(
            text="SCORES: aggressor=6 defender=7\nWINNER: defender\nFINAL SCORES: aggressor=6 defender=7\n"
            "SUMMARY: The survey carried the day."
        ),
        # The structured verdict request, answered as a model bound by the schema would.
        Script(text=STRUCTURED_ANSWER),
    )
    battle = await make_http_battle(make_battle)

    finished, _, log = await run(battle)

    assert finished.status == Battle.Status.FINISHED
    assert_log_invariants(log, rounds=1)
    completed = [e.data for e in log if e.type == events.TURN_COMPLETED]
    assert completed[1]["content"] == "They do, as the survey shows."
    assert completed[2]["scores"] == {"aggressor": 6.0, "defender": 7.0}
    verdict_request = provider.requests[3]
    assert log[-2].data == {
        "winner": "defender",
        "scores": {"aggressor": 5.0, "defender": 8.0},
        "summary": "The survey held.",
        "fallback": False,
        "source": "structured",
        # Neither side quoted the document.
        "evidence": {side: {"verified": 0, "unverified": 0} for side in ("aggressor", "defender")},
        # The fake server reports usage as words plus overhead: this is the provider's count.
        "usage": {
            "prompt_tokens": count_prompt_tokens(verdict_request),
            "completion_tokens": len(STRUCTURED_ANSWER.split()),
        },
    }
    assert verdict_request["response_format"]["type"] == "json_schema"
    assert verdict_request["response_format"]["json_schema"]["schema"] == VERDICT_SCHEMA
    assert "You are the Moderator" in verdict_request["messages"][0]["content"]
    assert "SUMMARY: The survey carried the day." in verdict_request["messages"][1]["content"]
    # Usage is the provider's own (the fake server reports words + overhead, not litellm's estimate).
    assert completed[1]["usage"]["completion_tokens"] == 6
    assert log[-1].data["cost_usd"] is None  # no price is known for this model
    assert finished.cost_usd is None

    # What the provider received: our system prompt, the framed document, the key and the caps.
    request = provider.requests[0]
    assert request["model"] == "fake"
    assert request["stream"] is True and request["max_tokens"] == 400
    assert "You are the Aggressor" in request["messages"][0]["content"]
    assert "<<<DOCUMENT" in request["messages"][1]["content"]
    assert "Automated tests always pay for themselves" in request["messages"][1]["content"]


UNSUPPORTED = Script(status=400, error_message="response_format is not supported")
OUT_OF_RANGE = '{"winner": "defender", "aggressor": 15, "defender": 8, "summary": "s"}'


@pytest.mark.parametrize(
    ("answers", "styles"),
    [
        ([Script(text="I think the defender won, more or less.")], ["json_schema"]),  # not JSON
        ([Script(text=OUT_OF_RANGE)], ["json_schema"]),
        (
            [Script(text='{"winner": "defender", "aggressor": 5, "defen', break_after=6, break_clean=True)],
            ["json_schema"],  # cut off while answering: not asked again
        ),
        ([UNSUPPORTED, UNSUPPORTED], ["json_schema", "json_object"]),  # refused both ways
    ],
    ids=["prose", "out-of-range", "cut-off", "unsupported"],
)
async def test_without_a_usable_structured_verdict_it_is_read_from_the_last_turn(
    make_battle, provider, answers, styles
) -> None:
    provider.queue(
        Script(text="An attack."),
        Script(text="A defence."),
        Script(text="SCORES: aggressor=6 defender=7\nWINNER: defender\nFINAL SCORES: aggressor=6 defender=7"),
        *answers,
    )
    battle = await make_http_battle(make_battle)

    finished, _, log = await run(battle)

    assert finished.status == Battle.Status.FINISHED
    assert [r["response_format"]["type"] for r in provider.requests[3:]] == styles
    verdict = log[-2].data
    assert (verdict["winner"], verdict["scores"]) == ("defender", {"aggressor": 6.0, "defender": 7.0})
    # No SUMMARY line: that part is derived, and the verdict says so.
    assert (verdict["source"], verdict["fallback"]) == ("text", True)
    assert (finished.verdict_source, finished.verdict_fallback) == ("text", True)


async def test_a_stream_cut_off_mid_turn_fails_the_battle_and_keeps_the_partial_text(
    make_battle, provider
) -> None:

    provider.queue(Script(text="A complete attack."), Script(text="One two three four five", break_after=3))
    battle = await make_http_battle(make_battle)

    finished, _, log = await run(battle)

    assert finished.status == Battle.Status.FAILED
    assert log[-1].type == events.BATTLE_FAILED
    assert log[-1].data == {
        "error": "The model's answer was cut off: its stream ended early.",
        "retryable": True,
    }
    assert finished.error == log[-1].data["error"]
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    partial = "".join(e.data["text"] for e in log if e.type == events.TOKEN and e.data["turn"] == 2)
    assert partial == "One two three "
    turns = await sync_to_async(list)(Turn.objects.filter(battle=battle).order_by("index"))
    assert [(t.status, t.content) for t in turns] == [
        (Turn.Status.COMPLETED, "A complete attack."),
        (Turn.Status.INTERRUPTED, "One two three "),
    ]
    assert_nothing_leaks(finished, log)


async def test_a_stream_with_no_content_at_all_counts_as_cut_off(make_battle, provider) -> None:

    provider.queue(Script(break_after=0, break_clean=True))
    battle = await make_http_battle(make_battle)

    finished, _, log = await run(battle)

    assert finished.status == Battle.Status.FAILED
    assert "cut off" in log[-1].data["error"]


@pytest.mark.parametrize(
    "status, message, retryable",
    [
        (500, "The model provider had an internal error.", True),
        (429, "The model provider is rate-limiting requests; try again shortly.", True),
        (401, "The model provider rejected the credentials (check the API key).", False),
        (404, "The model was not found at the provider (check the model name).", False),
    ],
)
async def test_provider_errors_end_the_battle_with_a_readable_secret_free_message(
    make_battle, provider, status: int, message: str, retryable: bool
) -> None:

    provider.queue(Script(status=status))
    battle = await make_http_battle(make_battle)

    finished, _, log = await run(battle)

    assert finished.status == Battle.Status.FAILED
    assert [e.type for e in log] == [events.BATTLE_STARTED, events.TURN_STARTED, events.BATTLE_FAILED]
    assert log[-1].data == {"error": message, "retryable": retryable}
    assert_nothing_leaks(finished, log)


async def test_transient_errors_before_the_first_token_are_retried(make_battle, provider, settings) -> None:

    settings.ARENA_PROVIDER_RETRIES = 1
    provider.queue(Script(status=429), Script(text="Second time lucky."))
    battle = await make_http_battle(make_battle)

    _, _, log = await run(battle)

    first = next(e.data for e in log if e.type == events.TURN_COMPLETED)
    assert first["content"] == "Second time lucky."
    assert len(provider.requests) == 5  # the 429, its retry, the next two turns, the verdict request


@pytest.mark.parametrize("stall_after, partial", [(0, ""), (2, "Words then ")])
async def test_a_silent_provider_times_out(
    make_battle, provider, settings, stall_after: int, partial: str
) -> None:

    settings.ARENA_FIRST_TOKEN_TIMEOUT_SECONDS = 0.5
    settings.ARENA_IDLE_TIMEOUT_SECONDS = 0.5
    provider.queue(Script(text="Words then silence here", stall_after=stall_after, stall_seconds=10))
    battle = await make_http_battle(make_battle)

    finished, _, log = await run(battle)
    provider.release_stalls()

    assert finished.status == Battle.Status.FAILED
    assert log[-1].data == {"error": "The model stopped answering (timed out).", "retryable": True}
    assert "".join(e.data["text"] for e in log if e.type == events.TOKEN) == partial


async def test_a_document_too_long_for_the_context_is_truncated_with_a_note(
    make_battle, provider, settings
) -> None:
    settings.ARENA_DEFAULT_CONTEXT_TOKENS = 10_000
    long_text = "\n".join(f"Sentence number {i} makes a claim about testing." for i in range(2000))
    battle = await make_http_battle(make_battle, text=long_text, name="long.txt")

    _, _, log = await run(battle)

    assert log[0].data["document"]["truncated"] is True
    user_message = provider.requests[0]["messages"][1]["content"]
    assert "[Truncated: the document is" in user_message
    assert "Sentence number 0 makes" in user_message
    assert "Sentence number 1999 makes" not in user_message
    # An unmapped model's tokens are counted with another tokenizer: a fifth of its context is slack.
    for request in provider.requests:
        prompt = llm.count_message_tokens("openai/fake", request["messages"])
        assert prompt + request["max_tokens"] <= 0.8 * 10_000


async def test_half_an_emoji_from_a_provider_is_replaced_not_fatal(make_battle, provider) -> None:

    provider.queue(
        Script(text="I attack \ud83d here."),
        Script(text="Fine."),
        Script(text="SCORES: aggressor=1 defender=2"),
    )
    battle = await make_http_battle(make_battle)

    finished, _, log = await run(battle)

    assert finished.status == Battle.Status.FINISHED
    assert_log_invariants(log, rounds=1)
    first = next(e.data for e in log if e.type == events.TURN_COMPLETED)
    assert first["content"] == "I attack \ufffd here."


async def test_a_provider_that_refuses_json_schema_is_asked_in_json_mode_from_then_on(
    make_battle, provider
) -> None:
    """llama-cpp-python's server rejects OpenAI's json_schema but enforces JSON mode with a schema."""
    turns = [Script(text="An attack."), Script(text="A defence."), Script(text="SCORES: aggressor=6")]
    answer = Script(text=STRUCTURED_ANSWER)
    provider.queue(*turns, UNSUPPORTED, answer, *turns, answer)

    first, _, first_log = await run(await make_http_battle(make_battle))
    second, _, second_log = await run(await make_http_battle(make_battle))

    for finished, log in ((first, first_log), (second, second_log)):
        assert finished.status == Battle.Status.FINISHED
        assert (log[-2].data["source"], log[-2].data["winner"]) == ("structured", "defender")
    formats = [r["response_format"] for r in provider.requests if "response_format" in r]
    assert [f["type"] for f in formats] == ["json_schema", "json_object", "json_object"]
    assert formats[1]["schema"] == VERDICT_SCHEMA
