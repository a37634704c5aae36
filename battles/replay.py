"""Replaying a stored battle log over SSE, with the original timing divided by a speed.

A replay reads only the stored log: it never changes the battle or calls a model. It streams the
same event types, ids and data as the live stream and honours Last-Event-ID the same way; after a
resume, timing restarts from the first event sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

from django.conf import settings

from battles import selectors, sse

MIN_SPEED = 0.25
MAX_SPEED = 50.0
# The speeds offered on the replay page; 0 means as fast as possible.
SPEEDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 0.0)
PAGE_SIZE = 1000


def parse_speed(raw: str | None) -> float:
    """`speed` from the query string: 0, or MIN_SPEED to MAX_SPEED; 1 when absent. ValueError otherwise."""
    if raw is None or raw == "":
        return 1.0
    try:
        speed = float(raw)
    except ValueError:
        raise ValueError("speed must be a number") from None
    if speed == 0:
        return 0.0
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be 0 or between {MIN_SPEED:g} and {MAX_SPEED:g}")
    return speed


async def replay(battle_id: object, *, after: int, speed: float) -> AsyncIterator[bytes]:
    """The stored log after `after`, each event at its original offset divided by `speed`."""
    yield sse.retry(settings.ARENA_SSE_RETRY_MS)
    started = time.monotonic()
    base_offset: int | None = None
    pending: list[bytes] = []
    while True:
        batch = await selectors.events_after(battle_id=battle_id, after=after, limit=PAGE_SIZE)
        if not batch:
            break
        for event in batch:
            if base_offset is None:
                base_offset = event.offset_ms
            if speed:
                due = started + (event.offset_ms - base_offset) / 1000 / speed
                if due > time.monotonic():
                    if pending:
                        yield b"".join(pending)
                        pending = []
                    async for ping in _wait_until(due):
                        yield ping
            pending.append(sse.encode_event(event))
        after = batch[-1].seq
    if pending:
        yield b"".join(pending)


async def _wait_until(due: float) -> AsyncIterator[bytes]:
    """Sleep until `due`, with a heartbeat comment for every full heartbeat interval of silence."""
    heartbeat = settings.ARENA_SSE_HEARTBEAT_SECONDS
    while (remaining := due - time.monotonic()) > 0:
        await asyncio.sleep(min(remaining, heartbeat))
        if remaining > heartbeat:
            yield sse.PING
