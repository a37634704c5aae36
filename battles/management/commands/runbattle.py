"""`manage.py runbattle PATH`: run a battle on a file from the terminal and stream it as it happens."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.urls import reverse

from battles import services
from battles.constants import MAX_ROUNDS, MIN_ROUNDS, ROLES
from battles.engine import run_battle
from battles.engine.eventlog import Listener
from battles.events import RecordedEvent
from battles.exceptions import BattleError
from battles.live import brokers
from battles.live.sse import encode_json
from battles.live.terminal import TerminalPrinter, wants_color
from battles.models import Battle
from battles.providers import llm

EXIT_FINISHED, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def arena_url(battle: Battle) -> str:
    """Where the web arena shows this battle, live while it runs (ARENA_BASE_URL)."""
    return settings.ARENA_BASE_URL.rstrip("/") + reverse("battles:arena", args=[battle.pk])


async def _run_published(battle: Battle, listener: Listener) -> Battle:
    """Run the battle, heard by `listener` and published like any battle (through Redis when
    configured, so that the web arena's spectators on every process see it live)."""
    try:
        return await run_battle(battle.pk, listeners=[listener, brokers.publisher(battle.pk)])
    finally:
        await brokers.broker().close()


class Command(BaseCommand):
    help = "Run a battle on a document and stream it to the terminal."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The document: text, Markdown, source code or PDF.")
        parser.add_argument(
            "--rounds", type=int, help=f"Rounds, {MIN_ROUNDS} to {MAX_ROUNDS} (default ARENA_ROUNDS)."
        )
        parser.add_argument("--model", help="litellm model string for all three roles (default ARENA_MODEL).")
        for role in ROLES:
            parser.add_argument(f"--{role}-model", help=f"Model for the {role.capitalize()} only.")
        parser.add_argument(
            "--jury",
            metavar="M1,M2",
            help="Comma-separated litellm model strings of the jurors (default ARENA_JURY; '' for none).",
        )
        parser.add_argument(
            "--public",
            action="store_true",
            help="List the battle publicly on the arena's home page (default: unlisted, link only).",
        )
        parser.add_argument("--json", action="store_true", help="One JSON object per event per line.")

    def handle(self, *args: Any, **options: Any) -> None:
        battle = self._create_battle(options)
        url = arena_url(battle)
        if options["json"]:
            # stdout stays one JSON object per line; the link goes to stderr.
            self.stderr.write(f"Watch it live: {url}")
            listener = self._print_json
        else:
            color = wants_color(
                isatty=self.stdout.isatty(), no_color=options["no_color"], force_color=options["force_color"]
            )
            printer = TerminalPrinter(self.stdout, color=color)
            printer.header(battle, url=url)
            listener = printer.print_events
        llm.load()  # before the battle's event loop starts: the import takes seconds
        try:
            battle = asyncio.run(_run_published(battle, listener))
        except asyncio.CancelledError:
            # Only when this process lost the battle's lease (it stalled past ARENA_LEASE_SECONDS).
            self.stderr.write(f"runbattle: another server took the battle over; follow it at {url}")
            sys.exit(EXIT_FAILED)
        if not options["json"]:
            printer.footer(battle)
        sys.exit(EXIT_FINISHED if battle.status == Battle.Status.FINISHED else EXIT_FAILED)

    def _create_battle(self, options: dict[str, Any]) -> Battle:
        path = Path(options["path"])
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._bad_input(f"no such file: {path}")
        except IsADirectoryError:
            self._bad_input(f"{path} is a directory, not a file")
        except OSError as exc:
            self._bad_input(f"cannot read {path}: {exc.strerror or exc}")
        model = options["model"]
        models = {role: options[f"{role}_model"] or model for role in ROLES}
        jury = (
            None if options["jury"] is None else [m.strip() for m in options["jury"].split(",") if m.strip()]
        )
        try:
            return services.battle_create_from_upload(
                data=data,
                name=path.name,
                rounds=options["rounds"],
                models=models,
                jury=jury,
                visibility=Battle.Visibility.PUBLIC if options["public"] else Battle.Visibility.UNLISTED,
            )
        except BattleError as exc:  # DocumentRejected included
            self._bad_input(exc.message)
        raise AssertionError("unreachable")

    def _bad_input(self, reason: str) -> None:
        self.stderr.write(f"runbattle: {reason}")
        sys.exit(EXIT_BAD_INPUT)

    def _print_json(self, batch: Sequence[RecordedEvent]) -> None:
        for event in batch:
            self.stdout.write(encode_json({"id": event.seq, "event": event.type, "data": event.data}))
        self.stdout.flush()
