"""Who may start battles, and how many (battles.limits): the client's address and the creation limits;
and how the upload and retry views answer when a limit is reached."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.utils import timezone

from battles import services
from battles.exceptions import LimitExceeded
from battles.limits import check_can_create_battle, client_ip
from battles.models import Battle
from tests.support.documents import ESSAY


def upload(client: Client, name: str = "essay.md", content: bytes = ESSAY.encode(), **extra: object):
    return client.post("/battles/", {"file": SimpleUploadedFile(name, content), "rounds": 1}, **extra)


def request(remote_addr: str | None, forwarded_for: str | None = None) -> HttpRequest:
    meta = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    made = RequestFactory().get("/", **meta)
    if remote_addr is None:
        del made.META["REMOTE_ADDR"]
    else:
        made.META["REMOTE_ADDR"] = remote_addr
    return made


# --- The client's address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "remote_addr, expected",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),  # one spelling per address
        ("", None),
        ("not-an-address", None),
        ("203.0.113.7:5000", None),
        (None, None),
    ],
)
def test_client_ip_is_the_peer_address_or_none(
    settings, remote_addr: str | None, expected: str | None
) -> None:
    settings.ARENA_TRUST_X_FORWARDED_FOR = False
    assert client_ip(request(remote_addr, forwarded_for="198.51.100.1")) == expected


@pytest.mark.parametrize(
    "forwarded_for, expected",
    [
        ("198.51.100.1", "198.51.100.1"),
        ("198.51.100.1, 10.0.0.1", "198.51.100.1"),  # the client, then the proxies
        ("  198.51.100.1  ,10.0.0.1", "198.51.100.1"),
        ("", "203.0.113.7"),  # no header value: the peer
        ("bogus, 198.51.100.1", None),  # what the proxy says is no address: none
    ],
)
def test_client_ip_trusts_x_forwarded_for_only_when_configured(
    settings, forwarded_for: str, expected: str | None
) -> None:
    settings.ARENA_TRUST_X_FORWARDED_FOR = True
    assert client_ip(request("203.0.113.7", forwarded_for=forwarded_for)) == expected
    assert client_ip(request("203.0.113.7")) == "203.0.113.7"


# --- The creation limits -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_full_arena_refuses_everyone_for_a_minute(make_battle, settings) -> None:
    settings.ARENA_MAX_RUNNING_BATTLES = 2
    for _ in range(2):
        services.battle_start(battle_id=make_battle().pk)

    for ip in ("203.0.113.7", None):
        with pytest.raises(LimitExceeded, match="The arena is full: 2 battles") as refused:
            check_can_create_battle(ip=ip)
        assert refused.value.retry_after == 60
    services.battle_mark_failed(battle_id=Battle.objects.filter(status="running").first().pk, reason="x")
    check_can_create_battle(ip=None)  # one slot is free again


@pytest.mark.django_db
def test_a_client_may_create_so_many_battles_an_hour(essay_document, settings) -> None:
    settings.ARENA_BATTLES_PER_IP_PER_HOUR = 2
    old = services.battle_create(document=essay_document, client_ip="203.0.113.7")
    Battle.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1, seconds=1))
    for _ in range(2):
        check_can_create_battle(ip="203.0.113.7")  # the battle over an hour old does not count
        services.battle_create(document=essay_document, client_ip="203.0.113.7")

    with pytest.raises(LimitExceeded, match="2 battles in the last hour") as refused:
        check_can_create_battle(ip="203.0.113.7")

    assert refused.value.retry_after == 3600
    check_can_create_battle(ip="203.0.113.8")  # another client
    check_can_create_battle(ip=None)  # no address: only the arena's limit applies


# --- Through the views ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_new_battles_are_refused_while_the_arena_is_full(client: Client, make_battle, settings) -> None:
    settings.ARENA_MAX_RUNNING_BATTLES = 1
    running = make_battle()
    services.battle_start(battle_id=running.pk)

    response = upload(client)

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert "The arena is full" in response.content.decode()
    assert Battle.objects.count() == 1
    assert client.post(f"/battles/{running.pk}/retry").status_code == 429


@pytest.mark.django_db
def test_battles_per_client_ip_per_hour(client: Client, settings) -> None:
    settings.ARENA_BATTLES_PER_IP_PER_HOUR = 2
    assert upload(client).status_code == 303
    assert upload(client).status_code == 303
    refused = upload(client)
    assert refused.status_code == 429 and refused["Retry-After"] == "3600"
    assert "in the last hour" in refused.content.decode()
    assert upload(client, REMOTE_ADDR="10.9.8.7").status_code == 303  # another client is not affected
    assert Battle.objects.count() == 3


@pytest.mark.django_db
def test_x_forwarded_for_is_only_trusted_when_configured(client: Client, settings) -> None:
    settings.ARENA_BATTLES_PER_IP_PER_HOUR = 1
    assert upload(client, HTTP_X_FORWARDED_FOR="1.2.3.4").status_code == 303
    assert upload(client, HTTP_X_FORWARDED_FOR="5.6.7.8").status_code == 429  # same REMOTE_ADDR
    settings.ARENA_TRUST_X_FORWARDED_FOR = True
    assert upload(client, HTTP_X_FORWARDED_FOR="5.6.7.8").status_code == 303
