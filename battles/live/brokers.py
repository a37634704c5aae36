"""How a battle's committed events reach the processes that do not run it (ARENA_BROADCAST).

The stored log is the source of truth; a broker only makes other processes hear of new events fast.
- `memory` (the default, one process): nothing crosses processes. A process following a battle that
  runs elsewhere (`manage.py runbattle`, another daphne) reads the stored log every
  ARENA_TAIL_POLL_SECONDS.
- `redis`: the runner appends every committed batch to a Redis Stream per battle (XADD, after the
  commit); followers block on XREAD. A follower that sees a gap (an entry trimmed or never
  published) reads the missing events from the stored log, and while the stream is quiet it checks
  the stored log once per FOLLOW_CHECK_SECONDS, so a lost publish delays an event but never loses it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import weakref
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Protocol, cast
from uuid import UUID

from django.conf import settings

from battles import selectors
from battles.events import RecordedEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

    # A stream entry as this client reads it: (id, fields), in bytes (no decode_responses). redis
    # types its stream replies as the union of every protocol's and decoding's shapes.
    _Entry = tuple[bytes, dict[bytes, bytes]]

logger = logging.getLogger(__name__)

# While a battle's stream is quiet, its followers look at the stored log this often (the safety net
# under a lost publish, and the pace of the runner's liveness checks in `battles.live.hub`).
FOLLOW_CHECK_SECONDS = 1.0
# Entries kept per battle stream (approximately): late followers read older events from the log.
STREAM_MAX_ENTRIES = 10_000
# A stream outlives its battle by this much, then Redis forgets it; the log keeps everything.
STREAM_TTL_SECONDS = 3600


class Follower(Protocol):
    async def next(self, *, after: int) -> list[RecordedEvent]:
        """Committed events with seq > `after`, in order and gapless; [] after a quiet while."""
        ...

    async def close(self) -> None: ...


class Broker(Protocol):
    def publish(self, battle_id: UUID, batch: Sequence[RecordedEvent]) -> None:
        """Pass on a committed batch. Never blocks and never raises: the log already has it."""
        ...

    async def flush(self) -> None:
        """Wait until everything published so far has been handed to the broker."""
        ...

    async def close(self) -> None:
        """Flush, then let go of this event loop's connections (before the loop ends)."""
        ...

    def follower(self, battle_id: UUID) -> Follower: ...


class StoredLogFollower:
    """Follows a battle by polling its stored log."""

    def __init__(self, battle_id: UUID, *, poll_seconds: float) -> None:
        self.battle_id = battle_id
        self.poll_seconds = poll_seconds

    async def next(self, *, after: int) -> list[RecordedEvent]:
        batch = await selectors.events_after(battle_id=self.battle_id, after=after)
        if not batch:
            await asyncio.sleep(self.poll_seconds)  # the poll interval, not a synchronisation
        return batch

    async def close(self) -> None:
        pass


class MemoryBroker:
    def publish(self, battle_id: UUID, batch: Sequence[RecordedEvent]) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def follower(self, battle_id: UUID) -> Follower:
        return StoredLogFollower(battle_id, poll_seconds=settings.ARENA_TAIL_POLL_SECONDS)


def stream_key(battle_id: UUID) -> str:
    return f"arena:battle:{battle_id}:events"


def encode_entry(event: RecordedEvent) -> dict[str, str]:
    return {"event": json.dumps([event.seq, event.type, event.data, event.offset_ms], ensure_ascii=False)}


def decode_entry(fields: dict[bytes, bytes]) -> RecordedEvent:
    seq, type_, data, offset_ms = json.loads(fields[b"event"])
    return RecordedEvent(seq, type_, data, offset_ms)


