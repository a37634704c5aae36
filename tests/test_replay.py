"""Replaying a stored log over SSE (battles.live.replay): the speed parameter, a page per write, and
the schedule of a paced replay, checked on a virtual clock (when each event is due, not how long the
machine took to get there)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from asgiref.sync import sync_to_async

from battles import services
from battles.events import RecordedEvent
from battles.live import replay, sse
from battles.models import Battle
from tests.support.clock import VirtualClock, overlay
from tests.support.sse_client import Parser


@pytest.mark.parametrize(
    "raw, speed",
    [(None, 1.0), ("", 1.0), ("0", 0.0), ("0.0", 0.0), ("0.25", 0.25), ("2", 2.0), ("50", 50.0)],
)
def test_parse_speed_accepts_zero_and_the_range(raw: str | None, speed: float) -> None:
    assert replay.parse_speed(raw) == speed


@pytest.mark.parametrize("raw", ["0.1", "50.5", "-1", "abc", "nan", "inf", "1e400"])
def test_parse_speed_refuses_the_rest(raw: str) -> None:
    with pytest.raises(ValueError, match="speed must be"):
        replay.parse_speed(raw)


def test_the_offered_speeds_are_all_accepted() -> None:
    assert [replay.parse_speed(str(speed)) for speed in replay.SPEEDS] == list(replay.SPEEDS)
    assert all(s == 0 or replay.MIN_SPEED <= s <= replay.MAX_SPEED for s in replay.SPEEDS)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """The replay's clock and sleep, virtual."""
    virtual = VirtualClock()
    monkeypatch.setattr(replay, "time", overlay(time, monotonic=virtual.monotonic))
    monkeypatch.setattr(replay, "asyncio", overlay(asyncio, sleep=virtual.sleep))
    return virtual


async def logged(make_battle: Callable[..., Battle], offsets_ms: list[int]) -> Battle:
    """A battle whose stored log has one event per offset."""
    battle = await sync_to_async(make_battle)()
    batch = [RecordedEvent(seq, "token", {"n": seq}, offset) for seq, offset in enumerate(offsets_ms, 1)]
    await sync_to_async(services.events_append)(battle_id=battle.pk, events=batch)
    return battle


async def writes(stream: AsyncIterator[bytes], clock: VirtualClock) -> list[tuple[float, list[str | None]]]:
    """Each write of `stream`: (virtual seconds since the start, the ids it carries or "ping")."""
    started = clock.now
    parser = Parser()
    seen: list[tuple[float, list[str | None]]] = []
    async for chunk in stream:
        messages = parser.feed(chunk.decode())
        pings = ["ping"] * chunk.count(sse.PING)
        seen.append((round(clock.now - started, 6), [m.id for m in messages] + pings))
    return seen


@pytest.mark.django_db(transaction=True)
async def test_at_speed_zero_everything_goes_at_once_a_page_per_write(
    make_battle, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "PAGE_SIZE", 2)
    battle = await logged(make_battle, [0, 500, 1000, 60_000, 90_000])

    seen = await writes(replay.stored_log(battle.pk, after=0), clock)

    assert seen == [(0, ["1", "2"]), (0, ["3", "4"]), (0, ["5"])]  # every event once, in order
    assert clock.sleeps == []
    assert await writes(replay.stored_log(battle.pk, after=3), clock) == [(0, ["4", "5"])]
    assert await writes(replay.stored_log(battle.pk, after=5), clock) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("speed", [0.5, 1, 4])
async def test_each_event_is_due_at_its_offset_divided_by_the_speed(
    make_battle, clock: VirtualClock, speed: float
) -> None:
    battle = await logged(make_battle, [200, 200, 700, 2200])  # the schedule starts at the first one

    seen = await writes(replay.stored_log(battle.pk, after=0, speed=speed), clock)

    assert seen == [(0, ["1", "2"]), (0.5 / speed, ["3"]), (2.0 / speed, ["4"])]


@pytest.mark.django_db(transaction=True)
async def test_a_resumed_replay_starts_its_timing_from_the_first_event_sent(
    make_battle, clock: VirtualClock
) -> None:
    battle = await logged(make_battle, [0, 1000, 1500, 4000])

    seen = await writes(replay.stored_log(battle.pk, after=2, speed=2), clock)

    assert seen == [(0, ["3"]), (1.25, ["4"])]


@pytest.mark.django_db(transaction=True)
async def test_a_long_wait_sends_a_heartbeat_every_full_interval(
    make_battle, clock: VirtualClock, settings
) -> None:
    settings.ARENA_SSE_HEARTBEAT_SECONDS = 10
    battle = await logged(make_battle, [0, 100, 30_100])

    seen = await writes(replay.stored_log(battle.pk, after=0, speed=1), clock)

    # Pings after 10 and 20 s of silence; the last 10 s end with the event itself.
    assert seen == [(0, ["1"]), (0.1, ["2"]), (10.1, ["ping"]), (20.1, ["ping"]), (30.1, ["3"])]
    assert clock.sleeps == pytest.approx([0.1, 10, 10, 10])
