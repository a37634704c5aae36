"""The jury: after the last round, each juror judges the whole battle twice, and the majority decides.

A judge model tends to favour the side it reads first (or second). So each juror sees the debate
twice, with the two roles shown as "Side A" and "Side B" in both orders (`build_juror_messages`),
through the same structured request as the Moderator's verdict, with its fallbacks
(`request_verdict`). Its two verdicts, mapped back to roles, must agree: a juror whose verdict changes
when the sides are swapped judged the order, not the debate, and its vote counts as a draw.

The jury's winner is the choice most jurors voted for (aggressor, defender or draw); a tie between
choices is a draw. `agreement` is the share of jurors whose vote is that winner, and the jury's scores
are the mean of theirs (of every juror's after a tie). A juror that cannot
answer (its provider fails, the budget is spent, its answer is unreadable) votes draw, inconsistent:
jurors never fail a battle.

Jurors deliberate at once, each asking its two orders one after the other, so that the battle's token
budget is checked before every request (concurrent jurors may overspend it by a verdict's size each).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from battles import events
from battles.engine.budget import Budget
from battles.engine.eventlog import EventLog
from battles.engine.prompts import JUROR_SIDES, FramedDocument, TranscriptEntry, build_juror_messages
from battles.engine.verdict import (
    JURY,
    MAX_SUMMARY_CHARS,
    Scores,
    Verdict,
    parse_structured_verdict,
    verdict_schema,
)
from battles.engine.verdict_request import VERDICT_MAX_TOKENS, request_verdict
from battles.exceptions import BudgetExhausted
from battles.models import Role
from battles.providers import llm

# The two orders each juror judges: the role shown as Side A first.
ORDERS = ((Role.AGGRESSOR.value, Role.DEFENDER.value), (Role.DEFENDER.value, Role.AGGRESSOR.value))
JUROR_SCHEMA = verdict_schema(list(JUROR_SIDES))
_WINNER_WORDS = re.compile(r"\bwinner\W+(side[\s_]*a|side[\s_]*b|draw|tie)\b", re.IGNORECASE)


@dataclass(frozen=True)
class JurorVote:
    """One juror's vote: `winner` is a draw unless its two verdicts agreed (`consistent`); `scores`
    are the mean of its two verdicts' (None when it gave none); `answered` is false when it gave no
    verdict in one order or both (its provider failed, the budget was spent, its answer unreadable)."""

    model: str
    winner: str
    scores: Scores | None
    consistent: bool
    answered: bool = True

    def as_dict(self) -> dict[str, object]:
        scores: Mapping[str, float | None] = (
            {"aggressor": None, "defender": None} if not self.scores else self.scores.as_dict()
        )
        return {
            "model": self.model,
            "winner": self.winner,
            "scores": scores,
            "consistent": self.consistent,
            "answered": self.answered,
        }


@dataclass(frozen=True)
class JuryVerdict:
    votes: list[JurorVote]
    winner: str
    agreement: float
    scores: Scores | None  # the mean of the scores of the jurors who voted for the winner

    def details(self, moderator: Verdict) -> dict[str, object]:
        """The jury's part of the verdict event: the votes, the agreement and the Moderator's ruling."""
        return {
            "jury": [vote.as_dict() for vote in self.votes],
            "agreement": self.agreement,
            "moderator": {
                "winner": moderator.winner,
                "scores": moderator.as_event_data()["scores"],
            },
        }

    def decide(self, moderator: Verdict) -> Verdict:
        """The battle's verdict once the jury has decided; the Moderator's summary is kept in it."""
        agreeing = sum(1 for vote in self.votes if vote.winner == self.winner)
        summary = (
            f"The jury decided: {_outcome(self.winner)} ({agreeing} of {len(self.votes)} juror(s)). "
            f"The Moderator ruled {_outcome(moderator.winner)}: {moderator.summary}"
        )
        if len(summary) > MAX_SUMMARY_CHARS:
            summary = summary[: MAX_SUMMARY_CHARS - 1].rstrip() + "…"
        return Verdict(
            winner=self.winner,
            scores=self.scores or moderator.scores,
            summary=summary,
            fallback=moderator.fallback,
            source=JURY,
        )


def _outcome(winner: str) -> str:
    return "a draw" if winner == "draw" else f"the {winner.capitalize()} wins"


def juror_vote(model: str, verdicts: Sequence[Verdict | None]) -> JurorVote:
    """A juror's vote from its verdicts in both orders (already mapped back to roles)."""
    given = [v for v in verdicts if v is not None]
    scores = _mean([v.scores for v in given])
    answered = len(given) == len(verdicts)
    consistent = answered and len({v.winner for v in given}) == 1
    winner = given[0].winner if consistent else "draw"
    return JurorVote(model=model, winner=winner, scores=scores, consistent=consistent, answered=answered)


