"""The operators' admin: access, list pages, actions, and replay of finished battles."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext

from battles import services
from battles.engine import run_battle
from battles.events import RecordedEvent
from battles.live import replay
from battles.models import Battle, Document, Event, Turn
from tests.support.clock import VirtualClock, overlay
from tests.support.sse_client import Parser

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_battle(make_battle) -> Battle:
    battle = make_battle(rounds=1)
    services.battle_start(battle_id=battle.pk)
    services.events_append(
        battle_id=battle.pk,
        events=[
            RecordedEvent(1, "battle.started", {"battle_id": str(battle.pk)}, 0),
            RecordedEvent(2, "turn.started", {"turn": 1, "round": 1, "role": "aggressor"}, 500),
            RecordedEvent(3, "token", {"turn": 1, "role": "aggressor", "text": "Hi"}, 1000),
            RecordedEvent(
                4, "verdict", {"winner": "draw", "scores": None, "summary": "s", "fallback": True}, 1500
            ),
            RecordedEvent(5, "battle.completed", {"usage": {}, "cost_usd": None, "duration_ms": 2000}, 2000),
        ],
    )
    services.battle_finish(
        battle_id=battle.pk,
        winner="draw",
        aggressor_score=5,
        defender_score=5,
        summary="s",
        verdict_fallback=True,
        verdict_source="rules",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=None,
    )
    return Battle.objects.get(pk=battle.pk)


@pytest.fixture
def user_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("visitor", password="pw"))
    return client


def admin_urls(battle: Battle) -> list[str]:
    event = battle.events.first()
    return [
        "/admin/battles/battle/",
        f"/admin/battles/battle/{battle.pk}/change/",
        f"/admin/battles/battle/{battle.pk}/replay/",
        "/admin/battles/document/",
        f"/admin/battles/document/{battle.document_id}/change/",
        "/admin/battles/event/",
        f"/admin/battles/event/{event.pk}/change/",
    ]


def test_staff_see_every_admin_page(admin_client: Client, finished_battle: Battle) -> None:
    for url in admin_urls(finished_battle):
        assert admin_client.get(url).status_code == 200, url


@pytest.mark.parametrize("who", ["anonymous", "not staff"])
def test_everyone_else_is_sent_to_the_admin_login(
    who: str, user_client: Client, finished_battle: Battle
) -> None:
    client = Client() if who == "anonymous" else user_client
    for url in admin_urls(finished_battle):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next="), url


@pytest.mark.parametrize("who", ["anonymous", "not staff"])
def test_the_replay_stream_refuses_everyone_else(
    who: str, user_client: Client, finished_battle: Battle
) -> None:
    client = Client() if who == "anonymous" else user_client
    response = client.get(f"/admin/battles/battle/{finished_battle.pk}/replay/events?speed=0")
    assert response.status_code == 403


def test_the_battle_list_shows_what_operators_need(admin_client: Client, finished_battle: Battle) -> None:
    html = admin_client.get("/admin/battles/battle/").content.decode()
    for expected in (
        finished_battle.short_id,
        "essay.md",
        "Finished",
        "Draw",
        "5 : 5",
        "arena/sparring",
        "10 + 5",
    ):
        assert expected in html


@pytest.mark.parametrize(
    "url", ["/admin/battles/battle/", "/admin/battles/document/", "/admin/battles/event/"]
)
def test_list_pages_run_a_constant_number_of_queries(admin_client: Client, make_battle, url: str) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    make_battle(rounds=1)
    few = queries()
    for _ in range(10):
        battle = make_battle(rounds=2, aggressor="openai/other")
        services.events_append(battle_id=battle.pk, events=[RecordedEvent(1, "battle.started", {}, 0)])
    assert queries() == few


def test_filters_and_search(admin_client: Client, make_battle, finished_battle: Battle) -> None:
    other = make_battle(name="plan.txt", aggressor="openai/other")

    def listed(query: str) -> set[str]:
        html = admin_client.get("/admin/battles/battle/" + query).content.decode()
        return {b.short_id for b in (finished_battle, other) if b.short_id in html}

    assert listed("?status__exact=finished") == {finished_battle.short_id}
    assert listed("?winner__exact=draw") == {finished_battle.short_id}
    assert listed("?model=openai/other") == {other.short_id}
    assert listed("?created_at__gte=2000-01-01+00%3A00%3A00%2B00%3A00") == {
        finished_battle.short_id,
        other.short_id,
    }
    assert listed("?created_at__lt=2000-01-01+00%3A00%3A00%2B00%3A00") == set()
    assert listed("?q=plan") == {other.short_id}
    assert listed(f"?q={other.short_id}") == {other.short_id}
    assert listed(f"?q={other.pk}") == {other.short_id}


def test_a_finished_battle_has_a_replay_button_and_a_running_one_does_not(
    admin_client: Client, make_battle, finished_battle: Battle
) -> None:
    replay_url = f"/admin/battles/battle/{finished_battle.pk}/replay/"
    assert (
        replay_url in admin_client.get(f"/admin/battles/battle/{finished_battle.pk}/change/").content.decode()
    )
    running = make_battle()
    services.battle_start(battle_id=running.pk)
    page = admin_client.get(f"/admin/battles/battle/{running.pk}/change/").content.decode()
    assert "/replay/" not in page
    response = admin_client.get(f"/admin/battles/battle/{running.pk}/replay/")
    assert response.status_code == 302 and response["Location"].endswith(f"/{running.pk}/change/")


def test_the_replay_page_is_laid_out_like_the_arena(admin_client: Client, finished_battle: Battle) -> None:
    html = admin_client.get(f"/admin/battles/battle/{finished_battle.pk}/replay/?speed=5").content.decode()
    for element in (
        'id="panel-aggressor"',
        'id="verdict"',
        'id="replay-play"',
        'id="replay-pause"',
        'id="replay-speed"',
        'id="replay-restart"',
    ):
        assert element in html
    assert 'id="retry-form"' not in html
    assert f'"eventsUrl": "/admin/battles/battle/{finished_battle.pk}/replay/events"' in html


async def stream(
    client: AsyncClient, url: str, *, clock: VirtualClock | None = None, **headers: str
) -> list[tuple]:
    """The replayed events as (seq, type, data); with `clock`, as (seq, type, data, virtual seconds
    since the request when the event arrived)."""
    started = clock.now if clock else 0.0
    response = await client.get(url, headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    parser = Parser()
    replayed: list[tuple] = []
    async for chunk in response.streaming_content:
        for m in parser.feed(chunk.decode()):
            event = (int(m.id), m.event, m.json())
            replayed.append((*event, clock.now - started) if clock else event)
    return replayed


def stored(battle: Battle) -> list[tuple]:
    return [(e.seq, e.type, e.data) for e in Event.objects.filter(battle=battle).order_by("seq")]


@pytest.fixture
def staff_async_client(admin_user: User) -> AsyncClient:
    client = AsyncClient()
    client.force_login(admin_user)
    return client


@pytest.mark.django_db(transaction=True)
async def test_the_replay_streams_the_stored_log_and_changes_nothing(make_battle, staff_async_client) -> None:
    battle = await run_battle((await sync_to_async(make_battle)(rounds=1)).pk)
    before = (
        await Event.objects.filter(battle=battle).acount(),
        await Turn.objects.filter(battle=battle).acount(),
    )

    replayed = await stream(staff_async_client, f"/admin/battles/battle/{battle.pk}/replay/events?speed=0")
    resumed = await stream(
        staff_async_client,
        f"/admin/battles/battle/{battle.pk}/replay/events?speed=0",
        **{"Last-Event-ID": "9"},
    )

    log = await sync_to_async(stored)(battle)
    assert replayed == log
    assert resumed == log[9:]
    after = (
        await Event.objects.filter(battle=battle).acount(),
        await Turn.objects.filter(battle=battle).acount(),
    )
    assert after == before
    reloaded = await Battle.objects.aget(pk=battle.pk)
    assert (reloaded.status, reloaded.finished_at) == (battle.status, battle.finished_at)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("speed", [4, 1, 0])
async def test_a_replay_lasts_the_original_duration_divided_by_the_speed(
    finished_battle: Battle, staff_async_client: AsyncClient, speed: float, monkeypatch
) -> None:
    # The replay's clock is virtual: this checks when each event is due, not how fast the machine is.
    clock = VirtualClock()
    monkeypatch.setattr(replay, "time", overlay(time, monotonic=clock.monotonic))
    monkeypatch.setattr(replay, "asyncio", overlay(asyncio, sleep=clock.sleep))

    replayed = await stream(
        staff_async_client,
        f"/admin/battles/battle/{finished_battle.pk}/replay/events?speed={speed}",
        clock=clock,
    )

    assert [seq for seq, _, _, _ in replayed] == [1, 2, 3, 4, 5]
    # The stored offsets run from 0 to 2000 ms: at speed 4 the replay lasts 0.5 s, at speed 0 no time.
    due = [offset / 1000 / speed if speed else 0.0 for offset in (0, 500, 1000, 1500, 2000)]
    assert [at for _, _, _, at in replayed] == pytest.approx(due)
    assert sum(clock.sleeps) == pytest.approx(2.0 / speed if speed else 0.0)


@pytest.mark.django_db(transaction=True)
async def test_a_failed_battle_replays_up_to_its_failure(
    make_battle, staff_async_client: AsyncClient, settings
) -> None:
    settings.ARENA_MAX_TOKENS_PER_TURN = 3
    battle = await sync_to_async(make_battle)(rounds=1)
    await sync_to_async(services.battle_start)(battle_id=battle.pk)
    await sync_to_async(services.battle_mark_failed)(battle_id=battle.pk, reason="Stuck.")

    replayed = await stream(staff_async_client, f"/admin/battles/battle/{battle.pk}/replay/events?speed=0")

    assert replayed == [(1, "battle.failed", {"error": "Stuck.", "retryable": True})]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "query, status",
    [
        ("?speed=100", 400),
        ("?speed=0.1", 400),
        ("?speed=abc", 400),
        ("?speed=nan", 400),
        ("?last_event_id=x", 400),
    ],
)
async def test_bad_replay_requests(
    finished_battle: Battle, staff_async_client: AsyncClient, query: str, status: int
) -> None:
    response = await staff_async_client.get(
        f"/admin/battles/battle/{finished_battle.pk}/replay/events{query}"
    )
    assert response.status_code == status


@pytest.mark.django_db(transaction=True)
async def test_replay_refuses_unknown_and_unfinished_battles(
    make_battle, staff_async_client: AsyncClient
) -> None:
    missing = await staff_async_client.get(
        "/admin/battles/battle/00000000-0000-0000-0000-000000000000/replay/events"
    )
    assert missing.status_code == 404
    pending = await sync_to_async(make_battle)()
    response = await staff_async_client.get(f"/admin/battles/battle/{pending.pk}/replay/events")
    assert response.status_code == 409


def action(client: Client, name: str, *battles: Battle):
    return client.post(
        "/admin/battles/battle/",
        {"action": name, "_selected_action": [str(b.pk) for b in battles]},
        follow=False,
    )


def test_export_actions(admin_client: Client, finished_battle: Battle, make_battle) -> None:
    other = make_battle(name="plan.txt")
    markdown = action(admin_client, "export_markdown", finished_battle, other)
    assert markdown["Content-Disposition"] == 'attachment; filename="battles.md"'
    assert markdown.content.decode().count("# Battle over ") == 2
    exported = json.loads(action(admin_client, "export_json", finished_battle, other).content)
    assert {b["battle"]["id"] for b in exported} == {str(finished_battle.pk), str(other.pk)}


def test_rerun_creates_a_new_battle_on_the_same_document(
    admin_client: Client, finished_battle: Battle
) -> None:
    action(admin_client, "rerun", finished_battle)
    new = Battle.objects.exclude(pk=finished_battle.pk).get()
    assert (new.document_id, new.status, new.rounds) == (finished_battle.document_id, "pending", 1)


def test_mark_failed_ends_only_running_battles_and_closes_their_log(
    admin_client: Client, make_battle, finished_battle: Battle
) -> None:
    stuck = make_battle()
    services.battle_start(battle_id=stuck.pk)
    services.events_append(battle_id=stuck.pk, events=[RecordedEvent(1, "battle.started", {}, 0)])
    Turn.objects.create(
        battle=stuck, index=1, round=1, role="aggressor", model="m", started_at=stuck.created_at
    )

    action(admin_client, "mark_failed", stuck, finished_battle)

    stuck.refresh_from_db()
    assert stuck.status == Battle.Status.FAILED and stuck.error.startswith("Marked failed by an operator")
    assert [(s, t) for s, t, _ in stored(stuck)] == [(1, "battle.started"), (2, "battle.failed")]
    assert Turn.objects.get(battle=stuck).status == Turn.Status.INTERRUPTED
    assert Battle.objects.get(pk=finished_battle.pk).status == Battle.Status.FINISHED
    assert len(stored(finished_battle)) == 5


# --- Deleting goes through battles.deletion: rows and files, never one without the other ----------


def media_files() -> set[str]:
    media = Path(settings.MEDIA_ROOT)
    return {str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()}


@pytest.mark.django_db(transaction=True)  # files go once the deletion commits
def test_deleting_a_battle_in_the_admin_takes_its_document_and_file(
    admin_client: Client, make_battle
) -> None:
    finished, running = make_battle(), make_battle()
    services.battle_start(battle_id=running.pk)
    Battle.objects.filter(pk=finished.pk).update(status=Battle.Status.FINISHED)
    files = {b.document.file.name for b in (finished, running)}
    assert files <= media_files()

    response = admin_client.post(f"/admin/battles/battle/{finished.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    confirm = action(admin_client, "delete_selected", running)
    assert confirm.status_code == 200 and "Yes, I’m sure" in confirm.content.decode()
    response = admin_client.post(
        "/admin/battles/battle/",
        {"action": "delete_selected", "_selected_action": [str(running.pk)], "post": "yes"},
    )
    assert response.status_code == 302

    assert not Battle.objects.exists() and not Document.objects.exists() and not Event.objects.exists()
    assert not files & media_files()


@pytest.mark.django_db(transaction=True)
def test_deleting_a_document_in_the_admin_takes_its_battles(admin_client: Client, make_battle) -> None:
    battle = make_battle()
    retried = services.battle_retry(battle=battle)
    url = f"/admin/battles/document/{battle.document_id}/delete/"

    confirm = admin_client.get(url).content.decode()
    assert "Yes, I’m sure" in confirm and "would require deleting the following protected" not in confirm
    assert f"Battle {battle.short_id}" in confirm and f"Battle {retried.short_id}" in confirm

    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Battle.objects.exists() and not Document.objects.exists()
    assert battle.document.file.name not in media_files()
