"""Reading scores and the verdict out of the Moderator's answers, robustly and without `eval`.

The verdict is asked for twice over. After the last round the Moderator gets a structured request: a
JSON object matching `VERDICT_SCHEMA` (providers that support it, llama.cpp included, constrain the
answer to the schema). That answer is read by `parse_structured_verdict` (source "structured"). When
the request fails or the answer does not hold a complete, valid verdict (weak models, providers
without structured output), the verdict is read from the WINNER / FINAL SCORES / SUMMARY lines of the
Moderator's last turn instead (source "text"), and what is missing there is derived (source "rules"
when nothing could be read at all).

Rules when the Moderator's answer cannot be parsed (the `fallback` flag is then set):
- final scores missing: the mean of the round scores that were parsed (one decimal), else none;
- winner missing: the side with the higher final score, a draw when equal or unknown;
- summary missing: the Moderator's last paragraph, else a fixed sentence saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

MAX_SCORE = 10.0
MAX_SUMMARY_CHARS = 1200
# Where a verdict was read from (the `source` of the verdict event).
STRUCTURED = "structured"
TEXT = "text"
RULES = "rules"
WINNERS = ("aggressor", "defender", "draw")

# How the two sides are named in a verdict answer, mapped to the roles they stand for. The Moderator
# names the roles; a juror sees "Side A" and "Side B" (see battles.engine.jury).
ROLE_SIDES = {"aggressor": "aggressor", "defender": "defender"}

# Scores as an enum rather than minimum/maximum: llama.cpp's grammar enforces enums, not ranges.
_SCORE_SCHEMA = {"type": "integer", "enum": list(range(int(MAX_SCORE) + 1))}


def verdict_schema(sides: Sequence[str]) -> dict[str, object]:
    """The JSON schema of a verdict that names the two sides `sides`."""
    first, second = sides
    return {
        "type": "object",
        "properties": {
            "winner": {"type": "string", "enum": [first, second, "draw"]},
            first: _SCORE_SCHEMA,
            second: _SCORE_SCHEMA,
            "summary": {"type": "string", "minLength": 1, "maxLength": 600},
        },
        "required": ["winner", first, second, "summary"],
        "additionalProperties": False,
    }


VERDICT_SCHEMA = verdict_schema(list(ROLE_SIDES))
NO_SUMMARY = "The Moderator gave no summary; the verdict was derived from the round scores."

_NUMBER = r"(\d{1,2}(?:\.\d+)?)(?:\s*/\s*10)?"
_SEP = r"[\s*_:=\-–—]*"
_SIDE = {side: re.compile(rf"\b{side}\b{_SEP}{_NUMBER}", re.IGNORECASE) for side in ("aggressor", "defender")}
_SCORES_LINE = re.compile(r"^[\s*#_]*(final\s+)?scores?\b.*$", re.IGNORECASE | re.MULTILINE)
_WINNER = re.compile(
    r"^[\s*#_]*(?:winner|verdict)[\s*_]*[:\-–—][\s*_]*(?:the\s+)?(aggressor|defender|draw|tie)\b",
    re.IGNORECASE | re.MULTILINE,
)
_SUMMARY = re.compile(r"^[\s*#_]*summary[\s*_]*:[\s*_]*(.+)", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class Scores:
    aggressor: float
    defender: float

    def as_dict(self) -> dict[str, float]:
        return {"aggressor": self.aggressor, "defender": self.defender}


@dataclass(frozen=True)
class Verdict:
    winner: str  # "aggressor", "defender" or "draw"
    scores: Scores | None
    summary: str
    fallback: bool
    source: str = TEXT  # STRUCTURED, TEXT or RULES

    def as_event_data(self) -> dict[str, object]:
        # The literal first: mypy would type it from the first branch (float values) and refuse None.
        scores: Mapping[str, float | None] = (
            {"aggressor": None, "defender": None} if not self.scores else self.scores.as_dict()
        )
        return {
            "winner": self.winner,
            "scores": scores,
            "summary": self.summary,
            "fallback": self.fallback,
            "source": self.source,
        }


def parse_structured_verdict(text: str, sides: Mapping[str, str] = ROLE_SIDES) -> Verdict | None:
    """The verdict from the answer to the structured request, or None unless it is complete and valid.

    `sides` maps the names the answer uses for the two sides to the roles they stand for. Lenient about
    wrapping (a code fence, a sentence before the object), strict about the content.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        # strict=False: small models put raw line breaks inside strings, which JSON does not allow.
        data = json.loads(text[start : end + 1], strict=False)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    lowered = {str(k).lower(): v for k, v in data.items()}
    named = str(lowered.get("winner", "")).strip().lower()
    winner = "draw" if named in ("draw", "tie") else sides.get(named, "")
    by_role = {role: _score(lowered.get(name)) for name, role in sides.items()}
    aggressor, defender = by_role.get("aggressor"), by_role.get("defender")
    summary = lowered.get("summary")
    if winner not in WINNERS or aggressor is None or defender is None:
        return None
    if not isinstance(summary, str) or not summary.strip():
        return None
    return Verdict(
        winner=winner,
        scores=Scores(aggressor=aggressor, defender=defender),
        summary=_clip(summary),
        fallback=False,
        source=STRUCTURED,
    )


