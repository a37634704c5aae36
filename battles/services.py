"""Every write to the arena's tables: uploads, battle transitions, turns and the event log.

Transitions are guarded updates: zero rows changed means someone else got there first, and a named
error says so. These functions are synchronous; the engine calls them through `sync_to_async`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from decimal import Decimal

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from battles.documents import extract_text, safe_display_name
from battles.events import BATTLE_FAILED, RecordedEvent
from battles.exceptions import ArenaFull, BattleError, BattleStateError
from battles.models import MAX_ROUNDS, MIN_ROUNDS, ROLE_ORDER, Battle, Document, Event, Turn


def document_create(*, data: bytes, name: str) -> Document:
    """Validate and store an upload. Raises DocumentRejected; on any failure nothing is stored."""
    extracted = extract_text(data, name=name, max_bytes=settings.ARENA_MAX_UPLOAD_BYTES)
    document = Document(
        original_name=safe_display_name(name),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=extracted.content_type,
        encoding=extracted.encoding or "",
        text=extracted.text,
    )
    document.file.save("upload", ContentFile(data), save=False)
    try:
        document.save()
    except BaseException:
        document.file.delete(save=False)
        raise
    return document


def battle_create(
    *,
    document: Document,
    rounds: int | None = None,
    models: dict[str, str] | None = None,
    client_ip: str | None = None,
) -> Battle:
    """A pending battle. Models default to the configured ones, per role."""
    rounds = settings.ARENA_ROUNDS if rounds is None else rounds
    if not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise BattleError(f"Rounds must be between {MIN_ROUNDS} and {MAX_ROUNDS}.")
    chosen = {**settings.ARENA_ROLE_MODELS, **{k: v for k, v in (models or {}).items() if v}}
    return Battle.objects.create(
        document=document,
        rounds=rounds,
        client_ip=client_ip,
        **{f"{role}_model": chosen[role] for role in ROLE_ORDER},
    )


def battle_create_from_upload(
    *,
    data: bytes,
    name: str,
    rounds: int | None = None,
    models: dict[str, str] | None = None,
    client_ip: str | None = None,
) -> Battle:
    """Store an upload and a pending battle on it, both or neither. Raises DocumentRejected."""
    document = document_create(data=data, name=name)
    try:
        with transaction.atomic():
            return battle_create(document=document, rounds=rounds, models=models, client_ip=client_ip)
    except BaseException:
        document.file.delete(save=False)
        document.delete()
        raise


def battle_retry(*, battle: Battle, client_ip: str | None = None) -> Battle:
    """A new pending battle on the same document, with the same rounds and models."""
    return battle_create(
        document=battle.document,
        rounds=battle.rounds,
        models={role: battle.model_for(role) for role in ROLE_ORDER},
        client_ip=client_ip,
    )


def battle_start(*, battle_id: object, max_running: int | None = None) -> Battle:
    """pending → running. Raises BattleStateError when the battle is not pending (already claimed),
    and ArenaFull when `max_running` battles are already running (it stays pending)."""
    with transaction.atomic():
        if max_running is not None:
            running = Battle.objects.filter(status=Battle.Status.RUNNING).count()
            if running >= max_running:
                raise ArenaFull(f"{running} battles are running; this one waits for a free slot.")
        claimed = Battle.objects.filter(pk=battle_id, status=Battle.Status.PENDING).update(
            status=Battle.Status.RUNNING, started_at=timezone.now()
        )
    if not claimed:
        raise BattleStateError("This battle has already started.")
    return Battle.objects.select_related("document").get(pk=battle_id)


def events_append(*, battle_id: object, events: Sequence[RecordedEvent]) -> None:
    """Append to the log. The caller assigns gapless seqs; the unique constraint guards them."""
    Event.objects.bulk_create(
        [
            Event(battle_id=battle_id, seq=e.seq, type=e.type, data=e.data, offset_ms=e.offset_ms)
            for e in events
        ]
    )


def turn_start(*, battle: Battle, index: int, round_number: int, role: str) -> Turn:
    return Turn.objects.create(
        battle=battle,
        index=index,
        round=round_number,
        role=role,
        model=battle.model_for(role),
        started_at=timezone.now(),
    )


def turn_complete(*, turn: Turn, content: str, prompt_tokens: int, completion_tokens: int) -> None:
    updated = Turn.objects.filter(pk=turn.pk, status=Turn.Status.RUNNING).update(
        status=Turn.Status.COMPLETED,
        content=content,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finished_at=timezone.now(),
    )
    if not updated:
        raise BattleStateError(f"Turn {turn.index} is not running.")


def turn_interrupt(*, turn: Turn, content: str) -> None:
    """Keep what was streamed before a failure; the turn is marked interrupted."""
    Turn.objects.filter(pk=turn.pk, status=Turn.Status.RUNNING).update(
        status=Turn.Status.INTERRUPTED, content=content, finished_at=timezone.now()
    )


def battle_finish(
    *,
    battle_id: object,
    winner: str,
    aggressor_score: float | None,
    defender_score: float | None,
    summary: str,
    verdict_fallback: bool,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float | None,
) -> None:
    """running → finished, with the verdict and totals."""
    updated = Battle.objects.filter(pk=battle_id, status=Battle.Status.RUNNING).update(
        status=Battle.Status.FINISHED,
        winner=winner,
        aggressor_score=aggressor_score,
        defender_score=defender_score,
        summary=summary,
        verdict_fallback=verdict_fallback,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=_money(cost_usd),
        finished_at=timezone.now(),
    )
    if not updated:
        raise BattleStateError("Only a running battle can finish.")


def battle_fail(
    *,
    battle_id: object,
    error: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost_usd: float | None = None,
) -> None:
    """running → failed, keeping the reason and what was spent."""
    Battle.objects.filter(pk=battle_id, status=Battle.Status.RUNNING).update(
        status=Battle.Status.FAILED,
        error=error,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=_money(cost_usd),
        finished_at=timezone.now(),
    )


def battle_mark_failed(*, battle_id: object, reason: str) -> None:
    """An operator ends a stuck running battle: status failed, and `battle.failed` closes its log.

    Raises BattleStateError when the battle is not running.
    """
    with transaction.atomic():
        battle = Battle.objects.select_for_update().get(pk=battle_id)
        if battle.status != Battle.Status.RUNNING:
            raise BattleStateError("Only a running battle can be marked failed.")
        last = Event.objects.filter(battle=battle).order_by("-seq").first()
        started = battle.started_at or timezone.now()
        offset = max(int((timezone.now() - started).total_seconds() * 1000), last.offset_ms if last else 0)
        events_append(
            battle_id=battle.pk,
            events=[
                RecordedEvent(
                    (last.seq if last else 0) + 1, BATTLE_FAILED, {"error": reason, "retryable": True}, offset
                )
            ],
        )
        Turn.objects.filter(battle=battle, status=Turn.Status.RUNNING).update(
            status=Turn.Status.INTERRUPTED, finished_at=timezone.now()
        )
        spent = Turn.objects.filter(battle=battle).aggregate(
            prompt=Sum("prompt_tokens", default=0), completion=Sum("completion_tokens", default=0)
        )
        battle_fail(
            battle_id=battle.pk,
            error=reason,
            prompt_tokens=spent["prompt"],
            completion_tokens=spent["completion"],
        )


def append_with(
    *, battle_id: object, events: Sequence[RecordedEvent], write: Callable[[], None] | None = None
) -> None:
    """Append events and run `write` in one transaction."""
    with transaction.atomic():
        events_append(battle_id=battle_id, events=events)
        if write is not None:
            write()


def _money(cost_usd: float | None) -> Decimal | None:
    """A cost as stored: six decimals, or None when unknown."""
    return None if cost_usd is None else Decimal(str(round(cost_usd, 6)))
