"""Virtual time for tests of schedules: time passes only when the test says so.

A test of *when* something is due (a replay's pacing, a wave's gap, a lease's renewals) must not
measure how long the machine took: on a busy 2-core machine any wall-clock bound flakes. Instead the
module under test is given a clock that the test moves, and the test checks what happened at each
virtual instant. The module sees it through `overlay`, which replaces a few attributes of a module it
imports (`time`, `asyncio`) for that module only:

    clock = VirtualClock()
    monkeypatch.setattr(replay, "time", overlay(time, monotonic=clock.monotonic))
    monkeypatch.setattr(replay, "asyncio", overlay(asyncio, sleep=clock.sleep))
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import types
from collections.abc import Callable
from typing import Any

# How many turns of the real event loop `settle` gives the tasks and callbacks that are ready.
SETTLE_TURNS = 20
_real_sleep = asyncio.sleep


def overlay(module: types.ModuleType, **overrides: object) -> types.SimpleNamespace:
    """`module` with some attributes replaced, to monkeypatch into the one module under test."""
    return types.SimpleNamespace(**{**vars(module), **overrides})


async def settle() -> None:
    """Let every task and callback that is ready run (virtual time does not move)."""
    for _ in range(SETTLE_TURNS):
        await _real_sleep(0)


class VirtualClock:
    """`time.monotonic` and `asyncio.sleep` for a module under test: a sleep moves the clock on at once
    (and lets the other tasks run), so a schedule plays out instantly and exactly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []  # every sleep asked for, in order

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float, result: Any = None) -> Any:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await _real_sleep(0)
        return result


class VirtualTimer:
    """A timer of `VirtualLoop`: what `call_at` returns (cancellable, like asyncio's TimerHandle)."""

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualLoop:
    """The parts of an event loop that code keeping time uses (`time`, `call_at`, `call_later`), on
    virtual time; everything else (futures, `call_soon`, tasks) is the real running loop's.

    Timers fire only when the test moves time on with `advance`/`advance_to`; `spend` is time taken by
    synchronous work holding the loop (a spectator's write), during which no timer fires.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, start: float = 1000.0) -> None:
        self._loop = loop
        self.now = start
        self._timers: list[tuple[float, int, VirtualTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[Any]:
        return self._loop.create_future()

    def call_soon(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle:
        return self._loop.call_soon(callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> VirtualTimer:
        timer = VirtualTimer(when, callback, args)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> VirtualTimer:
        return self.call_at(self.now + delay, callback, *args)

    def spend(self, seconds: float) -> None:
        """Synchronous work that holds the loop for `seconds`."""
        self.now += seconds

    def pending(self) -> list[float]:
        """When the timers that have not fired (nor been cancelled) are due, earliest first."""
        return sorted(t.when for _, _, t in self._timers if not t.cancelled)

    async def advance_to(self, when: float) -> None:
        """Move time on to `when`, firing every timer due by then in order, each at its own time."""
        await settle()
        while self._timers and self._timers[0][0] <= when:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, due)
            timer.callback(*timer.args)
            await settle()
        self.now = max(self.now, when)
        await settle()

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self.now + seconds)
