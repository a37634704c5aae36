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

from battles import visitors
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


# --- Privacy: unlisted by default, the owner's controls ----------------------------------------


def head_of(html: str) -> str:
    return html.split("</head>")[0]


def new_battle(client: Client, **fields: object) -> Battle:
    response = upload(client, ESSAY.encode(), name="business-plan.md", **fields)
    assert response.status_code == 303
    return Battle.objects.get(pk=response["Location"].rstrip("/").split("/")[-1])


def test_a_battle_is_unlisted_unless_its_uploader_lists_it(client: Client) -> None:
    unlisted = new_battle(client)
    listed = new_battle(client, public="on")
    stranger = Client()

    home = stranger.get("/").content.decode()
    assert unlisted.visibility == Battle.Visibility.UNLISTED
    assert listed.visibility == Battle.Visibility.PUBLIC
    assert f"/battles/{listed.pk}/" in home
    assert str(unlisted.pk) not in home
    assert stranger.get(f"/battles/{unlisted.pk}/").status_code == 200  # the link works


def public_checkbox(client: Client) -> str:
    return re.search(r'<input type="checkbox" name="public"[^>]*>', client.get("/").content.decode()).group(0)


def test_the_form_follows_the_default_visibility(client: Client, settings) -> None:
    assert " checked" not in public_checkbox(client)
    settings.ARENA_DEFAULT_VISIBILITY = "public"
    assert " checked" in public_checkbox(client)


def test_an_unlisted_battle_tells_search_engines_and_previews_nothing(client: Client) -> None:
    battle = new_battle(client)
    urls = [
        f"/battles/{battle.pk}/{path}" for path in ("", "document.txt", "transcript.md", "transcript.json")
    ]

    for url in urls:
        assert client.get(url)["X-Robots-Tag"] == "noindex, nofollow", url
    head = head_of(client.get(urls[0]).content.decode())
    assert '<meta name="robots" content="noindex, nofollow">' in head
    assert "business-plan" not in head and "og:" not in head and "twitter:" not in head
    assert "<title>Unlisted battle · Boss Battle Arena</title>" in head


@pytest.mark.django_db(transaction=True)
async def test_an_unlisted_battles_stream_is_not_indexed_either(make_battle) -> None:
    battle = await sync_to_async(make_battle)()
    await Battle.objects.filter(pk=battle.pk).aupdate(status=Battle.Status.FAILED)
    response = await AsyncClient().get(f"/battles/{battle.pk}/events")
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    await Battle.objects.filter(pk=battle.pk).aupdate(visibility=Battle.Visibility.PUBLIC)
    assert "X-Robots-Tag" not in await AsyncClient().get(f"/battles/{battle.pk}/events")


def test_a_public_battle_has_a_link_preview(client: Client) -> None:
    battle = new_battle(client, public="on")
    Battle.objects.filter(pk=battle.pk).update(
        status=Battle.Status.FINISHED,
        winner="aggressor",
        aggressor_score=8,
        defender_score=6,
        summary="Sharp.",
    )

    response = client.get(f"/battles/{battle.pk}/")

    head = head_of(response.content.decode())
    assert "X-Robots-Tag" not in response and 'name="robots"' not in head
    assert '<meta property="og:title" content="business-plan.md · Boss Battle Arena">' in head
    assert '<meta property="og:description" content="The Aggressor wins, 8 to 6. Sharp.">' in head
    assert f'<meta property="og:url" content="http://testserver/battles/{battle.pk}/">' in head
    assert '<meta name="twitter:card" content="summary">' in head
    assert '<meta name="twitter:description" content="The Aggressor wins, 8 to 6. Sharp.">' in head


def test_the_creating_browser_gets_an_owner_cookie_that_proves_only_its_battles(client: Client) -> None:
    battle = new_battle(client)
    cookie = client.cookies[visitors.OWNER_COOKIE]

    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert str(battle.pk) not in cookie.value
    assert battle.owner_hash == visitors.token_hash(cookie.value.split(":")[0])
    again = new_battle(client)  # the same browser: the same token
    assert again.owner_hash == battle.owner_hash
    assert 'id="owner-controls"' in client.get(f"/battles/{battle.pk}/").content.decode()
    assert 'id="owner-controls"' not in Client().get(f"/battles/{battle.pk}/").content.decode()


