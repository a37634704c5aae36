"""Transcripts as Markdown (battles.transcripts): untrusted text fenced, interrupted turns marked, the
verdict and the totals."""

from __future__ import annotations

from typing import Any

import pytest

from battles.transcripts import render_markdown


def transcript(**changes: Any) -> dict[str, Any]:
    """A finished one-round battle's transcript, as `selectors.battle_transcript` shapes it."""
    base: dict[str, Any] = {
        "battle": {
            "id": "5b7c",
            "status": "finished",
            "rounds": 1,
            "models": {"aggressor": "arena/sparring", "defender": "openai/gpt-4o-mini", "moderator": "m"},
            "error": None,
        },
        "document": {"name": "essay.md", "size": 10, "sha256": "ab"},
        "turns": [
            {"turn": 1, "round": 1, "role": "aggressor", "status": "completed", "content": "An attack."},
            {"turn": 2, "round": 1, "role": "defender", "status": "completed", "content": "A defence."},
        ],
        "verdict": {
            "winner": "defender",
            "scores": {"aggressor": 4.0, "defender": 7.5},
            "summary": "The defence held.",
            "fallback": False,
            "source": "structured",
        },
        "usage": {"prompt_tokens": 120, "completion_tokens": 80},
        "cost_usd": 0.0012,
    }
    return {**base, **changes}


def test_markdown_transcripts_fence_untrusted_text() -> None:
    transcript = {
        "battle": {"id": "b", "status": "failed", "rounds": 1, "models": {"aggressor": "m"}, "error": "x"},
        "document": {"name": "<script>[a](javascript:x)", "size": 1, "sha256": ""},
        "turns": [
            {"round": 1, "role": "aggressor", "status": "interrupted", "content": "```\n# fake heading\n"}
        ],
        "verdict": None,
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        "cost_usd": None,
    }
    markdown = render_markdown(transcript)
    assert "# Battle over \\<script\\>\\[a\\]\\(javascript:x\\)" in markdown
    assert "## Round 1 · Aggressor (interrupted)" in markdown
    assert "````text\n```\n# fake heading\n\n````" in markdown


def test_a_finished_battle_reads_top_to_bottom() -> None:
    assert render_markdown(transcript()) == "\n".join(
        [
            "# Battle over essay.md",
            "",
            "- Battle: `5b7c`",
            "- Status: finished",
            "- Rounds: 1",
            "- Aggressor: arena/sparring",
            "- Defender: openai/gpt-4o-mini",
            "- Moderator: m",
            "",
            "## Round 1 · Aggressor",
            "",
            "```text",
            "An attack.",
            "```",
            "",
            "## Round 1 · Defender",
            "",
            "```text",
            "A defence.",
            "```",
            "",
            "## Verdict",
            "",
            "- Winner: defender",
            "- Scores: aggressor 4.0, defender 7.5",
            "",
            "The defence held.",
            "",
            "Tokens: 120 prompt + 80 completion; cost: $0.001200",
            "",
        ]
    )


@pytest.mark.parametrize(
    "content, fence",
    [
        ("no backticks", "```"),
        ("a ``` fence", "````"),
        ("``````six", "```````"),
        ("`one` and ``two``", "```"),
    ],
)
def test_each_turn_is_fenced_longer_than_any_backtick_run_in_it(content: str, fence: str) -> None:
    turn = {"turn": 1, "round": 1, "role": "aggressor", "status": "completed", "content": content}
    markdown = render_markdown(transcript(turns=[turn]))
    assert f"\n{fence}text\n{content}\n{fence}\n" in markdown


def test_one_line_values_cannot_break_out_of_their_line() -> None:
    battle = {**transcript()["battle"], "error": "Bad\n# heading [x](y)", "models": {"aggressor": "*m*\nz"}}
    verdict = {**transcript()["verdict"], "summary": "Line one\n\n## Fake section <b>"}

    markdown = render_markdown(transcript(battle=battle, verdict=verdict))

    assert "- Aggressor: \\*m\\* z" in markdown
    assert "- Error: Bad \\# heading \\[x\\]\\(y\\)" in markdown
    assert "Line one \\#\\# Fake section \\<b\\>" in markdown
    assert "\n## Fake" not in markdown and "<b>" not in markdown


def test_only_interrupted_turns_are_marked() -> None:
    turns = [
        {"turn": 1, "round": 1, "role": "aggressor", "status": "completed", "content": "A."},
        {"turn": 2, "round": 1, "role": "defender", "status": "interrupted", "content": "B"},
    ]
    markdown = render_markdown(transcript(turns=turns))
    assert "## Round 1 · Aggressor\n" in markdown
    assert "## Round 1 · Defender (interrupted)\n" in markdown


@pytest.mark.parametrize(
    "fallback, source, note",
    [
        (False, "structured", None),
        (False, "text", "_Read from the Moderator's last turn (no structured verdict)._"),
        (True, "text", "_Derived: the Moderator's verdict could not be parsed._"),
        (True, "rules", "_Derived: the Moderator's verdict could not be parsed._"),
    ],
)
def test_the_verdict_says_where_it_came_from(fallback: bool, source: str, note: str | None) -> None:
    verdict = {**transcript()["verdict"], "fallback": fallback, "source": source}
    markdown = render_markdown(transcript(verdict=verdict))
    notes = [line for line in markdown.splitlines() if line.startswith("_")]
    assert notes == ([note] if note else [])


def test_a_verdict_without_scores_and_a_battle_without_verdict() -> None:
    verdict = {**transcript()["verdict"], "winner": "draw", "scores": None}
    assert "- Scores: aggressor None, defender None" in render_markdown(transcript(verdict=verdict))
    markdown = render_markdown(transcript(verdict=None, turns=[]))
    assert "## Verdict" not in markdown and "Winner" not in markdown


@pytest.mark.parametrize("cost, shown", [(None, "unknown"), (0.0, "$0.000000"), (1.5, "$1.500000")])
def test_the_cost_line(cost: float | None, shown: str) -> None:
    markdown = render_markdown(transcript(cost_usd=cost))
    assert markdown.endswith(f"Tokens: 120 prompt + 80 completion; cost: {shown}\n")
