"""Waiting for a condition in a test: a poll loop with a deadline that fails with what it waited for.

Never a bare sleep: a test that sleeps "long enough" is slow on a fast machine and flaky on a busy one.
The timeouts are deadlines for something that is stuck, not measurements: on a machine that is merely
slow the condition comes true well before them.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import IO

# Long enough for this 2-core machine under CI load; a condition that takes this long is stuck.
DEFAULT_TIMEOUT_SECONDS = 30.0
# How often a condition is polled: cheap conditions only (a dict lookup, a status query).
POLL_SECONDS = 0.01


def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    what: str,
    interval: float = 0.1,
) -> None:
    """Return once `condition()` is true; fail the test after `timeout` seconds, naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # the poll interval of a condition with a deadline


async def async_wait_for(
    condition: Callable[[], object | Awaitable[object]],
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    what: str,
    interval: float = POLL_SECONDS,
) -> None:
    """Like `wait_for`, on the event loop: other tasks run while it polls. `condition` may be async."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)  # the poll interval of a condition with a deadline


class Lines:
    """The lines a process prints, read by a thread of their own, so that waiting for the next one
    has a deadline (a blocking readline would wait for as long as the process stays silent)."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def next(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, what: str = "its next line") -> str:
        """The next line; fails the test when the process ends first or says nothing for `timeout` s."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None
        if line is None:
            raise AssertionError(f"the process ended before {what}")
        return line
