"""The turn loop: R rounds of Aggressor, Defender, Moderator, then the verdict.

Every step becomes an event in the battle's log (see `battles.events`). Events get their seq and
offset the moment they happen; `EventLog` writes them in batches (a group commit: whatever piled up
while the previous write ran goes in the next one) and hands each batch to the listeners only once it
is committed, so nobody ever sees an event that is not in the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from battles import events, llm, services
from battles.events import RecordedEvent
from battles.exceptions import ProviderError
from battles.models import ROLE_ORDER, Battle, Role
from battles.prompts import FramedDocument, TranscriptEntry, build_messages, document_budget, frame_document
from battles.verdict import Scores, parse_round_scores, parse_verdict

logger = logging.getLogger(__name__)

Listener = Callable[[Sequence[RecordedEvent]], None]

INTERNAL_ERROR = "The battle stopped because of an internal error."
# A turn is not worth starting with fewer tokens than this left in the battle's budget.
MIN_TURN_TOKENS = 32


class BudgetExhausted(Exception):
    """The battle's token budget (ARENA_MAX_TOKENS_PER_BATTLE) cannot pay for the next turn."""


SHUTDOWN_ERROR = "The server stopped while the battle was running."


class EventLog:
    """Numbers, persists and publishes one battle's events. One EventLog per running battle."""

    def __init__(self, battle_id: object, *, started: float, listeners: Sequence[Listener] = ()) -> None:
        self.battle_id = battle_id
        self.started = started
        self.listeners = list(listeners)
        self._seq = 0
        self._committed = 0
        self._pending: list[RecordedEvent] = []
        self._writes: list[Callable[[], None]] = []
        self._changed = asyncio.Condition()
        self._error: BaseException | None = None
        self._writer = asyncio.create_task(self._write_loop(), name=f"event-log-{battle_id}")

    async def emit(
        self,
        type: str,
        data: dict[str, Any],
        *,
        durable: bool = False,
        write: Callable[[], None] | None = None,
    ) -> RecordedEvent:
        """Record an event. `write` runs in the transaction that commits it; `durable` waits for that."""
        if self._error:
            raise self._error
        self._seq += 1
        event = RecordedEvent(self._seq, type, data, int((time.monotonic() - self.started) * 1000))
        async with self._changed:
            self._pending.append(event)
            if write:
                self._writes.append(write)
            self._changed.notify_all()
        if durable:
            await self.flush()
        return event

    async def flush(self) -> None:
        """Wait until every event emitted so far is committed (and published)."""
        target = self._seq
        async with self._changed:
            await self._changed.wait_for(lambda: self._committed >= target or self._error is not None)
        if self._error:
            raise self._error

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            self._writer.cancel()

    async def _write_loop(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._pending))
                batch, writes = self._pending, self._writes
                self._pending, self._writes = [], []
            try:
                await sync_to_async(services.append_with)(
                    battle_id=self.battle_id, events=batch, write=_chain(writes)
                )
            except Exception as exc:
                logger.exception("Could not write the event log of battle %s", self.battle_id)
                async with self._changed:
                    self._error = exc
                    self._changed.notify_all()
                return
            self._publish(batch)
            async with self._changed:
                self._committed = batch[-1].seq
                self._changed.notify_all()

    def _publish(self, batch: Sequence[RecordedEvent]) -> None:
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:
                logger.exception("An event listener failed; the battle goes on")


def _chain(writes: Sequence[Callable[[], None]]) -> Callable[[], None] | None:
    if not writes:
        return None

    def run_all() -> None:
        for write in writes:
            write()

    return run_all


async def run_battle(battle_id: object, *, listeners: Sequence[Listener] = ()) -> Battle:
    """Claim a pending battle and run it to its end. Raises BattleStateError if it is not pending.

    Provider errors and internal errors do not raise: they end the battle with `battle.failed`.
    Cancellation (server shutdown) also marks it failed, then propagates.
    """
    battle = await sync_to_async(services.battle_start)(battle_id=battle_id)
    await BattleRun(battle, listeners=listeners).run()
    return await Battle.objects.select_related("document").aget(pk=battle.pk)


