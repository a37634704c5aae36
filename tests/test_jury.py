"""The jury (battles.engine.jury): each juror judges both orders, an inconsistent juror is a draw,
the majority decides; and the offline jurors arena/sparring and arena/rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async

from battles import events, selectors, services
from battles.engine import run_battle
from battles.engine.jury import ORDERS, JurorVote, juror_vote, parse_juror_answer, tally_votes
from battles.engine.prompts import JUROR_EVIDENCE_LINE, FramedDocument, TranscriptEntry, build_juror_messages
from battles.engine.verdict import Scores, Verdict
from battles.evidence.citations import Citation
from battles.models import Battle
from battles.providers import llm, rules_juror
from battles.providers.sparring import juror as sparring_juror
from tests.support.documents import ESSAY
from tests.support.logs import stored_events
from tests.support.openai_server import OpenAIServer, Script

ROLES = ("aggressor", "defender", "moderator")
A_WINS = Verdict("aggressor", Scores(7, 3), "", False)
D_WINS = Verdict("defender", Scores(2, 8), "", False)


# --- Votes and their tally ----------------------------------------------------------------------


@pytest.mark.one_pass
def test_a_juror_whose_verdict_holds_in_both_orders_votes_for_it() -> None:
    assert juror_vote("m", [D_WINS, D_WINS]) == JurorVote("m", "defender", Scores(2, 8), True)


@pytest.mark.one_pass
def test_a_juror_whose_verdict_changes_with_the_order_is_a_draw() -> None:
    vote = juror_vote("m", [A_WINS, D_WINS])
    assert (vote.winner, vote.consistent, vote.scores, vote.answered) == (
        "draw",
        False,
        Scores(4.5, 5.5),
        True,
    )


@pytest.mark.one_pass
def test_a_juror_that_gave_no_verdict_in_one_order_is_a_draw() -> None:
    vote = juror_vote("m", [D_WINS, None])
    assert (vote.winner, vote.consistent) == ("draw", False)
    assert vote.answered is False
    assert juror_vote("m", [None, None]) == JurorVote("m", "draw", None, False, answered=False)


@pytest.mark.one_pass
@pytest.mark.parametrize(
    ("winners", "winner", "agreement"),
    [
        (["defender", "defender"], "defender", 1.0),
        (["aggressor", "aggressor", "defender"], "aggressor", 0.667),
        (["aggressor", "defender"], "draw", 0.0),  # a tie is a draw
        (["aggressor", "draw", "draw"], "draw", 0.667),
        (["defender", "draw", "aggressor"], "draw", 0.333),
    ],
)
def test_the_majority_decides_and_a_tie_is_a_draw(winners: list[str], winner: str, agreement: float) -> None:
    verdict = tally_votes([JurorVote(f"m{i}", w, Scores(5, 5), True) for i, w in enumerate(winners)])
    assert (verdict.winner, verdict.agreement) == (winner, agreement)


@pytest.mark.one_pass
def test_the_jurys_scores_are_those_of_the_jurors_who_voted_for_the_winner() -> None:
    votes = [
        JurorVote("a", "aggressor", Scores(7, 3), True),
        JurorVote("b", "aggressor", Scores(8, 2), True),
        JurorVote("c", "defender", Scores(2, 9), True),
    ]
    assert tally_votes(votes).scores == Scores(7.5, 2.5)
    # A tie between the sides: a draw nobody voted for, scored by everyone.
    assert tally_votes(votes[1:]).scores == Scores(5.0, 5.5)
    # A draw voted for: its voters' scores, never a side ahead.
    draw = tally_votes(
        [JurorVote("a", "draw", Scores(6, 6), True), votes[0], JurorVote("d", "draw", None, False)]
    )
    assert (draw.winner, draw.scores) == ("draw", Scores(6, 6))


@pytest.mark.one_pass
def test_a_jurors_answer_is_mapped_back_to_roles_in_either_order() -> None:
    answer = '{"winner": "side_a", "side_a": 8, "side_b": 3, "summary": "A argued better."}'
    first = parse_juror_answer(answer, dict(zip(("side_a", "side_b"), ORDERS[0], strict=True)))
    second = parse_juror_answer(answer, dict(zip(("side_a", "side_b"), ORDERS[1], strict=True)))
    assert first is not None and second is not None
    assert (first.winner, first.scores) == ("aggressor", Scores(aggressor=8, defender=3))
    assert (second.winner, second.scores) == ("defender", Scores(aggressor=3, defender=8))
    # Not JSON: a WINNER line is still a vote (without scores); nothing readable is none.
    loose = parse_juror_answer(
        "After weighing it all, WINNER: Side B.", {"side_a": "aggressor", "side_b": "defender"}
    )
    assert loose is not None and (loose.winner, loose.scores) == ("defender", None)
    assert parse_juror_answer("I cannot decide.", {"side_a": "aggressor", "side_b": "defender"}) is None


# --- What a juror is shown ------------------------------------------------------------------------

TRANSCRIPT = [
    TranscriptEntry(1, "aggressor", "Attack one.", (Citation("q1", True, 3, 3), Citation("made up", False))),
    TranscriptEntry(1, "defender", "Defence one.", (Citation("q1", True, 3, 3),)),
    TranscriptEntry(1, "moderator", "SCORES: aggressor=5 defender=5"),
    TranscriptEntry(2, "aggressor", "Attack two.", (Citation("q2", True, 5, 5),)),
    TranscriptEntry(2, "defender", "Defence two."),
    TranscriptEntry(2, "moderator", "SCORES: aggressor=6 defender=4"),
]
DOCUMENT = FramedDocument(block="<<<DOCUMENT n>>>\ntext\n<<<END DOCUMENT n>>>", tokens=10, truncated=False)


def juror_messages(
    order: tuple[str, str],
    document: FramedDocument = DOCUMENT,
    transcript: list[TranscriptEntry] = TRANSCRIPT,
) -> list[dict[str, str]]:
    return build_juror_messages(
        order=order,
        document=document,
        transcript=transcript,
        context_tokens=8000,
        max_tokens=300,
        count_tokens=lambda text: len(text.split()),
    )


def juror_prompt(order: tuple[str, str]) -> str:
    messages = juror_messages(order)
    assert "You are a juror" in messages[0]["content"]
    return messages[1]["content"]


@pytest.mark.one_pass
@pytest.mark.parametrize("order", ORDERS)
def test_a_juror_sees_side_a_first_in_every_round_and_no_moderator(order: tuple[str, str]) -> None:
    prompt = juror_prompt(order)
    side_a, side_b = ("Attack", "Defence") if order[0] == "aggressor" else ("Defence", "Attack")
    headers = re.findall(r"^\[Round (\d) · (Side A|Side B)\]\n(\w+)", prompt, re.MULTILINE)
    assert headers == [
        ("1", "Side A", side_a),
        ("1", "Side B", side_b),
        ("2", "Side A", side_a),
        ("2", "Side B", side_b),
    ]
    assert (
        "SCORES:" not in prompt
        and "Moderator" not in prompt.split("Task:")[0].split("<<<END DOCUMENT n>>>")[1]
    )
    assert "Aggressor" not in prompt and "Defender" not in prompt


@pytest.mark.one_pass
def test_the_evidence_check_names_each_side_by_its_label() -> None:
    lines = {m.group(1): m.group(0) for m in JUROR_EVIDENCE_LINE.finditer(juror_prompt(ORDERS[1]))}
    assert lines == {
        "Side A": "- Side A: 1 quote(s) found in the document, 0 not found; "
        "it answered 1 of the other side's 2 attack(s).",
        "Side B": "- Side B: 2 quote(s) found in the document, 1 not found; "
        "it made 2 attack(s) on the document, 1 of them answered by the other side.",
    }


@pytest.mark.one_pass
def test_arena_rules_scores_by_the_documented_rules_and_holds_in_both_orders() -> None:
    answers = [
        json.loads(rules_juror.reply([{"role": "user", "content": juror_prompt(order)}])) for order in ORDERS
    ]
    # Aggressor: 5 + 2 found - 2 (one not found) + (1 unanswered - 1 answered) = 5.
    # Defender: 5 + 1 found + (1 answered - 1 left) = 6.
    assert answers[0] == {"winner": "side_b", "side_a": 5, "side_b": 6, "summary": answers[0]["summary"]}
    assert answers[1] == {"winner": "side_a", "side_a": 6, "side_b": 5, "summary": answers[1]["summary"]}
    assert (
        rules_juror.reply([{"role": "user", "content": "Attack the document."}]) == rules_juror.NOT_A_DEBATER
    )


@pytest.mark.one_pass
def test_the_sparring_juror_counts_the_documents_sentences_each_side_quoted() -> None:
    document = FramedDocument(
        block=f'<<<DOCUMENT n name="e">>>\n{ESSAY}\n<<<END DOCUMENT n>>>', tokens=100, truncated=False
    )
    transcript = [
        TranscriptEntry(1, "aggressor", '1. "Automated tests always pay for themselves within a week."'),
        TranscriptEntry(1, "defender", 'It says "nothing of the kind was ever written here" at all.'),
    ]
    verdicts = []
    for order in ORDERS:
        messages = juror_messages(order, document, transcript)
        assert sparring_juror.asks_juror(messages)
        answer = json.loads(sparring_juror.reply(messages))
        verdicts.append(
            parse_juror_answer(json.dumps(answer), dict(zip(("side_a", "side_b"), order, strict=True)))
        )
    assert [(v.winner, v.scores) for v in verdicts if v] == [("aggressor", Scores(4, 3))] * 2


# --- Juries in battles ----------------------------------------------------------------------------


@pytest.fixture
def jurors(settings) -> Iterator[OpenAIServer]:
    """A fake provider for the jurors (ARENA_JURY_API_BASE)."""
    llm.forget_structured_styles()
    with OpenAIServer() as server:
        settings.ARENA_JURY_API_BASE = server.api_base
        settings.ARENA_JURY_API_KEY = "sk-juror"
        settings.ARENA_PROVIDER_RETRIES = 0
        yield server


def juror_answer(winner: str, side_a: int, side_b: int) -> Script:
    return Script(
        text=json.dumps({"winner": winner, "side_a": side_a, "side_b": side_b, "summary": "Judged."})
    )


def picks_the_defender(body: dict) -> Script:
    """A juror that reads which side defended (the evidence check says) and votes for it."""
    prompt = body["messages"][1]["content"]
    defending = next(m.group(1) for m in JUROR_EVIDENCE_LINE.finditer(prompt) if m.group(6) is not None)
    return juror_answer(
        "side_a" if defending == "Side A" else "side_b",
        4 if defending == "Side B" else 9,
        4 if defending == "Side A" else 9,
    )


async def battle_with_jury(jury: list[str], **models: str) -> Battle:
    def create() -> Battle:
        document = services.document_create(data=ESSAY.encode(), name="essay.md")
        return services.battle_create(document=document, rounds=1, models=models or None, jury=jury)

    battle = await sync_to_async(create)()
    return await run_battle(battle.pk)


@pytest.mark.django_db(transaction=True)
async def test_an_offline_jury_of_sparring_and_rules_decides_the_battle() -> None:
    finished = await battle_with_jury(["arena/sparring", "arena/rules"])

    log = await sync_to_async(stored_events)(finished.pk)
    progress = [e.data for e in log if e.type == events.JURY_PROGRESS]
    assert [(p["done"], p["total"]) for p in progress] == [(0, 2), (1, 2), (2, 2)]
    assert progress[0]["juror"] is None
    verdict = log[-2].data
    assert verdict["source"] == "jury" == finished.verdict_source
    assert sorted(j["model"] for j in verdict["jury"]) == ["arena/rules", "arena/sparring"]
    assert sorted(p["juror"]["model"] for p in progress[1:]) == ["arena/rules", "arena/sparring"]
    # Both offline jurors judge what was said, not the order it was shown in.
    assert all(j["consistent"] for j in verdict["jury"])
    expected = tally_votes([JurorVote(j["model"], j["winner"], None, True) for j in verdict["jury"]])
    assert verdict["winner"] == expected.winner == finished.winner
    assert verdict["agreement"] == expected.agreement
    assert verdict["moderator"]["winner"] in ("aggressor", "defender", "draw")
    assert "The jury decided" in verdict["summary"]
    transcript = await sync_to_async(selectors.battle_transcript)(battle=finished)
    assert transcript["battle"]["jury"] == ["arena/sparring", "arena/rules"]
    assert transcript["verdict"]["jury"] == verdict["jury"]
    assert transcript["verdict"]["moderator"] == verdict["moderator"]


@pytest.mark.django_db(transaction=True)
async def test_a_juror_that_always_picks_the_side_shown_first_is_inconsistent_and_a_draw(jurors) -> None:
    jurors.respond = lambda body: juror_answer("side_a", 9, 2)

    finished = await battle_with_jury(["openai/first-shown"])

    verdict = (await sync_to_async(stored_events)(finished.pk))[-2].data
    assert verdict["jury"] == [
        {
            "model": "openai/first-shown",
            "winner": "draw",
            "scores": {"aggressor": 5.5, "defender": 5.5},
            "consistent": False,
            "answered": True,
        }
    ]
    assert (verdict["winner"], verdict["agreement"], verdict["source"]) == ("draw", 1.0, "jury")
    assert finished.winner == "draw"
    # It was asked twice, with the sides swapped, through the structured request.
    first, second = (r["messages"][1]["content"] for r in jurors.requests)
    assert first.index("[Round 1 · Side A]\nRound 1.") < first.index("[Round 1 · Side B]")
    assert jurors.requests[0]["response_format"]["json_schema"]["schema"]["required"] == [
        "winner",
        "side_a",
        "side_b",
        "summary",
    ]
    assert first != second


@pytest.mark.django_db(transaction=True)
async def test_two_jurors_that_agree_decide_the_battle_against_the_moderator(
    jurors, openai_server, settings
) -> None:
    # The Moderator (a fake provider) rules for the Aggressor; both jurors find for the Defender.
    settings.ARENA_ROLE_API_BASES = {**settings.ARENA_ROLE_API_BASES, "moderator": openai_server.api_base}
    openai_server.queue(
        Script(text="SCORES: aggressor=8 defender=3\nWINNER: aggressor"),
        Script(text='{"winner": "aggressor", "aggressor": 8, "defender": 3, "summary": "The attack won."}'),
    )
    jurors.respond = picks_the_defender

    finished = await battle_with_jury(["openai/juror-one", "openai/juror-two"], moderator="openai/moderator")

    verdict = (await sync_to_async(stored_events)(finished.pk))[-2].data
    assert verdict["moderator"] == {"winner": "aggressor", "scores": {"aggressor": 8.0, "defender": 3.0}}
    assert verdict["jury"] == [
        {
            "model": model,
            "winner": "defender",
            "scores": {"aggressor": 4.0, "defender": 9.0},
            "consistent": True,
            "answered": True,
        }
        for model in ("openai/juror-one", "openai/juror-two")
    ]
    assert (verdict["winner"], verdict["scores"], verdict["agreement"]) == (
        "defender",
        {"aggressor": 4.0, "defender": 9.0},
        1.0,
    )
    assert (finished.winner, finished.verdict_source, finished.defender_score) == ("defender", "jury", 9.0)
    assert finished.verdict_details["moderator"]["winner"] == "aggressor"
    assert len(jurors.requests) == 4  # two jurors, two orders each


@pytest.mark.django_db(transaction=True)
async def test_a_juror_whose_provider_fails_votes_draw_and_the_battle_still_finishes(jurors) -> None:
    jurors.respond = lambda body: Script(status=500)

    finished = await battle_with_jury(["openai/broken", "arena/rules"])

    assert finished.status == Battle.Status.FINISHED
    verdict = (await sync_to_async(stored_events)(finished.pk))[-2].data
    broken = next(j for j in verdict["jury"] if j["model"] == "openai/broken")
    assert broken == {
        "model": "openai/broken",
        "winner": "draw",
        "scores": {"aggressor": None, "defender": None},
        "consistent": False,
        "answered": False,
    }


@pytest.mark.django_db(transaction=True)
async def test_without_a_jury_the_verdict_is_the_moderators_as_before() -> None:
    finished = await battle_with_jury([])

    log = await sync_to_async(stored_events)(finished.pk)
    assert not [e for e in log if e.type == events.JURY_PROGRESS]
    verdict = log[-2].data
    assert verdict["source"] == "structured"
    assert "jury" not in verdict and "moderator" not in verdict and "agreement" not in verdict
    assert set(verdict["evidence"]) == {"aggressor", "defender"}


@pytest.mark.django_db
def test_a_battle_gets_arena_jury_by_default_and_keeps_it_on_retry(settings, essay_document) -> None:
    settings.ARENA_JURY = ["arena/rules"]
    battle = services.battle_create(document=essay_document)
    assert battle.jury == ["arena/rules"]
    assert services.battle_create(document=essay_document, jury=[]).jury == []
    assert services.battle_retry(battle=battle).jury == ["arena/rules"]
