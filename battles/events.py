"""The event contract: the types and shapes that the log stores and the live stream sends unchanged.

    battle.started   {battle_id, document: {name, size, truncated}, rounds, agents: [{role, model}]}
    turn.started     {turn, round, role}
    token            {turn, role, text}          a delta; a turn's texts concatenate to its content
    turn.completed   {turn, round, role, content, usage: {prompt_tokens, completion_tokens}, scores}
    turn.interrupted {turn, reason}              the turn was cut off (its process stopped) and
                                                 starts again: drop its partial text
    verdict          {winner, scores: {aggressor, defender}, summary, fallback}
    battle.completed {usage: {prompt_tokens, completion_tokens}, cost_usd, duration_ms}
    battle.failed    {error, retryable}

`scores` on turn.completed is the Moderator's round score ({aggressor, defender} or null), and null
for the other roles. `fallback` on verdict is true when the Moderator's answer could not be parsed
and the verdict was derived by the documented rules (see `battles.verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BATTLE_STARTED = "battle.started"
TURN_STARTED = "turn.started"
TOKEN = "token"
TURN_COMPLETED = "turn.completed"
TURN_INTERRUPTED = "turn.interrupted"
VERDICT = "verdict"
BATTLE_COMPLETED = "battle.completed"
BATTLE_FAILED = "battle.failed"

TYPES = (
    BATTLE_STARTED,
    TURN_STARTED,
    TOKEN,
    TURN_COMPLETED,
    TURN_INTERRUPTED,
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