class BattleRun:
    """The state of one battle while it runs."""

    def __init__(self, battle: Battle, *, listeners: Sequence[Listener] = ()) -> None:
        self.battle = battle
        self.started = time.monotonic()
        self.listeners = listeners
        self.max_tokens = settings.ARENA_MAX_TOKENS_PER_TURN
        self.endpoints = {
            role: llm.Endpoint(
                model=battle.model_for(role),
                api_base=settings.ARENA_ROLE_API_BASES[role],
                api_key=settings.ARENA_ROLE_API_KEYS[role],
            )
            for role in ROLE_ORDER
        }
        self.transcript: list[TranscriptEntry] = []
        self.round_scores: list[Scores | None] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        # Unknown (None) as soon as one model has no known price.
        self.cost: float | None = (
            0.0
            if all(llm.cost_usd(e.model, llm.Usage()) is not None for e in self.endpoints.values())
            else None
        )
        self.log: EventLog

    async def run(self) -> None:
        self.log = EventLog(self.battle.pk, started=self.started, listeners=self.listeners)
        try:
            await self._run()
        except ProviderError as exc:
            await self._fail(exc.message, retryable=exc.retryable)
        except asyncio.CancelledError:
            await self._fail(SHUTDOWN_ERROR, retryable=True)
            raise
        except Exception:
            logger.exception("Battle %s failed", self.battle.pk)
            await self._fail(INTERNAL_ERROR, retryable=True)
        finally:
            await self.log.close()

    async def _run(self) -> None:
        battle = self.battle
        documents = await sync_to_async(self._frame_documents, thread_sensitive=False)()
        await self.log.emit(
            events.BATTLE_STARTED,
            {
                "battle_id": str(battle.pk),
                "document": {
                    "name": battle.document.original_name,
                    "size": battle.document.size,
                    "truncated": any(d.truncated for d in documents.values()),
                },
                "rounds": battle.rounds,
                "agents": [{"role": role.value, "model": battle.model_for(role)} for role in ROLE_ORDER],
            },
            durable=True,
        )
        index = 0
        try:
            for round_number in range(1, battle.rounds + 1):
                for role in ROLE_ORDER:
                    index += 1
                    await self._turn(index, round_number, role, documents[battle.model_for(role)])
        except BudgetExhausted:
            budget = settings.ARENA_MAX_TOKENS_PER_BATTLE
            summary = (
                f"The battle ran out of its token budget ({budget} tokens) after {len(self.transcript)} "
                "turn(s); the verdict is derived from the round scores so far."
            )
            verdict = replace(parse_verdict("", self.round_scores), summary=summary)
        else:
            verdict = parse_verdict(self.transcript[-1].content, self.round_scores)
        await self.log.emit(events.VERDICT, verdict.as_event_data())
        duration_ms = int((time.monotonic() - self.started) * 1000)
        scores = verdict.scores

        def finish() -> None:
            services.battle_finish(
                battle_id=battle.pk,
                winner=verdict.winner,
                aggressor_score=scores.aggressor if scores else None,
                defender_score=scores.defender if scores else None,
                summary=verdict.summary,
                verdict_fallback=verdict.fallback,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                cost_usd=self.cost,
            )

        await self.log.emit(
            events.BATTLE_COMPLETED,
            {
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
                "cost_usd": self.cost,
                "duration_ms": duration_ms,
            },
            write=finish,
            durable=True,
        )

    def _frame_documents(self) -> dict[str, FramedDocument]:
        """The document framed for each distinct model, cut to that model's context."""
        battle = self.battle
        framed = {}
        for model in {battle.model_for(role) for role in ROLE_ORDER}:
            framed[model] = frame_document(
                text=battle.document.text,
                name=battle.document.original_name,
                nonce=battle.pk.hex[:12],
                budget_tokens=document_budget(
                    context_tokens=llm.context_tokens(model),
                    max_tokens_per_turn=self.max_tokens,
                    rounds=battle.rounds,
                ),
                count_tokens=lambda text, model=model: llm.count_tokens(model, text),
            )
        return framed

    async def _turn(self, index: int, round_number: int, role: Role, document: FramedDocument) -> None:
        endpoint = self.endpoints[role]
        messages = await sync_to_async(build_messages, thread_sensitive=False)(
            role=role,
            round_number=round_number,
            rounds=self.battle.rounds,
            document=document,
            transcript=list(self.transcript),
            context_tokens=llm.context_tokens(endpoint.model),
            max_tokens_per_turn=self.max_tokens,
            count_tokens=lambda text: llm.count_tokens(endpoint.model, text),
        )
        max_tokens = await sync_to_async(self._affordable_tokens, thread_sensitive=False)(endpoint, messages)
        turn = await sync_to_async(services.turn_start)(
            battle=self.battle, index=index, round_number=round_number, role=role
        )
        await self.log.emit(
            events.TURN_STARTED, {"turn": index, "round": round_number, "role": role.value}, durable=True
        )
        stream = llm.ReplyStream(endpoint, messages, max_tokens=max_tokens)
        content = ""
        try:
            async for delta in stream:
                content += delta
                await self.log.emit(events.TOKEN, {"turn": index, "role": role.value, "text": delta})
        except BaseException:
            await self.log.flush()
            await sync_to_async(services.turn_interrupt)(turn=turn, content=content)
            raise

        usage = stream.usage
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        turn_cost = llm.cost_usd(endpoint.model, usage)
        self.cost = None if self.cost is None or turn_cost is None else self.cost + turn_cost
        scores = parse_round_scores(content) if role == Role.MODERATOR else None
        if role == Role.MODERATOR:
            self.round_scores.append(scores)
        self.transcript.append(TranscriptEntry(round=round_number, role=role.value, content=content))
        await self.log.emit(
            events.TURN_COMPLETED,
            {
                "turn": index,
                "round": round_number,
                "role": role.value,
                "content": content,
                "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
                "scores": scores.as_dict() if scores else None,
            },
            write=lambda: services.turn_complete(
                turn=turn,
                content=content,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            ),
            durable=True,
        )

    def _affordable_tokens(self, endpoint: llm.Endpoint, messages: list[dict[str, str]]) -> int:
        """The answer's max_tokens within what is left of the battle's budget; raises BudgetExhausted."""
        left = settings.ARENA_MAX_TOKENS_PER_BATTLE - self.prompt_tokens - self.completion_tokens
        left -= llm.count_message_tokens(endpoint.model, messages)
        if left < MIN_TURN_TOKENS:
            raise BudgetExhausted
        return min(self.max_tokens, left)

    async def _fail(self, error: str, *, retryable: bool) -> None:
        """End the battle as failed; everything already streamed stays in the log."""
        battle_id = self.battle.pk

        def fail() -> None:
            services.battle_fail(
                battle_id=battle_id,
                error=error,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                cost_usd=self.cost,
            )

        try:
            await self.log.emit(
                events.BATTLE_FAILED, {"error": error, "retryable": retryable}, write=fail, durable=True
            )
        except Exception:
            logger.exception("Could not record the failure of battle %s", battle_id)
            await sync_to_async(fail)()
