"""Fan-out of a battle's events to every spectator in this process.

One `Channel` per live battle holds the battle's committed events as ready-made SSE frames, from seq 1,
encoded once and shared by every spectator. A spectator is only a cursor into that list: publishing
never waits on anyone and costs the same however many watch, a spectator never makes a database query
while live, and one that falls more than ARENA_SSE_MAX_LAG_EVENTS behind is disconnected (its browser
reconnects with Last-Event-ID and catches up). A spectator drains everything new as one write.

Spectators are woken in waves (`battles.wakeups`): with few of them every committed batch is written
at once; with thousands, a wave takes as long as thousands of writes, and the next waits half as
long again (at most ARENA_SSE_COALESCE_MAX_MS), so each write carries more frames and the process
keeps time for the battle itself. Frames, ids and their order never change: only how many go in one write.

A channel is fed by one of two producers:
- the engine, when this process runs the battle: it claimed the pending battle (the first spectator
  starts it; the run is a task of its own, so a disconnect never cancels it), or took a running one
  over from a process that stopped;
- a follower (see `battles.brokers`) when the battle runs elsewhere (another process, or
  `manage.py runbattle`), for as long as someone watches. While the battle is quiet it checks the
  runner's lease, and takes the battle over once the lease has run out: spectators already watching
  see it go on without doing anything.
Battles that are over are not channels at all: their spectators read the stored log.

`supervisor` adds the rest of a process's duties: a periodic sweep for battles nobody watches whose
runner died, and the graceful shutdown (`Hub.drain`).
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

from battles import brokers, selectors, services, sse
from battles.engine import BattleRun
from battles.events import RecordedEvent
from battles.exceptions import ArenaFull, BattleStateError
from battles.limits import StreamSlot
from battles.models import Battle
from battles.wakeups import Wakeups

logger = logging.getLogger(__name__)

SPECTATORS_EVENT = "spectators"
# The spectator count is not worth waking every spectator for more than once a second.
SPECTATOR_COUNT_INTERVAL_SECONDS = 1.0
# How often a queued battle (the arena is full) checks for a free slot.
QUEUE_POLL_SECONDS = 1.0
# The most frames in one write: a spectator joining a long battle catches up in chunks of some
# tens of kilobytes rather than one of megabytes (thousands joining at once made hundreds of
# megabytes of short-lived chunks, which the allocator then kept).
CATCH_UP_FRAMES = 256
# Events read per query when replaying a stored log.
REPLAY_PAGE_SIZE = 1000
# A battle followed from elsewhere has its runner's lease checked at most this often.
LEASE_CHECK_SECONDS = 1.0
TAKEOVER_REASON = "The server running the battle stopped; another one continues it."
# How long a graceful shutdown waits for its battles to be handed over.
DRAIN_TIMEOUT_SECONDS = 10.0


class Channel:
    """One live battle in this process: its frames so far and the means to wait for more."""

    def __init__(self, battle_id: str) -> None:
        self.battle_id = battle_id
        self.frames: list[bytes] = []  # frames[i] is the event with seq i + 1
        self.closed = False  # no more events will come
        self.spectators = 0
        self.spectators_version = 0
        self.ready: asyncio.Task[bool] | None = None
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
        """Wait for news; False when `timeout` passed without any (see `battles.wakeups`)."""
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


class Hub:
    """The live channels of this process, by battle id, and the battles it runs."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.runs: dict[str, BattleRun] = {}
        self.draining = False  # shutting down: start nothing, hand everything over
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, battle_id: str) -> Channel | None:
        """The battle's channel with one more spectator, or None when the battle is over (or this
        process is shutting down: the stored log is all it serves then).

        The first spectator of a pending battle starts it here. Preconditions: the battle exists.
        """
        if self.draining:
            return None
        channel = self._channel(battle_id)
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

    def adopt(self, battle_id: str) -> None:
        """Take over a running battle whose runner died, if this process is not already on it."""
        if not self.draining and battle_id not in self.channels:
            self._channel(battle_id)

    async def drain(self) -> None:
        """Graceful shutdown: hand every battle run here over, then end every spectator's stream.

        Browsers reconnect (to another process, behind a proxy) and resume from Last-Event-ID.
        """
        self.draining = True
        runs = list(self.runs.values())
        for run in runs:
            run.hand_over()
        handing_over = [run.task for run in runs if run.task is not None and not run.task.done()]
        if handing_over:
            await asyncio.wait(handing_over, timeout=DRAIN_TIMEOUT_SECONDS)
        for channel in list(self.channels.values()):
            channel.close()

    def _channel(self, battle_id: str) -> Channel:
        channel = self.channels.get(battle_id)
        if channel is None:
            channel = self.channels[battle_id] = Channel(battle_id)
            # A fresh context: the producer must not inherit the request's thread-sensitive context.
            channel.ready = asyncio.create_task(self._activate(channel), context=contextvars.Context())
        return channel

    async def _activate(self, channel: Channel) -> bool:
        """Start the producer of a new channel; False (and no channel) when the battle is over."""
        try:
            return await self._start_producer(channel)
        except BaseException:
            self._drop(channel)
            raise

    async def _start_producer(self, channel: Channel) -> bool:
        status = await selectors.battle_status(battle_id=channel.battle_id)
        while status == Battle.Status.PENDING and not self.draining:
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
                self._run(channel, self._run_battle(channel, BattleRun(battle, listeners=[channel.publish])))
                return True
        if status == Battle.Status.RUNNING:
            run = await self._take_over(channel)
            self._run(channel, self._run_battle(channel, run) if run else self._follow_elsewhere(channel))
            return True
        self._drop(channel)
        return False

    async def _take_over(self, channel: Channel) -> BattleRun | None:
        """The run that continues the battle here, if its runner's lease has run out and this process
        wins the claim; the channel is first brought up to where the log stands."""
        if self.draining or not await selectors.lease_expired(battle_id=channel.battle_id):
            return None
        battle = await sync_to_async(services.battle_take_over)(
            battle_id=channel.battle_id, reason=TAKEOVER_REASON
        )
        if battle is None:
            return None
        logger.info("Taking battle %s over from a process that stopped", channel.battle_id)
        progress = await sync_to_async(selectors.battle_progress)(battle=battle)
        while channel.last_seq < progress.last_seq:
            channel.publish(await selectors.events_after(battle_id=channel.battle_id, after=channel.last_seq))
        return BattleRun(battle, listeners=[channel.publish], progress=progress)

    async def _run_battle(self, channel: Channel, run: BattleRun) -> None:
        self.runs[channel.battle_id] = run
        try:
            await run.run()
        finally:
            self.runs.pop(channel.battle_id, None)

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

    async def _follow_elsewhere(self, channel: Channel) -> None:
        """Follow a battle that runs elsewhere while anyone watches; continue it if its runner dies."""
        follower = brokers.broker().follower(channel.battle_id)
        checked = time.monotonic()
        try:
            while not channel.closed and channel.spectators > 0:
                batch = await follower.next(after=channel.last_seq)
                if batch:
                    channel.publish(batch)
                    continue
                if time.monotonic() - checked < LEASE_CHECK_SECONDS:
                    continue
                checked = time.monotonic()
                run = await self._take_over(channel)
                if run is not None:
                    await self._run_battle(channel, run)
                    return
        finally:
            await follower.close()


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


async def replay_stored(battle_id: str, *, after: int) -> AsyncIterator[bytes]:
    """The stored log after `after`, a page per write."""
    while True:
        batch = await selectors.events_after(battle_id=battle_id, after=after, limit=REPLAY_PAGE_SIZE)
        if not batch:
            return
        yield b"".join(sse.encode_event(e) for e in batch)
        after = batch[-1].seq
