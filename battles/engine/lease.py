"""The runner's lease on a battle, and why a run may stop without ending its battle.

The process running a battle holds a lease on it (`Battle.lease_owner`, `lease_expires_at`). Every
write of the event log renews it in the same transaction (and is refused once another process holds
it); while nothing is written (a slow model) a heartbeat renews it every third of ARENA_LEASE_SECONDS.
Once it has run out, any process may take the battle over (`services.battle_take_over`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings

from battles import events, services
from battles.engine.eventlog import EventLog
from battles.exceptions import LeaseLost

logger = logging.getLogger(__name__)

# The `reason` of the turn.interrupted that closes the turn under way when a server hands a battle over.
HANDOVER_REASON = "The server running the battle shut down; another one continues it."


class StopReason(enum.Enum):
    """Why this process stops running a battle that goes on elsewhere."""

    # Graceful shutdown: the turn under way is closed and the lease released, so another process
    # continues at once.
    HANDED_OVER = "handed over"
    # Another process holds the lease (this one stalled past it): write nothing more.
    LEASE_LOST = "lease lost"
    # The battle was ended from outside its run (its owner deleted it): write nothing more.
    ENDED_ELSEWHERE = "ended elsewhere"


def renewal_seconds() -> float:
    """A third of the lease: two renewals may fail (a database hiccup) before it runs out."""
    return settings.ARENA_LEASE_SECONDS / 3


async def keep_lease(*, battle_id: UUID, owner: str, on_lost: Callable[[], None]) -> None:
    """Renew `owner`'s lease until cancelled; call `on_lost` and return once another process has it."""
    while True:
        await asyncio.sleep(renewal_seconds())  # the renewal period, not a synchronisation
        try:
            await sync_to_async(services.lease_renew)(battle_id=battle_id, owner=owner)
        except LeaseLost:
            logger.warning("Battle %s: lease lost to another process", battle_id)
            on_lost()
            return
        except Exception:
            # The database hiccuped; the lease has slack for two more tries.
            logger.exception("Could not renew the lease of battle %s", battle_id)


async def hand_over(log: EventLog, *, owner: str, turn_under_way: int | None, partial_turn: str) -> None:
    """Give the battle up for another process (graceful shutdown): the turn under way, if any, is
    closed by `turn.interrupted` (its `partial_turn` kept for operators) and the lease released in
    the same transaction. On failure the lease simply runs out, and the battle is taken over then."""
    battle_id = log.battle_id
    release = release_write(
        battle_id=battle_id, owner=owner, partial_turn=None if turn_under_way is None else partial_turn
    )
    try:
        if turn_under_way is None:
            await log.flush()
            await sync_to_async(release)()
        else:
            await log.emit(
                events.TURN_INTERRUPTED,
                {"turn": turn_under_way, "reason": HANDOVER_REASON},
                write=release,
                durable=True,
            )
        logger.info("Battle %s handed over to another process", battle_id)
    except Exception:
        logger.exception("Could not hand battle %s over", battle_id)


def release_write(*, battle_id: UUID, owner: str, partial_turn: str | None) -> Callable[[], None]:
    """The write that gives a battle up: the turn under way, if any (`partial_turn` is what it had
    streamed, kept for operators; None when no turn was under way), is marked interrupted, and the
    lease is released."""

    def release() -> None:
        if partial_turn is not None:
            services.turn_interrupt(battle_id=battle_id, content=partial_turn)
        services.lease_release(battle_id=battle_id, owner=owner)

    return release