def test_the_owner_lists_and_unlists_the_battle(client: Client) -> None:
    battle = new_battle(client)

    response = client.post(f"/battles/{battle.pk}/visibility", {"public": "1"})
    assert (response.status_code, response["Location"]) == (303, f"/battles/{battle.pk}/")
    battle.refresh_from_db()
    assert battle.visibility == Battle.Visibility.PUBLIC
    assert str(battle.pk) in Client().get("/").content.decode()

    client.post(f"/battles/{battle.pk}/visibility", {"public": "0"})
    battle.refresh_from_db()
    assert battle.visibility == Battle.Visibility.UNLISTED
    assert client.post(f"/battles/{battle.pk}/visibility", {"public": "maybe"}).status_code == 400
    assert client.get(f"/battles/{battle.pk}/visibility").status_code == 405


def someone_elses_clients(owner: Client, battle: Battle) -> dict[str, Client]:
    """Clients that must not pass for the battle's owner."""
    other_browser = Client()
    new_battle(other_browser)  # owns a battle of its own: its cookie is valid, for that one
    copied = Client()
    copied.cookies[visitors.OWNER_COOKIE] = other_browser.cookies[visitors.OWNER_COOKIE].value
    forged = Client()
    forged.cookies[visitors.OWNER_COOKIE] = owner.cookies[visitors.OWNER_COOKIE].value.split(":")[0]
    return {"no cookie": Client(), "another owner": other_browser, "copied": copied, "unsigned": forged}


def test_nobody_else_may_change_or_delete_a_battle(client: Client) -> None:
    battle = new_battle(client)

    for name, other in someone_elses_clients(client, battle).items():
        assert other.post(f"/battles/{battle.pk}/visibility", {"public": "1"}).status_code == 403, name
        assert other.post(f"/battles/{battle.pk}/delete").status_code == 403, name
    battle.refresh_from_db()
    assert battle.visibility == Battle.Visibility.UNLISTED
    unknown = "00000000-0000-0000-0000-000000000000"
    assert client.post(f"/battles/{unknown}/visibility", {"public": "1"}).status_code == 404
    assert client.post(f"/battles/{unknown}/delete").status_code == 404


def test_the_owners_forms_are_csrf_protected(client: Client) -> None:
    battle = new_battle(client)
    strict = Client(enforce_csrf_checks=True)
    strict.cookies[visitors.OWNER_COOKIE] = client.cookies[visitors.OWNER_COOKIE].value

    assert strict.post(f"/battles/{battle.pk}/visibility", {"public": "1"}).status_code == 403
    assert strict.post(f"/battles/{battle.pk}/delete").status_code == 403
    assert Battle.objects.filter(pk=battle.pk, visibility=Battle.Visibility.UNLISTED).exists()


@pytest.mark.django_db(transaction=True)  # the file goes once the deletion commits
def test_the_owner_deletes_the_battle_and_everything_of_it(client: Client) -> None:
    battle = new_battle(client)
    file_path = Path(battle.document.file.path)
    assert file_path.exists()

    response = client.post(f"/battles/{battle.pk}/delete")

    assert (response.status_code, response["Location"]) == (303, "/")
    assert not Battle.objects.filter(pk=battle.pk).exists()
    assert not Document.objects.filter(pk=battle.document_id).exists()
    assert not file_path.exists()
    for path in ("", "events", "document.txt", "transcript.md", "transcript.json"):
        assert client.get(f"/battles/{battle.pk}/{path}").status_code == 404, path


def test_a_retry_belongs_to_the_browser_that_asked(client: Client, make_battle) -> None:
    battle = make_battle()
    Battle.objects.filter(pk=battle.pk).update(status=Battle.Status.FAILED)
    response = client.post(f"/battles/{battle.pk}/retry")
    retried = Battle.objects.get(pk=response["Location"].rstrip("/").split("/")[-1])
    token = client.cookies[visitors.OWNER_COOKIE].value.split(":")[0]
    assert retried.owner_hash == visitors.token_hash(token)
    assert 'id="owner-controls"' in client.get(f"/battles/{retried.pk}/").content.decode()
