"""The two passes of `make test`: which tests run on which database engine.

The first pass runs everything on SQLite. The second runs on PostgreSQL only what could behave
differently there: the tests that touch the run's database (pytest-django's `django_db`, its `db`
fixtures, and the live servers' `live_database`). Each of those is marked `database` here, and the
second pass selects them with `-m database`. A module whose checks do not depend on the engine under
the servers it starts (the browser, the local model, the benchmark's smoke test) says so with the
`one_pass` marker, and runs on the first pass only.

Both passes run on several workers (pytest-xdist, `--dist loadfile`: a module's tests on one worker,
so that its module-scoped servers start once). The modules that start real processes go first, the
local model's before all, so that the long ones run side by side instead of last.

Loaded as a plugin by `tests/conftest.py`.
"""

from __future__ import annotations

import pytest

# Fixtures that reach the database of the run's engine.
DATABASE_FIXTURES = frozenset(
    {"db", "transactional_db", "django_db_setup", "live_database", "migrated_template"}
)


def touches_database(item: pytest.Item) -> bool:
    if item.get_closest_marker("one_pass"):
        return False
    if item.get_closest_marker("django_db"):
        return True
    return bool(DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "database: touches the run's database (set by tests.support.passes)")
    config.addinivalue_line(
        "markers",
        "one_pass: runs on the first pass of `make test` only (its checks do not depend on the engine)",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as collected, before `-m database` selects.
    if touches_database(item):
        item.add_marker(pytest.mark.database)


@pytest.hookimpl(trylast=True)  # after pytest-django's own ordering
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Slowest modules first, each module's tests together (its module-scoped servers start once).
    weight: dict[str, int] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        module = item.nodeid.split("::")[0]
        kind = 2 if item.get_closest_marker("llm") else 1 if item.get_closest_marker("e2e") else 0
        weight[module] = max(weight.get(module, 0), kind)
        first.setdefault(module, index)
    items.sort(key=lambda item: (-weight[module := item.nodeid.split("::")[0]], first[module]))
