"""`bench/clock`: a litellm custom provider streaming `bench.clock` tokens, for the benchmark only.

It takes the path every model takes (litellm's custom provider, `battles.providers.llm.ReplyStream`, the
engine, the event log), like `arena/sparring`, but streams at an exact rate and stamps each token
with the moment it left the provider. Registered by `bench.settings`; production never loads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litellm import CustomLLM
from litellm.types.utils import GenericStreamingChunk

from battles.providers import llm
from bench import clock

PROVIDER = "bench"
MODEL = f"{PROVIDER}/clock"
# max_tokens decides where a turn stops; these only have to be large enough.
MAX_OUTPUT_TOKENS = 100_000
CONTEXT_TOKENS = 16384
# What litellm counts the prompt as; the clock never reads it.
PROMPT_TOKENS = 1


class ClockLLM(CustomLLM):
    async def astreaming(  # type: ignore[override]
        self, *, model: str, messages: list, optional_params: dict, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        count = int(optional_params.get("max_tokens") or MAX_OUTPUT_TOKENS)
        async for text in clock.ticks(count=count):
            yield llm.stream_chunk(text)
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count, "total_tokens": count + 1}
        yield llm.stream_chunk("", finish_reason="length", usage=usage)


def register() -> None:
    """Make `bench/clock` a litellm model, next to whatever custom providers are declared."""
    llm.declare_custom_model(
        provider=PROVIDER,
        model=MODEL,
        handler="bench.provider.ClockLLM",
        context_tokens=CONTEXT_TOKENS,
        max_output_tokens=MAX_OUTPUT_TOKENS,
    )
