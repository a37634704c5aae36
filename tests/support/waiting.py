"""Waiting for a condition in a test: a poll loop with a deadline that fails with what it waited for.

Never a bare sleep: a test that sleeps "long enough" is slow on a fast machine and flaky on a busy one.
The timeouts are deadlines for something that is stuck, not measurements: on a machine that is merely
slow the condition comes true well before them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

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
