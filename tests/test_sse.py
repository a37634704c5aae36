from __future__ import annotations

import json

import pytest

from battles.events import RecordedEvent
from battles.live import sse
from tests.support.sse_client import parse

AWKWARD = [
    "plain",
    "two\nlines",
    "carriage\rreturn and\r\nCRLF",
    "\n\nid: 99\nevent: battle.failed\ndata: {}\n\n",
    ": not a comment",
    "unicode ✓ \u2028 \u2029 \x85 \x00 \x1b[31m",
    "",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_any_text_survives_a_spec_compliant_parser_unchanged(text: str) -> None:
    event = RecordedEvent(
        seq=7, type="token", data={"turn": 1, "role": "aggressor", "text": text}, offset_ms=3
    )
    messages, parser = parse(sse.encode_event(event).decode())
    assert len(messages) == 1
    assert messages[0].event == "token"
    assert messages[0].id == "7"
    assert messages[0].json() == event.data
    assert parser.last_event_id == "7"


def test_data_is_one_line_of_compact_json() -> None:
    frame = sse.frame("verdict", {"summary": "a\nb", "scores": {"aggressor": 1}}, id=3).decode()
    assert frame == 'id: 3\nevent: verdict\ndata: {"summary":"a\\nb","scores":{"aggressor":1}}\n\n'
    assert json.loads(frame.split("data: ")[1]) == {"summary": "a\nb", "scores": {"aggressor": 1}}


def test_an_event_without_id_leaves_the_last_event_id_alone() -> None:
    stream = sse.encode_event(RecordedEvent(4, "token", {}, 0)) + sse.frame("spectators", {"count": 2})
    messages, parser = parse(stream.decode())
    assert [(m.event, m.id) for m in messages] == [("token", "4"), ("spectators", None)]
    assert parser.last_event_id == "4"


def test_retry_and_ping() -> None:
    messages, parser = parse((sse.retry(2500) + sse.PING).decode())
    assert messages == []
    assert parser.retry == 2500
    assert parser.comments == ["ping"]


def test_an_event_type_cannot_inject_a_field() -> None:
    with pytest.raises(ValueError):
        sse.frame("token\ndata: x", {})
