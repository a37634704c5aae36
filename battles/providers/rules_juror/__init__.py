"""`arena/rules`: a deterministic, rule-based juror (not AI), so that a jury works offline.

It reads nothing but the arena's evidence check in the juror's prompt (`juror_evidence_note`): for
each side, its quotes found in the document and not, and the Aggressor's attacks on the document and
how many the Defender answered. Each side's score, from 0 to 10:

    5
    + quotes found in the document (at most 3)
    - 2 per quote not found (at most 4)
    + for the attacking side, its attacks left unanswered (at most 2), less those answered (at most 2);
      for the defending side, the attacks it answered (at most 2), less those it left (at most 2)

The higher score wins; equal scores are a draw. It reads the numbers, never the order or the labels,
so its verdict holds when the sides are swapped. Asked to take part in the debate itself, it declines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from battles.engine.prompts import JUROR_EVIDENCE_LINE
from battles.providers import llm
from battles.providers.sparring import CONTEXT_TOKENS, MAX_OUTPUT_TOKENS, PROVIDER

MODEL_NAME = "rules"
MODEL = f"{PROVIDER}/{MODEL_NAME}"
BASE_SCORE = 5
NOT_A_DEBATER = "arena/rules is a juror: it judges a finished debate and takes no part in one."


def register() -> None:
    """Make `arena/rules` a litellm model, beside arena/sparring under the same provider."""
    llm.declare_custom_model(
        provider=PROVIDER,
        model=MODEL,
        handler="battles.providers.rules_juror.provider.RulesJurorLLM",
        context_tokens=CONTEXT_TOKENS,
        max_output_tokens=MAX_OUTPUT_TOKENS,
    )


@dataclass(frozen=True)
class SideEvidence:
    label: str  # "Side A" or "Side B"
    found: int
    not_found: int
    attacks: int | None  # the attacking side: attacks made
    answered: int  # answered attacks (its own, answered by the other side; or the other's it answered)
    of_attacks: int | None  # the defending side: the other side's attacks

    @property
    def score(self) -> int:
        evidence = min(self.found, 3) - min(2 * self.not_found, 4)
        if self.attacks is not None:  # it attacked: answered attacks count against it
            argument = min(self.attacks - self.answered, 2) - min(self.answered, 2)
        else:
            argument = min(self.answered, 2) - min((self.of_attacks or 0) - self.answered, 2)
        return max(0, min(10, BASE_SCORE + evidence + argument))


def read_evidence(text: str) -> list[SideEvidence]:
    """The evidence check's line for each side, as the juror's prompt states it."""
    sides = []
    for m in JUROR_EVIDENCE_LINE.finditer(text):
        attacking = m.group(4) is not None
        sides.append(
            SideEvidence(
                label=m.group(1),
                found=int(m.group(2)),
                not_found=int(m.group(3)),
                attacks=int(m.group(4)) if attacking else None,
                answered=int(m.group(5) if attacking else m.group(6)),
                of_attacks=None if attacking else int(m.group(7)),
            )
        )
    return sides


def reply(messages: Sequence[dict[str, Any]]) -> str:
    """The verdict as the JSON object the jury asks for, from the evidence check in `messages`."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    sides = {side.label: side for side in read_evidence(text)}
    if set(sides) != {"Side A", "Side B"}:
        return NOT_A_DEBATER
    a, b = sides["Side A"].score, sides["Side B"].score
    winner = "side_a" if a > b else "side_b" if b > a else "draw"
    summary = (
        f"By the evidence check: Side A scores {a} ({sides['Side A'].found} quote(s) found, "
        f"{sides['Side A'].not_found} not), Side B {b} ({sides['Side B'].found} found, "
        f"{sides['Side B'].not_found} not), counting the attacks made and answered."
    )
    return json.dumps({"winner": winner, "side_a": a, "side_b": b, "summary": summary})
