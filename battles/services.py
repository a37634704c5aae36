"""Every write to the arena's tables: uploads, battle transitions, turns and the event log.

Transitions are guarded updates: zero rows changed means someone else got there first, and a named
error says so. These functions are synchronous; the engine calls them through `sync_to_async`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Case, F, Sum, When
from django.utils import timezone

from battles.constants import MAX_JURORS, MAX_ROUNDS, MIN_ROUNDS
from battles.documents import extract_text, safe_display_name
from battles.events import BATTLE_FAILED, TURN_INTERRUPTED, RecordedEvent
from battles.evidence.injection import find_flags
from battles.exceptions import ArenaFull, BattleError, BattleStateError, LeaseLost
from battles.models import ROLE_ORDER, Battle, Document, Event, Turn

# Who holds a lease: this process, told apart from a restarted one with the same pid.
PROCESS_OWNER = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
# A battle cut off this many times is not continued again: something in it keeps killing processes.
MAX_TAKEOVERS = 3
TOO_MANY_TAKEOVERS = "The battle was cut off {count} times by stopping servers; it is not continued again."
# Any number that other applications are unlikely to use as a PostgreSQL advisory lock key.
_START_LOCK_KEY = 0x42A77E


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
        flags=[flag.as_dict() for flag in find_flags(extracted.text)],
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
    jury: Sequence[str] | None = None,
    visibility: str | None = None,
    owner_hash: str = "",
    client_ip: str | None = None,
) -> Battle:
    """A pending battle. Models default to the configured ones, per role; the jury to ARENA_JURY
    (an empty list: no jury, the Moderator's verdict alone); the visibility to
    ARENA_DEFAULT_VISIBILITY. `owner_hash` proves its owner (see battles.visitors); empty: nobody
    owns it (a battle from the terminal)."""
    rounds = settings.ARENA_ROUNDS if rounds is None else rounds
    if not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise BattleError(f"Rounds must be between {MIN_ROUNDS} and {MAX_ROUNDS}.")
    chosen = {**settings.ARENA_ROLE_MODELS, **{k: v for k, v in (models or {}).items() if v}}
    jurors = list(settings.ARENA_JURY if jury is None else jury)
    if len(jurors) > MAX_JURORS:
        raise BattleError(f"A jury has at most {MAX_JURORS} jurors.")
    visibility = settings.ARENA_DEFAULT_VISIBILITY if visibility is None else visibility
    if visibility not in Battle.Visibility.values:
        raise BattleError(f"Unknown visibility {visibility!r}.")
    return Battle.objects.create(
        document=document,
        rounds=rounds,
        jury=jurors,
        visibility=visibility,
        owner_hash=owner_hash,
        client_ip=client_ip,
        **{f"{role}_model": chosen[role] for role in ROLE_ORDER},
    )


def battle_create_from_upload(
    *,
    data: bytes,
    name: str,
    rounds: int | None = None,
    models: dict[str, str] | None = None,
    jury: Sequence[str] | None = None,
    visibility: str | None = None,
    owner_hash: str = "",
    client_ip: str | None = None,
) -> Battle:
    """Store an upload and a pending battle on it, both or neither. Raises DocumentRejected."""
    document = document_create(data=data, name=name)
    try:
        with transaction.atomic():
            return battle_create(
                document=document,
                rounds=rounds,
                models=models,
                jury=jury,
                visibility=visibility,
                owner_hash=owner_hash,
                client_ip=client_ip,
            )
    except BaseException:
        document.file.delete(save=False)
        document.delete()
        raise


def battle_retry(*, battle: Battle, owner_hash: str = "", client_ip: str | None = None) -> Battle:
    """A new pending battle on the same document, with the same rounds, models, jury and visibility,
    owned by whoever asked for it (`owner_hash`)."""
    return battle_create(
        document=battle.document,
        rounds=battle.rounds,
        models={role: battle.model_for(role) for role in ROLE_ORDER},
        jury=battle.jury,
        visibility=battle.visibility,
        owner_hash=owner_hash,
        client_ip=client_ip,
    )


def battle_visibility_set(*, battle_id: UUID, visibility: str) -> None:
    """List a battle publicly or unlist it. Raises Battle.DoesNotExist for an unknown battle."""
    if visibility not in Battle.Visibility.values:
        raise BattleError(f"Unknown visibility {visibility!r}.")
    if not Battle.objects.filter(pk=battle_id).update(visibility=visibility):
        raise Battle.DoesNotExist(f"No battle {battle_id}.")


def battle_start(*, battle_id: UUID, max_running: int | None = None, owner: str = PROCESS_OWNER) -> Battle:
    """pending → running, with `owner` holding its lease. Raises BattleStateError when the battle is
    not pending (already claimed: exactly one claim wins), and ArenaFull when `max_running` battles
    are already running (it stays pending)."""
    with transaction.atomic():
        if max_running is not None:
            _lock_battle_starts()
            running = Battle.objects.filter(status=Battle.Status.RUNNING).count()
            if running >= max_running:
                raise ArenaFull(f"{running} battles are running; this one waits for a free slot.")
        now = timezone.now()
        claimed = Battle.objects.filter(pk=battle_id, status=Battle.Status.PENDING).update(
            status=Battle.Status.RUNNING, started_at=now, lease_owner=owner, lease_expires_at=_lease_end(now)
        )
    if not claimed:
        raise BattleStateError("This battle has already started.")
    return Battle.objects.select_related("document").get(pk=battle_id)


def _lock_battle_starts() -> None:
    """Serialise the count-then-claim of `battle_start` across processes, until the transaction ends.

    SQLite already runs one write transaction at a time (IMMEDIATE); PostgreSQL needs a lock, or two
    processes could both see a free slot.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_START_LOCK_KEY])


