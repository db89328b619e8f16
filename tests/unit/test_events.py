"""The event schema of the README (one table for the timeline, history and exports), its
records, the JSON-lines timeline and the EventBus."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path

import pytest

from kame_desktop.events import (
    AsrFinalEvent,
    AsrPartialEvent,
    EventBus,
    LlmCancelledEvent,
    OracleTokenEvent,
    SessionStartEvent,
    Stamped,
    TimelineWriter,
    Word,
    read_timeline,
)

WORDS = [{"word": "what's", "start": 0.32, "end": 0.56}, {"word": "the", "start": 0.56, "end": 0.64}]

# README's timeline schema: kind → a sample of exactly the listed fields.
DESIGN_TABLE: dict[str, dict] = {
    "session_start": {
        "frontend": "kame",
        "model": "tiny-kame",
        "device": "cpu",
        "llm": "smollm2",
        "asr": "whisper",
    },
    "asr_partial": {"text": "what's the", "words": WORDS, "avg_logprob": -0.31, "no_speech_prob": 0.02, "pause": True,
                    "unheard_s": 0.12, "word_logprob": -0.2},
    "asr_final": {"text": "what's the", "words": WORDS, "avg_logprob": -0.31, "no_speech_prob": 0.02, "unheard_s": 0.12,
                  "word_logprob": -0.2},
    "asr_unclear": {"request": 4, "heard": "Hoorotro Mino", "reply": "Sorry, I didn't catch that.",
                    "avg_logprob": -1.2, "no_speech_prob": 0.1, "unheard_s": 0.9,
                    "word_logprob": -1.5},
    "speech_start": {"source": "user"},
    "speech_end": {"source": "assistant"},
    "turn_end": {"source": "vad", "turn_detection": "smart", "probability": 0.93},
    "llm_request": {"request": 2, "policy": "partial", "word_count": 2},
    "llm_first_chunk": {"request": 2, "ttft_ms": 84.5},
    "llm_chunk": {"request": 2, "text": "The capital"},
    "llm_done": {"request": 2, "reason": None},
    "llm_cancelled": {"request": 2, "reason": "user kept talking"},
    "llm_adopted": {"request": 3, "after_ms": 412.5},
    "tool_call": {"request": 3, "name": "calculate", "arguments": "{\"expression\": \"37*48\"}"},
    "tool_result": {"request": 3, "name": "calculate", "ok": True, "summary": "37*48 = 1776"},
    "announcement": {"request": 4, "text": "Your 10 minutes tea timer is done."},
    "oracle_reset": {"request": 2},
    "oracle_token": {"request": 2, "id": 42, "piece": "▁Paris"},
    "oracle_lag": {"request": 2, "lag_ms": 160.0},
    "oracle_late": {"request": 2, "count": 3},
    "assistant_token": {"id": None, "piece": " Paris"},
    "barge_in": {"request": 2},
    "error": {"source": "llm", "message": "connection refused: start the server or pick another LLM", "error_kind": "unreachable"},
    "recovered": {"source": "tool", "message": "MCP server time is back: its tools are offered again",
                  "error": "MCP server time stopped: it exited; its tools are off until it is back (retrying)"},
}


def record(kind: str, frame: int = 5) -> dict:
    return {"kind": kind, "frame": frame, "t": round(frame * 0.08, 6), **DESIGN_TABLE[kind]}


def sample_events() -> list[Stamped]:
    return [Stamped.from_record(record(kind, frame)) for frame, kind in enumerate(DESIGN_TABLE)]


def readme_schema() -> dict[str, set[str]]:
    """The README's timeline table: kind → its field names."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("### Timeline schema")
    table = text[start : text.index("\n## ", start)]  # to the next section: other tables are not the schema
    rows = re.findall(r"^\| `(\w+)` \| (.*?) \|", table, flags=re.MULTILINE)
    # Field names are the `quoted` words outside (explanations) and [sub-fields].
    return {kind: set(re.findall(r"`(\w+)`", re.sub(r"\(.*?\)|\[.*?\]", "", fields))) for kind, fields in rows}


def test_readme_lists_every_event_kind_with_its_fields():
    from kame_desktop.events import _EVENT_TYPES

    schema = readme_schema()
    assert set(schema) == set(_EVENT_TYPES)
    for kind, cls in _EVENT_TYPES.items():
        assert schema[kind] == {f.name for f in dataclasses.fields(cls)}, kind
    assert set(schema) == set(DESIGN_TABLE)


@pytest.mark.parametrize("kind", DESIGN_TABLE)
def test_every_design_kind_exists_with_its_fields(kind):
    stamped = Stamped.from_record(record(kind))
    event = stamped.event
    assert event.kind == type(event).kind == kind
    assert dataclasses.is_dataclass(event) and type(event).__dataclass_params__.frozen
    assert {f.name for f in dataclasses.fields(event)} == set(DESIGN_TABLE[kind])
    # Records are plain JSON: the round trip through json gives the record back.
    assert json.loads(json.dumps(stamped.to_record())) == record(kind)
    assert Stamped.from_record(stamped.to_record()) == stamped


def test_optional_fields_default():
    assert SessionStartEvent("kame", "tiny", "cpu").fields() == {
        "frontend": "kame", "model": "tiny", "device": "cpu", "llm": None, "asr": None,
    }  # fmt: skip
    assert LlmCancelledEvent(4).reason is None
    assert AsrPartialEvent("hi").words == ()


@pytest.mark.parametrize(
    "frame, t", [(0, 0.0), (1, 0.08), (3, 0.24), (7, 0.56), (29, 2.32), (12_500, 1000.0)]
)
def test_t_is_the_frame_on_the_audio_clock(frame, t):
    stamped = Stamped(frame, OracleTokenEvent(0, 160, "<start>"))
    assert stamped.t == t
    assert stamped.to_record()["t"] == t == round(frame * 0.08, 6)


