"""Waking the spectators of one channel: all together, in waves, no more often than the process affords.

A spectator waits for news (a committed batch, a new spectator count) or for its timeout (the next
heartbeat, the stream's end). Thousands of them wait on one channel, so waiting must cost next to
nothing: a future each and no timer each (a channel-wide tick serves every timeout, rounded up to
TICK_SECONDS), and news wakes them all at once, as a *wave*.

Waves are how writes are coalesced under load. Each woken spectator writes everything new as one
chunk, so the fewer the waves, the fewer the writes; daphne's cost is per write, not per byte. A new
wave starts only once every spectator of the last one has run (each writes as it runs, so a wave
lasts as long as its writes), and no sooner than half as long as the last wave took
(WAVE_GAP_RATIO) after it ended, bounded by ARENA_SSE_COALESCE_MAX_MS:
- with few spectators a wave takes microseconds: every batch is written as soon as it is committed;
- with thousands a wave takes as long as thousands of writes, and the gap after it half as long:
  writing to spectators never takes more than about two thirds of the process's time, and every
  spectator gets a write per wave holding all the events since the last one.
A wave wakes its spectators a slice at a time (WAVE_SLICE), so the battle's engine, its commits and
new connections get the event loop between slices rather than after thousands of writes.
Events are never merged, dropped or reordered: only the number of frames per write changes.
"""

from __future__ import annotations

import asyncio
import math

# The gap after a wave, as a share of how long the wave took: 0.5 keeps spectators' writes to at most
# about two thirds of the event loop's time. Measured at 5,000 spectators: 1.0 left the core 40 % idle
# and cost 40-100 ms of p99.
WAVE_GAP_RATIO = 0.5
# A wave wakes this many spectators per turn of the event loop: between two slices the loop runs
# whatever else is ready (the battle's engine, a commit coming back, new connections), so a wave of
# thousands of writes never holds it for more than a few milliseconds at a time.
WAVE_SLICE = 200
# Timeouts are served by one tick per channel, rounded up to this: a heartbeat or a stream's end may
# come this much later than asked, and a thousand timeouts falling due together cost one tick.
TICK_SECONDS = 0.05
# A wave whose spectators have not all run by then is taken as over (none should ever take this long).
WAVE_TIMEOUT_SECONDS = 5.0
# The event loop may run a timer this much before its time; a tick then still serves what is due.
CLOCK_SLACK_SECONDS = 1e-3


class Wakeups:
    """The waiting spectators of one channel. Preconditions: used from one event loop."""

    def __init__(self, *, max_gap: float) -> None:
        self.max_gap = max_gap
        self._loop = asyncio.get_running_loop()
        self._waiters: list[tuple[asyncio.Future[bool], float]] = []  # (future, due tick)
        self._news = False  # something happened that the waiters have not been woken for
        self._wave_left = 0  # spectators woken by the current wave that have not run yet
        self._wave_started = 0.0
        self._next_wave = 0.0  # loop time before which no wave starts
        self._flush: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = math.inf
        self.waves = 0  # how many waves so far (for tests and diagnostics)

    async def wait(self, timeout: float) -> bool:
        """Wait for news: True when woken by a wave, False once `timeout` (rounded up) has passed."""
        future: asyncio.Future[bool] = self._loop.create_future()
        due = math.ceil((self._loop.time() + timeout) / TICK_SECONDS) * TICK_SECONDS
        self._waiters.append((future, due))
        if due < self._tick_at:
            self._schedule_tick(due)
        try:
            return await future
        finally:
            if future.done() and not future.cancelled() and future.result():
                self._ran()

    def notify(self) -> None:
        """There is news: wake every waiter, with the next wave."""
        self._news = True
        self._maybe_start()

    def notify_now(self) -> None:
        """Wake every waiter at once, whatever the load (the stream is ending)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._news = True
        self._start_wave(self._loop.time())

    def _maybe_start(self) -> None:
        if not self._news or self._flush is not None:
            return
        now = self._loop.time()
        if self._wave_left > 0:
            if now - self._wave_started < WAVE_TIMEOUT_SECONDS:
                return  # the wave's end starts the next one
            self._wave_left = 0
        if now < self._next_wave:
            self._flush = self._loop.call_at(self._next_wave, self._flushed)
            return
        self._start_wave(now)

    def _flushed(self) -> None:
        self._flush = None
        self._maybe_start()

    def _start_wave(self, now: float) -> None:
        self._news = False
        self.waves += 1
        waiters, self._waiters = self._waiters, []
        futures = [future for future, _ in waiters if not future.done()]
        self._wave_started = now
        self._wave_left = len(futures)
        if futures:
            self._wake(futures, 0)
        else:
            self._wave_ended(now)

    def _wake(self, futures: list[asyncio.Future[bool]], start: int) -> None:
        """Wake one slice of the wave; the next slice waits for the event loop's next turn."""
        for future in futures[start : start + WAVE_SLICE]:
            if future.done():  # its spectator left since the wave began: it will never run
                self._ran()
            else:
                future.set_result(True)
        if start + WAVE_SLICE < len(futures):
            self._loop.call_soon(self._wake, futures, start + WAVE_SLICE)

    def _ran(self) -> None:
        if self._wave_left > 0:
            self._wave_left -= 1
            if self._wave_left == 0:
                self._wave_ended(self._loop.time())

    def _wave_ended(self, now: float) -> None:
        took = now - self._wave_started
        self._next_wave = now + min(self.max_gap, took * WAVE_GAP_RATIO)
        self._maybe_start()

    def _schedule_tick(self, at: float) -> None:
        if self._tick is not None:
            self._tick.cancel()
        self._tick_at = at
        self._tick = self._loop.call_at(at, self._on_tick)

    def _on_tick(self) -> None:
        """Wake the waiters whose timeout is due; the next tick is at the earliest one left."""
        self._tick, self._tick_at = None, math.inf
        now = self._loop.time()
        left: list[tuple[asyncio.Future[bool], float]] = []
        earliest = math.inf
        for future, due in self._waiters:
            if future.done():
                continue
            if due <= now + CLOCK_SLACK_SECONDS:
                future.set_result(False)
            else:
                left.append((future, due))
                earliest = min(earliest, due)
        self._waiters = left
        if earliest < math.inf:
            self._schedule_tick(earliest)
