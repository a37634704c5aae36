from __future__ import annotations

import pytest

from battles.engine.verdict import (
    NO_SUMMARY,
    Scores,
    parse_final_scores,
    parse_round_scores,
    parse_structured_verdict,
    parse_verdict,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Good round.\nSCORES: aggressor=7 defender=6", Scores(7, 6)),
        ("**Scores:** Aggressor: 8/10, Defender: 5/10", Scores(8, 5)),
        ("scores - aggressor 6.5 / 10 - defender 7", Scores(6.5, 7)),
        ('My scores as JSON: {"aggressor": 3, "Defender": 9}', Scores(3, 9)),
        ("Aggressor: 4\nDefender: 8\n", Scores(4, 8)),
        # The last SCORES line wins when a Moderator corrects itself.
        ("SCORES: aggressor=2 defender=2\nOn reflection:\nSCORES: aggressor=6 defender=4", Scores(6, 4)),
    ],
)
def test_round_scores_are_read_from_common_formats(text: str, expected: Scores) -> None:
    assert parse_round_scores(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Both sides did well.",
        "SCORES: aggressor=eleven defender=6",
        "SCORES: aggressor=70 defender=6",  # out of range
        '{"aggressor": true, "defender": 5}',  # a bool is not a score
        '{"aggressor": "__import__(\'os\').system(\'x\')", "defender": 5}',  # never evaluated
        "SCORES: aggressor=7",  # one side missing
    ],
)
def test_unparseable_round_scores_give_none(text: str) -> None:
    assert parse_round_scores(text) is None


def test_round_scores_ignore_the_final_scores_line() -> None:
    text = "SCORES: aggressor=7 defender=6\nWINNER: defender\nFINAL SCORES: aggressor=6 defender=8"
    assert parse_round_scores(text) == Scores(7, 6)
    assert parse_final_scores(text) == Scores(6, 8)


def test_a_well_formed_verdict_is_taken_as_given() -> None:
    text = (
        "Round 3 ruling.\nSCORES: aggressor=7 defender=6\n"
        "**Winner:** The Defender\nFINAL SCORES: aggressor=6.3 defender=6.7\n"
        "SUMMARY: The defence answered every attack\nwith the document's own words."
    )
    verdict = parse_verdict(text, [Scores(1, 1)])
    assert verdict.winner == "defender"
    assert verdict.scores == Scores(6.3, 6.7)
    assert verdict.summary == "The defence answered every attack with the document's own words."
    assert verdict.fallback is False
    assert verdict.as_event_data() == {
        "winner": "defender",
        "scores": {"aggressor": 6.3, "defender": 6.7},
        "summary": "The defence answered every attack with the document's own words.",
        "fallback": False,
        "source": "text",
    }


def test_tie_means_draw() -> None:
    text = "Verdict: tie\nFINAL SCORES: aggressor=5 defender=5\nSUMMARY: Even."
    assert parse_verdict(text, []).winner == "draw"


def test_missing_final_scores_fall_back_to_the_mean_of_round_scores() -> None:
    text = "WINNER: aggressor\nSUMMARY: Sharp attacks."
    verdict = parse_verdict(text, [Scores(8, 5), None, Scores(7, 6)])
    assert verdict.scores == Scores(7.5, 5.5)
    assert verdict.winner == "aggressor"
    assert verdict.fallback is True


def test_missing_winner_falls_back_to_the_higher_score() -> None:
    verdict = parse_verdict("FINAL SCORES: aggressor=4 defender=9\nSUMMARY: Solid defence.", [])
    assert verdict.winner == "defender"
    assert verdict.fallback is True


def test_missing_summary_falls_back_to_the_last_prose_paragraph() -> None:
    text = "The attacks were weak.\n\nThe defence quoted the text well.\n\nWINNER: defender"
    verdict = parse_verdict(text, [Scores(3, 8)])
    assert verdict.summary == "The defence quoted the text well."
    assert verdict.fallback is True


def test_a_useless_answer_gives_a_draw_with_no_scores() -> None:
    verdict = parse_verdict("", [None, None])
    assert verdict.winner == "draw"
    assert verdict.scores is None
    assert verdict.summary == NO_SUMMARY
    assert verdict.fallback is True
    assert verdict.as_event_data()["scores"] == {"aggressor": None, "defender": None}


def test_summary_is_clipped() -> None:
    verdict = parse_verdict(
        "WINNER: draw\nFINAL SCORES: aggressor=5 defender=5\nSUMMARY: " + "word " * 1000, []
    )
    assert len(verdict.summary) <= 1200
    assert verdict.summary.endswith("…")


def test_nothing_readable_is_derived_by_the_rules() -> None:
    verdict = parse_verdict("I cannot decide.", [Scores(8, 5)])
    assert (verdict.source, verdict.fallback, verdict.winner) == ("rules", True, "aggressor")


def test_a_line_break_inside_the_summary_is_tolerated() -> None:
    answer = '{"winner": "draw", "aggressor": 5, "defender": 5, "summary": "Even.\nQuite."}'
    verdict = parse_structured_verdict(answer)
    assert verdict is not None and verdict.summary == "Even. Quite."


def test_a_structured_verdict_is_read_from_json() -> None:
    verdict = parse_structured_verdict(
        'Here it is:\n```json\n{"Winner": "Aggressor", "aggressor": 7, "defender": 4.5, '
        '"summary": "  The attack  landed. "}\n```'
    )
    assert verdict is not None
    assert verdict.as_event_data() == {
        "winner": "aggressor",
        "scores": {"aggressor": 7.0, "defender": 4.5},
        "summary": "The attack landed.",
        "fallback": False,
        "source": "structured",
    }


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "The defender won.",
        '{"winner": "defender", "aggressor": 5, "defender": 8',  # cut off
        '{"winner": "nobody", "aggressor": 5, "defender": 8, "summary": "s"}',
        '{"winner": "defender", "aggressor": 11, "defender": 8, "summary": "s"}',
        '{"winner": "defender", "aggressor": "five", "defender": 8, "summary": "s"}',
        '{"winner": "defender", "aggressor": true, "defender": 8, "summary": "s"}',
        '{"winner": "defender", "aggressor": 5, "defender": 8, "summary": "  "}',
        '{"winner": "defender", "aggressor": 5, "defender": 8}',
        '["defender", 5, 8, "s"]',
    ],
)
def test_an_incomplete_or_invalid_structured_verdict_is_refused(answer: str) -> None:
    assert parse_structured_verdict(answer) is None
