"""The owner cookie: what proves that a browser created a battle, and what does not."""

from __future__ import annotations

from django.http import HttpResponse
from django.test import RequestFactory

from battles import visitors


def request_with(cookie: str | None) -> object:
    request = RequestFactory().get("/")
    if cookie is not None:
        request.COOKIES[visitors.OWNER_COOKIE] = cookie
    return request


def signed_cookie(token: str) -> str:
    response = HttpResponse()
    visitors.remember_token(response, visitors.OWNER_COOKIE, token)
    return response.cookies[visitors.OWNER_COOKIE].value


def test_the_cookie_is_signed_http_only_same_site_and_holds_no_battle_id() -> None:
    response = HttpResponse()
    visitors.remember_token(response, visitors.OWNER_COOKIE, "the-token")
    morsel = response.cookies[visitors.OWNER_COOKIE]

    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["max-age"] == visitors.COOKIE_MAX_AGE_SECONDS
    assert morsel.value.startswith("the-token:") and morsel.value != "the-token"  # signed


def test_only_the_token_whose_hash_the_battle_keeps_proves_ownership() -> None:
    token = visitors.new_token()
    owner_hash = visitors.token_hash(token)

    assert visitors.owns(request_with(signed_cookie(token)), owner_hash)
    assert not visitors.owns(request_with(signed_cookie(visitors.new_token())), owner_hash)  # another browser
    assert not visitors.owns(request_with(token), owner_hash)  # unsigned: written by hand
    assert not visitors.owns(request_with(signed_cookie(token) + "x"), owner_hash)  # tampered
    assert not visitors.owns(request_with(None), owner_hash)
    assert not visitors.owns(request_with(signed_cookie(token)), "")  # nobody owns it


def test_a_cookie_signed_for_another_purpose_proves_nothing() -> None:
    response = HttpResponse()
    visitors.remember_token(response, "arena_voter", "the-token")  # another cookie's salt
    forged = response.cookies["arena_voter"].value

    assert not visitors.owns(request_with(forged), visitors.token_hash("the-token"))


def test_a_browser_keeps_its_token_and_a_new_one_gets_a_fresh_one() -> None:
    token = visitors.new_token()
    assert visitors.owner_token(request_with(signed_cookie(token))) == token
    fresh = {visitors.owner_token(request_with(None)) for _ in range(3)}
    assert len(fresh) == 3 and all(len(t) >= 40 for t in fresh)