def parse_round_scores(text: str) -> Scores | None:
    """The last round score in the text (a SCORES line, JSON, or "Aggressor: 7/10" prose)."""
    lines = [m.group(0) for m in _SCORES_LINE.finditer(text) if not m.group(1)]
    return _last_scores(lines) or _json_scores(text) or _prose_scores(text)


def parse_final_scores(text: str) -> Scores | None:
    lines = [m.group(0) for m in _SCORES_LINE.finditer(text) if m.group(1)]
    return _last_scores(lines)


def parse_verdict(text: str, round_scores: Sequence[Scores | None]) -> Verdict:
    """The final verdict from the last Moderator turn, falling back as the module docstring says."""
    fallback = False
    scores = parse_final_scores(text)
    read_something = scores is not None
    if scores is None:
        fallback = True
        known = [s for s in round_scores if s is not None]
        if known:
            scores = Scores(
                aggressor=round(sum(s.aggressor for s in known) / len(known), 1),
                defender=round(sum(s.defender for s in known) / len(known), 1),
            )

    winner_match = None
    for winner_match in _WINNER.finditer(text):  # noqa: B007 - the last one wins
        pass
    if winner_match:
        read_something = True
        winner = winner_match.group(1).lower()
        winner = "draw" if winner == "tie" else winner
    else:
        fallback = True
        winner = _winner_from(scores)

    summary_match = _SUMMARY.search(text)
    if summary_match and summary_match.group(1).strip():
        read_something = True
        summary = summary_match.group(1).strip()
    else:
        fallback = True
        summary = _last_paragraph(text) or NO_SUMMARY
    return Verdict(
        winner=winner,
        scores=scores,
        summary=_clip(summary),
        fallback=fallback,
        source=TEXT if read_something else RULES,
    )


def budget_exhausted_verdict(
    round_scores: Sequence[Scores | None], *, budget_tokens: int, turns: int
) -> Verdict:
    """The verdict of a battle that ran out of its token budget: derived from the round scores so far."""
    summary = (
        f"The battle ran out of its token budget ({budget_tokens} tokens) after {turns} turn(s); the "
        "verdict is derived from the round scores so far."
    )
    return replace(parse_verdict("", round_scores), summary=summary)


def _winner_from(scores: Scores | None) -> str:
    if scores is None or scores.aggressor == scores.defender:
        return "draw"
    return "aggressor" if scores.aggressor > scores.defender else "defender"


def _last_scores(candidates: Sequence[str]) -> Scores | None:
    for candidate in reversed(candidates):
        scores = _prose_scores(candidate)
        if scores:
            return scores
    return None


def _prose_scores(text: str) -> Scores | None:
    found = {}
    for side, pattern in _SIDE.items():
        matches = pattern.findall(text)
        value = _score(matches[-1]) if matches else None
        if value is None:
            return None
        found[side] = value
    return Scores(**found)


def _json_scores(text: str) -> Scores | None:
    for candidate in reversed(_JSON_OBJECT.findall(text)):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        lowered = {str(k).lower(): v for k, v in data.items()}
        aggressor, defender = _score(lowered.get("aggressor")), _score(lowered.get("defender"))
        if aggressor is not None and defender is not None:
            return Scores(aggressor=aggressor, defender=defender)
    return None


def _score(value: object) -> float | None:
    """A score in 0..10, or None for anything else (out of range, not a number, a bool)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not 0 <= number <= MAX_SCORE:
        return None
    return round(number, 1)


def _last_paragraph(text: str) -> str:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    for paragraph in reversed(paragraphs):
        if not _SCORES_LINE.fullmatch(paragraph) and not _WINNER.match(paragraph):
            return paragraph
    return ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1].rstrip() + "…"
