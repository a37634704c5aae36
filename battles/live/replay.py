"""Replaying a stored battle log over SSE: as fast as possible, or with its original timing divided
by a speed. The one implementation behind the stream of a battle that is over and the admin replay.

A replay reads only the stored log: it never changes the battle or calls a model. It streams the
same event types, ids and data as the live stream and honours Last-Event-ID the same way; after a
resume, timing restarts from the first event sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from uuid import UUID

from django.conf import settings

from battles import selectors
from battles.live import sse

MIN_SPEED = 0.25
MAX_SPEED = 50.0
# The speeds offered on the replay page; 0 means as fast as possible.
SPEEDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 0.0)
# Events read per query, and at most per write.
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


async def stored_log(battle_id: UUID, *, after: int, speed: float = 0.0) -> AsyncIterator[bytes]:
    """The stored log after `after`, a page per write; with a `speed`, each event at its original
    offset (from the first event sent) divided by it, and a heartbeat while waiting."""
    started = time.monotonic()
    base_offset: int | None = None
    while True:
        batch = await selectors.events_after(battle_id=battle_id, after=after, limit=PAGE_SIZE)
        if not batch:
            return
        pending: list[bytes] = []
        for event in batch:
            if speed:
                if base_offset is None:
                    base_offset = event.offset_ms
                due = started + (event.offset_ms - base_offset) / 1000 / speed
                if due > time.monotonic():
                    if pending:
                        yield b"".join(pending)
                        pending = []
                    async for ping in _wait_until(due):
                        yield ping
            pending.append(sse.encode_event(event))
        yield b"".join(pending)
        after = batch[-1].seq


async def _wait_until(due: float) -> AsyncIterator[bytes]:
    """Sleep until `due`, with a heartbeat comment for every full heartbeat interval of silence."""
    heartbeat = settings.ARENA_SSE_HEARTBEAT_SECONDS
    while (remaining := due - time.monotonic()) > 0:
        await asyncio.sleep(min(remaining, heartbeat))  # the replay's schedule, not a synchronisation
        if remaining > heartbeat:
            yield sse.PING
