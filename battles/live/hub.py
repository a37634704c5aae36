"""The process's battle runner: which live battles it serves, and who produces each one's events.

A live battle's channel (`battles.live.channel`) is fed by one of two producers:
- the engine, when this process runs the battle: it claimed the pending battle (the first spectator
  starts it; the run is a task of its own, so a disconnect never cancels it; on a full arena it waits
  for a free slot while someone watches), or took a running one over from a process that stopped;
- a follower (see `battles.live.brokers`) when the battle runs elsewhere (another process, or
  `manage.py runbattle`), for as long as someone watches. While the battle is quiet it checks the
  runner's lease, and takes the battle over once the lease has run out: spectators already watching
  see it go on without doing anything.
Battles that are over are not channels at all: their spectators read the stored log.

`battles.live.supervisor` adds the rest of a process's duties: a periodic sweep for battles nobody
watches whose runner died, and the graceful shutdown (`Hub.drain`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings

from battles import selectors, services
from battles.engine import BattleRun
from battles.events import RecordedEvent
from battles.exceptions import ArenaFull, BattleStateError
from battles.live import brokers
from battles.live.channel import Channel
from battles.models import Battle

logger = logging.getLogger(__name__)

# How often a queued battle (the arena is full) checks for a free slot.
QUEUE_POLL_SECONDS = 1.0
# A battle followed from elsewhere has its runner's lease checked at most this often.
LEASE_CHECK_SECONDS = 1.0
TAKEOVER_REASON = "The server running the battle stopped; another one continues it."
# How long a graceful shutdown waits for its battles to be handed over.
DRAIN_TIMEOUT_SECONDS = 10.0


class Hub:
    """The live channels of this process, by battle id, and the battles it runs."""

    def __init__(self) -> None:
        self.channels: dict[UUID, Channel] = {}
        self.runs: dict[UUID, BattleRun] = {}
        self.draining = False  # shutting down: start nothing, hand everything over
        self._tasks: set[asyncio.Task[None]] = set()
        self._ending: set[UUID] = set()  # battles being ended from outside their run (`end`)

    async def join(self, battle_id: UUID) -> Channel | None:
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

    def adopt(self, battle_id: UUID) -> bool:
        """Take over a running battle whose runner died, unless this process is already on it (or
        shutting down). Returns whether it set about it."""
        if self.draining or battle_id in self.channels:
            return False
        self._channel(battle_id)
        return True

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

    async def end(self, battle_id: UUID, end_battle: Callable[[], RecordedEvent | None]) -> None:
        """End a battle from outside its run (its owner deletes it). `end_battle` commits the
        `battle.failed` that ends it and returns it (None: the battle was already over); then the run
        here, if any, writes nothing more, and the spectators here and on the other processes get
        every event up to that one before their streams close. Call before its log is deleted.

        Until then the channel stays open even if its producer stops first (the runner's next write
        is refused as soon as the end commits), so that no spectator's stream ends short of it.
        """
        self._ending.add(battle_id)
        channel = self.channels.get(battle_id)
        try:
            final = await sync_to_async(end_battle)()
            if final is None:
                return
            run = self.runs.get(battle_id)
            if run is not None:
                run.abandon()
            while channel is not None and channel.last_seq < final.seq:
                batch = await selectors.events_after(battle_id=battle_id, after=channel.last_seq)
                if not batch:
                    break
                channel.publish(batch)
            # The runner published its own events; this one only this process knows of.
            brokers.broker().publish(battle_id, [final])
            await brokers.broker().flush()
        finally:
            self._ending.discard(battle_id)
            if channel is not None:
                channel.close()

    def _channel(self, battle_id: UUID) -> Channel:
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
        while status == Battle.Status.PENDING and not self.draining and not channel.closed:
            try:
                battle = await sync_to_async(services.battle_start)(
                    battle_id=channel.battle_id, max_running=settings.ARENA_MAX_RUNNING_BATTLES
                )
            except ArenaFull:
                # Queued: it starts when a running battle ends, as long as someone is waiting for it.
                if channel.spectators <= 0:
                    break
                await asyncio.sleep(QUEUE_POLL_SECONDS)  # the queue's poll period, not a synchronisation
            except BattleStateError:
                status = await selectors.battle_status(battle_id=channel.battle_id)
            else:
                self._produce(channel, self._run_battle(channel, self._battle_run(channel, battle)))
                return True
        if status == Battle.Status.RUNNING:
            run = await self._take_over(channel)
            self._produce(channel, self._run_battle(channel, run) if run else self._follow_elsewhere(channel))
            return True
        self._drop(channel)
        return False

    def _battle_run(
        self, channel: Channel, battle: Battle, progress: selectors.Progress | None = None
    ) -> BattleRun:
        """A run of `battle` in this process, heard by the channel's spectators and every other process."""
        listeners = [channel.publish, brokers.publisher(channel.battle_id)]
        return BattleRun(battle, listeners=listeners, progress=progress)

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
        return self._battle_run(channel, battle, progress)

    async def _run_battle(self, channel: Channel, run: BattleRun) -> None:
        self.runs[channel.battle_id] = run
        try:
            await run.run()
            # A run that stopped because the battle was taken from it (another process continues or
            # ended it: an operator, or its owner deleting it) leaves its spectators the log's latest
            # events, that end among them. After a normal end there are none.
            await self._catch_up(channel)
        finally:
            self.runs.pop(channel.battle_id, None)
            # Everything this run published reaches the other processes before it counts as over.
            await brokers.broker().flush()

    async def _catch_up(self, channel: Channel) -> None:
        """Publish what the stored log holds beyond the channel's last event, if the channel is open."""
        while not channel.closed:
            batch = await selectors.events_after(battle_id=channel.battle_id, after=channel.last_seq)
            if not batch:
                return
            channel.publish(batch)

    def _produce(self, channel: Channel, producer: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(producer, name=f"battle-{channel.battle_id}")
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception():
                logger.error("Producer of battle %s crashed", channel.battle_id, exc_info=task.exception())
            if channel.battle_id not in self._ending:  # else `end` closes it once the end is out
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
                if await selectors.battle_status(battle_id=channel.battle_id) is None:
                    return  # deleted (its end may not have reached this process): nothing more comes
                run = await self._take_over(channel)
                if run is not None:
                    await self._run_battle(channel, run)
                    return
        finally:
            await follower.close()


hub = Hub()
