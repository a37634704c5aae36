"""The byte streams a client opens: a spectator's (live, or the stored log of a battle that is over)
and an operator's replay. Each starts with the `retry:` line; the framing is `battles.live.sse`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from uuid import UUID

from django.conf import settings

from battles.live import replay, sse
from battles.live.channel import follow
from battles.live.hub import hub
from battles.live.slots import StreamSlot


async def spectate(battle_id: UUID, *, after: int, slot: StreamSlot | None = None) -> AsyncIterator[bytes]:
    """The SSE byte stream of one spectator: every event with seq > `after`, live or stored.

    It closes after ARENA_MAX_STREAM_SECONDS at the latest (the browser reconnects and resumes), and
    frees the spectator's stream slot however it ends.
    """
    try:
        yield sse.retry(settings.ARENA_SSE_RETRY_MS)
        channel = await hub.join(battle_id)
        if channel is None:
            async for chunk in replay.stored_log(battle_id, after=after):
                yield chunk
            return
        deadline = time.monotonic() + settings.ARENA_MAX_STREAM_SECONDS
        try:
            async for chunk in follow(channel, after=after, deadline=deadline):
                yield chunk
        finally:
            hub.leave(channel)
    finally:
        if slot:
            slot.release()


async def replay_stream(battle_id: UUID, *, after: int, speed: float) -> AsyncIterator[bytes]:
    """An operator's replay of a battle that is over: the stored log at `speed` (0: at once)."""
    yield sse.retry(settings.ARENA_SSE_RETRY_MS)
    async for chunk in replay.stored_log(battle_id, after=after, speed=speed):
        yield chunk
