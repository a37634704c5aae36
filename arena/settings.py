"""Settings for Boss Battle Arena, read from the environment (and an optional `.env`).

Every variable is documented in README.md with its default. Tests use `arena.settings_test`.
"""

from __future__ import annotations

import os
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from battles.constants import MAX_JURORS, MAX_ROUNDS, MIN_ROUNDS, MULTIPART_OVERHEAD_BYTES, ROLES

# Lets the code write the generic types it is checked with (`admin.ModelAdmin[Battle]`): it gives
# the Django classes that lack one a `__class_getitem__` that returns the class itself.
django_stubs_ext.monkeypatch()

# litellm fetches its model price map from the internet at import unless told otherwise; these
# machines have no internet. Must be set before anything imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

# SECRET_KEY from the environment; else the random per-checkout key that `make run` writes; else,
# with DEBUG on only, a development key. Production refuses to start without a real one.
_KEY_FILE = Path(env.str("SECRET_KEY_FILE", default=str(VAR_DIR / "secret-key")))
SECRET_KEY = env.str("SECRET_KEY", default="") or (
    _KEY_FILE.read_text().strip() if _KEY_FILE.exists() else ""
)
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (or run `make run` once).")
    SECRET_KEY = "django-insecure-development-only-key"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "battles",
]

# No GZipMiddleware: it would buffer text/event-stream responses.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "arena.middleware.ContentSecurityPolicyMiddleware",
    "arena.middleware.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Served over HTTPS (behind a TLS-terminating proxy that sets X-Forwarded-Proto): secure cookies,
# HSTS and a redirect to https. Off by default so `make run` works on plain http://127.0.0.1.
ARENA_HTTPS: bool = env.bool("ARENA_HTTPS", default=False)
if ARENA_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Scripts, styles and connections from this origin only: no inline script can run, whatever text a
# model or a document manages to get onto a page.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)

ROOT_URLCONF = "arena.urls"
ASGI_APPLICATION = "arena.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if "DATABASE_URL" not in os.environ:
    VAR_DIR.mkdir(exist_ok=True)  # SQLite creates the file, not its folder
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'arena.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while `runbattle` writes; IMMEDIATE avoids upgrade deadlocks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": 20}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default="") or None  # only `collectstatic` needs one
# Serve straight from the apps' static folders, so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # litellm logs provider response bodies at WARNING and below; they may carry secrets.
        "LiteLLM": {"level": "ERROR"},
        "LiteLLM Router": {"level": "ERROR"},
        "LiteLLM Proxy": {"level": "ERROR"},
        "openai": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# --- The arena -------------------------------------------------------------------------------
# Each is annotated: django-environ has no types, and mypy reads `settings.ARENA_…` from here.

ARENA_MODEL: str = env.str("ARENA_MODEL", default="arena/sparring")
ARENA_ROLE_MODELS: dict[str, str] = {
    role: env.str(f"ARENA_{role.upper()}_MODEL", default="") or ARENA_MODEL for role in ROLES
}
# The models a visitor may pick per role on the upload form (the configured ones by default).
ARENA_MODEL_CHOICES: list[str] = env.list(
    "ARENA_MODEL_CHOICES", default=list(dict.fromkeys([ARENA_MODEL, *ARENA_ROLE_MODELS.values()]))
)
# Optional OpenAI-compatible endpoint and key, globally or per role (llama.cpp, vLLM, Ollama's /v1…).
ARENA_API_BASE: str = env.str("ARENA_API_BASE", default="")
ARENA_API_KEY: str = env.str("ARENA_API_KEY", default="")
ARENA_ROLE_API_BASES: dict[str, str] = {
    role: env.str(f"ARENA_{role.upper()}_API_BASE", default="") or ARENA_API_BASE for role in ROLES
}
ARENA_ROLE_API_KEYS: dict[str, str] = {
    role: env.str(f"ARENA_{role.upper()}_API_KEY", default="") or ARENA_API_KEY for role in ROLES
}

