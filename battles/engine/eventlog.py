"""A running battle's event log: numbered as events happen, group-committed, then published.

Events get their seq and offset the moment they happen; `EventLog` writes them in batches (a group
commit: whatever piled up while the previous write ran goes in the next one) and hands each batch to
the listeners only once it is committed, so nobody ever sees an event that is not in the database.
Every write is fenced by the runner's lease (`services.append_with`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async

from battles import services
from battles.events import RecordedEvent
from battles.exceptions import LeaseLost

logger = logging.getLogger(__name__)

# Hears every committed batch, in seq order. Must not block: it runs on the engine's event loop.
Listener = Callable[[Sequence[RecordedEvent]], None]


class EventLog:
    """Numbers, persists and publishes one battle's events. One EventLog per running battle."""

    def __init__(
        self,
        battle_id: UUID,
        *,
        started: float,
        listeners: Sequence[Listener] = (),
        owner: str | None = None,
        last_seq: int = 0,
    ) -> None:
        """`owner` fences every write with its lease; `last_seq` is where a taken-over log stands."""
        self.battle_id = battle_id
        self.started = started
        self.listeners = list(listeners)
        self.owner = owner
        self._seq = last_seq
        self._committed = last_seq
        self._pending: list[RecordedEvent] = []
        self._writes: list[Callable[[], None]] = []
        self._changed = asyncio.Condition()
        self._error: BaseException | None = None
        self._writer = asyncio.create_task(self._write_loop(), name=f"event-log-{battle_id}")

    async def emit(
        self,
        type: str,
        data: dict[str, Any],
        *,
        durable: bool = False,
        write: Callable[[], None] | None = None,
    ) -> RecordedEvent:
        """Record an event. `write` runs in the transaction that commits it; `durable` waits for that."""
        if self._error:
            raise self._error
        self._seq += 1
        event = RecordedEvent(self._seq, type, data, int((time.monotonic() - self.started) * 1000))
        async with self._changed:
            self._pending.append(event)
            if write:
                self._writes.append(write)
            self._changed.notify_all()
        if durable:
            await self.flush()
        return event

    @property
    def last_seq(self) -> int:
        return self._seq

    async def flush(self) -> None:
        """Wait until every event emitted so far is committed (and published)."""
        target = self._seq
        async with self._changed:
            await self._changed.wait_for(lambda: self._committed >= target or self._error is not None)
        if self._error:
            raise self._error

    async def close(self) -> None:
        """Commit what is pending and stop the writer. A write error was already logged and raised
        to the emitter; it is not raised again here."""
        try:
            await self.flush()
        except Exception:
            pass
        finally:
            self._writer.cancel()

    async def _write_loop(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._pending))
                batch, writes = self._pending, self._writes
                self._pending, self._writes = [], []
            try:
                await sync_to_async(services.append_with)(
                    battle_id=self.battle_id, events=batch, write=_chain(writes), owner=self.owner
                )
            except Exception as exc:
                if isinstance(exc, LeaseLost):
                    logger.warning("Battle %s was taken over by another process", self.battle_id)
                else:
                    logger.exception("Could not write the event log of battle %s", self.battle_id)
                async with self._changed:
                    self._error = exc
                    self._changed.notify_all()
                return
            self._publish(batch)
            async with self._changed:
                self._committed = batch[-1].seq
                self._changed.notify_all()

    def _publish(self, batch: Sequence[RecordedEvent]) -> None:
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:
                logger.exception("An event listener failed; the battle goes on")


def _chain(writes: Sequence[Callable[[], None]]) -> Callable[[], None] | None:
    if not writes:
        return None

    def run_all() -> None:
        for write in writes:
            write()

    return run_all
