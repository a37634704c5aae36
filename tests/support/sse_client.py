"""A spec-compliant SSE parser for tests (https://html.spec.whatwg.org/#event-stream-interpretation).

Written from the spec rather than reusing the server's encoder, so the tests check the wire format.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    event: str
    data: str
    id: str | None  # the id field of this message, if it had one
    last_event_id: str  # the stream's last event id after this message

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Parser:
    """Feed text as it arrives; read messages, comments and the retry value."""

    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""
    _buffer: str = ""
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, text: str) -> list[Message]:
        self._buffer += text
        messages = []
        while True:
            line, sep, rest = self._split_line(self._buffer)
            if not sep:
                return messages
            self._buffer = rest
            message = self._line(line)
            if message:
                messages.append(message)

    @staticmethod
    def _split_line(buffer: str) -> tuple[str, str, str]:
        for i, char in enumerate(buffer):
            if char == "\n":
                return buffer[:i], "\n", buffer[i + 1 :]
            if char == "\r":
                if i + 1 == len(buffer):
                    return "", "", buffer  # wait: CR may be followed by LF
                sep = "\r\n" if buffer[i + 1] == "\n" else "\r"
                return buffer[:i], sep, buffer[i + len(sep) :]
        return "", "", buffer

    def _line(self, line: str) -> Message | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Message | None:
        event_id, self._id = self._id, None
        if not self._data:
            self._event = ""
            return None
        message = Message(self._event or "message", "\n".join(self._data), event_id, self.last_event_id)
        self._event, self._data = "", []
        return message


def parse(text: str) -> tuple[list[Message], Parser]:
    parser = Parser()
    return parser.feed(text), parser


def parse_chunks(chunks: Iterable[str]) -> Iterator[Message]:
    parser = Parser()
    for chunk in chunks:
        yield from parser.feed(chunk)


async def collect(stream: AsyncIterator[bytes]) -> list[Message]:
    """Every message of a byte stream (a spectator's, a replay's), read to its end."""
    parser = Parser()
    return [m async for chunk in stream for m in parser.feed(chunk.decode())]


def ids(messages: Iterable[Message]) -> list[int]:
    """The ids of the messages that are log events (they carry one), in order."""
    return [int(m.id) for m in messages if m.id is not None]
