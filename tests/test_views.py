"""Pages, upload, transcripts and the stream of a finished battle, through Django's test clients."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, Client

from battles.engine import run_battle
from battles.models import Battle, Document
from tests.support.documents import ESSAY
from tests.support.sse_client import parse

pytestmark = pytest.mark.django_db


def upload(client: Client, content: bytes, name: str = "essay.md", **fields: object):
    return client.post("/battles/", {"file": SimpleUploadedFile(name, content), "rounds": 2, **fields})


def stored_files() -> list[Path]:
    return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


def test_home_shows_the_form_and_recent_public_battles(client: Client, make_battle) -> None:
    battle = make_battle(name="<b>bold</b>.md", visibility=Battle.Visibility.PUBLIC)
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'enctype="multipart/form-data"' in html and "csrfmiddlewaretoken" in html
    assert f"/battles/{battle.pk}/" in html
    assert "<b>bold</b>" not in html  # file names are text, never markup


def test_an_upload_creates_a_pending_battle_and_redirects_to_its_arena(client: Client) -> None:
    response = upload(client, ESSAY.encode(), aggressor_model="arena/sparring")
    assert response.status_code == 303
    battle = Battle.objects.get()
    assert response["Location"] == f"/battles/{battle.pk}/"
    assert battle.status == Battle.Status.PENDING and battle.rounds == 2
    assert battle.document.text.startswith("# Why every team")
    stored = Path(battle.document.file.path)
    assert stored.read_bytes() == ESSAY.encode()
    assert "essay" not in stored.name  # generated, never the client's name


def test_the_form_offers_a_jury_only_when_jurors_are_listed(client: Client, settings) -> None:
    settings.ARENA_JURY = ["arena/rules"]
    assert 'name="jury"' not in client.get("/").content.decode()
    upload(client, ESSAY.encode())
    assert Battle.objects.get().jury == ["arena/rules"]  # ARENA_JURY for every battle

    settings.ARENA_JURY_CHOICES = ["arena/sparring", "arena/rules"]
    html = client.get("/").content.decode()
    assert html.count('name="jury"') == 2
    assert re.search(r'<input[^>]*value="arena/rules"[^>]*checked', html)  # ARENA_JURY ticked first
    upload(client, ESSAY.encode(), jury=["arena/sparring", "arena/rules"])
    upload(client, ESSAY.encode())  # none ticked: no jury, the Moderator decides
    assert [b.jury for b in Battle.objects.order_by("created_at")][1:] == [
        ["arena/sparring", "arena/rules"],
        [],
    ]
    response = upload(client, ESSAY.encode(), jury=["openai/not-offered"])
    assert response.status_code == 400 and Battle.objects.count() == 3


def test_the_upload_form_is_csrf_protected() -> None:
    client = Client(enforce_csrf_checks=True)
    response = upload(client, ESSAY.encode())
    assert response.status_code == 403
    assert not Battle.objects.exists()


@pytest.mark.parametrize(
    "content, name, status, reason",
    [
        (b"", "empty.txt", 400, "empty"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "x.png", 400, "PNG"),
        (b"x" * (2 * 1024 * 1024 + 1), "big.txt", 413, "limit"),
    ],
)
def test_refused_uploads_rerender_the_form_with_the_reason_and_store_nothing(
    client: Client, content: bytes, name: str, status: int, reason: str
) -> None:
    before = stored_files()
    response = upload(client, content, name)
    assert response.status_code == status
    error = re.search(r'id="upload-error"[^>]*>(.*?)</', response.content.decode(), re.S)
    assert error and reason.lower() in error.group(1).lower()
    assert not Document.objects.exists() and not Battle.objects.exists()
    assert stored_files() == before


def test_an_invalid_form_is_refused(client: Client) -> None:
    response = upload(client, ESSAY.encode(), rounds=11)
    assert response.status_code == 400
    assert not Battle.objects.exists()


def test_the_arena_page(client: Client, make_battle) -> None:
    battle = make_battle(name='"><script>alert(1)</script>.md')
    response = client.get(f"/battles/{battle.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    config = json.loads(re.search(r'id="arena-config"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert config["eventsUrl"] == f"/battles/{battle.pk}/events"
    assert f"http://testserver/battles/{battle.pk}/" in html  # the share link
    assert client.get("/battles/00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_the_stream_of_a_finished_battle_is_its_whole_log_then_closes(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)
    await run_battle(battle.pk)
    client = AsyncClient()

    response = await client.get(f"/battles/{battle.pk}/events")
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()

    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    messages, parser = parse(body)
    stored = [(e.seq, e.type, e.data) async for e in battle.events.order_by("seq")]
    assert [(int(m.id), m.event, m.json()) for m in messages] == stored
    assert parser.retry == settings.ARENA_SSE_RETRY_MS

    resumed = await client.get(f"/battles/{battle.pk}/events", headers={"Last-Event-ID": "7"})
    rest, _ = parse(b"".join([c async for c in resumed.streaming_content]).decode())
    assert [int(m.id) for m in rest] == [seq for seq, _, _ in stored[7:]]


@pytest.mark.django_db(transaction=True)
async def test_stream_errors() -> None:
    client = AsyncClient()
    assert (await client.get("/battles/00000000-0000-0000-0000-000000000000/events")).status_code == 404
    bad = await client.get("/battles/00000000-0000-0000-0000-000000000000/events?last_event_id=-1")
    assert bad.status_code == 400


@pytest.mark.django_db(transaction=True)
async def test_transcripts(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1, name="<i>x</i>.md")
    battle = await run_battle(battle.pk)
    client = AsyncClient()

    data = json.loads((await client.get(f"/battles/{battle.pk}/transcript.json")).content)
    assert data["battle"]["id"] == str(battle.pk) and data["battle"]["status"] == "finished"
    assert [t["role"] for t in data["turns"]] == ["aggressor", "defender", "moderator"]
    assert data["verdict"]["winner"] == battle.winner
    assert data["document"]["name"] == battle.document.original_name

    response = await client.get(f"/battles/{battle.pk}/transcript.md")
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    markdown = response.content.decode()
    assert "## Round 1 · Aggressor" in markdown and "## Verdict" in markdown
    for turn in data["turns"]:
        assert turn["content"] in markdown


def test_retry_starts_a_new_battle_on_the_same_document(client: Client, make_battle) -> None:
    battle = make_battle(rounds=2)
    Battle.objects.filter(pk=battle.pk).update(status=Battle.Status.FAILED)
    response = client.post(f"/battles/{battle.pk}/retry")
    assert response.status_code == 303
    new = Battle.objects.exclude(pk=battle.pk).get()
    assert response["Location"] == f"/battles/{new.pk}/"
    assert (new.document_id, new.rounds, new.status) == (battle.document_id, 2, Battle.Status.PENDING)
    assert client.get(f"/battles/{battle.pk}/retry").status_code == 405


def test_one_file_per_request(client: Client) -> None:
    response = client.post(
        "/battles/",
        {
            "file": [SimpleUploadedFile("a.md", b"One claim."), SimpleUploadedFile("b.md", b"Two.")],
            "rounds": 1,
        },
    )
    assert response.status_code == 400
    assert "one file at a time" in response.content.decode()
    assert not Document.objects.exists()


@pytest.mark.parametrize(
    "name, shown",
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("C:\\Users\\x\\plan.md", "plan.md"),
        ('<img src=x onerror="alert(1)">.md', None),
        ("bell\x07and\x1b[31mred.md", None),
        ("x" * 600 + ".md", None),
    ],
)
def test_hostile_file_names_are_reduced_to_a_safe_display_name(
    client: Client, name: str, shown: str | None
) -> None:
    assert upload(client, ESSAY.encode(), name, rounds=1).status_code == 303
    document = Document.objects.get()
    assert Path(document.file.path).parent == Path(settings.MEDIA_ROOT) / "documents"
    assert re.fullmatch(r"[0-9a-f]{32}", Path(document.file.path).name)
    if shown:
        assert document.original_name == shown
    assert len(document.original_name) <= 120
    assert not re.search(r"[<>\"'\x00-\x1f/\\\\]", document.original_name)
    page = client.get(f"/battles/{Battle.objects.get().pk}/").content.decode()
    assert "<img src=x" not in page
