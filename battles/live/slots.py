"""Open SSE streams per client IP, in this process (ARENA_MAX_STREAMS_PER_IP)."""

from __future__ import annotations

import weakref
from collections import Counter

from django.conf import settings

from battles.exceptions import LimitExceeded


class StreamSlots:
    """Open SSE streams per client IP, in this process."""

    def __init__(self) -> None:
        self.open: Counter[str | None] = Counter()

    def acquire(self, ip: str | None) -> StreamSlot:
        """A slot for one more stream from `ip`; LimitExceeded when it has as many as allowed."""
        if self.open[ip] >= settings.ARENA_MAX_STREAMS_PER_IP:
            raise LimitExceeded("Too many open streams from your address.", retry_after=10)
        self.open[ip] += 1
        return StreamSlot(self, ip)


class StreamSlot:
    """One open stream. `release` is idempotent; `bind` also releases when the stream is collected,
    so a response that was never iterated (a client gone before the first byte) frees its slot."""

    def __init__(self, slots: StreamSlots, ip: str | None) -> None:
        self._slots = slots
        self._ip = ip
        self._released = False

    def release(self) -> bool:
        """Free the slot; False when it was already free."""
        if self._released:
            return False
        self._released = True
        self._slots.open[self._ip] -= 1
        if self._slots.open[self._ip] <= 0:
            del self._slots.open[self._ip]
        return True

    def bind(self, stream: object) -> None:
        weakref.finalize(stream, self.release)


stream_slots = StreamSlots()
