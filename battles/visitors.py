"""Who a browser is to the arena, without accounts: random tokens in signed, HttpOnly cookies.

`arena_owner` proves that a browser created a battle: it holds a random token (the same for every
battle that browser creates), and the battle keeps only the token's SHA-256 (`Battle.owner_hash`).
Knowing a battle's id or link therefore proves nothing, a cookie copied from another browser proves
only that browser's battles, and a leaked database reveals no token. The signature (SECRET_KEY,
salted per cookie) makes a hand-written cookie worthless too. The crowd's voter id uses the same
helpers under its own cookie name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse

OWNER_COOKIE = "arena_owner"
# A year: an owner keeps control of their battles across visits; clearing cookies gives it up.
COOKIE_MAX_AGE_SECONDS = 365 * 24 * 3600


def read_token(request: HttpRequest, cookie: str) -> str | None:
    """The token in `cookie`, or None when it is missing or its signature is not ours."""
    token: str | None = request.get_signed_cookie(cookie, default=None, salt=cookie)
    return token or None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def remember_token(response: HttpResponse, cookie: str, token: str) -> None:
    """Set `cookie` to `token`, signed, out of reach of scripts and of other sites' forms."""
    response.set_signed_cookie(
        cookie,
        token,
        salt=cookie,
        max_age=COOKIE_MAX_AGE_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=settings.ARENA_HTTPS,
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def owner_token(request: HttpRequest) -> str:
    """This browser's owner token: the one its cookie holds, else a new one (remember it with
    `remember_token(response, OWNER_COOKIE, token)`)."""
    return read_token(request, OWNER_COOKIE) or new_token()


def owns(request: HttpRequest, owner_hash: str) -> bool:
    """Does this browser's owner cookie prove the ownership recorded as `owner_hash`?"""
    token = read_token(request, OWNER_COOKIE)
    if not token or not owner_hash:
        return False
    return hmac.compare_digest(token_hash(token), owner_hash)
