"""Delivering a battle to a human at a terminal (`runbattle`): a header per turn, tokens as they
come, the verdict.

Model output and file names are untrusted: control characters (ANSI escapes included) are removed
before anything reaches the terminal. The only escapes printed are our own colours (`wants_color`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TextIO

from django.core.management.base import OutputWrapper

from battles import events
from battles.events import RecordedEvent
from battles.models import Battle

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_COLORS = {"aggressor": "31", "defender": "34", "moderator": "33", "ok": "32", "fail": "31", "dim": "2"}


def clean(text: str) -> str:
    """Text safe to print: no control characters except newline and tab, nothing unencodable."""
    return _CONTROL.sub("", text).encode("utf-8", "replace").decode("utf-8")


def wants_color(
    *,
    isatty: bool,
    no_color: bool = False,
    force_color: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> bool:
    """Whether to print colours: Django's `--force-color` wins over everything, `--no-color` and
    NO_COLOR (https://no-color.org: set and not empty) turn them off, else only on a terminal.
    Django refuses both options at once."""
    if force_color:
        return True
    if no_color or environ.get("NO_COLOR"):
        return False
    return isatty


class TerminalPrinter:
    def __init__(self, out: OutputWrapper | TextIO, *, color: bool) -> None:
        self.out = out
        self.color = color

    def _paint(self, text: str, style: str) -> str:
        return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if self.color else text

    def _write(self, text: str) -> None:
        if isinstance(self.out, OutputWrapper):
            self.out.write(text, ending="")
        else:
            self.out.write(text)

    def header(self, battle: Battle, *, url: str) -> None:
        self._write(
            f"Battle {battle.pk} on {clean(battle.document.original_name)} "
            f"({battle.rounds} round{'s' if battle.rounds != 1 else ''})\n"
            f"Watch it live: {url}\n"
        )

    def print_events(self, batch: Sequence[RecordedEvent]) -> None:
        for event in batch:
            self._print_event(event)
        self.out.flush()

    def _print_event(self, event: RecordedEvent) -> None:
        data = event.data
        if event.type == events.BATTLE_STARTED:
            agents = ", ".join(f"{a['role']}: {clean(a['model'])}" for a in data["agents"])
            self._write(self._paint(f"Agents: {agents}\n", "dim"))
        elif event.type == events.TURN_STARTED:
            title = f"── Round {data['round']} · {data['role'].capitalize()} "
            self._write("\n" + self._paint(title.ljust(60, "─"), data["role"]) + "\n")
        elif event.type == events.TOKEN:
            self._write(clean(data["text"]))
        elif event.type == events.TURN_COMPLETED:
            self._write("\n")
        elif event.type == events.VERDICT:
            scores = data["scores"]
            line = f"\nVerdict: {data['winner'].upper()}"
            line += f"  (aggressor {scores['aggressor']}, defender {scores['defender']})"
            if data.get("fallback"):
                line += " [derived: the Moderator's verdict was not parseable]"
            self._write(self._paint(line, "ok") + "\n" + clean(data["summary"]) + "\n")
        elif event.type == events.BATTLE_FAILED:
            self._write("\n" + self._paint(f"Battle failed: {clean(data['error'])}", "fail") + "\n")

    def footer(self, battle: Battle) -> None:
        cost = "unknown" if battle.cost_usd is None else f"${battle.cost_usd:.6f}"
        self._write(
            f"\nTokens: {battle.prompt_tokens} prompt + {battle.completion_tokens} completion; cost: {cost}\n"
            f"Battle id: {battle.pk} ({battle.status})\n"
        )
