"""`arena/sparring`: the built-in offline model, a rule-based stand-in for a real LLM (not AI).

`rules` decides what each role says; `provider` makes it a litellm custom provider, registered when
Django starts (`BattlesConfig.ready`), so the engine calls it exactly as it calls OpenAI or Ollama.
"""

from __future__ import annotations

PROVIDER = "arena"
MODEL_NAME = "sparring"
MODEL = f"{PROVIDER}/{MODEL_NAME}"
