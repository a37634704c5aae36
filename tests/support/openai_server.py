"""A tiny OpenAI-compatible chat-completions server for tests.

Tests need to see exactly how our code behaves when a provider streams normally, fails with an HTTP error,
drops the connection mid-stream or hangs, without any network access or third-party test dependency.
This module is stdlib only: a ThreadingHTTPServer on 127.0.0.1 (ephemeral port) in a daemon thread.

Streams use HTTP/1.1 chunked transfer encoding, as real providers do, so an abrupt close before the
terminating zero-length chunk is seen by the client (httpx, aiohttp) as a genuinely dropped connection,
not a clean end of body.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
}


@dataclass
class Script:
    """What the server does for one request."""

    # Streamed split into word-ish chunks; spaces are kept so concatenating the chunks gives back `text`.
    text: str = "Hello from the fake model."
    # Non-200: answer with an OpenAI-style JSON error body and this status instead of a completion.
    status: int = 200
    # Put in the error body; the marker lets tests assert provider details never leak to users.
    error_message: str = "fake provider error (key sk-SECRET-fake)"
    # Stream this many content chunks, then drop the connection: no finish_reason chunk, no [DONE].
    break_after: int | None = None
    # With break_after: end the HTTP body cleanly (zero-length chunk) instead of dropping the socket,
    # i.e. a stream that simply stops without finish_reason or [DONE].
    break_clean: bool = False
    # Stream this many content chunks, then send nothing (socket kept open) until released or
    # `stall_seconds` pass; the connection is then dropped. 0 stalls after the headers, before any chunk.
    stall_after: int | None = None
    # With stall_after: stall before even sending the response headers.
    stall_headers: bool = False
    stall_seconds: float = 30.0
    # Seconds to wait before each chunk.
    chunk_delay: float = 0.0
    # When the request asks for stream_options.include_usage, send a final usage chunk.
    usage: bool = True


def _split_words(text: str) -> list[str]:
    """Split into word-plus-trailing-space pieces whose concatenation is exactly `text`."""
    return re.findall(r"\s*\S+\s*|\s+", text) if text else []


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """A rough, deterministic prompt token count (words plus a little per-message overhead)."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        total += 4 + len(str(content or "").split())
    return total


class _Handler(BaseHTTPRequestHandler):
    """Serves one request according to the next queued Script."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._send_json(404, _error_body(404, f"Unknown path {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error_body(404, f"Unknown path {self.path}"))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, _error_body(400, "Request body is not valid JSON"))
            return
        owner = self.server.owner
        owner._record(body)
        script = owner._next_script(body)
        if script.status != 200:
            self._send_json(script.status, _error_body(script.status, script.error_message))
        elif body.get("stream"):
            self._stream(body, script)
        else:
            self._complete(body, script)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:12]}")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _stall(self, script: Script) -> None:
        self.server.owner._stall_event().wait(script.stall_seconds)

    def _drop(self) -> None:
        """Close the socket at once, like a provider or proxy that died mid-response."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _complete(self, body: dict[str, Any], script: Script) -> None:
        if script.stall_after is not None:
            self._stall(script)
            self._drop()
            return
        if script.break_after is not None:
            self._drop()
            return
        pieces = _split_words(script.text)
        prompt_tokens = count_prompt_tokens(body)
        self._send_json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": script.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(pieces),
                    "total_tokens": prompt_tokens + len(pieces),
                },
            },
        )

    def _stream(self, body: dict[str, Any], script: Script) -> None:
        if script.stall_after is not None and script.stall_headers:
            self._stall(script)
            self._drop()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        model = body.get("model", "fake")

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
                **extra,
            }

        # An empty answer still gets one role-only chunk with content "", as OpenAI sends.
        pieces = _split_words(script.text) or [""]
        completion_tokens = len(_split_words(script.text))
        try:
            for i, piece in enumerate(pieces):
                if script.break_after is not None and i >= script.break_after:
                    self._break(script)
                    return
                if script.stall_after is not None and i >= script.stall_after:
                    self._stall(script)
                    self._drop()
                    return
                if script.chunk_delay:
                    time.sleep(script.chunk_delay)
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                self._event(chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]))
            if script.break_after is not None:
                self._break(script)
                return
            if script.stall_after is not None:
                self._stall(script)
                self._drop()
                return
            if script.chunk_delay:
                time.sleep(script.chunk_delay)
            self._event(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
            stream_options = body.get("stream_options") or {}
            if script.usage and stream_options.get("include_usage"):
                prompt_tokens = count_prompt_tokens(body)
                usage = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
                self._event(chunk([], usage=usage))
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _break(self, script: Script) -> None:
        if script.break_clean:
            self._write_chunk(b"")
        self._drop()

    def _event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _write_chunk(self, data: bytes) -> None:
        """Write one HTTP/1.1 chunk; an empty one terminates the body."""
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON error shape OpenAI returns, so clients parse it as they would a real one."""
    kind, code = _ERROR_KINDS.get(status, ("api_error", f"http_{status}"))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Server(ThreadingHTTPServer):
    """Carries a back-reference to the OpenAIServer so handlers can reach its queue and log."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: OpenAIServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-response is expected in these tests; only report real bugs."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class OpenAIServer:
    """A scriptable fake OpenAI endpoint; use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._scripts: deque[Script] = deque()
        # With no script queued, what to do is asked of this (the request's body in), if set.
        self.respond: Callable[[dict[str, Any]], Script] | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._stopped = False
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OpenAIServer:
        """Bind an ephemeral port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopped = False
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled requests are released first so nothing hangs."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopped = True
        self.release_stalls()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("OpenAIServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def api_base(self) -> str:
        """The base URL to hand to litellm/OpenAI clients."""
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, *scripts: Script) -> None:
        """Scripts are consumed one per request, in order; a default Script() is used when empty."""
        with self._lock:
            self._scripts.extend(scripts)

    def release_stalls(self) -> None:
        """End every request stalled right now (by dropping its connection); later stalls still stall."""
        with self._lock:
            event, self._release = self._release, threading.Event()
        event.set()

    def _stall_event(self) -> threading.Event:
        with self._lock:
            if self._stopped:
                done = threading.Event()
                done.set()
                return done
            return self._release

    def _next_script(self, body: dict[str, Any]) -> Script:
        with self._lock:
            if self._scripts:
                return self._scripts.popleft()
        return self.respond(body) if self.respond else Script()

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
