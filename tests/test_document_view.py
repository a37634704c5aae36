"""The document's text (`/battles/<id>/document.txt`): the lines the document panel shows and that
citations point into, served as plain text exactly as stored."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from battles import services
from battles.models import Battle

pytestmark = pytest.mark.django_db

UNKNOWN = "00000000-0000-0000-0000-000000000000"


def config_of(html: str) -> dict:
    return json.loads(re.search(r'id="arena-config"[^>]*>(.*?)</script>', html, re.S).group(1))


def test_the_document_is_its_stored_text_as_plain_utf8(client: Client, make_battle) -> None:
    battle = make_battle()
    response = client.get(f"/battles/{battle.pk}/document.txt")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"  # never sniffed into HTML
    assert response.content.decode("utf-8") == battle.document.text
    assert response.content.decode().split("\n")[0] == "# Why every team should write tests"


def test_markup_in_the_document_comes_back_verbatim_as_text(client: Client, make_battle) -> None:
    markup = '<script>alert("x")</script>\n<img src=x onerror="alert(1)"> &amp; <b>bold</b>\n'
    battle = make_battle(text=markup, name="page.html")
    response = client.get(f"/battles/{battle.pk}/document.txt")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == battle.document.text
    assert '<script>alert("x")</script>' in response.content.decode()
    assert "&lt;" not in response.content.decode()  # not escaped either: text, as is


def test_a_non_ascii_document_round_trips(client: Client, make_battle) -> None:
    text = "Ça coûte 5 € — « naïve » café\nΑλφα · 日本語のテキスト · emoji 🙂\n\nlast line ends here"
    battle = make_battle(text=text, name="unicode.txt")
    assert battle.document.text == text
    response = client.get(f"/battles/{battle.pk}/document.txt")
    assert response.content == text.encode("utf-8")
    assert response.content.decode("utf-8").split("\n") == [
        "Ça coûte 5 € — « naïve » café",
        "Αλφα · 日本語のテキスト · emoji 🙂",
        "",
        "last line ends here",
    ]


def test_an_unknown_battle_is_404_and_only_get_is_allowed(client: Client, make_battle) -> None:
    assert client.get(f"/battles/{UNKNOWN}/document.txt").status_code == 404
    battle = make_battle()
    assert client.post(f"/battles/{battle.pk}/document.txt").status_code == 405
    assert client.put(f"/battles/{battle.pk}/document.txt").status_code == 405


def test_the_arena_and_the_replay_are_told_where_the_document_is(
    client: Client, admin_client: Client, make_battle
) -> None:
    battle = make_battle()
    document_url = f"/battles/{battle.pk}/document.txt"
    assert config_of(client.get(f"/battles/{battle.pk}/").content.decode())["documentUrl"] == document_url

    services.battle_start(battle_id=battle.pk)
    services.battle_fail(battle_id=battle.pk, error="stopped for the test")
    assert Battle.objects.get(pk=battle.pk).is_over
    replay = admin_client.get(f"/admin/battles/battle/{battle.pk}/replay/")
    assert replay.status_code == 200
    assert config_of(replay.content.decode())["documentUrl"] == document_url
