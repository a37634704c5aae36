"""Deleting battles and documents, the one way every path takes: the owner's delete button, the
retention purge (`manage.py purgebattles` and the supervisor's daily run) and the admin.

A battle goes with its turns, events and votes (they cascade); its document goes with the last battle
that uses it, and the document's file under MEDIA_ROOT once that deletion has committed, so that no
file is ever left without its row (a file deleted before a rollback would leave a row without its
file instead). A battle still under way is ended first (`battles.live.removal` tells its spectators).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from battles.exceptions import BattleStateError
from battles.models import Battle, Document

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletedBattle:
    """What a deletion removed, for the purge's report."""

    battle_id: UUID
    document_name: str
    status: str
    finished_at: datetime | None
    document_deleted: bool


def battle_delete(*, battle_id: UUID) -> DeletedBattle | None:
    """Delete a battle that is over (end a live one first: `services.battle_end`), and its document
    when no other battle uses it. None when there is no such battle. Raises BattleStateError for a
    battle still pending or running."""
    with transaction.atomic():
        battle = Battle.objects.select_for_update().select_related("document").filter(pk=battle_id).first()
        if battle is None:
            return None
        if not battle.is_over:
            raise BattleStateError("End the battle before deleting it.")
        document = battle.document
        battle.delete()
        document_deleted = not document.battles.exists()
        if document_deleted:
            _document_delete(document)
    return DeletedBattle(
        battle_id=battle_id,
        document_name=document.original_name,
        status=battle.status,
        finished_at=battle.finished_at,
        document_deleted=document_deleted,
    )


def document_delete(*, document_id: int) -> None:
    """Delete a document that no battle uses any more (delete its battles first), with its file."""
    with transaction.atomic():
        document = Document.objects.select_for_update().filter(pk=document_id).first()
        if document is None:
            return
        if document.battles.exists():
            raise BattleStateError("Delete the document's battles before the document.")
        _document_delete(document)


def _document_delete(document: Document) -> None:
    """Delete the row now and its file once the deletion commits. Precondition: in a transaction."""
    name, storage = document.file.name, document.file.storage
    document.delete()

    def delete_file() -> None:
        try:
            storage.delete(name)
        except OSError:
            logger.exception("Could not delete the file %s of a deleted document", name)

    if name:
        transaction.on_commit(delete_file)


def battles_expired(*, older_than_days: int, now: datetime | None = None) -> list[UUID]:
    """Finished and failed battles that ended more than `older_than_days` days ago, oldest first."""
    cutoff = (now or timezone.now()) - timedelta(days=older_than_days)
    over = Q(status__in=[Battle.Status.FINISHED, Battle.Status.FAILED])
    ended_before = Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff)
    expired = Battle.objects.filter(over & ended_before).order_by("created_at")
    return list(expired.values_list("pk", flat=True))


def battles_purge(*, older_than_days: int, dry_run: bool = False) -> list[DeletedBattle]:
    """Delete the expired battles one at a time (a purge cut short leaves nothing half-deleted) and
    say what went; with `dry_run`, what would go, deleting nothing."""
    removed: list[DeletedBattle] = []
    for battle_id in battles_expired(older_than_days=older_than_days):
        if dry_run:
            gone = [battle_id, *(r.battle_id for r in removed)]
            battle = Battle.objects.select_related("document").filter(pk=battle_id).first()
            if battle is not None:
                removed.append(
                    DeletedBattle(
                        battle_id=battle_id,
                        document_name=battle.document.original_name,
                        status=battle.status,
                        finished_at=battle.finished_at,
                        document_deleted=not battle.document.battles.exclude(pk__in=gone).exists(),
                    )
                )
            continue
        deleted = battle_delete(battle_id=battle_id)
        if deleted is not None:
            removed.append(deleted)
    return removed