# The jury: after the last round each juror judges the whole battle twice, the sides swapped, and
# the majority decides (see battles.engine.jury). Empty: the Moderator's verdict alone. The offline
# jurors are arena/sparring and arena/rules.
ARENA_JURY: list[str] = env.list("ARENA_JURY", default=[])
# Jurors a visitor may pick on the upload form; the form offers a jury only when this is set.
ARENA_JURY_CHOICES: list[str] = env.list("ARENA_JURY_CHOICES", default=[])
if len(ARENA_JURY) > MAX_JURORS:
    raise ImproperlyConfigured(f"ARENA_JURY holds at most {MAX_JURORS} jurors.")
# The jurors' OpenAI-compatible endpoint and key (default: ARENA_API_BASE and ARENA_API_KEY).
ARENA_JURY_API_BASE: str = env.str("ARENA_JURY_API_BASE", default="") or ARENA_API_BASE
ARENA_JURY_API_KEY: str = env.str("ARENA_JURY_API_KEY", default="") or ARENA_API_KEY

ARENA_ROUNDS: int = env.int("ARENA_ROUNDS", default=3)
if not MIN_ROUNDS <= ARENA_ROUNDS <= MAX_ROUNDS:
    raise ImproperlyConfigured(f"ARENA_ROUNDS must be between {MIN_ROUNDS} and {MAX_ROUNDS}.")

# Privacy. A new battle is reachable only by its link (`unlisted`) unless its uploader lists it
# publicly; `public` makes listing the default the form offers.
ARENA_DEFAULT_VISIBILITY: str = env.str("ARENA_DEFAULT_VISIBILITY", default="unlisted")
if ARENA_DEFAULT_VISIBILITY not in ("unlisted", "public"):
    raise ImproperlyConfigured("ARENA_DEFAULT_VISIBILITY must be 'unlisted' or 'public'.")
# Finished and failed battles older than this many days are deleted once a day (their document and
# file too, once no battle uses them); 0 keeps everything. `manage.py purgebattles` does it by hand.
ARENA_RETENTION_DAYS: int = env.int("ARENA_RETENTION_DAYS", default=0)
if ARENA_RETENTION_DAYS < 0:
    raise ImproperlyConfigured("ARENA_RETENTION_DAYS must be 0 (keep forever) or more.")

ARENA_MAX_UPLOAD_BYTES: int = env.int("ARENA_MAX_UPLOAD_BYTES", default=2 * 1024 * 1024)
ARENA_MAX_TOKENS_PER_TURN: int = env.int("ARENA_MAX_TOKENS_PER_TURN", default=400)
# Context window assumed for a model litellm has no information about.
ARENA_DEFAULT_CONTEXT_TOKENS: int = env.int("ARENA_DEFAULT_CONTEXT_TOKENS", default=8192)
# 60 ms between words is about the pace of a fast reader: watchable under `make run`.
ARENA_SPARRING_DELAY_MS: int = env.int("ARENA_SPARRING_DELAY_MS", default=60)
# A provider that sends nothing for this long is treated as failed.
ARENA_FIRST_TOKEN_TIMEOUT_SECONDS: float = env.float("ARENA_FIRST_TOKEN_TIMEOUT_SECONDS", default=60.0)
ARENA_IDLE_TIMEOUT_SECONDS: float = env.float("ARENA_IDLE_TIMEOUT_SECONDS", default=30.0)
# Retries (with backoff) of a model call that fails before its first token: 429, 5xx, no connection.
ARENA_PROVIDER_RETRIES: int = env.int("ARENA_PROVIDER_RETRIES", default=2)

