"""Every model call goes through here, and through `litellm.acompletion(stream=True)`.

litellm takes several seconds to import. `load()` imports it: a process that will call models runs
it once before its first battle (`arena.asgi` when serving, `runbattle`, the test suite), so that no
event loop ever waits on the import, and processes that never call a model (`migrate`, `check`,
`createsuperuser`) never pay for it. Custom providers (the built-in `arena/sparring`, the benchmark's
clock) are declared with `declare_custom_model` and registered with litellm as it loads, so they take
exactly the code path a real provider takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.module_loading import import_string

from battles.exceptions import ProviderError

if TYPE_CHECKING:
    from litellm.types.llms.openai import ChatCompletionUsageBlock
    from litellm.types.utils import GenericStreamingChunk

logger = logging.getLogger(__name__)

MISSING_KEY_MESSAGE = "No API key is configured for this model's provider (set its key, e.g. OPENAI_API_KEY)."
TIMEOUT_MESSAGE = "The model stopped answering (timed out)."
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# The share of an unmapped model's context that prompts are budgeted on (see `context_tokens`).
UNKNOWN_TOKENIZER_SHARE = 0.8


@dataclass(frozen=True)
class CustomModel:
    """A model served by a litellm custom provider of ours: `handler` is the dotted path of its
    `litellm.CustomLLM` class, imported only once litellm is."""

    provider: str
    model: str  # `provider/name`
    handler: str
    context_tokens: int
    max_output_tokens: int


_declared: list[CustomModel] = []
_litellm: Any = None  # the litellm module, once loaded (Any: mypy does not follow litellm)
# The handler of each declared model, by (provider, name): litellm takes one handler per provider, so
# a provider with several models (arena/sparring, arena/rules) gets one that passes each call on.
_handlers: dict[tuple[str, str], Any] = {}


def load() -> Any:
    """litellm, imported (and the declared custom models registered) on the first call."""
    global _litellm
    if _litellm is None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: no event loop, as it should be
            asyncio.get_running_loop()
            logger.warning("litellm is imported on a running event loop: call llm.load() at start-up")
        # litellm fetches its model price map from the internet at import unless told otherwise.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        # The import builds some 400,000 objects that live as long as the process: collecting garbage
        # meanwhile finds none and costs about a fifth of the import's time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            import litellm
        finally:
            if collecting:
                gc.enable()

        # litellm prints help text to stdout on errors unless told not to.
        litellm.suppress_debug_info = True
        _litellm = litellm
        for custom in _declared:
            _register(litellm, custom)
    return _litellm


def declare_custom_model(
    *, provider: str, model: str, handler: str, context_tokens: int, max_output_tokens: int
) -> None:
    """Make `model` a litellm model served by the `handler` class, at no cost, from the time litellm
    loads (at once when it already has). Declaring the same model again changes nothing."""
    custom = CustomModel(provider, model, handler, context_tokens, max_output_tokens)
    if custom in _declared:
        return
    _declared.append(custom)
    if _litellm is not None:
        _register(_litellm, custom)


def _register(litellm: Any, custom: CustomModel) -> None:
    _handlers[(custom.provider, custom.model.split("/", 1)[1])] = import_string(custom.handler)()
    if not any(p.get("provider") == custom.provider for p in litellm.custom_provider_map):
        litellm.custom_provider_map = [
            *litellm.custom_provider_map,
            {"provider": custom.provider, "custom_handler": _dispatcher(litellm, custom.provider)},
        ]
        # litellm reads custom_provider_map when it is set up; register the handler right away.
        litellm.utils.custom_llm_setup()
    litellm.register_model(
        {
            custom.model: {
                "litellm_provider": custom.provider,
                "mode": "chat",
                "max_input_tokens": custom.context_tokens,
                "max_output_tokens": custom.max_output_tokens,
                "max_tokens": custom.max_output_tokens,
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
                "cache_creation_input_token_cost": 0.0,
                "cache_read_input_token_cost": 0.0,
            }
        }
    )


def _dispatcher(litellm: Any, provider: str) -> Any:
    """litellm's handler for `provider`: each call goes to the handler of the model it names."""

    def handler(model: str) -> Any:
        return _handlers[(provider, model.rsplit("/", 1)[-1])]

    class ProviderModels(litellm.CustomLLM):  # type: ignore[misc]
        def astreaming(self, *args: Any, model: str, **kwargs: Any) -> Any:
            return handler(model).astreaming(*args, model=model, **kwargs)

        def acompletion(self, *args: Any, model: str, **kwargs: Any) -> Any:
            return handler(model).acompletion(*args, model=model, **kwargs)

    return ProviderModels()


