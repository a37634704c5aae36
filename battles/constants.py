"""Facts about a battle that settings, models, forms, commands and the engine all need. Django-free,
so that `arena.settings` can read them before Django is set up."""

from __future__ import annotations

# The three agents, in speaking order within a round. Their names are a contract: event data, model
# fields (`<role>_model`), settings (`ARENA_<ROLE>_MODEL`) and command flags (`--<role>-model`).
AGGRESSOR = "aggressor"
DEFENDER = "defender"
MODERATOR = "moderator"
ROLES = (AGGRESSOR, DEFENDER, MODERATOR)

# Rounds per battle: at least one, and ten is already 30 turns of a model's context.
MIN_ROUNDS = 1
MAX_ROUNDS = 10
# Jurors per battle: each judges the whole battle twice, so a jury of five is ten more model calls.
MAX_JURORS = 5

# Room around an uploaded file in a request body: the multipart framing and the other form fields.
# Django refuses to read more than ARENA_MAX_UPLOAD_BYTES plus this, and the upload view answers 413
# past it without parsing the body.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Past ARENA_MAX_UPLOAD_BYTES plus this, the ASGI wrapper refuses a body before Django reads any of it;
# up to it, the upload view answers with its own form and reason.
REQUEST_BODY_SLACK_BYTES = 1024 * 1024
