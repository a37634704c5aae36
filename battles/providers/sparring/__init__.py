"""`arena/sparring`: the built-in offline model, a rule-based stand-in for a real LLM (not AI).

`rules` decides what each role says; `provider` makes it a litellm custom provider, declared when
Django starts (`BattlesConfig.ready` calls `register`), so the engine calls it exactly as it calls
OpenAI or Ollama.
"""

from __future__ import annotations

from battles.providers import llm

PROVIDER = "arena"
MODEL_NAME = "sparring"
MODEL = f"{PROVIDER}/{MODEL_NAME}"
# As much as a battle of ten rounds needs; the sparring model reads the whole prompt whatever its size.
CONTEXT_TOKENS = 16384
MAX_OUTPUT_TOKENS = 4096


def register() -> None:
    """Make `arena/sparring` a litellm model: its provider, context size and (zero) price."""
    llm.declare_custom_model(
        provider=PROVIDER,
        model=MODEL,
        handler="battles.providers.sparring.provider.SparringLLM",
        context_tokens=CONTEXT_TOKENS,
        max_output_tokens=MAX_OUTPUT_TOKENS,
    )
