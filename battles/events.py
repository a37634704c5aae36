"""The event contract: the types and shapes that the log stores and the live stream sends unchanged.

    battle.started   {battle_id, document: {name, size, truncated, flags: [{line, text}]}, rounds,
                      agents: [{role, model}]}
    turn.started     {turn, round, role}
    token            {turn, role, text}          a delta; a turn's texts concatenate to its content
    turn.completed   {turn, round, role, content, usage: {prompt_tokens, completion_tokens}, scores,
                      citations: [{quote, verified, start_line, end_line}]}
    turn.interrupted {turn, reason}              the turn was cut off (its process stopped) and
                                                 starts again: drop its partial text
    jury.progress    {done, total, juror}        the jury deliberates: sent with done 0 and juror
                                                 null as it starts, then as each juror votes
                                                 (juror: {model, winner, scores, consistent, answered})
    verdict          {winner, scores: {aggressor, defender}, summary, fallback, source,
                      usage: {prompt_tokens, completion_tokens},
                      evidence: {aggressor: {verified, unverified}, defender: {…}},
                      with a jury: jury: [{model, winner, scores, consistent, answered}], agreement,
                      moderator: {winner, scores}}
    battle.completed {usage: {prompt_tokens, completion_tokens}, cost_usd, duration_ms}
    battle.failed    {error, retryable}

`scores` on turn.completed is the Moderator's round score ({aggressor, defender} or null), and null
for the other roles. `citations` are the turn's quotes looked up in the document
(`battles.evidence.citations`); lines are numbered from 1 as in document.txt, null when not verified.
`flags` are the document's lines that address an AI rather than a reader (`battles.evidence.injection`).
On verdict (see `battles.engine.verdict`): `source` says where it was read from,
"structured" (the Moderator's answer to the structured JSON request made after the last round),
"text" (the WINNER / FINAL SCORES / SUMMARY lines of its last turn) or "rules" (derived from the round
scores); `fallback` is true when part of it could not be parsed and was derived by the documented
rules; `usage` is what the structured request (and the jury) cost, zeros when none was made.
`evidence` counts each side's quotes over the battle. With a jury (`battles.engine.jury`) `source` is
"jury", `winner` and `scores` are the jury's, `agreement` is the share of jurors who voted for the
winner and `moderator` is the Moderator's own ruling. battle.completed's usage is the sum of every
turn's and the verdict's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BATTLE_STARTED = "battle.started"
TURN_STARTED = "turn.started"
TOKEN = "token"
TURN_COMPLETED = "turn.completed"
TURN_INTERRUPTED = "turn.interrupted"
JURY_PROGRESS = "jury.progress"
VERDICT = "verdict"
BATTLE_COMPLETED = "battle.completed"
BATTLE_FAILED = "battle.failed"

TYPES = (
    BATTLE_STARTED,
    TURN_STARTED,
    TOKEN,
    TURN_COMPLETED,
    TURN_INTERRUPTED,
    JURY_PROGRESS,
    VERDICT,
    BATTLE_COMPLETED,
    BATTLE_FAILED,
)
# After one of these the battle's log never grows again.
TERMINAL_TYPES = frozenset({BATTLE_COMPLETED, BATTLE_FAILED})


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One entry of a battle's log, as stored and as streamed."""

    seq: int
    type: str
    data: dict[str, Any]
    offset_ms: int

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES
