"""`manage.py purgebattles`: the retention purge from the terminal."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from battles import services
from battles.models import Battle, Document

pytestmark = pytest.mark.django_db(transaction=True)  # the files go once each deletion commits


def over(make_battle, *, days_ago: float, name: str = "essay.md") -> Battle:
    battle = make_battle(name=name)
    services.battle_start(battle_id=battle.pk)
    services.battle_fail(battle_id=battle.pk, error="The model failed.")
    then = timezone.now() - timedelta(days=days_ago)
    Battle.objects.filter(pk=battle.pk).update(created_at=then, finished_at=then)
    return battle


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purgebattles", *args, stdout=out)
    return out.getvalue()


def test_a_dry_run_lists_what_would_go_and_keeps_it(make_battle) -> None:
    old = over(make_battle, days_ago=10, name="old-plan.md")
    over(make_battle, days_ago=2)

    output = purge("--older-than-days", "7", "--dry-run")

    assert (
        f"Would delete battle {old.pk} (failed, ended " in output
        and "'old-plan.md' and its document" in output
    )
    assert output.splitlines()[-1] == "Would delete 1 battle(s) and 1 document(s) older than 7 day(s)."
    assert Battle.objects.count() == 2


def test_a_purge_deletes_old_battles_with_their_documents_and_files(make_battle) -> None:
    old, recent = over(make_battle, days_ago=10), over(make_battle, days_ago=2)
    old_file = Path(old.document.file.path)

    output = purge("--older-than-days", "7")

    assert output.splitlines()[-1] == "Deleted 1 battle(s) and 1 document(s) older than 7 day(s)."
    assert list(Battle.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Document.objects.filter(pk=old.document_id).exists() and not old_file.exists()
    assert Path(recent.document.file.path).exists()


def test_the_default_is_the_retention_setting(make_battle, settings) -> None:
    old = over(make_battle, days_ago=40)
    with pytest.raises(CommandError, match="ARENA_RETENTION_DAYS is 0"):
        purge()
    with pytest.raises(CommandError, match="at least 1"):
        purge("--older-than-days", "0")
    assert Battle.objects.filter(pk=old.pk).exists()

    settings.ARENA_RETENTION_DAYS = 30
    assert "Deleted 1 battle(s)" in purge()
    assert not Battle.objects.exists()