def stream_chunk(
    text: str, *, finish_reason: str | None = None, usage: ChatCompletionUsageBlock | None = None
) -> GenericStreamingChunk:
    """One chunk of a custom provider's stream, as litellm expects it."""
    from litellm.types.utils import GenericStreamingChunk

    return GenericStreamingChunk(
        text=text,
        is_finished=finish_reason is not None,
        finish_reason=finish_reason or "",
        usage=usage,
        index=0,
        tool_use=None,
    )


@dataclass(frozen=True)
class Endpoint:
    """Where one role's model lives: the litellm model string, and optionally a base URL and key."""

    model: str
    api_base: str = ""
    api_key: str = ""


@dataclass
class Usage:
    """A call's tokens: the provider's own count when its stream reports one (OpenAI, vLLM…), else
    litellm's estimate (llama-cpp-python's server reports none; litellm then fills one in)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False


# Two ways to ask for a JSON answer that matches a schema: OpenAI's structured outputs, and the older
# JSON mode with a schema (llama-cpp-python's server, which rejects the first), which local servers
# enforce with a grammar. What worked for an endpoint is tried first from then on.
JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
_structured_style: dict[Endpoint, str] = {}


def structured_styles(endpoint: Endpoint) -> list[str]:
    """The ways to ask `endpoint` for structured output, in the order to try them."""
    known = _structured_style.get(endpoint)
    return [known] if known else [JSON_SCHEMA, JSON_OBJECT]


def structured_style_worked(endpoint: Endpoint, style: str) -> None:
    _structured_style[endpoint] = style


def forget_structured_styles() -> None:
    _structured_style.clear()


def response_format(style: str, schema: dict[str, Any]) -> dict[str, Any]:
    if style == JSON_SCHEMA:
        return {"type": JSON_SCHEMA, "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    return {"type": JSON_OBJECT, "schema": schema}


def count_tokens(model: str, text: str) -> int:
    return int(load().token_counter(model=model, text=text))


def token_counter(model: str) -> Callable[[str], int]:
    """`count_tokens` bound to `model`, for code that is handed a way to count (prompts)."""
    return functools.partial(count_tokens, model)


def count_message_tokens(model: str, messages: list[dict[str, str]]) -> int:
    return int(load().token_counter(model=model, messages=messages))


def context_tokens(model: str) -> int:
    """The model's input context as litellm knows it, else ARENA_DEFAULT_CONTEXT_TOKENS less a margin.

    litellm counts an unmapped model's tokens with a tokenizer that is not the model's own, and
    undercounts some: SmolLM2's tokenizer gives about 18% more tokens for English than litellm's count.
    Budgeting such a model on 80% of its context keeps prompts inside the real one.
    """
    try:
        info = load().get_model_info(model)
    except Exception:  # litellm raises a bare Exception for unmapped models
        return int(settings.ARENA_DEFAULT_CONTEXT_TOKENS * UNKNOWN_TOKENIZER_SHARE)
    return int(info.get("max_input_tokens") or settings.ARENA_DEFAULT_CONTEXT_TOKENS)


def cost_usd(endpoint: Endpoint, usage: Usage) -> float | None:
    """The price of the tokens used, or None (unknown) when litellm has no price for the model.

    Also None for a model served from a custom API base (llama.cpp, vLLM, Ollama…): litellm's price
    list is the hosted provider's, which says nothing about what a self-hosted server costs.
    """
    if endpoint.api_base:
        return None
    try:
        prompt_cost, completion_cost = load().cost_per_token(
            model=endpoint.model, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
        )
    except Exception:
        return None
    return float(prompt_cost + completion_cost)


class ReplyStream:
    """One streamed answer: iterate for text deltas; `usage` is complete once iteration ends.

    Raises ProviderError for every failure: an exception from litellm, no first token within
    ARENA_FIRST_TOKEN_TIMEOUT_SECONDS, a silence longer than ARENA_IDLE_TIMEOUT_SECONDS, or a stream
    that ends without the provider saying it finished. litellm raises for most cut-off streams, but
    when a provider sends nothing at all it invents a normal finish; a stream counts as complete only
    if the provider itself sent a delta and a finish_reason.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
        json_style: str = JSON_SCHEMA,
    ) -> None:
        """`json_schema` asks for a JSON answer matching it, the `json_style` way."""
        self.endpoint = endpoint
        self.messages = messages
        self.max_tokens = max_tokens
        self.json_schema = json_schema
        self.json_style = json_style
        self.usage = Usage()
        self.finish_reason: str | None = None
        self._provider_spoke = False

    async def __aiter__(self) -> AsyncIterator[str]:
        text = ""
        loop = asyncio.get_running_loop()
        first_token_deadline = loop.time() + settings.ARENA_FIRST_TOKEN_TIMEOUT_SECONDS
        stream = None
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the awaited step completes, and a handed-over battle would run on.
            async with asyncio.timeout_at(first_token_deadline):
                stream = await self._open()
            iterator = stream.__aiter__()
            while True:
                deadline = loop.time() + settings.ARENA_IDLE_TIMEOUT_SECONDS if text else first_token_deadline
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                delta = self._read(chunk)
                if delta:
                    text += delta
                    yield delta
        except ProviderError:
            raise
        except TimeoutError as exc:
            raise ProviderError(TIMEOUT_MESSAGE, retryable=True, timed_out=True) from exc
        except Exception as exc:
            raise provider_error(exc) from exc
        finally:
            # Release the provider's connection here and now, not whenever the garbage collector
            # finalises an abandoned stream (possibly on another thread).
            if stream is not None and hasattr(stream, "aclose"):
                with contextlib.suppress(Exception):
                    await stream.aclose()
        if self.finish_reason is None or not self._provider_spoke:
            raise ProviderError("The model's answer was cut off: its stream ended early.", retryable=True)
        if not self.usage.reported:
            self.usage.prompt_tokens = count_message_tokens(self.endpoint.model, self.messages)
            self.usage.completion_tokens = count_tokens(self.endpoint.model, text)

    async def _open(self) -> Any:
        kwargs: dict[str, Any] = {}
        if self.endpoint.api_base:
            kwargs["api_base"] = self.endpoint.api_base
        if self.endpoint.api_key:
            kwargs["api_key"] = self.endpoint.api_key
        elif self.endpoint.api_base:
            # Local OpenAI-compatible servers (llama.cpp, Ollama, vLLM) need no key, but the client does.
            kwargs["api_key"] = "no-key"
        if self.json_schema:
            kwargs["response_format"] = response_format(self.json_style, self.json_schema)
        return await load().acompletion(
            model=self.endpoint.model,
            messages=self.messages,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=self.max_tokens,
            # Transient errors before the first token (429, 5xx, connect) are retried with backoff
            # by litellm's OpenAI-compatible clients; a failure mid-stream is never retried.
            max_retries=settings.ARENA_PROVIDER_RETRIES,
            # A backstop: our own first-token and idle timeouts above are the ones meant to fire.
            timeout=max(settings.ARENA_FIRST_TOKEN_TIMEOUT_SECONDS, settings.ARENA_IDLE_TIMEOUT_SECONDS) + 5,
            **kwargs,
        )

    @property
    def answered(self) -> bool:
        """The provider started answering (as opposed to refusing the request outright)."""
        return self._provider_spoke

    def _read(self, chunk: Any) -> str:
        usage = getattr(chunk, "usage", None)
        if usage and (usage.prompt_tokens or usage.completion_tokens):
            self.usage = Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0, reported=True)
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        delta = choice.delta
        if delta.role is not None or delta.content is not None or getattr(delta, "tool_calls", None):
            self._provider_spoke = True
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        # A provider may split an emoji's surrogate pair across chunks; a lone half has no UTF-8 form
        # and could be neither stored nor sent, so it becomes U+FFFD.
        return _LONE_SURROGATE.sub("\ufffd", delta.content or "")


