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
from django.utils import timezone

from battles import brokers, events, llm, selectors, services
from battles.events import RecordedEvent
from battles.exceptions import LeaseLost, ProviderError
from battles.models import ROLE_ORDER, Battle, Role
from battles.prompts import (
    FramedDocument,
    TranscriptEntry,
    build_messages,
    build_verdict_messages,
    document_budget,
    frame_document,
)
from battles.verdict import (
    VERDICT_SCHEMA,
    Scores,
    Verdict,
    parse_round_scores,
    parse_structured_verdict,
    parse_verdict,
)

logger = logging.getLogger(__name__)

Listener = Callable[[Sequence[RecordedEvent]], None]

INTERNAL_ERROR = "The battle stopped because of an internal error."
# A turn is not worth starting with fewer tokens than this left in the battle's budget.
MIN_TURN_TOKENS = 32
# The structured verdict is a short JSON object (its summary is capped at 600 characters). It is not
# a turn: ARENA_MAX_TOKENS_PER_TURN does not apply, the battle's token budget does.
VERDICT_MAX_TOKENS = 300


class BudgetExhausted(Exception):
    """The battle's token budget (ARENA_MAX_TOKENS_PER_BATTLE) cannot pay for the next turn."""


SHUTDOWN_ERROR = "The server stopped while the battle was running."
HANDOVER_REASON = "The server running the battle shut down; another one continues it."
# Why a run stops without ending its battle.
HANDED_OVER = "handed over"
LEASE_LOST = "lease lost"


