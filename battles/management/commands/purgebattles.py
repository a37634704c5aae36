"""`manage.py purgebattles [--older-than-days N] [--dry-run]`: delete finished and failed battles
older than N days (default ARENA_RETENTION_DAYS), their documents and files once unused."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from battles import deletion


class Command(BaseCommand):
    help = "Delete finished and failed battles older than N days, with their documents once unused."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=int,
            metavar="N",
            help="Battles that ended more than N days ago (default ARENA_RETENTION_DAYS).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say what would go; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than_days"]
        if days is None:
            days = settings.ARENA_RETENTION_DAYS
            if days == 0:
                raise CommandError(
                    "ARENA_RETENTION_DAYS is 0 (keep forever): pass --older-than-days N to purge anyway."
                )
        if days < 1:
            raise CommandError("--older-than-days must be at least 1.")
        dry_run = options["dry_run"]
        removed = deletion.battles_purge(older_than_days=days, dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        for battle in removed:
            ended = battle.finished_at.date().isoformat() if battle.finished_at else "never started"
            document = " and its document" if battle.document_deleted else ""
            self.stdout.write(
                f"{verb} battle {battle.battle_id} ({battle.status}, ended {ended}) on "
                f"{battle.document_name!r}{document}"
            )
        documents = sum(1 for battle in removed if battle.document_deleted)
        self.stdout.write(
            f"{verb} {len(removed)} battle(s) and {documents} document(s) older than {days} day(s)."
        )
