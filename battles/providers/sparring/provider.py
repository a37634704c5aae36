"""litellm's view of the sparring model: a stream of words with a watchable pace. Imported by
`battles.providers.llm` once litellm is (see `battles.providers.sparring.register`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from django.conf import settings
from litellm import CustomLLM
from litellm.types.llms.openai import ChatCompletionUsageBlock
from litellm.types.utils import GenericStreamingChunk

from battles.providers import llm
from battles.providers.sparring import MODEL, juror, rules


# The ignore: mypy does not follow litellm (pyproject.toml), so its classes are Any to it.
class SparringLLM(CustomLLM):  # type: ignore[misc]
    """Streams `answer`'s text word by word at ARENA_SPARRING_DELAY_MS, with its usage at the end."""

    model = MODEL

    def answer(self, messages: Sequence[dict[str, Any]], *, structured: bool) -> str:
        if juror.asks_juror(messages):
            return juror.reply(messages)
        return rules.reply(messages, structured=structured)

    async def astreaming(
        self, *, model: str, messages: list[dict[str, Any]], optional_params: dict[str, Any], **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        max_tokens = optional_params.get("max_tokens")
        text = self.answer(messages, structured=bool(optional_params.get("response_format")))
        delay = settings.ARENA_SPARRING_DELAY_MS / 1000
        prompt_tokens = llm.count_message_tokens(self.model, messages)
        completion = ""
        async for piece in rules.stream_words(text, delay_seconds=delay, max_tokens=max_tokens):
            completion += piece
            yield llm.stream_chunk(piece)
        completion_tokens = len(rules.words(completion))
        usage: ChatCompletionUsageBlock = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        yield llm.stream_chunk("", finish_reason="stop" if completion == text else "length", usage=usage)
