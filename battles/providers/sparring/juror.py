"""The sparring model on a jury (`ARENA_JURY=arena/sparring`): its own reading of the debate, not AI.

It scores each side by how many of the document's sentences that side quoted word for word, which
it checks itself against the document in its prompt (not with the arena's evidence check, which
`arena/rules` reads). It looks only at what each side said, never at which side is shown first, so
its verdict holds when the sides are swapped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from battles.engine.prompts import EVIDENCE_HEADER, JUROR_SIDES, JUROR_TRANSCRIPT_HEADER
from battles.evidence.citations import find_quotes
from battles.providers.sparring import rules

# A side that quoted nothing real still said something: it starts here, one more per sentence quoted.
BASE_SCORE = 3
MAX_SCORE = 9


def asks_juror(messages: Sequence[dict[str, Any]]) -> bool:
    """Whether the messages are a juror's request (see `build_juror_messages`)."""
    return any(m.get("role") == "system" and "You are a juror" in str(m.get("content")) for m in messages)


def side_texts(user: str) -> dict[str, str]:
    """What each side ("Side A", "Side B") said over the debate, read from the juror's prompt."""
    doc = rules.DOCUMENT.search(user)
    after = user[doc.end() :] if doc else user
    after = after.split(f"\n\n{EVIDENCE_HEADER} for ")[0]
    said = dict.fromkeys(JUROR_SIDES.values(), "")
    headers = list(JUROR_TRANSCRIPT_HEADER.finditer(after))
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(after)
        said[header.group(2)] += after[header.end() : end] + "\n"
    return said


def reply(messages: Sequence[dict[str, Any]]) -> str:
    """The juror's verdict as the JSON object the jury asks for."""
    user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")
    doc = rules.DOCUMENT.search(user)
    real = set(rules.sentences(doc.group(2) if doc else ""))
    scores = {}
    for key, label in JUROR_SIDES.items():
        quoted = {q for q in find_quotes(side_texts(user)[label]) if q in real}
        scores[key] = min(MAX_SCORE, BASE_SCORE + len(quoted))
    a, b = scores["side_a"], scores["side_b"]
    winner = "side_a" if a > b else "side_b" if b > a else "draw"
    leader = {"side_a": "Side A", "side_b": "Side B", "draw": "Neither side"}[winner]
    summary = (
        f"{leader} quoted the document more: Side A quoted {a - BASE_SCORE} of its sentences word for "
        f"word, Side B {b - BASE_SCORE}."
    )
    return json.dumps({"winner": winner, "side_a": a, "side_b": b, "summary": summary})
