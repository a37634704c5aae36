"""A running battle's event log (battles.engine.eventlog): numbered as events happen, group-committed,
published only once committed, fenced by the lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from battles import services
from battles.engine.eventlog import EventLog
from battles.events import RecordedEvent
from battles.exceptions import LeaseLost
from battles.models import Battle
from tests.support.logs import stored_events
from tests.support.runs import DEAD, OTHER
from tests.support.waiting import async_wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# The longest the test lets a held write wait for it (a deadline, should the test go wrong).
HOLD_SECONDS = 30


async def running_battle(make_battle: Callable[..., Battle], owner: str = DEAD) -> Battle:
    battle = await sync_to_async(make_battle)()
    return await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=owner)


async def test_events_are_numbered_committed_then_heard(make_battle) -> None:
    battle = await running_battle(make_battle)
    heard: list[list[RecordedEvent]] = []
    log = EventLog(battle.pk, started=time.monotonic(), listeners=[heard.append], owner=DEAD, last_seq=4)

    first = await log.emit("token", {"text": "a"})
    second = await log.emit("token", {"text": "b"}, durable=True)  # returns once committed
    await log.close()

    assert (first.seq, second.seq, log.last_seq) == (5, 6, 6)  # after where the log stood
    assert 0 <= first.offset_ms <= second.offset_ms
    stored = await sync_to_async(stored_events)(battle.pk)
    assert stored == [first, second]
    assert [e for batch in heard for e in batch] == stored


async def test_what_piles_up_during_a_write_goes_in_the_next_one(make_battle, monkeypatch) -> None:
    battle = await running_battle(make_battle)
    in_flight, release = threading.Event(), threading.Event()
    append_with = services.append_with
    writes: list[list[int]] = []

    def held_append_with(**kwargs: Any) -> None:
        writes.append([e.seq for e in kwargs["events"]])
        if len(writes) == 1:
            in_flight.set()
            assert release.wait(HOLD_SECONDS), "the test never released the first write"
        append_with(**kwargs)

    monkeypatch.setattr(services, "append_with", held_append_with)
    heard: list[Sequence[RecordedEvent]] = []
    log = EventLog(battle.pk, started=time.monotonic(), listeners=[heard.append], owner=DEAD)

    await log.emit("token", {"n": 1})
    await async_wait_for(in_flight.is_set, what="the first write to start")
    for n in (2, 3, 4):
        await log.emit("token", {"n": n})
    assert heard == []  # nothing is heard before it is committed
    release.set()
    await log.flush()
    await log.close()

    assert writes == [[1], [2, 3, 4]]
    assert [[e.seq for e in batch] for batch in heard] == [[1], [2, 3, 4]]


async def test_a_write_runs_in_the_transaction_of_its_event(make_battle) -> None:
    battle = await running_battle(make_battle)
    log = EventLog(battle.pk, started=time.monotonic(), owner=DEAD)

    def fail() -> None:
        raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError):
        await log.emit("token", {}, durable=True, write=fail)
    await log.close()

    assert await sync_to_async(stored_events)(battle.pk) == []  # the event went with its write


async def test_a_lost_lease_stops_the_log_and_nothing_more_is_heard(make_battle) -> None:
    battle = await running_battle(make_battle, owner=OTHER)  # another process holds it
    heard: list[Sequence[RecordedEvent]] = []
    log = EventLog(battle.pk, started=time.monotonic(), listeners=[heard.append], owner=DEAD)

    await log.emit("token", {})
    with pytest.raises(LeaseLost):
        await log.flush()
    with pytest.raises(LeaseLost):
        await log.emit("token", {})
    await log.close()  # does not raise it again

    assert heard == []
    assert await sync_to_async(stored_events)(battle.pk) == []


async def test_a_failing_listener_does_not_stop_the_others(make_battle, caplog) -> None:
    battle = await running_battle(make_battle)
    heard: list[Sequence[RecordedEvent]] = []

    def broken(batch: Sequence[RecordedEvent]) -> None:
        raise RuntimeError("listener bug")

    log = EventLog(battle.pk, started=time.monotonic(), listeners=[broken, heard.append], owner=DEAD)
    await log.emit("token", {}, durable=True)
    await log.emit("token", {}, durable=True)
    await log.close()

    assert [e.seq for batch in heard for e in batch] == [1, 2]
    assert "An event listener failed" in caplog.text
