# Boss Battle Arena: `make run` serves the arena, `make test` runs the suite. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# PostgreSQL for the second pass of `make test` and for the tests marked `postgres`. The suite
# creates its databases there (test_arena_<pid>, test_arena_<pid>_live…) and drops them at the end.
export TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: setup migrate run test test-postgres lint format clean bench

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(INSTALLED)

setup: $(INSTALLED)

# A random key for this checkout, used when SECRET_KEY is not set (see arena/settings.py).
var/secret-key:
	mkdir -p var
	$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@
	chmod 600 $@

migrate: setup var/secret-key
	$(PY) manage.py migrate --noinput

run: migrate
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) arena.asgi:application

# Lint, the whole suite on SQLite, then the whole suite again on PostgreSQL.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest
	@$(MAKE) --no-print-directory test-postgres

# The whole suite on PostgreSQL when it is reachable; skipped (and said so) when not, except in CI.
test-postgres: setup
	@if $(PY) -m tests.services postgres "$$TEST_POSTGRES_URL"; then \
		echo "Running the suite again on PostgreSQL (DATABASE_URL=\$$TEST_POSTGRES_URL)"; \
		DATABASE_URL="$$TEST_POSTGRES_URL" $(VENV)/bin/pytest; \
	elif [ -n "$$CI" ]; then \
		echo "CI is set: the PostgreSQL pass is required"; exit 1; \
	else \
		echo "Skipping the PostgreSQL pass."; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The performance benchmark (bench/run.py): the arena and the sse-starlette peer side by side, from
# 100 to 5,000 spectators; writes docs/benchmarks.{md,json} and docs/benchmarks-p99.png. About ten
# minutes. Not a test: `make test` runs only its smoke test (tests/test_bench_smoke.py).
BENCH_INSTALLED := $(VENV)/.bench-installed

$(BENCH_INSTALLED): bench/requirements.txt $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $(BENCH_INSTALLED)

bench: $(BENCH_INSTALLED)
	$(PY) -m bench.run
