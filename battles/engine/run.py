"""The turn loop: R rounds of Aggressor, Defender, Moderator, then the verdict.

Every step becomes an event in the battle's log (see `battles.events`), written and published by
`EventLog`. The run holds the battle's lease (`battles.engine.lease`) and spends from its token budget
(`battles.engine.budget`). Who hears the events is the caller's business: the listeners it passes in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from battles import events, selectors, services
from battles.engine import jury, lease
from battles.engine.budget import Budget
from battles.engine.eventlog import EventLog, Listener
from battles.engine.lease import StopReason
from battles.engine.prompts import (
    FramedDocument,
    TranscriptEntry,
    build_messages,
    document_budget,
    evidence_totals,
    frame_document,
)
from battles.engine.verdict import Scores, Verdict, budget_exhausted_verdict, parse_round_scores
from battles.engine.verdict_request import final_verdict
from battles.evidence.citations import Citation, DocumentIndex, cite_all
from battles.evidence.injection import Flag
from battles.exceptions import BattleStateError, BudgetExhausted, LeaseLost, ProviderError
from battles.models import ROLE_ORDER, Battle, Role
from battles.providers import llm

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "The battle stopped because of an internal error."
SHUTDOWN_ERROR = "The server stopped while the battle was running."


async def run_battle(battle_id: UUID, *, listeners: Sequence[Listener] = ()) -> Battle:
    """Claim a pending battle and run it to its end. Raises BattleStateError if it is not pending.

    Provider errors and internal errors do not raise: they end the battle with `battle.failed`.
    Cancellation (Ctrl-C, shutdown) also marks it failed, then propagates.
    """
    battle = await sync_to_async(services.battle_start)(battle_id=battle_id)
    await BattleRun(battle, listeners=listeners).run()
    return await Battle.objects.select_related("document").aget(pk=battle.pk)


class BattleRun:
    """The state of one battle while it runs in this process.

    The process running it holds its lease. With `progress`, the run continues a battle taken over
    from a process that stopped: from its last completed turn, with seq and offsets where the log
    stands.
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
        self.listeners = list(listeners)
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
        self.jurors = [
            llm.Endpoint(
                model=model, api_base=settings.ARENA_JURY_API_BASE, api_key=settings.ARENA_JURY_API_KEY
            )
            for model in battle.jury
        ]
        self.budget = Budget([*self.endpoints.values(), *self.jurors])
        self.transcript: list[TranscriptEntry] = []
        self.round_scores: list[Scores | None] = []
        for turn in self.progress.completed:
            self._record(
                turn.round,
                Role(turn.role),
                turn.content,
                llm.Usage(turn.prompt_tokens, turn.completion_tokens),
                [Citation.from_dict(c) for c in turn.citations],
            )
        self.index: DocumentIndex  # the document, for looking quotes up: built once the run starts
        self.log: EventLog
        self.turn_under_way: int | None = None  # its index, between turn.started and turn.completed
        self.content = ""  # what the turn under way has streamed so far
        self.task: asyncio.Task[None] | None = None  # the task running it, once it runs
        self._stopping: StopReason | None = None
        # Writing the battle's end: too late to stop. That write is fenced by the lease like any
        # other, and a heartbeat that finds the battle already over must not cancel it.
        self._ending = False

    def _elapsed_seconds(self) -> float:
        """How long the battle has been running (0 for a new one), for offsets that keep growing."""
        if not self.progress.last_seq or not self.battle.started_at:
            return 0.0
        since_start = (timezone.now() - self.battle.started_at).total_seconds()
        return max(since_start, self.progress.last_offset_ms / 1000)

    async def run(self) -> None:
        """Run the battle to its end here, or until this process stops running it (`hand_over`, or
        the lease lost). Preconditions: this process holds the battle's lease."""
        self.task = asyncio.current_task()
        self.log = EventLog(
            self.battle.pk,
            started=self.started,
            listeners=self.listeners,
            owner=self.owner,
            last_seq=self.progress.last_seq,
        )
        heartbeat = asyncio.create_task(
            lease.keep_lease(
                battle_id=self.battle.pk, owner=self.owner, on_lost=lambda: self._stop(StopReason.LEASE_LOST)
            ),
            name=f"lease-{self.battle.pk}",
        )
        try:
            await self._run()
        except LeaseLost:
            logger.warning("Battle %s: another process took it over; this one stops", self.battle.pk)
        except ProviderError as exc:
            await self._fail(exc.message, retryable=exc.retryable)
        except asyncio.CancelledError:
            if self._stopping is StopReason.HANDED_OVER:
                await lease.hand_over(
                    self.log, owner=self.owner, turn_under_way=self.turn_under_way, partial_turn=self.content
                )
            elif self._stopping not in (StopReason.LEASE_LOST, StopReason.ENDED_ELSEWHERE):
                await self._fail(SHUTDOWN_ERROR, retryable=True)
            raise
        except Exception:
            logger.exception("Battle %s failed", self.battle.pk)
            await self._fail(INTERNAL_ERROR, retryable=True)
        finally:
            heartbeat.cancel()
            await self.log.close()

    def hand_over(self) -> None:
        """Stop running this battle and give it up for another process (graceful shutdown).

        The turn under way is closed by `turn.interrupted` and the lease released, so the battle goes
        on elsewhere at once.
        """
        self._stop(StopReason.HANDED_OVER)

    def abandon(self) -> None:
        """Stop at once and write nothing more: the battle was ended from outside (deleted)."""
        self._stop(StopReason.ENDED_ELSEWHERE)

    def _stop(self, reason: StopReason) -> None:
        if self._ending:
            return
        if self.task is not None and not self.task.done() and self._stopping is None:
            self._stopping = reason
            self.task.cancel()

    async def _run(self) -> None:
        battle = self.battle
        documents = await asyncio.to_thread(self._frame_documents)
        self.index = await asyncio.to_thread(DocumentIndex, battle.document.text)
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
            verdict = budget_exhausted_verdict(
                self.round_scores,
                budget_tokens=settings.ARENA_MAX_TOKENS_PER_BATTLE,
                turns=len(self.transcript),
            )
            verdict_usage = llm.Usage()
            details: dict[str, object] = {}
        else:
            verdict, verdict_usage = await final_verdict(
                battle_id=battle.pk,
                rounds=battle.rounds,
                endpoint=self.endpoints[Role.MODERATOR],
                document=documents[battle.model_for(Role.MODERATOR)],
                transcript=self.transcript,
                round_scores=self.round_scores,
                budget=self.budget,
            )
            details = {}
            if self.jurors:
                moderator = verdict
                decision, jury_usage = await jury.deliberate(
                    battle_id=battle.pk,
                    jurors=self.jurors,
                    documents=documents,
                    transcript=self.transcript,
                    budget=self.budget,
                    log=self.log,
                )
                verdict = decision.decide(moderator)
                details = decision.details(moderator)
                verdict_usage = llm.Usage(
                    verdict_usage.prompt_tokens + jury_usage.prompt_tokens,
                    verdict_usage.completion_tokens + jury_usage.completion_tokens,
                )
        details = {"evidence": evidence_totals(self.transcript), **details}
        # No await between the two: the verdict and battle.completed are committed together.
        await self.log.emit(
            events.VERDICT, {**verdict.as_event_data(), **details, "usage": _usage_data(verdict_usage)}
        )
        await self._complete(verdict, details)

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
                    "flags": battle.document.flags,
                },
                "rounds": battle.rounds,
                "agents": [{"role": role.value, "model": battle.model_for(role)} for role in ROLE_ORDER],
            },
            durable=True,
        )

    async def _complete(self, verdict: Verdict, details: dict[str, object]) -> None:
        self._ending = True
        battle, budget = self.battle, self.budget
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
                verdict_details=details,
                prompt_tokens=budget.prompt_tokens,
                completion_tokens=budget.completion_tokens,
                cost_usd=budget.cost_usd,
            )

        await self.log.emit(
            events.BATTLE_COMPLETED,
            {"usage": budget.usage(), "cost_usd": budget.cost_usd, "duration_ms": duration_ms},
            write=finish,
            durable=True,
        )

    def _frame_documents(self) -> dict[str, FramedDocument]:
        """The document framed for each distinct model (the jurors' too), cut to that model's context."""
        battle = self.battle
        flags = [Flag(line=f["line"], text=f["text"]) for f in battle.document.flags]
        framed = {}
        for model in {*(battle.model_for(role) for role in ROLE_ORDER), *(j.model for j in self.jurors)}:
            framed[model] = frame_document(
                text=battle.document.text,
                name=battle.document.original_name,
                nonce=battle.pk.hex[:12],
                budget_tokens=document_budget(
                    context_tokens=llm.context_tokens(model),
                    max_tokens_per_turn=self.max_tokens,
                    rounds=battle.rounds,
                ),
                count_tokens=llm.token_counter(model),
                flags=flags,
            )
        return framed

    async def _turn(self, index: int, round_number: int, role: Role, document: FramedDocument) -> None:
        endpoint = self.endpoints[role]
        messages = await asyncio.to_thread(
            build_messages,
            role=role,
            round_number=round_number,
            rounds=self.battle.rounds,
            document=document,
            transcript=list(self.transcript),
            context_tokens=llm.context_tokens(endpoint.model),
            max_tokens_per_turn=self.max_tokens,
            count_tokens=llm.token_counter(endpoint.model),
        )
        max_tokens = await asyncio.to_thread(
            self.budget.affordable_tokens, endpoint, messages, cap=self.max_tokens
        )
        battle = self.battle
        self.turn_under_way, self.content = index, ""

        def start_turn() -> None:  # the log's writes return nothing; the Turn row is not needed here
            services.turn_start(battle=battle, index=index, round_number=round_number, role=role)

        await self.log.emit(
            events.TURN_STARTED,
            {"turn": index, "round": round_number, "role": role.value},
            write=start_turn,
            durable=True,
        )
        stream = llm.ReplyStream(endpoint, messages, max_tokens=max_tokens)
        async for delta in stream:
            self.content += delta
            await self.log.emit(events.TOKEN, {"turn": index, "role": role.value, "text": delta})
        content, usage = self.content, stream.usage
        debate = [entry.content for entry in self.transcript]
        citations = await asyncio.to_thread(cite_all, self.index, content, debate=debate)
        cited = [c.as_dict() for c in citations]
        scores = self._record(round_number, role, content, usage, citations)
        # Over as soon as turn.completed is in the log (emit appends it before it can be cancelled).
        self.turn_under_way = None
        await self.log.emit(
            events.TURN_COMPLETED,
            {
                "turn": index,
                "round": round_number,
                "role": role.value,
                "content": content,
                "usage": _usage_data(usage),
                "scores": scores.as_dict() if scores else None,
                "citations": cited,
            },
            write=lambda: services.turn_complete(
                battle_id=battle.pk,
                index=index,
                content=content,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                citations=cited,
            ),
            durable=True,
        )

    def _record(
        self, round_number: int, role: Role, content: str, usage: llm.Usage, citations: list[Citation]
    ) -> Scores | None:
        """Count a completed turn in the budget, the transcript and the round scores."""
        self.budget.count(self.endpoints[role], usage)
        scores = parse_round_scores(content) if role == Role.MODERATOR else None
        if role == Role.MODERATOR:
            self.round_scores.append(scores)
        self.transcript.append(
            TranscriptEntry(round=round_number, role=role.value, content=content, citations=tuple(citations))
        )
        return scores

    async def _fail(self, error: str, *, retryable: bool) -> None:
        """End the battle as failed; everything already streamed stays in the log."""
        self._ending = True
        battle_id, content, budget = self.battle.pk, self.content, self.budget

        def fail() -> None:
            services.turn_interrupt(battle_id=battle_id, content=content)
            services.battle_fail(
                battle_id=battle_id,
                error=error,
                prompt_tokens=budget.prompt_tokens,
                completion_tokens=budget.completion_tokens,
                cost_usd=budget.cost_usd,
            )

        try:
            await self.log.emit(
                events.BATTLE_FAILED, {"error": error, "retryable": retryable}, write=fail, durable=True
            )
        except LeaseLost:
            logger.warning("Battle %s: not failed here, another process has taken it over", battle_id)
        except BattleStateError:
            logger.info("Battle %s was already over: not failed", battle_id)
        except Exception:
            logger.exception("Could not record the failure of battle %s", battle_id)
            # Fenced like every write: a process that lost the lease must not touch the battle.
            await sync_to_async(services.append_with)(
                battle_id=battle_id, events=[], write=fail, owner=self.owner
            )


def _usage_data(usage: llm.Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