class EventLog:
    """Numbers, persists and publishes one battle's events. One EventLog per running battle."""

    def __init__(
        self,
        battle_id: object,
        *,
        started: float,
        listeners: Sequence[Listener] = (),
        owner: str | None = None,
        last_seq: int = 0,
    ) -> None:
        """`owner` fences every write with its lease; `last_seq` is where a taken-over log stands."""
        self.battle_id = battle_id
        self.started = started
        self.listeners = list(listeners)
        self.owner = owner
        self._seq = last_seq
        self._committed = last_seq
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

    @property
    def last_seq(self) -> int:
        return self._seq

    async def flush(self) -> None:
        """Wait until every event emitted so far is committed (and published)."""
        target = self._seq
        async with self._changed:
            await self._changed.wait_for(lambda: self._committed >= target or self._error is not None)
        if self._error:
            raise self._error

    async def close(self) -> None:
        """Commit what is pending and stop the writer. A write error was already logged and raised
        to the emitter; it is not raised again here."""
        try:
            await self.flush()
        except Exception:
            pass
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
                    battle_id=self.battle_id, events=batch, write=_chain(writes), owner=self.owner
                )
            except Exception as exc:
                if isinstance(exc, LeaseLost):
                    logger.warning("Battle %s was taken over by another process", self.battle_id)
                else:
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
    Cancellation (Ctrl-C, shutdown) also marks it failed, then propagates.
    """
    battle = await sync_to_async(services.battle_start)(battle_id=battle_id)
    try:
        await BattleRun(battle, listeners=listeners).run()
    finally:
        await brokers.broker().close()
    return await Battle.objects.select_related("document").aget(pk=battle.pk)


class BattleRun:
    """The state of one battle while it runs.

    The process running it holds its lease (renewed by every write and by a heartbeat). With
    `progress`, the run continues a battle taken over from a process that stopped: from its last
    completed turn, with seq and offsets where the log stands.
    """

    def __init__(
        self,
        battle: Battle,
        *,
        listeners: Sequence[Listener] = (),
        progress: selectors.Progress | None = None,
        owner: str = services.PROCESS_OWNER,
    ) -> None:
        self.battle = battle
        self.owner = owner
        broker = brokers.broker()
        self.listeners = [*listeners, lambda batch: broker.publish(str(battle.pk), batch)]
        self.progress = progress or selectors.Progress(completed=[], last_seq=0, last_offset_ms=0)
        self.started = time.monotonic() - self._elapsed_seconds()
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
            0.0 if all(llm.cost_usd(e, llm.Usage()) is not None for e in self.endpoints.values()) else None
        )
        for turn in self.progress.completed:
            self._record(
                turn.round,
                Role(turn.role),
                turn.content,
                llm.Usage(turn.prompt_tokens, turn.completion_tokens),
            )
        self.log: EventLog
        self.turn_under_way: int | None = None  # its index, between turn.started and turn.completed
        self.content = ""  # what the turn under way has streamed so far
        self.task: asyncio.Task[None] | None = None  # the task running it, once it runs
        self._stopping: str | None = None  # why this process stops running it: HANDED_OVER or LEASE_LOST

    def _elapsed_seconds(self) -> float:
        """How long the battle has been running (0 for a new one), for offsets that keep growing."""
        if not self.progress.last_seq or not self.battle.started_at:
            return 0.0
        since_start = (timezone.now() - self.battle.started_at).total_seconds()
        return max(since_start, self.progress.last_offset_ms / 1000)

    async def run(self) -> None:
        self.task = asyncio.current_task()
        self.log = EventLog(
            self.battle.pk,
            started=self.started,
            listeners=self.listeners,
            owner=self.owner,
            last_seq=self.progress.last_seq,
        )
        heartbeat = asyncio.create_task(self._keep_lease(), name=f"lease-{self.battle.pk}")
        try:
            await self._run()
        except LeaseLost:
            logger.warning("Battle %s: another process took it over; this one stops", self.battle.pk)
        except ProviderError as exc:
            await self._fail(exc.message, retryable=exc.retryable)
        except asyncio.CancelledError:
            if self._stopping == HANDED_OVER:
                await self._hand_over()
            elif self._stopping != LEASE_LOST:
                await self._fail(SHUTDOWN_ERROR, retryable=True)
            raise
        except Exception:
            logger.exception("Battle %s failed", self.battle.pk)
            await self._fail(INTERNAL_ERROR, retryable=True)
        finally:
            heartbeat.cancel()
            await self.log.close()
            await brokers.broker().flush()

    def hand_over(self) -> None:
        """Stop running this battle and give it up for another process (graceful shutdown).

        The turn under way is closed by `turn.interrupted` and the lease released, so the battle goes
        on elsewhere at once.
        """
        self._stop(HANDED_OVER)

    def _stop(self, reason: str) -> None:
        if self.task is not None and not self.task.done() and self._stopping is None:
            self._stopping = reason
            self.task.cancel()

    async def _keep_lease(self) -> None:
        """Renew the lease while nothing is written (a slow model); stop if another process has it."""
        while True:
            await asyncio.sleep(settings.ARENA_LEASE_SECONDS / 3)  # the renewal period, not a sync
            try:
                await sync_to_async(services.lease_renew)(battle_id=self.battle.pk, owner=self.owner)
            except LeaseLost:
                logger.warning("Battle %s: lease lost to another process", self.battle.pk)
                self._stop(LEASE_LOST)
                return
            except Exception:
                # The database hiccuped; the lease has slack for two more tries.
                logger.exception("Could not renew the lease of battle %s", self.battle.pk)

    async def _hand_over(self) -> None:
        battle_id, index, content = self.battle.pk, self.turn_under_way, self.content

        def release() -> None:
            if index is not None:
                services.turn_interrupt(battle_id=battle_id, content=content)
            services.lease_release(battle_id=battle_id, owner=self.owner)

        try:
            if index is None:
                await self.log.flush()
                await sync_to_async(release)()
            else:
                await self.log.emit(
                    events.TURN_INTERRUPTED,
                    {"turn": index, "reason": HANDOVER_REASON},
                    write=release,
                    durable=True,
                )
            logger.info("Battle %s handed over to another process", battle_id)
        except Exception:
            # Not released: another process takes it over once the lease runs out.
            logger.exception("Could not hand battle %s over", battle_id)

    async def _run(self) -> None:
        battle = self.battle
        documents = await sync_to_async(self._frame_documents, thread_sensitive=False)()
        if self.log.last_seq == 0:
            await self._announce(documents)
        done = len(self.transcript)
        index = 0
        try:
            for round_number in range(1, battle.rounds + 1):
                for role in ROLE_ORDER:
                    index += 1
                    if index > done:
                        await self._turn(index, round_number, role, documents[battle.model_for(role)])
        except BudgetExhausted:
            budget = settings.ARENA_MAX_TOKENS_PER_BATTLE
            summary = (
                f"The battle ran out of its token budget ({budget} tokens) after {len(self.transcript)} "
                "turn(s); the verdict is derived from the round scores so far."
            )
            verdict = replace(parse_verdict("", self.round_scores), summary=summary)
            verdict_usage = llm.Usage()
        else:
            moderator = battle.model_for(Role.MODERATOR)
            verdict, verdict_usage = await self._verdict(documents[moderator])
        # No await between the two: the verdict and battle.completed are committed together.
        await self.log.emit(
            events.VERDICT,
            {
                **verdict.as_event_data(),
                "usage": {
                    "prompt_tokens": verdict_usage.prompt_tokens,
                    "completion_tokens": verdict_usage.completion_tokens,
                },
            },
        )
        await self._complete(verdict)

    async def _verdict(self, document: FramedDocument) -> tuple[Verdict, llm.Usage]:
        """The verdict and what asking for it cost: the structured request first, the last Moderator
        turn's text when that request fails or its answer is not a complete verdict."""
        battle_id = self.battle.pk
        from_text = parse_verdict(self.transcript[-1].content, self.round_scores)
        endpoint = self.endpoints[Role.MODERATOR]
        messages = await sync_to_async(build_verdict_messages, thread_sensitive=False)(
            rounds=self.battle.rounds,
            document=document,
            transcript=list(self.transcript),
            context_tokens=llm.context_tokens(endpoint.model),
            max_tokens=VERDICT_MAX_TOKENS,
            count_tokens=lambda text: llm.count_tokens(endpoint.model, text),
        )
        try:
            max_tokens = await sync_to_async(self._affordable_tokens, thread_sensitive=False)(
                endpoint, messages, cap=VERDICT_MAX_TOKENS
            )
        except BudgetExhausted:
            return from_text, llm.Usage()
        for style in llm.structured_styles(endpoint):
            stream = llm.ReplyStream(
                endpoint,
                messages,
                max_tokens=max_tokens,
                json_schema=VERDICT_SCHEMA,
                json_style=style,
            )
            try:
                answer = "".join([delta async for delta in stream])
            except ProviderError as exc:
                logger.warning("Battle %s: no structured verdict with %s (%s)", battle_id, style, exc)
                if exc.timed_out or stream.answered:
                    break  # it failed while answering, not because of how it was asked
                continue  # refused: perhaps it takes the other way of asking
            llm.structured_style_worked(endpoint, style)
            self._count(endpoint, stream.usage)
            structured = parse_structured_verdict(answer)
            if structured is None:
                logger.info("Battle %s: the structured verdict is unusable; reading the last turn", battle_id)
            return structured or from_text, stream.usage
        return from_text, llm.Usage()

    async def _announce(self, documents: dict[str, FramedDocument]) -> None:
        battle = self.battle
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

    async def _complete(self, verdict: Verdict) -> None:
        battle = self.battle
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
                verdict_source=verdict.source,
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
        max_tokens = await sync_to_async(self._affordable_tokens, thread_sensitive=False)(
            endpoint, messages, cap=self.max_tokens
        )
        battle = self.battle
        self.turn_under_way, self.content = index, ""
        await self.log.emit(
            events.TURN_STARTED,
            {"turn": index, "round": round_number, "role": role.value},
            write=lambda: services.turn_start(
                battle=battle, index=index, round_number=round_number, role=role
            ),
            durable=True,
        )
        stream = llm.ReplyStream(endpoint, messages, max_tokens=max_tokens)
        async for delta in stream:
            self.content += delta
            await self.log.emit(events.TOKEN, {"turn": index, "role": role.value, "text": delta})
        content, usage = self.content, stream.usage
        scores = self._record(round_number, role, content, usage)
        # Over as soon as turn.completed is in the log (emit appends it before it can be cancelled).
        self.turn_under_way = None
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
                battle_id=battle.pk,
                index=index,
                content=content,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            ),
            durable=True,
        )

    def _record(self, round_number: int, role: Role, content: str, usage: llm.Usage) -> Scores | None:
        """Count a completed turn in the totals, the transcript and the round scores."""
        self._count(self.endpoints[role], usage)
        scores = parse_round_scores(content) if role == Role.MODERATOR else None
        if role == Role.MODERATOR:
            self.round_scores.append(scores)
        self.transcript.append(TranscriptEntry(round=round_number, role=role.value, content=content))
        return scores

    def _count(self, endpoint: llm.Endpoint, usage: llm.Usage) -> None:
        """Add a model call's tokens and price to the battle's totals."""
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        cost = llm.cost_usd(endpoint, usage)
        self.cost = None if self.cost is None or cost is None else self.cost + cost

    def _affordable_tokens(self, endpoint: llm.Endpoint, messages: list[dict[str, str]], *, cap: int) -> int:
        """The answer's max_tokens (at most `cap`) within what is left of the battle's budget; raises
        BudgetExhausted."""
        left = settings.ARENA_MAX_TOKENS_PER_BATTLE - self.prompt_tokens - self.completion_tokens
        left -= llm.count_message_tokens(endpoint.model, messages)
        if left < MIN_TURN_TOKENS:
            raise BudgetExhausted
        return min(cap, left)

    async def _fail(self, error: str, *, retryable: bool) -> None:
        """End the battle as failed; everything already streamed stays in the log."""
        battle_id, content = self.battle.pk, self.content

        def fail() -> None:
            services.turn_interrupt(battle_id=battle_id, content=content)
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
        except LeaseLost:
            logger.warning("Battle %s: not failed here, another process has taken it over", battle_id)
        except Exception:
            logger.exception("Could not record the failure of battle %s", battle_id)
            # Fenced like every write: a process that lost the lease must not touch the battle.
            await sync_to_async(services.append_with)(
                battle_id=battle_id, events=[], write=fail, owner=self.owner
            )
