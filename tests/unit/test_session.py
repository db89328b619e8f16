"""Session plumbing: the bounded SignalQueue, --oracle-file parsing and its frame rule, and the
single-writer rule of spec §7.4 item 5 on a real KAME front-end (tiny checkpoint, CPU, greedy)."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kame_desktop.errors import KameError, OracleScriptError
from kame_desktop.events import (
    FRAME_SIZE,
    EventBus,
    OracleReset,
    OracleText,
    OracleTokens,
    Signal,
    Stamped,
)
from kame_desktop.frontend.kame.oracle import OracleStream
from kame_desktop.session import (
    ScriptEntry,
    Session,
    SignalQueue,
    check_script_tokens,
    load_oracle_script,
    script_frame,
)

# --- SignalQueue ---------------------------------------------------------------------------------


def tokens(*ids: int, request: int | None = None) -> OracleTokens:
    return OracleTokens(request, ids)


def test_signal_queue_is_bounded_and_never_blocks(caplog):
    q = SignalQueue(maxsize=3)
    assert [q.post(tokens(i)) for i in range(3)] == [True] * 3
    start = time.perf_counter()
    assert [q.post(tokens(99)) for _ in range(5)] == [False] * 5
    assert time.perf_counter() - start < 0.1
    assert q.dropped == 5
    assert "signal queue full" in caplog.text
    assert q.drain() == [tokens(0), tokens(1), tokens(2)]  # in order
    assert q.drain() == []
    assert q.post(tokens(4)) and q.drain() == [tokens(4)]  # room again once drained


def test_signal_queue_default_capacity_is_the_reference_64():
    q = SignalQueue()
    assert all(q.post(OracleReset(i)) for i in range(64))
    assert not q.post(OracleReset(64)) and q.dropped == 1
    assert [s.request for s in q.drain()] == list(range(64))


def test_full_queue_does_not_block_a_posting_thread():
    q = SignalQueue(maxsize=1)
    results: list[bool] = []
    poster = threading.Thread(target=lambda: results.extend(q.post(tokens(i)) for i in range(100)))
    poster.start()
    poster.join(timeout=2)
    assert not poster.is_alive()
    assert results.count(True) == 1 and q.dropped == 99


def test_a_flood_of_dropped_signals_is_a_few_lines_with_the_count(caplog):
    # Before: one warning per dropped signal (a 1,000,000-entry oracle file: ~98 MB of stderr).
    q = SignalQueue(maxsize=1)
    q.post(tokens(0))
    with caplog.at_level("WARNING", logger="kame_desktop.session"):
        for i in range(100_000):
            q.post(tokens(i))
        getattr(q, "flush_warnings", lambda: None)()  # (new)
    lines = [r.getMessage() for r in caplog.records]
    assert q.dropped == 100_000 and len(lines) <= 7  # the first, 10, 100, … 100,000
    assert lines[0] == "signal queue full: dropped OracleTokens"  # the first example, as it was
    assert "100000 times" in lines[-1]


def test_a_huge_t_gives_a_bounded_frame_number(tmp_path):
    # Before: t = 1e300 became a 300-digit frame number in the "past the end" warning.
    entries = load_oracle_script(write_script(tmp_path, [{"t": 1e300, "text": "late"}, {"t": 1.0, "text": "ok"}]))
    assert len(str(entries[0].frame)) <= 10 and entries[0].frame > 10**8  # still past any audio
    assert entries[1].frame == 13


# --- oracle scripts ------------------------------------------------------------------------------


def write_script(tmp_path: Path, script: list | dict | str) -> Path:
    path = tmp_path / "script.json"
    path.write_text(script if isinstance(script, str) else json.dumps(script), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "t, frame",
    [
        (0.0, 0),
        (0.16, 2),  # on the grid
        (0.161, 3),  # just after: the next frame
        (0.15, 2),
        (0.08, 1),
        (0.56, 7),  # 0.56 × 12.5 = 7.000000000000001: rounding keeps it on the grid
        (1.12, 14),
        (4.4, 55),
        (2.32, 29),  # 28.999999999999996
        (2 / 12.5, 2),
        (3, 38),  # ints too: 37.5 → 38
    ],
)
def test_script_frame(t, frame):
    assert script_frame(t) == frame


def test_script_entries_keep_file_order_and_number_requests(tmp_path):
    path = write_script(
        tmp_path,
        [
            {"t": 0.5, "text": "before any reset"},
            {"t": 0.16, "reset": True, "text": "The capital", "tokens": [1, 2]},
            {"t": 1.0, "tokens": [5]},
            {"t": 1.0, "reset": True},
            {"t": 2, "reset": False, "text": ""},
            {"t": 2.5, "reset": True, "text": "again"},
        ],
    )
    assert load_oracle_script(path) == [
        ScriptEntry(7, (OracleText(None, "before any reset"),)),
        ScriptEntry(2, (OracleReset(0), OracleText(0, "The capital"), OracleTokens(0, (1, 2)))),
        ScriptEntry(13, (OracleTokens(0, (5,)),)),
        ScriptEntry(13, (OracleReset(1),)),
        ScriptEntry(25, ()),
        ScriptEntry(32, (OracleReset(2), OracleText(2, "again"))),
    ]
    assert load_oracle_script(write_script(tmp_path, [])) == []


BAD_T = "'t' must be a finite number of seconds >= 0"
BAD_TOKENS = "'tokens' must be a list of integer ids"


@pytest.mark.parametrize(
    "script, message",
    [
        ({"t": 1.0}, "must hold a JSON list"),
        ('"just text"', "must hold a JSON list"),
        ("[{'t': 1}]", "is not valid JSON"),
        ([3], "entry 0: expected an object"),
        ([{"t": 1.0}, {"t": 1.0, "txt": "hi"}], "entry 1: unknown keys ['txt']"),
        ([{"text": "no time"}], BAD_T),
        ([{"t": -0.08}], BAD_T),
        ([{"t": "1.2"}], BAD_T),
        ([{"t": True}], BAD_T),
        ([{"t": None}], BAD_T),
        ('[{"t": NaN}]', BAD_T),
        ('[{"t": Infinity}]', BAD_T),
        ([{"t": 1e308}], BAD_T),
        ([{"t": 10**400}], BAD_T),
        ([{"t": 1, "reset": "yes"}], "'reset' must be true or false"),
        ([{"t": 1, "text": ["a"]}], "'text' must be a string"),
        ([{"t": 1, "tokens": 12}], BAD_TOKENS),
        ([{"t": 1, "tokens": "12"}], BAD_TOKENS),
        ([{"t": 1, "tokens": [1.5]}], BAD_TOKENS),
        ([{"t": 1, "tokens": [True]}], BAD_TOKENS),
        ([{"t": 1, "tokens": [[1]]}], BAD_TOKENS),
    ],
)
def test_malformed_script_is_one_clear_error(tmp_path, script, message):
    path = write_script(tmp_path, script)
    with pytest.raises(OracleScriptError) as info:
        load_oracle_script(path)
    assert isinstance(info.value, KameError)
    assert message in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_script_file(tmp_path):
    with pytest.raises(OracleScriptError, match="not found"):
        load_oracle_script(tmp_path / "absent.json")


def test_script_tokens_must_be_in_the_text_vocabulary(tmp_path):
    path = tmp_path / "script.json"
    ok = [ScriptEntry(0, (OracleReset(0), OracleTokens(0, (0, 48))))]
    check_script_tokens(ok, 48, path)  # 48 = text_card is the start token: allowed
    for bad in (49, -1):
        entries = [*ok, ScriptEntry(3, (OracleText(0, "hi"), OracleTokens(0, (5, bad))))]
        with pytest.raises(OracleScriptError, match=rf"\[{bad}\] are outside 0\.\.48"):
            check_script_tokens(entries, 48, path)


# --- single writer: a real KAME front-end ---------------------------------------------------------


@pytest.fixture(scope="module")
def kame_frontend(tiny_checkpoint):
    from kame_desktop.frontend.kame.engine import KameFrontEnd

    return KameFrontEnd.load(str(tiny_checkpoint), device="cpu", temperature=0)


class RecordingQueue(SignalQueue):
    """A SignalQueue that remembers what each drain returned (one drain per session step)."""

    def __init__(self) -> None:
        super().__init__()
        self.drains: list[list[Signal]] = []

    def drain(self) -> list[Signal]:
        signals = super().drain()
        self.drains.append(signals)
        return signals


class Harness:
    """A Session on the shared front-end, recording drains and the oracle ids fed per frame."""

    def __init__(self, frontend) -> None:
        frontend.reset()
        self.frontend = frontend
        self.queue = RecordingQueue()
        bus = EventBus()
        self.events: list[Stamped] = []
        bus.subscribe(self.events.append)
        self.session = Session(frontend, bus, self.queue)
        self.session.start()
        self.noise = np.random.default_rng(0).uniform(-0.1, 0.1, FRAME_SIZE).astype(np.float32)

    def step(self) -> None:
        self.session.step(self.noise)

    def of_kind(self, kind: str) -> list[Stamped]:
        return [s for s in self.events if s.event.kind == kind]

    def oracle_fed(self) -> dict[int, int]:
        return {s.frame: s.event.id for s in self.of_kind("oracle_token")}

    def expected_fed(self) -> dict[int, int]:
        """Replay the recorded drains on a fresh OracleStream, each applied before its frame."""
        stream = OracleStream(start_id=self.frontend.text_card, pad_id=self.frontend.pad_id)
        fed = {}
        for frame, signals in enumerate(self.queue.drains):
            for signal in signals:
                if isinstance(signal, OracleReset):
                    stream.reset(frame, signal.request)
                elif isinstance(signal, OracleTokens):
                    stream.append(signal.tokens, frame)
            if (i := stream.select(frame)) != stream.pad_id:
                fed[frame] = i
        return fed


def test_signals_posted_mid_step_wait_for_the_next_step(kame_frontend, monkeypatch):
    """Another thread posts while frame 3's LM step is running: frame 3 is fed PAD, the start
    token comes at frame 4 (the step after the drain that picked the signals up)."""
    h = Harness(kame_frontend)
    start, mid_step = kame_frontend.text_card, 3
    in_step, posted = threading.Event(), threading.Event()

    def poster() -> None:
        in_step.wait(timeout=10)
        h.queue.post(OracleReset(7))
        h.queue.post(OracleTokens(7, (10, 11)))
        posted.set()

    lm_step = kame_frontend.lm_gen.step

    def step_that_lets_the_poster_in(codes):
        if h.session.frame == mid_step:
            in_step.set()
            assert posted.wait(timeout=10)
        return lm_step(codes)

    monkeypatch.setattr(kame_frontend.lm_gen, "step", step_that_lets_the_poster_in)
    thread = threading.Thread(target=poster)
    thread.start()
    for _ in range(8):
        h.step()
    thread.join()

    assert [n for n, signals in enumerate(h.queue.drains) if signals] == [mid_step + 1]
    assert h.queue.drains[mid_step + 1] == [OracleReset(7), OracleTokens(7, (10, 11))]
    assert h.oracle_fed() == {mid_step + 1: start, mid_step + 2: 10, mid_step + 3: 11}
    assert [(s.frame, s.event.request) for s in h.of_kind("oracle_reset")] == [(mid_step + 1, 7)]
    assert h.of_kind("oracle_late") == []


def test_signals_from_a_busy_thread_apply_exactly_at_their_drain(kame_frontend):
    """A back-end thread posts resets and tokens at random moments while frames are stepped:
    every signal lands whole at the step that drained it."""
    h = Harness(kame_frontend)
    rng = random.Random(1)
    requests = 6

    def backend() -> None:
        for request in range(requests):
            time.sleep(rng.uniform(0, 0.05))
            h.queue.post(OracleReset(request))
            time.sleep(rng.uniform(0, 0.01))
            h.queue.post(OracleTokens(request, (10 + request, 20 + request)))

    thread = threading.Thread(target=backend)
    thread.start()
    extra = 0
    while thread.is_alive() or extra < 4:  # a few frames after the last post
        extra += not thread.is_alive()
        h.step()
    thread.join()

    drained = [s for signals in h.queue.drains for s in signals]
    assert len(drained) == 2 * requests and h.queue.dropped == 0
    assert h.oracle_fed() == h.expected_fed()
    resets = [
        (n, s.request)
        for n, signals in enumerate(h.queue.drains)
        for s in signals
        if isinstance(s, OracleReset)
    ]
    assert [(s.frame, s.event.request) for s in h.of_kind("oracle_reset")] == resets
