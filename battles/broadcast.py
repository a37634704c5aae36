"""Fan-out of a battle's events to every spectator in this process.

One `Channel` per live battle holds the battle's committed events as ready-made SSE frames, from seq 1,
encoded once and shared by every spectator. A spectator is only a cursor into that list: publishing
never waits on anyone and costs the same however many watch, a spectator never makes a database query
while live, and one that falls more than ARENA_SSE_MAX_LAG_EVENTS behind is disconnected (its browser
reconnects with Last-Event-ID and catches up). A spectator drains everything new as one write.

A channel is fed by one of two producers:
- the engine, when this process claimed the pending battle (the first spectator starts it; the run
  is a task of its own, so a disconnect never cancels it);
- a tail of the stored log, polled every ARENA_TAIL_POLL_SECONDS, when the battle runs elsewhere
  (another process, or `manage.py runbattle`), for as long as someone watches.
Battles that are over are not channels at all: their spectators read the stored log.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence

from asgiref.sync import sync_to_async
from django.conf import settings

from battles import selectors, services, sse
from battles.engine import BattleRun
from battles.events import RecordedEvent
from battles.exceptions import ArenaFull, BattleStateError
from battles.limits import StreamSlot
from battles.models import Battle

logger = logging.getLogger(__name__)

SPECTATORS_EVENT = "spectators"
# The spectator count is not worth waking every spectator for more than once a second.
SPECTATOR_COUNT_INTERVAL_SECONDS = 1.0
# How often a queued battle (the arena is full) checks for a free slot.
QUEUE_POLL_SECONDS = 1.0
# Events read per query when replaying a stored log.
REPLAY_PAGE_SIZE = 1000


class Channel:
    """One live battle in this process: its frames so far and the means to wait for more."""

    def __init__(self, battle_id: str) -> None:
        self.battle_id = battle_id
        self.frames: list[bytes] = []  # frames[i] is the event with seq i + 1
        self.closed = False  # no more events will come
        self.spectators = 0
        self.spectators_version = 0
        self.ready: asyncio.Task[bool] | None = None
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    async def wait(self, timeout: float) -> bool:
        """Wait for news; False when `timeout` passed without any."""
        done, _ = await asyncio.wait({self._changed}, timeout=timeout)
        return bool(done)

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
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)


class Hub:
    """The live channels of this process, by battle id."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, battle_id: str) -> Channel | None:
        """The battle's channel with one more spectator, or None when the battle is over.

        The first spectator of a pending battle starts it here. Preconditions: the battle exists.
        """
        channel = self.channels.get(battle_id)
        if channel is None:
            channel = self.channels[battle_id] = Channel(battle_id)
            # A fresh context: the producer must not inherit the request's thread-sensitive context.
            channel.ready = asyncio.create_task(self._activate(channel), context=contextvars.Context())
        channel.add_spectator()
        assert channel.ready is not None
        try:
            live = await asyncio.shield(channel.ready)
        except BaseException:
            channel.remove_spectator()
            raise
        if not live:
            channel.remove_spectator()
            return None
        return channel

    def leave(self, channel: Channel) -> None:
        channel.remove_spectator()

    async def _activate(self, channel: Channel) -> bool:
        """Start the producer of a new channel; False (and no channel) when the battle is over."""
        try:
            return await self._start_producer(channel)
        except BaseException:
            self._drop(channel)
            raise

    async def _start_producer(self, channel: Channel) -> bool:
        status = await selectors.battle_status(battle_id=channel.battle_id)
        while status == Battle.Status.PENDING:
            try:
                battle = await sync_to_async(services.battle_start)(
                    battle_id=channel.battle_id, max_running=settings.ARENA_MAX_RUNNING_BATTLES
                )
            except ArenaFull:
                # Queued: it starts when a running battle ends, as long as someone is waiting for it.
                if channel.spectators <= 0:
                    break
                await asyncio.sleep(QUEUE_POLL_SECONDS)
            except BattleStateError:
                status = await selectors.battle_status(battle_id=channel.battle_id)
            else:
                self._run(channel, BattleRun(battle, listeners=[channel.publish]).run())
                return True
        if status == Battle.Status.RUNNING:
            self._run(channel, self._tail(channel))
            return True
        self._drop(channel)
        return False

    def _run(self, channel: Channel, producer: object) -> None:
        task = asyncio.create_task(producer, name=f"battle-{channel.battle_id}")  # type: ignore[arg-type]
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception():
                logger.error("Producer of battle %s crashed", channel.battle_id, exc_info=task.exception())
            channel.close()
            self._drop(channel)

        task.add_done_callback(done)

    def _drop(self, channel: Channel) -> None:
        if self.channels.get(channel.battle_id) is channel:
            del self.channels[channel.battle_id]

    async def _tail(self, channel: Channel) -> None:
        """Follow a battle that runs elsewhere through its stored log, while anyone watches."""
        while not channel.closed and channel.spectators > 0:
            batch = await selectors.events_after(battle_id=channel.battle_id, after=channel.last_seq)
            if batch:
                channel.publish(batch)
            else:
                await asyncio.sleep(settings.ARENA_TAIL_POLL_SECONDS)


hub = Hub()


async def spectate(battle_id: str, *, after: int, slot: StreamSlot | None = None) -> AsyncIterator[bytes]:
    """The SSE byte stream of one spectator: every event with seq > `after`, live or stored.

    It closes after ARENA_MAX_STREAM_SECONDS at the latest (the browser reconnects and resumes), and
    frees the spectator's stream slot however it ends.
    """
    try:
        yield sse.retry(settings.ARENA_SSE_RETRY_MS)
        channel = await hub.join(battle_id)
        if channel is None:
            async for chunk in replay_stored(battle_id, after=after):
                yield chunk
            return
        deadline = time.monotonic() + settings.ARENA_MAX_STREAM_SECONDS
        try:
            async for chunk in _follow(channel, after=after, deadline=deadline):
                yield chunk
        finally:
            hub.leave(channel)
    finally:
        if slot:
            slot.release()


async def _follow(channel: Channel, *, after: int, deadline: float = math.inf) -> AsyncIterator[bytes]:
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
            end = channel.last_seq
            parts.extend(channel.frames[position:end])
            position = end
        caught_up = True
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


async def replay_stored(battle_id: str, *, after: int) -> AsyncIterator[bytes]:
    """The stored log after `after`, a page per write."""
    while True:
        batch = await selectors.events_after(battle_id=battle_id, after=after, limit=REPLAY_PAGE_SIZE)
        if not batch:
            return
        yield b"".join(sse.encode_event(e) for e in batch)
        after = batch[-1].seq
