"""How fast the local model is on this machine: time to first token and generation speed.

    make bench-llm        # or: .venv/bin/python -m bench.localmodel [--threads N] [--runs 3]

Starts SmolLM2 in llama-cpp-python's server (as `make llm` does, on a free port), streams answers
to prompts of three sizes straight from its OpenAI-compatible API, and writes the medians to
docs/localmodel.md. A prompt's first token waits for the whole prompt to be read, so time to first
token grows with the prompt; generation speed does not depend on it much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx

from battles.providers import localmodel

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "localmodel.md"
ANSWER_TOKENS = 200
SENTENCE = "Our product always doubles revenue within a week, according to a survey of twelve teams. "
# (name, user message): a question, a turn's prompt with a short document, a prompt filling the context.
PROMPTS = [
    ("short question (~30 tokens)", "Write a short paragraph about why software needs tests."),
    ("battle turn (~800 tokens)", "Attack the weakest claims of this document:\n" + SENTENCE * 40),
    ("full context (~3,300 tokens)", "Attack the weakest claims of this document:\n" + SENTENCE * 165),
]


@dataclass
class Run:
    first_token_seconds: float
    tokens: int
    tokens_per_second: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream(client: httpx.Client, api_base: str, content: str) -> Run:
    """One streamed answer; tokens are counted as the server streams them, one per chunk."""
    body = {
        "model": localmodel.MODEL_ALIAS,
        "stream": True,
        "max_tokens": ANSWER_TOKENS,
        "messages": [{"role": "user", "content": content}],
    }
    started = time.perf_counter()
    stamps = []
    with client.stream("POST", f"{api_base}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    generating = stamps[-1] - stamps[0]
    return Run(stamps[0] - started, len(stamps), (len(stamps) - 1) / generating if generating else 0.0)


def measure(threads: int, runs: int) -> list[tuple[str, list[Run]]]:
    port = free_port()
    api_base = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            localmodel.server_command(port=port, threads=threads), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            with httpx.Client(timeout=300) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        client.get(f"{api_base}/models").raise_for_status()
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline or server.poll() is not None:
                            raise RuntimeError("the model server did not start") from None
                        time.sleep(0.2)  # readiness poll
                stream(client, api_base, "Hello")  # warm-up
                # Each run differs from the last in its first word: no cached prompt prefix to reuse.
                return [
                    (name, [stream(client, api_base, f"Run {i}. {content}") for i in range(runs)])
                    for name, content in PROMPTS
                ]
        finally:
            server.terminate()
            server.wait()


def report(results: list[tuple[str, list[Run]]], threads: int, runs: int) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    lines = [
        "# The local model's speed",
        "",
        f"SmolLM2-135M-Instruct (Q4_1) in llama-cpp-python's server, {threads} thread(s), a 4,096-token "
        f"context, answers of up to {ANSWER_TOKENS} tokens; medians of {runs} runs, measured on "
        f"{date.today().isoformat()} on {cpu} ({os.cpu_count()} cores), Python {platform.python_version()}.",
        "Regenerate with `make bench-llm`.",
        "",
        "| Prompt | Time to first token | Generation | Tokens |",
        "|---|---|---|---|",
    ]
    for name, measured in results:
        ttft = statistics.median(r.first_token_seconds for r in measured)
        speed = statistics.median(r.tokens_per_second for r in measured)
        tokens = statistics.median(r.tokens for r in measured)
        lines.append(f"| {name} | {ttft:.2f} s | {speed:.0f} tokens/s | {tokens:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reason = localmodel.missing()
    if reason:
        parser.exit(2, f"{reason}\n")
    text = report(measure(args.threads, args.runs), args.threads, args.runs)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
