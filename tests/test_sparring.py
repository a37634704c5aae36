from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from battles.engine.prompts import TranscriptEntry, build_messages, frame_document
from battles.engine.verdict import parse_round_scores, parse_verdict
from battles.models import Role
from battles.providers.sparring import rules as sparring
from tests.support.documents import ESSAY
from tests.support.live import ROOT

QUOTE = re.compile(r'^\d+\. "(.+)"$', re.MULTILINE)


def messages_for(role: Role, round_number: int, rounds: int, transcript: list[TranscriptEntry]) -> list[dict]:
    framed = frame_document(
        text=ESSAY,
        name="essay.md",
        nonce="0123abcd",
        budget_tokens=5000,
        count_tokens=lambda t: len(t.split()),
    )
    return build_messages(
        role=role,
        round_number=round_number,
        rounds=rounds,
        document=framed,
        transcript=transcript,
        context_tokens=16000,
        max_tokens_per_turn=400,
        count_tokens=lambda t: len(t.split()),
    )


def play(rounds: int) -> list[TranscriptEntry]:
    transcript: list[TranscriptEntry] = []
    for round_number in range(1, rounds + 1):
        for role in (Role.AGGRESSOR, Role.DEFENDER, Role.MODERATOR):
            text = sparring.reply(messages_for(role, round_number, rounds, transcript))
            transcript.append(TranscriptEntry(round=round_number, role=role.value, content=text))
    return transcript


def test_it_reads_role_round_document_and_transcript_from_the_prompt() -> None:
    transcript = [TranscriptEntry(round=1, role="aggressor", content='1. "Quoted."')]
    prompt = sparring.parse_prompt(messages_for(Role.DEFENDER, 2, 3, transcript))
    assert (prompt.role, prompt.round, prompt.rounds) == ("defender", 2, 3)
    assert prompt.document.strip() == ESSAY.strip()
    assert prompt.transcript == [(1, "aggressor", '1. "Quoted."')]


def test_aggressor_quotes_real_sentences_and_attacks_them() -> None:
    attack = sparring.reply(messages_for(Role.AGGRESSOR, 1, 1, []))
    quotes = QUOTE.findall(attack)
    assert len(quotes) == sparring.QUOTES_PER_ROUND
    for quote in quotes:
        assert quote in ESSAY
    # The essay's most absolute sentence is attacked first, for its absolutes.
    assert quotes[0] == "Code without tests is never safe to change, and everyone knows it."
    assert "'everyone', 'never': an absolute claim" in attack


def test_each_round_attacks_new_sentences() -> None:
    transcript = play(3)
    attacks = [QUOTE.findall(e.content) for e in transcript if e.role == "aggressor"]
    assert attacks[0] != attacks[1] != attacks[2]
    assert len({q for quotes in attacks for q in quotes}) == 6


def test_defender_answers_the_same_points_in_order() -> None:
    transcript = play(2)
    for round_number in (1, 2):
        attack, defence = (e for e in transcript if e.round == round_number and e.role != "moderator")
        assert QUOTE.findall(defence.content) == QUOTE.findall(attack.content)


def test_moderator_scores_every_round_and_gives_a_parseable_verdict() -> None:
    transcript = play(3)
    rulings = [e.content for e in transcript if e.role == "moderator"]
    round_scores = [parse_round_scores(r) for r in rulings]
    assert all(s is not None and 0 <= s.aggressor <= 10 and 0 <= s.defender <= 10 for s in round_scores)
    assert "WINNER:" not in rulings[0]
    verdict = parse_verdict(rulings[-1], round_scores)
    assert verdict.fallback is False
    expected_aggressor = round(sum(s.aggressor for s in round_scores) / 3, 1)
    assert verdict.scores is not None and verdict.scores.aggressor == expected_aggressor
    assert verdict.winner in ("aggressor", "defender", "draw")
    assert verdict.summary.startswith("Over 3 round(s)")


# Plays two rounds in a fresh interpreter and prints the replies as JSON.
PLAY_ELSEWHERE = (
    "import json, django; django.setup(); from tests.test_sparring import play; "
    "print(json.dumps([e.content for e in play(2)]))"
)


def test_replies_are_deterministic() -> None:
    """The same prompts give the same replies in another process too, whatever its hash seed (a reply
    that hashed a str, or iterated a set, would differ there)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "arena.settings_test", "PYTHONHASHSEED": "12345"}
    elsewhere = subprocess.run(
        [sys.executable, "-c", PLAY_ELSEWHERE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(elsewhere.stdout.splitlines()[-1]) == [e.content for e in play(2)]


def test_words_concatenate_back_to_the_text() -> None:
    text = "  Hello,\n\nworld!  Tabs\tand   spaces "
    assert "".join(sparring.words(text)) == text


def test_a_document_with_nothing_to_quote_still_gets_an_answer() -> None:
    framed = frame_document(text="ok", name="x", nonce="n1", budget_tokens=10, count_tokens=len)
    messages = build_messages(
        role=Role.AGGRESSOR,
        round_number=1,
        rounds=1,
        document=framed,
        transcript=[],
        context_tokens=1000,
        max_tokens_per_turn=100,
        count_tokens=len,
    )
    assert "nothing here to attack" in sparring.reply(messages)
