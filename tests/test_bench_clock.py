"""The benchmark's token source (bench/clock.py): tokens on an exact, absolute schedule, each carrying
when it was sent and how late. Checked on a virtual clock: the schedule, whatever the machine's speed."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench import clock
from tests.support.clock import overlay

PERIOD_NS = 1_000_000_000 // clock.TOKENS_PER_SECOND


class Nanoseconds:
    """`time.monotonic_ns` and `asyncio.sleep` on virtual time; `stall` makes the producer late."""

    def __init__(self) -> None:
        self.now = 7_000_000_000
        self.stalls: dict[int, int] = {}  # before the nth token is asked for: this many ns are lost

    def monotonic_ns(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


async def sent(ticks: Nanoseconds, count: int, **kwargs: float) -> list[tuple[int, int]]:
    """(sent_ns, late_us) of each of `count` tokens."""
    result = []
    async for text in clock.ticks(count=count, **kwargs):
        sent_ns, late_us = text.split(":")
        result.append((int(sent_ns), int(late_us)))
        ticks.now += ticks.stalls.get(len(result), 0)
    return result


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> Nanoseconds:
    virtual = Nanoseconds()
    monkeypatch.setattr(clock, "time", overlay(time, monotonic_ns=virtual.monotonic_ns))
    monkeypatch.setattr(clock, "asyncio", overlay(asyncio, sleep=virtual.sleep))
    return virtual


async def test_tokens_go_out_at_the_rate_on_time(ticks: Nanoseconds) -> None:
    start = ticks.now

    tokens = await sent(ticks, 5)

    assert tokens == [(start + i * PERIOD_NS, 0) for i in range(5)]  # 50 a second, none late
    assert PERIOD_NS == 20_000_000


async def test_a_late_token_does_not_shift_the_ones_after_it(ticks: Nanoseconds) -> None:
    start = ticks.now
    ticks.stalls = {2: 50_000_000}  # after the second token the producer loses 50 ms (2.5 periods)

    tokens = await sent(ticks, 6)

    late = start + PERIOD_NS + 50_000_000  # when it could go on
    assert tokens == [
        (start, 0),
        (start + PERIOD_NS, 0),
        (late, 30_000),  # due at 2 periods: 30 ms late, sent at once
        (late, 10_000),  # due at 3 periods: 10 ms late, sent right after
        (start + 4 * PERIOD_NS, 0),  # back on the original schedule
        (start + 5 * PERIOD_NS, 0),
    ]


async def test_the_text_is_what_the_load_process_reads_back(ticks: Nanoseconds) -> None:
    text = clock.token_text(sent_ns=123_456_789, late_ns=4_999)
    assert text == "123456789:4 "
    match = clock.TEXT_PATTERN.search(b'{"text":"' + text.encode() + b'"}')
    assert match and match.groups() == (b"123456789", b"4")
