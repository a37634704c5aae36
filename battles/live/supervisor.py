"""A serving process's background duties, started with its first request (`arena.asgi_wrappers.Supervised`).

- The sweep: every few seconds, take over the running battles whose runner died (its lease ran out)
  even when nobody here watches them, so no battle stays "running" forever.
- Retention: with ARENA_RETENTION_DAYS set, the battles that ended longer ago are purged when the
  process starts and once a day after (`battles.deletion.battles_purge`; every process does it, and a
  purge finds nothing left to delete when another process was first).
- Graceful shutdown: on SIGTERM the battles run here are handed over (another process continues them
  at once) and every spectator's stream ends cleanly, so browsers reconnect elsewhere; then the
  server's own SIGTERM handling (daphne stops its reactor) goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import Protocol
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings

from battles import deletion, selectors
from battles.live.hub import hub

logger = logging.getLogger(__name__)

# How long a graceful shutdown waits for the responses under way (the streams it just ended) to be
# sent completely before the server stops and cancels whatever is left.
RESPONSES_TIMEOUT_SECONDS = 5.0


class Server(Protocol):
    """What the graceful shutdown needs of the server: to wait for the responses under way."""

    async def wait_idle(self, timeout: float) -> None: ...


# The retention purge runs this often: retention is counted in days, so once a day is soon enough.
PURGE_INTERVAL_SECONDS = 24 * 3600.0

_started: asyncio.AbstractEventLoop | None = None
_shutdown: list[asyncio.Task[None]] = []  # a reference, so the shutdown task is not collected
_purge: list[asyncio.Task[None]] = []  # the same for the daily purge


def sweep_interval_seconds() -> float:
    """Half a lease: a dead runner's battle goes on within 1.5 leases of its last renewal."""
    return settings.ARENA_LEASE_SECONDS / 2


def start(server: Server | None = None) -> None:
    """Start the sweep and take over SIGTERM, once per event loop. Call from inside the loop."""
    global _started
    loop = asyncio.get_running_loop()
    if _started is loop:
        return
    _started = loop
    task = loop.create_task(_sweep_forever(), name="battle-sweep")
    if settings.ARENA_RETENTION_DAYS:
        _purge.append(loop.create_task(_purge_daily(), name="retention-purge"))
    _install_sigterm(loop, task, server)


async def sweep_once() -> list[UUID]:
    """Adopt every running battle whose lease has run out; returns the ids of those this process set
    about taking over (not those it already serves)."""
    battle_ids = await sync_to_async(selectors.battles_to_take_over)()
    return [battle_id for battle_id in battle_ids if hub.adopt(battle_id)]


async def _sweep_forever() -> None:
    while not hub.draining:
        try:
            await sweep_once()
        except Exception:
            logger.exception("The sweep for abandoned battles failed; trying again")
        await asyncio.sleep(sweep_interval_seconds())  # the sweep's period, not a synchronisation


async def purge_once() -> int:
    """Delete the battles older than the retention period; how many went."""
    days = settings.ARENA_RETENTION_DAYS
    removed = await sync_to_async(deletion.battles_purge)(older_than_days=days)
    if removed:
        logger.info("Retention: deleted %d battle(s) older than %d day(s)", len(removed), days)
    return len(removed)


async def _purge_daily() -> None:
    while not hub.draining:
        try:
            await purge_once()
        except Exception:
            logger.exception("The retention purge failed; trying again tomorrow")
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)  # the purge's period, not a synchronisation


def _install_sigterm(
    loop: asyncio.AbstractEventLoop, sweep: asyncio.Task[None], server: Server | None
) -> None:
    previous = signal.getsignal(signal.SIGTERM)

    async def shut_down(frame: FrameType | None) -> None:
        logger.info("SIGTERM: handing battles over and closing streams")
        sweep.cancel()
        try:
            await hub.drain()
            if server is not None:
                await server.wait_idle(RESPONSES_TIMEOUT_SECONDS)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if callable(previous):
                previous(signal.SIGTERM, frame)  # daphne: Twisted stops the reactor
            else:
                os.kill(os.getpid(), signal.SIGTERM)  # the default: exit

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if not hub.draining:
            loop.call_soon_threadsafe(lambda: _shutdown.append(loop.create_task(shut_down(frame))))

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:
        logger.info("Not in the main thread: no graceful shutdown on SIGTERM")
