"""Real PostgreSQL and Redis for the tests that need them: reachable, or a skip that says why.

On a laptop without the service its tests are skipped with the reason. With `CI` set they fail
instead, so CI never passes by skipping. `make test` runs this module as a script to decide whether
to run the PostgreSQL pass: `python -m tests.support.services postgres URL` exits 0 when reachable.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from tests.support.live import libpq_url

# Long enough for a server on this machine under load, short enough that a closed port is quick.
CONNECT_TIMEOUT_SECONDS = 3

POSTGRES = "PostgreSQL"
REDIS = "Redis"
# Used when TEST_POSTGRES_URL / TEST_REDIS_URL are not set: the services `.ci/run` starts.
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Database 15: out of the way of anything using Redis's default database 0.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def check_postgres(url: str) -> None:
    with psycopg.connect(libpq_url(url), connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
        connection.execute("SELECT 1")


def check_redis(url: str) -> None:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, socket_timeout=CONNECT_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


CHECKS = {POSTGRES: (check_postgres, "TEST_POSTGRES_URL"), REDIS: (check_redis, "TEST_REDIS_URL")}


def unreachable(service: str, url: str) -> str | None:
    """Why `service` cannot be used at `url`, or None when it answers."""
    check, variable = CHECKS[service]
    try:
        check(url)
    except Exception as error:  # any failure to connect or authenticate means: not usable here
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"{service} is not reachable at {redacted(url)} ({first_line}): start it or set {variable}"
    return None


def require(service: str, url: str) -> str:
    """`url` when the service answers; else skip the test, or fail it when `CI` is set."""
    reason = unreachable(service, url)
    if reason is None:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing service is a failure)", pytrace=False)
    pytest.skip(reason)


if __name__ == "__main__":
    # python -m tests.support.services postgres|redis URL: exit 0 when reachable, else 1 with the reason.
    name, url = sys.argv[1], sys.argv[2]
    why = unreachable({"postgres": POSTGRES, "redis": REDIS}[name], url)
    if why:
        print(why, file=sys.stderr)
    sys.exit(1 if why else 0)
