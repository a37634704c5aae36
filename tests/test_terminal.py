"""runbattle's human output (battles.live.terminal): what each event prints, untrusted text cleaned,
colour only when asked for."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management.base import OutputWrapper

from battles import events
from battles.events import RecordedEvent
from battles.live.terminal import TerminalPrinter, clean, wants_color
from battles.models import Battle, Document

STARTED = RecordedEvent(
    1,
    events.BATTLE_STARTED,
    {"agents": [{"role": "aggressor", "model": "arena/sparring"}, {"role": "defender", "model": "m\x1b[2J"}]},
    0,
)
TURN = RecordedEvent(2, events.TURN_STARTED, {"turn": 1, "round": 1, "role": "aggressor"}, 1)
TOKENS = [
    RecordedEvent(3, events.TOKEN, {"turn": 1, "role": "aggressor", "text": "Never "}, 2),
    RecordedEvent(4, events.TOKEN, {"turn": 1, "role": "aggressor", "text": "true.\x1b[31m\x07"}, 3),
]
COMPLETED = RecordedEvent(5, events.TURN_COMPLETED, {"turn": 1, "content": "Never true."}, 4)
VERDICT = RecordedEvent(
    6,
    events.VERDICT,
    {"winner": "defender", "scores": {"aggressor": 4.0, "defender": 7.5}, "summary": "Held.\x1b]0;x\x07"},
    5,
)


def printed(batch: list[RecordedEvent], *, color: bool = False) -> str:
    out = io.StringIO()
    TerminalPrinter(out, color=color).print_events(batch)
    return out.getvalue()


def battle(**fields: object) -> Battle:
    document = Document(original_name="plan\x1b[31m.md")
    return Battle(document=document, **{"rounds": 1, **fields})


def test_each_event_type_prints_its_line() -> None:
    assert printed([STARTED]) == "Agents: aggressor: arena/sparring, defender: m[2J\n"
    assert printed([TURN]) == "\n── Round 1 · Aggressor " + "─" * 37 + "\n"
    assert printed(TOKENS) == "Never true.[31m"
    assert printed([COMPLETED]) == "\n"
    assert printed([VERDICT]) == "\nVerdict: DEFENDER  (aggressor 4.0, defender 7.5)\nHeld.]0;x\n"


def test_a_derived_verdict_says_so() -> None:
    derived = RecordedEvent(6, events.VERDICT, {**VERDICT.data, "fallback": True}, 5)
    assert "[derived: the Moderator's verdict was not parseable]" in printed([derived])


def test_a_failure_prints_its_reason() -> None:
    failed = RecordedEvent(
        2, events.BATTLE_FAILED, {"error": "The model\x1b[0m failed.", "retryable": True}, 1
    )
    assert printed([failed]) == "\nBattle failed: The model[0m failed.\n"


@pytest.mark.parametrize("quiet", [events.TURN_INTERRUPTED, events.BATTLE_COMPLETED, "spectators"])
def test_what_a_reader_does_not_need_prints_nothing(quiet: str) -> None:
    assert printed([RecordedEvent(9, quiet, {"turn": 1, "reason": "r"}, 0)]) == ""


def test_control_characters_are_stripped_but_newlines_and_tabs_kept() -> None:
    assert clean("a\x00b\x08c\x1bd\x7fe\x9bf\tg\nh\r") == "abcdef\tg\nh"
    assert clean("half an emoji \ud83d") == "half an emoji ?"  # unencodable: replaced, never an error


def test_colour_only_when_asked() -> None:
    plain = printed([STARTED, TURN, *TOKENS, COMPLETED, VERDICT])
    coloured = printed([STARTED, TURN, *TOKENS, COMPLETED, VERDICT], color=True)

    assert "\x1b" not in plain
    assert "\x1b[2mAgents: " in coloured
    assert "\x1b[31m── Round 1 · Aggressor " in coloured
    assert "\x1b[32m\nVerdict: DEFENDER" in coloured
    assert coloured.count("\x1b[0m") == 3  # every colour is reset; model text brings none of its own
    failed = RecordedEvent(2, events.BATTLE_FAILED, {"error": "Down."}, 1)
    assert "\x1b[31mBattle failed: Down.\x1b[0m" in printed([failed], color=True)


def test_header_and_footer() -> None:
    out = io.StringIO()
    printer = TerminalPrinter(out, color=False)

    printer.header(battle(), url="http://arena.test/battles/x/")
    printer.header(battle(rounds=2), url="u")
    printer.footer(
        battle(status="finished", prompt_tokens=120, completion_tokens=80, cost_usd=Decimal("0.0012"))
    )
    printer.footer(battle(status="failed", rounds=2, cost_usd=None))

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Battle ") and lines[0].endswith(" on plan[31m.md (1 round)")
    assert lines[1] == "Watch it live: http://arena.test/battles/x/"
    assert lines[2].endswith(" on plan[31m.md (2 rounds)")
    assert "Tokens: 120 prompt + 80 completion; cost: $0.001200" in lines
    assert "Tokens: 0 prompt + 0 completion; cost: unknown" in lines
    assert lines[-1].endswith("(failed)")


def test_it_writes_through_a_management_commands_output_without_extra_newlines() -> None:
    out = io.StringIO()
    TerminalPrinter(OutputWrapper(out), color=False).print_events(TOKENS)
    assert out.getvalue() == "Never true.[31m"


@pytest.mark.parametrize(
    "isatty, no_color, force_color, environ, expected",
    [
        (True, False, False, {}, True),  # a terminal: colour
        (False, False, False, {}, False),  # a pipe or a file: none
        (True, True, False, {}, False),  # --no-color
        (True, False, False, {"NO_COLOR": "1"}, False),  # https://no-color.org
        (True, False, False, {"NO_COLOR": "0"}, False),  # any value but the empty one
        (True, False, False, {"NO_COLOR": ""}, True),  # set but empty: as if unset
        (False, False, True, {}, True),  # --force-color, even with no terminal
        (False, False, True, {"NO_COLOR": "1"}, True),  # --force-color wins over NO_COLOR
    ],
)
def test_colour_follows_the_terminal_the_options_and_no_color(
    isatty: bool, no_color: bool, force_color: bool, environ: dict[str, str], expected: bool
) -> None:
    assert wants_color(isatty=isatty, no_color=no_color, force_color=force_color, environ=environ) is expected


def test_no_color_is_read_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert wants_color(isatty=True) is False
    monkeypatch.delenv("NO_COLOR")
    assert wants_color(isatty=True) is True
