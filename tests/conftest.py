"""Shared fixtures: documents and battles, the sparring model at full speed (or paced), a fresh hub, a
fake OpenAI server, databases for live servers, and real PostgreSQL and Redis for the tests marked
`postgres`/`redis`. Shared helpers are in tests/support/."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.db import connections  # noqa: E402
from pytest_django.fixtures import Settings  # noqa: E402

from battles import services  # noqa: E402
from battles.live.hub import hub  # noqa: E402
from battles.models import Battle, Document  # noqa: E402
from battles.providers import llm  # noqa: E402
from tests.support import live  # noqa: E402
from tests.support.documents import ESSAY  # noqa: E402
from tests.support.openai_server import OpenAIServer  # noqa: E402
from tests.support.services import DEFAULT_POSTGRES_URL, DEFAULT_REDIS_URL, POSTGRES, REDIS, require  # noqa: E402

# Marks the tests of the PostgreSQL pass (see that module).
pytest_plugins = ["tests.support.passes"]

# As every process that calls models does before its first battle: no test's event loop (with its
# first-token timeouts) waits for litellm's import.
llm.load()


@pytest.fixture
def essay_document(db: None) -> Document:
    return services.document_create(data=ESSAY.encode(), name="essay.md")


@pytest.fixture
def make_battle(db: None):
    def make(
        *,
        text: str = ESSAY,
        name: str = "essay.md",
        rounds: int = 1,
        visibility: str | None = None,
        owner_hash: str = "",
        **models: str,
    ) -> Battle:
        document = services.document_create(data=text.encode(), name=name)
        return services.battle_create(
            document=document,
            rounds=rounds,
            models=models or None,
            visibility=visibility,
            owner_hash=owner_hash,
        )

    return make


@pytest.fixture
def fresh_hub() -> Iterator[None]:
    """The process's hub as new after the test: no channels, no runs, not draining."""
    yield
    hub.channels.clear()
    hub.runs.clear()
    hub.draining = False


@pytest.fixture
def paced_sparring(settings: Settings) -> None:
    """A pause per word, so that a turn is always under way for a while (never done in one step)."""
    settings.ARENA_SPARRING_DELAY_MS = 2


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    # A new server may reuse an earlier one's port: what that one accepted says nothing about it.
    llm.forget_structured_styles()
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenAIServer]:
    """A fake OpenAI-compatible provider shared by a module's live server."""
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's test database, with the connection async tests opened closed at the end.

    Async tests reach the database through sync_to_async, in asgiref's worker thread, whose connection
    pytest-django never closes; on PostgreSQL it would stop the test database from being dropped.
    """
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.LiveDatabase]:
    """Migrated once per run, on the run's own engine; never served, only copied."""
    template = live.migrated_database(tmp_path_factory.mktemp("databases"))
    yield template
    template.drop()


@pytest.fixture(scope="module")
def live_database(migrated_template: live.LiveDatabase) -> Iterator[live.LiveDatabase]:
    """A migrated database of the module's own, for its live servers and `runbattle` processes."""
    database = migrated_template.copy()
    yield database
    database.drop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server on which tests may create (and must drop) databases of their own."""
    return require(POSTGRES, os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database other runs share: use keys and channels under a unique prefix; never flush it."""
    return require(REDIS, os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL))