def _lease_end(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.ARENA_LEASE_SECONDS)


def lease_renew(*, battle_id: UUID, owner: str = PROCESS_OWNER) -> None:
    """Extend `owner`'s lease on a running battle. Raises LeaseLost when it no longer holds it."""
    renewed = Battle.objects.filter(pk=battle_id, status=Battle.Status.RUNNING, lease_owner=owner).update(
        lease_expires_at=_lease_end(timezone.now())
    )
    if not renewed:
        raise LeaseLost("Another process has taken this battle over.")


def lease_release(*, battle_id: UUID, owner: str = PROCESS_OWNER) -> bool:
    """Give a running battle up (graceful shutdown): any process may take it over at once.

    False when `owner` held no lease on it (it is over, or another process has it).
    """
    released = Battle.objects.filter(pk=battle_id, status=Battle.Status.RUNNING, lease_owner=owner).update(
        lease_owner="", lease_expires_at=timezone.now()
    )
    return bool(released)


def battle_take_over(*, battle_id: UUID, reason: str, owner: str = PROCESS_OWNER) -> Battle | None:
    """Claim a running battle whose lease has run out, so that `owner` continues it.

    In the same transaction the log is made consistent: the turn that was under way is marked
    interrupted and closed by a `turn.interrupted` {turn, reason} event (it starts again). Returns the
    battle, or None when there is nothing to take over: it is not running, its lease is still held
    (someone else was quicker), or it was cut off too often and is failed here instead.
    """
    with transaction.atomic():
        now = timezone.now()
        claimed = (
            Battle.objects.abandoned()
            .filter(pk=battle_id)
            .update(
                lease_owner=owner,
                lease_expires_at=_lease_end(now),
                # A battle handed over on purpose (lease_release) was not cut off.
                takeovers=Case(When(lease_owner="", then=F("takeovers")), default=F("takeovers") + 1),
            )
        )
        if not claimed:
            return None
        battle = Battle.objects.select_related("document").get(pk=battle_id)
        if battle.takeovers > MAX_TAKEOVERS:
            _fail_with_event(battle, TOO_MANY_TAKEOVERS.format(count=battle.takeovers))
            return None
        interrupted = list(Turn.objects.filter(battle=battle, status=Turn.Status.RUNNING).order_by("index"))
        events_append(
            battle_id=battle.pk,
            events=[
                RecordedEvent(seq, TURN_INTERRUPTED, {"turn": turn.index, "reason": reason}, offset)
                for (seq, offset), turn in zip(
                    _next_positions(battle, len(interrupted)), interrupted, strict=True
                )
            ],
        )
        Turn.objects.filter(pk__in=[t.pk for t in interrupted]).update(
            status=Turn.Status.INTERRUPTED, finished_at=now
        )
    return battle


def _next_positions(battle: Battle, count: int) -> list[tuple[int, int]]:
    """(seq, offset_ms) for `count` events appended now to the battle's log.

    Precondition: inside a transaction that holds the battle's row (nobody else appends meanwhile).
    """
    last = Event.objects.filter(battle=battle).order_by("-seq").values_list("seq", "offset_ms").first()
    last_seq, last_offset = last or (0, 0)
    started = battle.started_at or timezone.now()
    offset = max(int((timezone.now() - started).total_seconds() * 1000), last_offset)
    return [(last_seq + i, offset) for i in range(1, count + 1)]


def events_append(*, battle_id: UUID, events: Sequence[RecordedEvent]) -> None:
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


def turn_complete(
    *,
    battle_id: UUID,
    index: int,
    content: str,
    prompt_tokens: int,
    completion_tokens: int,
    citations: Sequence[dict[str, object]] = (),
) -> None:
    updated = Turn.objects.filter(battle_id=battle_id, index=index, status=Turn.Status.RUNNING).update(
        status=Turn.Status.COMPLETED,
        content=content,
        citations=list(citations),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finished_at=timezone.now(),
    )
    if not updated:
        raise BattleStateError(f"Turn {index} is not running.")