# The live stream. A comment goes out this often while nothing else does, so proxies and home
# routers do not drop an idle connection.
ARENA_SSE_HEARTBEAT_SECONDS: float = env.float("ARENA_SSE_HEARTBEAT_SECONDS", default=15.0)
# What EventSource waits before reconnecting (the stream's `retry:` line).
ARENA_SSE_RETRY_MS: int = env.int("ARENA_SSE_RETRY_MS", default=2000)
# A spectator this many events behind the battle is disconnected; it catches up from the log.
ARENA_SSE_MAX_LAG_EVENTS: int = env.int("ARENA_SSE_MAX_LAG_EVENTS", default=5000)
# Under load, spectators are woken in waves (see battles/live/wakeups.py): the next wave waits half as long
# as the last one took, so that writing to thousands of spectators leaves the process time for the
# battle itself; never longer than this. Bounds the latency coalescing may add to an event.
ARENA_SSE_COALESCE_MAX_MS: int = env.int("ARENA_SSE_COALESCE_MAX_MS", default=250)
# How often a battle that runs in another process (e.g. `runbattle`) is read from the stored log.
ARENA_TAIL_POLL_SECONDS: float = env.float("ARENA_TAIL_POLL_SECONDS", default=0.25)

# Scale-out. `memory` fans events out within one process (battles run elsewhere are followed through
# the stored log); `redis` relays every committed event through Redis Streams to every process.
ARENA_BROADCAST: str = env.str("ARENA_BROADCAST", default="memory")
if ARENA_BROADCAST not in ("memory", "redis"):
    raise ImproperlyConfigured("ARENA_BROADCAST must be 'memory' or 'redis'.")
REDIS_URL: str = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# The process running a battle renews its lease on it every third of this; once it has run out (the
# process died), another process takes the battle over and continues from its last completed turn.
ARENA_LEASE_SECONDS: float = env.float("ARENA_LEASE_SECONDS", default=15.0)
if ARENA_LEASE_SECONDS < 1:
    raise ImproperlyConfigured("ARENA_LEASE_SECONDS must be at least 1.")
# Where the arena is served, for the links that `manage.py runbattle` prints.
ARENA_BASE_URL: str = env.str("ARENA_BASE_URL", default="http://127.0.0.1:8000")

# Abuse limits, counted per client IP (battles.limits.client_ip). The number of proxies in front
# of daphne, each appending to X-Forwarded-For: 0, the header is ignored and the connection's address
# is the client; N, the client is the header's N-th entry from the right (the ones further left are
# the client's own writing).
_TRUSTED_PROXIES = env.str("ARENA_TRUSTED_PROXIES", default="0").strip()
if not (_TRUSTED_PROXIES.isascii() and _TRUSTED_PROXIES.isdigit()):
    raise ImproperlyConfigured(
        "ARENA_TRUSTED_PROXIES must be the number of proxies in front of the arena, 0 or more "
        f"(got {_TRUSTED_PROXIES!r})."
    )
ARENA_TRUSTED_PROXIES: int = int(_TRUSTED_PROXIES)
# Battles running at once; a new battle beyond this is refused with 429 until one ends.
ARENA_MAX_RUNNING_BATTLES: int = env.int("ARENA_MAX_RUNNING_BATTLES", default=8)
# Battles one client IP may create per hour.
ARENA_BATTLES_PER_IP_PER_HOUR: int = env.int("ARENA_BATTLES_PER_IP_PER_HOUR", default=30)
# Prompt plus completion tokens one battle may spend; it ends cleanly when they run out.
ARENA_MAX_TOKENS_PER_BATTLE: int = env.int("ARENA_MAX_TOKENS_PER_BATTLE", default=200_000)
# Open SSE streams per client IP, in this process.
ARENA_MAX_STREAMS_PER_IP: int = env.int("ARENA_MAX_STREAMS_PER_IP", default=20)
# The longest one SSE response stays open; the browser then reconnects and resumes.
ARENA_MAX_STREAM_SECONDS: float = env.float("ARENA_MAX_STREAM_SECONDS", default=3600.0)

# Django refuses bigger request bodies before our own check runs; leave room for the form fields.
DATA_UPLOAD_MAX_MEMORY_SIZE = ARENA_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = ARENA_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
