"""Removing a battle that people may be watching: its spectators are told before its rows go.

A battle still under way is ended first (`services.battle_end`: `battle.failed`, not retryable), the
run and the spectators here and on the other processes are told (`Hub.end`), and only then are the
battle, its log and (when no other battle uses it) its document deleted (`battles.deletion`).
Afterwards every URL of the battle answers 404.
"""

from __future__ import annotations

import functools
from uuid import UUID

from asgiref.sync import async_to_sync, sync_to_async

from battles import deletion, services
from battles.live.hub import hub

DELETED_REASON = "Deleted by its owner."


async def battle_remove(battle_id: UUID, *, reason: str = DELETED_REASON) -> bool:
    """End the battle for everyone watching it, then delete it. False when there was no such battle."""
    await hub.end(
        battle_id, functools.partial(services.battle_end, battle_id=battle_id, reason=reason, retryable=False)
    )
    return await sync_to_async(deletion.battle_delete)(battle_id=battle_id) is not None


def battle_remove_sync(battle_id: UUID, *, reason: str = DELETED_REASON) -> bool:
    """`battle_remove` from synchronous code (the admin): under the server, on its event loop."""
    return async_to_sync(battle_remove)(battle_id, reason=reason)