class RedisBroker:
    """Redis Streams, one per battle. A client and a publishing queue per event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self.url)
        return state

    def publish(self, battle_id: UUID, batch: Sequence[RecordedEvent]) -> None:
        if batch:
            self._state().publish(battle_id, batch)

    async def flush(self) -> None:
        await self._state().queue.join()

    async def close(self) -> None:
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.close()

    def follower(self, battle_id: UUID) -> Follower:
        return RedisFollower(self._state().client, battle_id)


class _LoopState:
    """One event loop's Redis client, and its queue of batches to publish in order."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
        self.queue: asyncio.Queue[tuple[UUID, Sequence[RecordedEvent]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def publish(self, battle_id: UUID, batch: Sequence[RecordedEvent]) -> None:
        self.queue.put_nowait((battle_id, batch))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._publish_loop(), name="redis-publisher")

    async def close(self) -> None:
        await self.queue.join()
        if self.task is not None:
            self.task.cancel()
        await self.client.aclose()

    async def _publish_loop(self) -> None:
        while True:
            battle_id, batch = await self.queue.get()
            try:
                key = stream_key(battle_id)
                async with self.client.pipeline(transaction=False) as pipe:
                    for event in batch:
                        # redis types the fields as its own dict (invariant); xadd only reads them.
                        fields = cast("dict[FieldT, EncodableT]", encode_entry(event))
                        pipe.xadd(key, fields, maxlen=STREAM_MAX_ENTRIES, approximate=True)
                    pipe.expire(key, STREAM_TTL_SECONDS)
                    await pipe.execute()
            except Exception as exc:
                # Followers fill the gap from the stored log; the battle goes on.
                logger.warning("Could not publish events to Redis: %s", exc)
            finally:
                self.queue.task_done()


class RedisFollower:
    """Reads one battle's stream from where it stood when following began; gaps come from the log."""

    def __init__(self, client: Redis, battle_id: UUID) -> None:
        self.client = client
        self.battle_id = battle_id
        self.key = stream_key(battle_id)
        self.stream_id: bytes | str | None = None

    async def next(self, *, after: int) -> list[RecordedEvent]:
        try:
            return await self._next(after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "Redis is unavailable (%s); following battle %s through its log", exc, self.battle_id
            )
            self.stream_id = None  # start over once Redis is back
            return await StoredLogFollower(self.battle_id, poll_seconds=FOLLOW_CHECK_SECONDS).next(
                after=after
            )

    async def _next(self, after: int) -> list[RecordedEvent]:
        client = self.client
        if self.stream_id is None:
            # Everything in the stream up to here was committed before it was published, so the
            # stored log read next has it; what comes later is read from the stream.
            last = cast("list[_Entry]", await client.xrevrange(self.key, count=1))
            self.stream_id = last[0][0] if last else "0-0"
            batch = await selectors.events_after(battle_id=self.battle_id, after=after)
            if batch:
                return batch
        response = cast(
            "list[tuple[bytes, list[_Entry]]]",  # a [key, entries] pair per stream
            await client.xread(
                {self.key: self.stream_id}, block=int(FOLLOW_CHECK_SECONDS * 1000), count=1000
            ),
        )
        events = []
        for _key, entries in response:
            for entry_id, fields in entries:
                self.stream_id = entry_id
                events.append(decode_entry(fields))
        events = [e for e in events if e.seq > after]
        if not events or any(e.seq != after + i for i, e in enumerate(events, start=1)):
            # Quiet, or a gap: the stored log has everything committed.
            return await selectors.events_after(battle_id=self.battle_id, after=after)
        return events

    async def close(self) -> None:
        pass


def publisher(battle_id: UUID) -> Callable[[Sequence[RecordedEvent]], None]:
    """A listener for the engine: it passes each committed batch of the battle on to the broker."""
    return functools.partial(broker().publish, battle_id)


@cache
def broker() -> Broker:
    """The configured broker (one per process)."""
    if settings.ARENA_BROADCAST == "redis":
        return RedisBroker(settings.REDIS_URL)
    return MemoryBroker()
