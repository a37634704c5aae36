"""Who may start battles, and how many (battles.limits): the client's address and the creation limits;
and how the upload and retry views answer when a limit is reached."""

from __future__ import annotations

import io
import runpy
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.utils import timezone

from battles import services
from battles.exceptions import LimitExceeded
from battles.limits import UNKNOWN_CLIENT, check_can_create_battle, client_ip
from battles.models import Battle
from tests.support.documents import ESSAY
from tests.support.live import ROOT


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
        ("", UNKNOWN_CLIENT),  # no address to count against: the shared quota, never none
        ("not-an-address", UNKNOWN_CLIENT),
        ("203.0.113.7:5000", UNKNOWN_CLIENT),
        (None, UNKNOWN_CLIENT),  # daphne on a unix socket sets no REMOTE_ADDR
    ],
)
def test_with_no_trusted_proxy_the_client_is_the_peer(
    settings, remote_addr: str | None, expected: str
) -> None:
    settings.ARENA_TRUSTED_PROXIES = 0
    assert client_ip(request(remote_addr, forwarded_for="198.51.100.1")) == expected  # header ignored
    assert client_ip(request(remote_addr)) == expected


@pytest.mark.parametrize(
    "proxies, forwarded_for, expected",
    [
        # One proxy appends the address it was reached from; the rest is the client's own writing.
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),
        (1, "6.6.6.6,7.7.7.7 ,  198.51.100.1 ", "198.51.100.1"),
        (1, "not-an-address, 198.51.100.1", "198.51.100.1"),  # the client's part is never read
        # Two proxies: the outer one appends the client, the inner one the outer one.
        (2, "198.51.100.1, 10.0.0.2", "198.51.100.1"),
        (2, "6.6.6.6, 7.7.7.7, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
        # IPv6, in its one spelling.
        (1, "6.6.6.6, 2001:DB8:0:0::1", "2001:db8::1"),
        (2, "2001:db8::1, ::1", "2001:db8::1"),
        # Fallback: fewer entries than proxies, or no address where the client should be: the peer.
        (1, "", "10.0.0.1"),
        (2, "198.51.100.1", "10.0.0.1"),
        (3, "6.6.6.6, 198.51.100.1", "10.0.0.1"),  # the left-most entry may be the client's: unused
        (1, "198.51.100.1, unknown", "10.0.0.1"),
        (1, "198.51.100.1, ", "10.0.0.1"),
        (1, "198.51.100.1, 198.51.100.2:4711", "10.0.0.1"),
        (2, "bogus, 10.0.0.2", "10.0.0.1"),
    ],
)
def test_behind_trusted_proxies_the_client_is_the_nth_forwarded_entry_from_the_right(
    settings, proxies: int, forwarded_for: str, expected: str
) -> None:
    settings.ARENA_TRUSTED_PROXIES = proxies
    assert client_ip(request("10.0.0.1", forwarded_for=forwarded_for)) == expected


def test_behind_a_trusted_proxy_no_header_means_the_peer(settings) -> None:
    settings.ARENA_TRUSTED_PROXIES = 1
    assert client_ip(request("10.0.0.1")) == "10.0.0.1"
    assert client_ip(request(None)) == UNKNOWN_CLIENT
    assert client_ip(request(None, forwarded_for="6.6.6.6, bogus")) == UNKNOWN_CLIENT
    assert client_ip(request(None, forwarded_for="6.6.6.6, 198.51.100.1")) == "198.51.100.1"


@pytest.mark.parametrize("spoofed", ["6.6.6.6", "7.7.7.7, 8.8.8.8", "", "2001:db8::6"])
def test_a_client_writing_its_own_header_keeps_its_address(settings, spoofed: str) -> None:
    # What nginx's $proxy_add_x_forwarded_for makes of it: the client's header, then its address.
    settings.ARENA_TRUSTED_PROXIES = 1
    forwarded = f"{spoofed}, 198.51.100.1" if spoofed else "198.51.100.1"
    assert client_ip(request("10.0.0.1", forwarded_for=forwarded)) == "198.51.100.1"
    settings.ARENA_TRUSTED_PROXIES = 0  # straight to daphne: the header counts for nothing
    assert client_ip(request("198.51.100.1", forwarded_for=spoofed)) == "198.51.100.1"


def test_header_lines_are_read_as_one_list(settings) -> None:
    # Django joins repeated header lines with commas (in ASGI requests; the WSGI server does it for
    # WSGI): the proxy's line, last, holds the right-most entry.
    settings.ARENA_TRUSTED_PROXIES = 1
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "client": ("10.0.0.1", 5000),
        "headers": [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"7.7.7.7, 198.51.100.1")],
    }
    made = ASGIRequest(scope, io.BytesIO())
    assert made.headers["X-Forwarded-For"] == "6.6.6.6,7.7.7.7, 198.51.100.1"
    assert client_ip(made) == "198.51.100.1"


@pytest.mark.parametrize("value, expected", [("0", 0), ("2", 2), (" 1 ", 1)])
def test_the_number_of_trusted_proxies_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    monkeypatch.setenv("ARENA_TRUSTED_PROXIES", value)
    assert read_settings()["ARENA_TRUSTED_PROXIES"] == expected
    monkeypatch.delenv("ARENA_TRUSTED_PROXIES")
    assert read_settings()["ARENA_TRUSTED_PROXIES"] == 0  # the default: the header is ignored


@pytest.mark.parametrize("value", ["", "-1", "true", "1.5", "two", "²"])
def test_a_number_of_trusted_proxies_that_is_none_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ARENA_TRUSTED_PROXIES", value)
    with pytest.raises(ImproperlyConfigured, match="ARENA_TRUSTED_PROXIES must be the number of proxies"):
        read_settings()


def read_settings() -> dict[str, object]:
    """arena/settings.py run afresh on the current environment (the process's settings stay as they are)."""
    return runpy.run_path(str(ROOT / "arena" / "settings.py"))


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
def test_x_forwarded_for_counts_only_behind_trusted_proxies(client: Client, settings) -> None:
    settings.ARENA_BATTLES_PER_IP_PER_HOUR = 1
    assert upload(client, HTTP_X_FORWARDED_FOR="1.2.3.4").status_code == 303
    assert upload(client, HTTP_X_FORWARDED_FOR="5.6.7.8").status_code == 429  # same REMOTE_ADDR
    settings.ARENA_TRUSTED_PROXIES = 1
    assert upload(client, HTTP_X_FORWARDED_FOR="5.6.7.8").status_code == 303
    assert upload(client, HTTP_X_FORWARDED_FOR="1.2.3.4, 5.6.7.8").status_code == 429
    assert upload(client, HTTP_X_FORWARDED_FOR="bogus").status_code == 429  # the peer's quota, spent
    assert list(Battle.objects.order_by("created_at").values_list("client_ip", flat=True)) == [
        "127.0.0.1",
        "5.6.7.8",
    ]