def turn_interrupt(*, battle_id: UUID, content: str = "") -> bool:
    """Mark the turn under way interrupted, keeping what it had streamed (for operators).

    False when no turn was under way (the battle stopped between two turns).
    """
    interrupted = Turn.objects.filter(battle_id=battle_id, status=Turn.Status.RUNNING).update(
        status=Turn.Status.INTERRUPTED, content=content, finished_at=timezone.now()
    )
    return bool(interrupted)


def battle_finish(
    *,
    battle_id: UUID,
    winner: str,
    aggressor_score: float | None,
    defender_score: float | None,
    summary: str,
    verdict_fallback: bool,
    verdict_source: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float | None,
    verdict_details: dict[str, object] | None = None,
) -> None:
    """running → finished, with the verdict (`verdict_details`: its evidence and jury) and totals."""
    updated = Battle.objects.filter(pk=battle_id, status=Battle.Status.RUNNING).update(
        status=Battle.Status.FINISHED,
        lease_owner="",
        lease_expires_at=None,
        winner=winner,
        aggressor_score=aggressor_score,
        defender_score=defender_score,
        summary=summary,
        verdict_fallback=verdict_fallback,
        verdict_source=verdict_source,
        verdict_details=verdict_details or {},
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=_money(cost_usd),
        finished_at=timezone.now(),
    )
    if not updated:
        raise BattleStateError("Only a running battle can finish.")


def battle_fail(
    *,
    battle_id: UUID,
    error: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost_usd: float | None = None,
) -> None:
    """running → failed, keeping the reason and what was spent. Raises BattleStateError when the
    battle is not running."""
    failed = Battle.objects.filter(pk=battle_id, status=Battle.Status.RUNNING).update(
        status=Battle.Status.FAILED,
        lease_owner="",
        lease_expires_at=None,
        error=error,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=_money(cost_usd),
        finished_at=timezone.now(),
    )
    if not failed:
        raise BattleStateError("Only a running battle can fail.")


def battle_mark_failed(*, battle_id: UUID, reason: str) -> None:
    """An operator ends a stuck running battle: status failed, and `battle.failed` closes its log.

    Raises BattleStateError when the battle is not running.
    """
    with transaction.atomic():
        battle = Battle.objects.select_for_update().get(pk=battle_id)
        if battle.status != Battle.Status.RUNNING:
            raise BattleStateError("Only a running battle can be marked failed.")
        _fail_with_event(battle, reason)


def battle_end(*, battle_id: UUID, reason: str, retryable: bool) -> RecordedEvent | None:
    """End a pending or running battle from outside its run (its owner deletes it): `battle.failed`
    closes its log, and a runner, here or elsewhere, can write nothing more (its lease goes with the
    running status). Returns that event, or None when the battle was already over (or is unknown).
    """
    with transaction.atomic():
        battle = Battle.objects.select_for_update().filter(pk=battle_id).first()
        if battle is None or battle.is_over:
            return None
        if battle.status == Battle.Status.PENDING:
            # Not started: claimed here, so that nobody starts it while it ends.
            Battle.objects.filter(pk=battle_id).update(status=Battle.Status.RUNNING)
        return _fail_with_event(battle, reason, retryable=retryable)


def _fail_with_event(battle: Battle, reason: str, *, retryable: bool = True) -> RecordedEvent:
    """Close the log with `battle.failed` and fail the battle, from outside its run; returns the event.

    Precondition: inside a transaction that holds the battle's row.
    """
    [(seq, offset)] = _next_positions(battle, 1)
    failed = RecordedEvent(seq, BATTLE_FAILED, {"error": reason, "retryable": retryable}, offset)
    events_append(battle_id=battle.pk, events=[failed])
    turn_interrupt(battle_id=battle.pk)
    spent = Turn.objects.filter(battle=battle).aggregate(
        prompt=Sum("prompt_tokens", default=0), completion=Sum("completion_tokens", default=0)
    )
    battle_fail(
        battle_id=battle.pk,
        error=reason,
        prompt_tokens=spent["prompt"],
        completion_tokens=spent["completion"],
    )
    return failed


def append_with(
    *,
    battle_id: UUID,
    events: Sequence[RecordedEvent],
    write: Callable[[], None] | None = None,
    owner: str | None = None,
) -> None:
    """Append events and run `write` in one transaction.

    With `owner`, the write is fenced by the lease: it renews `owner`'s lease in the same transaction
    and raises LeaseLost (writing nothing) when another process has taken the battle over.
    """
    with transaction.atomic():
        if owner is not None:
            lease_renew(battle_id=battle_id, owner=owner)
        events_append(battle_id=battle_id, events=events)
        if write is not None:
            write()


def _money(cost_usd: float | None) -> Decimal | None:
    """A cost as stored: six decimals, or None when unknown."""
    return None if cost_usd is None else Decimal(str(round(cost_usd, 6)))
