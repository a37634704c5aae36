"""Abuse limits: who may start battles and open streams, and how many. Each is an ARENA_* setting."""

from __future__ import annotations

import ipaddress
import weakref
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from battles.exceptions import BattleError
from battles.models import Battle


class LimitExceeded(BattleError):
    """A limit was reached: answer 429, with Retry-After in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def client_ip(request: HttpRequest) -> str | None:
    """The client's IP address, or None when there is no valid one."""
    candidate = request.META.get("REMOTE_ADDR", "")
    if settings.ARENA_TRUST_X_FORWARDED_FOR:
        candidate = request.headers.get("X-Forwarded-For", "").split(",")[0].strip() or candidate
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def check_can_create_battle(*, ip: str | None) -> None:
    """Raises LimitExceeded when the arena is full or this client created too many battles lately."""
    running = Battle.objects.filter(status=Battle.Status.RUNNING).count()
    if running >= settings.ARENA_MAX_RUNNING_BATTLES:
        raise LimitExceeded(
            f"The arena is full: {running} battles are running. Try again in a minute.", retry_after=60
        )
    if ip is None:
        return
    hour_ago = timezone.now() - timedelta(hours=1)
    recent = Battle.objects.filter(client_ip=ip, created_at__gte=hour_ago).count()
    if recent >= settings.ARENA_BATTLES_PER_IP_PER_HOUR:
        raise LimitExceeded(
            f"You have started {recent} battles in the last hour, the most allowed. Try again later.",
            retry_after=3600,
        )


class StreamSlots:
    """Open SSE streams per client IP, in this process."""

    def __init__(self) -> None:
        self.open: Counter[str | None] = Counter()

    def acquire(self, ip: str | None) -> StreamSlot:
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

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots.open[self._ip] -= 1
            if self._slots.open[self._ip] <= 0:
                del self._slots.open[self._ip]

    def bind(self, stream: object) -> None:
        weakref.finalize(stream, self.release)


stream_slots = StreamSlots()