def test_round_trip_with_words():
    words = (Word("hello", 0.0, 0.32), Word("café", 0.4, 0.8))
    stamped = Stamped(11, AsrFinalEvent("hello café", words))
    rec = stamped.to_record()
    assert rec["kind"] == "asr_final" and rec["frame"] == 11 and rec["t"] == 0.88
    back = Stamped.from_record(json.loads(json.dumps(rec)))
    assert back == stamped
    assert isinstance(back.event.words, tuple) and all(isinstance(w, Word) for w in back.event.words)


def test_unknown_kind_is_rejected():
    with pytest.raises(KeyError):
        Stamped.from_record({"kind": "no_such_event", "frame": 0, "t": 0.0})


def test_timeline_writer_and_reader_round_trip(tmp_path):
    path = tmp_path / "runs" / "today" / "timeline.jsonl"  # folders are created
    events = sample_events()
    writer = TimelineWriter(path)
    for stamped in events:
        writer(stamped)
    assert not path.exists(), "the timeline appears only once complete"
    (temp,) = path.parent.glob(".timeline.jsonl.*.tmp")
    assert len(temp.read_text(encoding="utf-8").splitlines()) == len(events)  # flushed as they come
    writer.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(events) and not list(path.parent.glob("*.tmp"))

    assert [json.loads(line)["kind"] for line in lines] == list(DESIGN_TABLE)
    assert "▁Paris" in path.read_text(encoding="utf-8")  # UTF-8 as is, not \u escapes
    assert read_timeline(path) == events


def test_a_failed_run_leaves_an_earlier_timeline_as_it_was(tmp_path):
    path = tmp_path / "timeline.jsonl"
    path.write_text("earlier run\n", encoding="utf-8")
    writer = TimelineWriter(path)
    for stamped in sample_events():
        writer(stamped)
    writer.abort()
    assert path.read_text(encoding="utf-8") == "earlier run\n" and not list(tmp_path.glob("*.tmp"))


def test_event_bus_fans_out_to_every_subscriber_in_order():
    bus = EventBus()
    seen: list[list[Stamped]] = [[], [], []]
    for received in seen[:2]:
        bus.subscribe(received.append)
    events = sample_events()
    bus.publish(events[0].frame, events[0].event)
    bus.subscribe(seen[2].append)  # a late subscriber sees only what comes after
    for stamped in events[1:]:
        bus.publish(stamped.frame, stamped.event)
    assert seen[0] == seen[1] == events
    assert seen[2] == events[1:]


def test_event_bus_publishers_on_several_threads():
    bus = EventBus()
    seen: list[list[Stamped]] = [[], []]
    for received in seen:
        bus.subscribe(received.append)
    event = OracleTokenEvent(1, 42, "▁Paris")

    def publish(frames: range) -> None:
        for frame in frames:
            bus.publish(frame, event)

    threads = [threading.Thread(target=publish, args=(range(n * 100, (n + 1) * 100),)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for received in seen:
        assert sorted(s.frame for s in received) == list(range(400))


KEY = "sk-test-SECRET-4242abcd"


def written(tmp_path, events: list, api_key: str = KEY) -> list[dict]:
    path = tmp_path / "timeline.jsonl"
    writer = TimelineWriter(path, api_key=api_key)
    for frame, event in enumerate(events):
        writer(Stamped(frame, event))
    writer.close()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_timeline_redacts_the_key_even_split_across_chunks(tmp_path):
    from kame_desktop.events import AssistantTokenEvent, ErrorEvent, LlmChunkEvent

    pieces = [KEY[i : i + 3] for i in range(0, len(KEY), 3)]  # a key echoed token by token
    events = [
        ErrorEvent("llm", f"bad key {KEY}"),
        LlmChunkEvent(1, "Your key is "),
        *[LlmChunkEvent(1, p) for p in pieces],
        LlmChunkEvent(2, f"split {KEY[:11]}"),  # another request's stream, split in two
        LlmChunkEvent(2, f"{KEY[11:]} there"),
        *[AssistantTokenEvent(None, p) for p in pieces],
    ]
    records = written(tmp_path, events)
    assert [r["kind"] for r in records] == [type(e).kind for e in events]  # one record each, in order
    assert "***" in records[0]["message"] and KEY not in records[0]["message"]
    for kind, field, request in (("llm_chunk", "text", 1), ("llm_chunk", "text", 2), ("assistant_token", "piece", None)):
        stream = "".join(r[field] for r in records if r["kind"] == kind and r.get("request") == request)
        # At most the first 7 characters (less than any fragment) went out before the key showed.
        assert KEY[7:] not in stream and not any(KEY[i : i + 8] in stream for i in range(len(KEY) - 7)), stream
        assert "***" in stream
    assert written(tmp_path, [LlmChunkEvent(3, "no key here")])[0]["text"] == "no key here"


def test_timeline_records_are_cut_at_64_kB(tmp_path):
    from kame_desktop.events import MAX_RECORD_BYTES, LlmChunkEvent

    records = written(tmp_path, [LlmChunkEvent(1, "é" * 10_000_000), LlmChunkEvent(1, "short")])
    lines = (tmp_path / "timeline.jsonl").read_bytes().splitlines()
    assert max(len(line) for line in lines) <= MAX_RECORD_BYTES
    kept, marker = records[0]["text"].split(" …[cut: ")
    assert set(kept) == {"é"} and len(kept) > 20_000
    assert len(kept) + int(marker.removesuffix(" more characters]")) == 10_000_000  # says what was dropped
    assert records[1]["text"] == "short"