def provider_error(exc: BaseException) -> ProviderError:
    """A readable, secret-free message for a litellm exception; the details go to the log by class only."""
    logger.warning("Model call failed: %s", type(exc).__name__)
    if "missing credentials" in str(exc).lower():  # raised by the client before any request is sent
        return ProviderError(MISSING_KEY_MESSAGE, retryable=False)
    for cls, message, retryable in _errors():
        if isinstance(exc, cls):
            return ProviderError(message, retryable=retryable)
    return ProviderError("The model call failed unexpectedly.", retryable=True)


@functools.cache
def _errors() -> list[tuple[type[BaseException], str, bool]]:
    """litellm's exceptions, most specific first, with what a spectator is told and whether to retry."""
    litellm = load()
    from litellm.exceptions import MidStreamFallbackError

    return [
        # Before ServiceUnavailableError, its base class: litellm's name for a stream cut off midway.
        (MidStreamFallbackError, "The model's answer was cut off: its stream ended early.", True),
        (
            litellm.AuthenticationError,
            "The model provider rejected the credentials (check the API key).",
            False,
        ),
        (litellm.PermissionDeniedError, "The model provider refused access to this model.", False),
        (litellm.NotFoundError, "The model was not found at the provider (check the model name).", False),
        (litellm.ContextWindowExceededError, "The prompt did not fit in the model's context window.", False),
        (litellm.ContentPolicyViolationError, "The model provider refused the content.", False),
        (litellm.RateLimitError, "The model provider is rate-limiting requests; try again shortly.", True),
        (litellm.Timeout, TIMEOUT_MESSAGE, True),  # the client's backstop timeout
        (litellm.APIConnectionError, "Could not reach the model provider.", True),
        (litellm.ServiceUnavailableError, "The model provider is unavailable right now.", True),
        (litellm.InternalServerError, "The model provider had an internal error.", True),
        (litellm.BadRequestError, "The model provider rejected the request.", False),
        (litellm.APIError, "The model provider returned an error.", True),
    ]
