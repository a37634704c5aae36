"""One live battle's fan-out in this process: its frames, and the spectators that read them.

A `Channel` holds the battle's committed events as ready-made SSE frames, from seq 1, encoded once and
shared by every spectator. A spectator is only a cursor into that list (`follow`): publishing never
waits on anyone and costs the same however many watch, a spectator never makes a database query while
live, and one that falls more than ARENA_SSE_MAX_LAG_EVENTS behind is disconnected (its browser
reconnects with Last-Event-ID and catches up). A spectator drains everything new as one write.

Spectators are woken in waves (`battles.live.wakeups`): with few of them every committed batch is
written at once; with thousands, a wave takes as long as thousands of writes, and the next waits half
as long again (at most ARENA_SSE_COALESCE_MAX_MS), so each write carries more frames and the process
keeps time for the battle itself. Frames, ids and their order never change: only how many go in one
write. Who feeds a channel (the engine, or a follower of a battle run elsewhere) is the hub's business.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from uuid import UUID

from django.conf import settings

from battles.events import RecordedEvent
from battles.live import sse
from battles.live.wakeups import Wakeups

logger = logging.getLogger(__name__)

SPECTATORS_EVENT = "spectators"
# The spectator count is not worth waking every spectator for more than once a second.
SPECTATOR_COUNT_INTERVAL_SECONDS = 1.0
# The most frames in one write: a spectator joining a long battle catches up in chunks of some
# tens of kilobytes rather than one of megabytes (thousands joining at once made hundreds of
# megabytes of short-lived chunks, which the allocator then kept).
CATCH_UP_FRAMES = 256


class Channel:
    """One live battle in this process: its frames so far and the means to wait for more."""

    def __init__(self, battle_id: UUID) -> None:
        self.battle_id = battle_id
        self.frames: list[bytes] = []  # frames[i] is the event with seq i + 1
        self.closed = False  # no more events will come
        self.spectators = 0
        self.spectators_version = 0
        self.ready: asyncio.Task[bool] | None = None  # set by the hub: True once the battle is live here
        self.wakeups = Wakeups(max_gap=settings.ARENA_SSE_COALESCE_MAX_MS / 1000)
        self._count_pending = False

    @property
    def last_seq(self) -> int:
        return len(self.frames)

    def publish(self, batch: Sequence[RecordedEvent]) -> None:
        """Append committed events (in seq order; already known ones are skipped) and wake spectators."""
        for event in batch:
            if event.seq <= self.last_seq:
                continue
            if event.seq != self.last_seq + 1:
                raise ValueError(f"Gap in battle {self.battle_id}: got seq {event.seq} after {self.last_seq}")
            self.frames.append(sse.encode_event(event))
            if event.is_terminal:
                self.closed = True
        self.wakeups.notify()

    def close(self) -> None:
        self.closed = True
        self.wakeups.notify_now()

    async def wait(self, timeout: float) -> bool:
        """Wait for news; False when `timeout` passed without any (see `battles.live.wakeups`)."""
        return await self.wakeups.wait(timeout)

    def add_spectator(self) -> None:
        self.spectators += 1
        self._count_changed()

    def remove_spectator(self) -> None:
        self.spectators -= 1
        self._count_changed()

    def _count_changed(self) -> None:
        if not self._count_pending:
            self._count_pending = True
            asyncio.get_running_loop().call_later(SPECTATOR_COUNT_INTERVAL_SECONDS, self._announce_count)

    def _announce_count(self) -> None:
        self._count_pending = False
        self.spectators_version += 1
        self.wakeups.notify()


async def follow(channel: Channel, *, after: int, deadline: float = math.inf) -> AsyncIterator[bytes]:
    """One spectator's writes: every frame with seq > `after`, the spectator count when it changes,
    and a heartbeat while nothing else goes out; until the channel closes or `deadline` (monotonic)."""
    position = after
    announced = -1
    caught_up = False
    while True:
        parts = []
        if announced != channel.spectators_version:
            announced = channel.spectators_version
            parts.append(sse.frame(SPECTATORS_EVENT, {"count": channel.spectators}))
        if position < channel.last_seq:
            if caught_up and channel.last_seq - position > settings.ARENA_SSE_MAX_LAG_EVENTS:
                logger.info("Disconnecting a spectator of battle %s: too far behind", channel.battle_id)
                return
            end = min(channel.last_seq, position + CATCH_UP_FRAMES)
            parts.extend(channel.frames[position:end])
            position = end
        caught_up = caught_up or position == channel.last_seq
        if parts:
            yield b"".join(parts)
            continue  # more may have come while the write was under way
        if channel.closed:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            return  # long enough: the browser reconnects with Last-Event-ID
        # No await between the checks above and taking the channel's next change: nothing is missed.
        if not await channel.wait(min(settings.ARENA_SSE_HEARTBEAT_SECONDS, left)) and left > (
            settings.ARENA_SSE_HEARTBEAT_SECONDS
        ):
            yield sse.PING
