"""Deleting battles and documents (battles.deletion): rows, files, and the retention purge."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone

from battles import deletion, services
from battles.engine import run_battle
from battles.exceptions import BattleStateError
from battles.models import Battle, Document, Event, Turn

pytestmark = pytest.mark.django_db(transaction=True)  # the files go once the deletion commits


def stored_files() -> set[str]:
    media = Path(settings.MEDIA_ROOT)
    return {str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()}


def assert_no_orphan_files() -> None:
    """Every file under MEDIA_ROOT belongs to a document row (other tests' files are theirs)."""
    names = set(Document.objects.values_list("file", flat=True))
    mine = {name for name in stored_files() if name in names}
    assert mine == names


def finished(make_battle, **kwargs: object) -> Battle:
    battle = make_battle(**kwargs)
    async_to_sync(run_battle)(battle.pk)
    battle.refresh_from_db()
    assert battle.status == Battle.Status.FINISHED
    return battle


def test_a_battle_goes_with_its_turns_events_document_and_file(make_battle) -> None:
    battle = finished(make_battle)
    file_name = battle.document.file.name
    assert Turn.objects.filter(battle=battle).exists() and Event.objects.filter(battle=battle).exists()
    assert file_name in stored_files()

    deleted = deletion.battle_delete(battle_id=battle.pk)

    assert deleted is not None and deleted.document_deleted and deleted.status == "finished"
    assert not Battle.objects.filter(pk=battle.pk).exists()
    assert not Turn.objects.filter(battle_id=battle.pk).exists()
    assert not Event.objects.filter(battle_id=battle.pk).exists()
    assert not Document.objects.filter(pk=battle.document_id).exists()
    assert file_name not in stored_files()
    assert deletion.battle_delete(battle_id=battle.pk) is None  # nothing left to delete


def test_a_document_stays_while_another_battle_uses_it(make_battle) -> None:
    first = finished(make_battle)
    retried = services.battle_retry(battle=first)
    async_to_sync(run_battle)(retried.pk)

    assert not deletion.battle_delete(battle_id=first.pk).document_deleted
    assert Document.objects.filter(pk=first.document_id).exists()
    assert first.document.file.name in stored_files()

    assert deletion.battle_delete(battle_id=retried.pk).document_deleted
    assert first.document.file.name not in stored_files()
    assert_no_orphan_files()


def test_a_battle_under_way_must_be_ended_first(make_battle) -> None:
    pending = make_battle()
    with pytest.raises(BattleStateError):
        deletion.battle_delete(battle_id=pending.pk)
    running = make_battle()
    services.battle_start(battle_id=running.pk)
    with pytest.raises(BattleStateError):
        deletion.battle_delete(battle_id=running.pk)
    assert Battle.objects.filter(pk__in=[pending.pk, running.pk]).count() == 2


def test_a_document_in_use_is_not_deleted_alone(make_battle) -> None:
    battle = make_battle()
    with pytest.raises(BattleStateError):
        deletion.document_delete(document_id=battle.document_id)
    assert Document.objects.filter(pk=battle.document_id).exists()


def age(battle: Battle, days: float) -> None:
    then = timezone.now() - timedelta(days=days)
    Battle.objects.filter(pk=battle.pk).update(created_at=then, finished_at=then)


def test_only_battles_over_and_older_than_the_cutoff_expire(make_battle) -> None:
    old_finished, recent_finished = finished(make_battle), finished(make_battle)
    old_failed, old_running = make_battle(), make_battle()
    services.battle_start(battle_id=old_failed.pk)
    services.battle_fail(battle_id=old_failed.pk, error="The model failed.")
    services.battle_start(battle_id=old_running.pk)
    for battle in (old_finished, old_failed, old_running):
        age(battle, days=31)
    age(recent_finished, days=29)

    assert set(deletion.battles_expired(older_than_days=30)) == {old_finished.pk, old_failed.pk}


def test_a_dry_run_says_what_would_go_and_deletes_nothing(make_battle) -> None:
    old, shared_old = finished(make_battle), None
    shared_old = services.battle_retry(battle=old)
    async_to_sync(run_battle)(shared_old.pk)
    keep = finished(make_battle)
    age(old, 40)
    age(shared_old, 39)
    before = stored_files()

    planned = deletion.battles_purge(older_than_days=30, dry_run=True)

    assert [p.battle_id for p in planned] == [old.pk, shared_old.pk]
    # The document goes with the last of its two battles, as the real purge would do it.
    assert [p.document_deleted for p in planned] == [False, True]
    assert Battle.objects.count() == 3 and stored_files() == before

    purged = deletion.battles_purge(older_than_days=30)

    assert purged == planned
    assert list(Battle.objects.values_list("pk", flat=True)) == [keep.pk]
    assert_no_orphan_files()
