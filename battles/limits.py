"""Who may start battles, and how many: the client's IP address and the creation limits (ARENA_*).

The limit on open streams is delivery's (`battles.live.slots`).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from battles.exceptions import LimitExceeded
from battles.models import Battle


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
