"""Who may start battles, and how many: the client's IP address and the creation limits (ARENA_*).

The limit on open streams is delivery's (`battles.live.slots`); it counts by `client_ip` too.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from battles.exceptions import LimitExceeded
from battles.models import Battle

# The key of a request that has no address at all: no peer address (daphne on a unix socket) and
# nothing usable forwarded. Such requests share this one quota rather than escape the limits; no
# real client sends from the unspecified address.
UNKNOWN_CLIENT = "0.0.0.0"


def client_ip(request: HttpRequest) -> str:
    """The address every per-IP limit counts this request against; never None, so they always apply.

    With ARENA_TRUSTED_PROXIES = 0 it is the peer's address (REMOTE_ADDR), and X-Forwarded-For is
    ignored: anyone can write that header. With N proxies in front, each appending the address it
    was reached from, it is the N-th entry from the right of X-Forwarded-For (several header lines
    are joined by commas first, as Django does). The entries further left were written by the client
    and are never read, so a client that sends its own header gains nothing.

    Fallback, when that entry is missing (fewer than N entries: a proxy that does not append, or a
    request that went round one) or is not an IP address: REMOTE_ADDR, the nearest proxy. Such
    requests share that proxy's quota; the left-most entry is not used instead, because the client
    may have written it. Without a valid REMOTE_ADDR either, UNKNOWN_CLIENT.
    """
    peer = _address(request.META.get("REMOTE_ADDR", "")) or UNKNOWN_CLIENT
    proxies: int = settings.ARENA_TRUSTED_PROXIES
    if proxies == 0:
        return peer
    header = request.headers.get("X-Forwarded-For", "")
    entries = header.split(",") if header else []
    if len(entries) < proxies:
        return peer
    return _address(entries[-proxies]) or peer


def _address(text: str) -> str | None:
    """`text` as an IP address in its one canonical spelling, or None when it is none."""
    try:
        return str(ipaddress.ip_address(text.strip()))
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