def tally_votes(votes: Sequence[JurorVote]) -> JuryVerdict:
    """The jury's winner (the choice most jurors voted for; a tie is a draw) and agreement."""
    counts = Counter(vote.winner for vote in votes).most_common()
    tied = len(counts) > 1 and counts[0][1] == counts[1][1]
    winner = "draw" if not counts or tied else counts[0][0]
    agreement = round(sum(1 for v in votes if v.winner == winner) / len(votes), 3) if votes else 0.0
    # The scores of the jurors who voted for the winner, so that the scores never contradict it; after
    # a tie between the sides nobody did, and all of them count.
    scores = _mean([v.scores for v in votes if v.winner == winner]) or _mean([v.scores for v in votes])
    return JuryVerdict(votes=list(votes), winner=winner, agreement=agreement, scores=scores)


def _mean(scores: Sequence[Scores | None]) -> Scores | None:
    """Each side's mean over the scores given (one decimal), or None when none were."""
    known = [s for s in scores if s is not None]
    if not known:
        return None
    return Scores(
        aggressor=round(sum(s.aggressor for s in known) / len(known), 1),
        defender=round(sum(s.defender for s in known) / len(known), 1),
    )


def parse_juror_answer(answer: str, sides: Mapping[str, str]) -> Verdict | None:
    """A juror's verdict in roles: its JSON object, else at least a "winner: side a" line."""
    structured = parse_structured_verdict(answer, sides)
    if structured is not None:
        return structured
    found = _WINNER_WORDS.findall(answer)
    if not found:
        return None
    named = re.sub(r"[\s_]+", "_", found[-1].lower())
    winner = "draw" if named in ("draw", "tie") else sides.get(named)
    if winner is None:
        return None
    return Verdict(winner=winner, scores=None, summary="", fallback=True)


async def deliberate(
    *,
    battle_id: UUID,
    jurors: Sequence[llm.Endpoint],
    documents: Mapping[str, FramedDocument],
    transcript: Sequence[TranscriptEntry],
    budget: Budget,
    log: EventLog,
) -> tuple[JuryVerdict, llm.Usage]:
    """Every juror's vote, and what asking them cost (counted in `budget`). `documents` holds the
    document framed for each juror's model. `jury.progress` goes in the log as the jury starts and
    with each vote as it comes (the k-th of n)."""
    usage = llm.Usage()
    total, done = len(jurors), 0
    lock = asyncio.Lock()
    await log.emit(events.JURY_PROGRESS, {"done": 0, "total": total, "juror": None}, durable=True)

    async def judge(endpoint: llm.Endpoint) -> JurorVote:
        nonlocal done
        verdicts = []
        for order in ORDERS:
            verdict, spent = await _judge_once(
                battle_id=battle_id,
                endpoint=endpoint,
                order=order,
                document=documents[endpoint.model],
                transcript=transcript,
                budget=budget,
            )
            usage.prompt_tokens += spent.prompt_tokens
            usage.completion_tokens += spent.completion_tokens
            verdicts.append(verdict)
        vote = juror_vote(endpoint.model, verdicts)
        async with lock:  # votes are announced one at a time, numbered in the order they came
            done += 1
            await log.emit(
                events.JURY_PROGRESS, {"done": done, "total": total, "juror": vote.as_dict()}, durable=True
            )
        return vote

    votes = await asyncio.gather(*(judge(endpoint) for endpoint in jurors))
    return tally_votes(votes), usage


async def _judge_once(
    *,
    battle_id: UUID,
    endpoint: llm.Endpoint,
    order: Sequence[str],
    document: FramedDocument,
    transcript: Sequence[TranscriptEntry],
    budget: Budget,
) -> tuple[Verdict | None, llm.Usage]:
    """One juror's verdict with `order[0]` shown as Side A, in roles; None when it gave none."""
    messages = await asyncio.to_thread(
        build_juror_messages,
        order=order,
        document=document,
        transcript=list(transcript),
        context_tokens=llm.context_tokens(endpoint.model),
        max_tokens=VERDICT_MAX_TOKENS,
        count_tokens=llm.token_counter(endpoint.model),
    )
    try:
        max_tokens = await asyncio.to_thread(
            budget.affordable_tokens, endpoint, messages, cap=VERDICT_MAX_TOKENS
        )
    except BudgetExhausted:
        return None, llm.Usage()
    sides = dict(zip(JUROR_SIDES, order, strict=True))
    verdict, usage = await request_verdict(
        battle_id=battle_id,
        endpoint=endpoint,
        messages=messages,
        max_tokens=max_tokens,
        schema=JUROR_SCHEMA,
        parse=lambda answer: parse_juror_answer(answer, sides),
    )
    budget.count(endpoint, usage)
    return verdict, usage
