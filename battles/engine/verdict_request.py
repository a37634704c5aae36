"""The final verdict: after the last round, the Moderator is asked for its verdict as one JSON object
matching `VERDICT_SCHEMA` (see `battles.engine.verdict`); when that fails, it is read from the
Moderator's last turn.

It is not a turn: it is not streamed to spectators, and it is capped by its own size (the battle's
token budget applies). An endpoint is asked OpenAI's way first (`json_schema`), then in JSON mode with
a schema (llama-cpp-python's server, which enforces it with a grammar); what worked is remembered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from uuid import UUID

from battles.engine.budget import Budget
from battles.engine.prompts import FramedDocument, TranscriptEntry, build_verdict_messages
from battles.engine.verdict import VERDICT_SCHEMA, Scores, Verdict, parse_structured_verdict, parse_verdict
from battles.exceptions import BudgetExhausted, ProviderError
from battles.providers import llm

logger = logging.getLogger(__name__)

# The structured verdict is a short JSON object (its summary is capped at 600 characters).
VERDICT_MAX_TOKENS = 300


async def final_verdict(
    *,
    battle_id: UUID,
    rounds: int,
    endpoint: llm.Endpoint,
    document: FramedDocument,
    transcript: Sequence[TranscriptEntry],
    round_scores: Sequence[Scores | None],
    budget: Budget,
) -> tuple[Verdict, llm.Usage]:
    """The verdict and what asking for it cost (counted in `budget`): the structured request first, the
    last Moderator turn's text when that request fails or its answer is not a complete verdict."""
    from_text = parse_verdict(transcript[-1].content, round_scores)
    messages = await asyncio.to_thread(
        build_verdict_messages,
        rounds=rounds,
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
        return from_text, llm.Usage()
    structured, usage = await request_verdict(
        battle_id=battle_id, endpoint=endpoint, messages=messages, max_tokens=max_tokens
    )
    budget.count(endpoint, usage)
    return structured or from_text, usage


async def request_verdict(
    *,
    battle_id: UUID,
    endpoint: llm.Endpoint,
    messages: list[dict[str, str]],
    max_tokens: int,
    schema: dict[str, object] = VERDICT_SCHEMA,
    parse: Callable[[str], Verdict | None] = parse_structured_verdict,
) -> tuple[Verdict | None, llm.Usage]:
    """A structured verdict (the Moderator's, or a juror's with its own `schema` and `parse`), or None
    when the request fails or its answer is not a complete, valid verdict; and what the request cost
    (zeros when no answer came)."""
    for style in llm.structured_styles(endpoint):
        stream = llm.ReplyStream(
            endpoint, messages, max_tokens=max_tokens, json_schema=schema, json_style=style
        )
        try:
            answer = "".join([delta async for delta in stream])
        except ProviderError as exc:
            logger.warning("Battle %s: no structured verdict with %s (%s)", battle_id, style, exc)
            if exc.timed_out or stream.answered:
                break  # it failed while answering, not because of how it was asked
            continue  # refused: perhaps it takes the other way of asking
        llm.structured_style_worked(endpoint, style)
        structured = parse(answer)
        if structured is None:
            logger.info("Battle %s: the structured verdict from %s is unusable", battle_id, endpoint.model)
        return structured, stream.usage
    return None, llm.Usage()
