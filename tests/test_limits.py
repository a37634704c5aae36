"""Who may start battles, and how many (battles.limits): the client's address and the creation limits;
and how the upload and retry views answer when a limit is reached."""

from __future__ import annotations

import io
import re
import runpy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
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
from tests.support.live import ROOT, LiveDatabase, LiveServer


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


# --- Through a real daphne process ---------------------------------------------------------------

# What the proxy in front appends (nginx's $proxy_add_x_forwarded_for): the address it was reached from.
CLIENT, OTHER_CLIENT = "198.51.100.7", "198.51.100.8"


@pytest.fixture
def limited_server(
    request: pytest.FixtureRequest, tmp_path: Path, live_database: LiveDatabase
) -> Iterator[LiveServer]:
    """daphne allowing two battles per client IP an hour, behind `request.param` trusted proxies,
    on a database of its own (the quota it counts starts empty)."""
    database = live_database.copy()
    try:
        with LiveServer(
            tmp_path,
            database,
            ARENA_BATTLES_PER_IP_PER_HOUR="2",
            ARENA_TRUSTED_PROXIES=str(request.param),
        ) as server:
            yield server
    finally:
        database.drop()


def upload_through(server: LiveServer, *forwarded_for: str) -> int:
    """Upload through the real form (CSRF and all), one X-Forwarded-For line per argument; the status."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', http.get("/").text)
        assert token, "the upload form has no CSRF token"
        response = http.post(
            "/battles/",
            data={"csrfmiddlewaretoken": token.group(1), "rounds": "1"},
            files={"file": ("essay.md", ESSAY.encode(), "text/markdown")},
            headers=[("Referer", server.url + "/"), *(("X-Forwarded-For", line) for line in forwarded_for)],
        )
    return response.status_code


def stored_client_ips(server: LiveServer) -> list[str]:
    rows = server.database.fetch("SELECT client_ip FROM battles_battle ORDER BY created_at")
    return [str(ip) for (ip,) in rows]  # PostgreSQL returns inet values as ipaddress objects


@pytest.mark.e2e
@pytest.mark.parametrize("limited_server", [0], indirect=True)
def test_straight_to_daphne_a_forged_header_gives_no_fresh_quota(limited_server: LiveServer) -> None:
    assert upload_through(limited_server, "203.0.113.1") == 303
    assert upload_through(limited_server, "203.0.113.2") == 303
    assert upload_through(limited_server, "203.0.113.3") == 429
    assert upload_through(limited_server, "2001:db8::3, 203.0.113.4") == 429
    assert upload_through(limited_server, "203.0.113.5", "203.0.113.6") == 429
    assert upload_through(limited_server) == 429
    assert stored_client_ips(limited_server) == ["127.0.0.1", "127.0.0.1"]  # the connection's address


@pytest.mark.e2e
@pytest.mark.parametrize("limited_server", [1], indirect=True)
def test_behind_one_proxy_rotating_the_forged_part_gives_no_fresh_quota(limited_server: LiveServer) -> None:
    assert upload_through(limited_server, f"203.0.113.1, {CLIENT}") == 303
    assert upload_through(limited_server, f"203.0.113.2, {CLIENT}") == 303
    assert upload_through(limited_server, f"203.0.113.3, {CLIENT}") == 429
    assert upload_through(limited_server, f"2001:db8::3, bogus, {CLIENT}") == 429
    assert upload_through(limited_server, CLIENT) == 429  # the client sent no header of its own
    assert upload_through(limited_server, "203.0.113.5", CLIENT) == 429  # its line, then the proxy's
    # Another client behind the same proxy has a quota of its own; a request that reached daphne
    # with no forwarded address at all counts against the proxy's (the connection's) address.
    assert upload_through(limited_server, f"{CLIENT}, {OTHER_CLIENT}") == 303
    assert upload_through(limited_server) == 303
    assert upload_through(limited_server, "bogus") == 303
    assert upload_through(limited_server, "") == 429
    assert stored_client_ips(limited_server) == [CLIENT, CLIENT, OTHER_CLIENT, "127.0.0.1", "127.0.0.1"]
