"""The wake-word detector read from the ovos-ww-plugin-wakeforge wheel (with pyrnnoise's noise
suppressor before it, and for Alexa Whisper tiny.en's second opinion after it), and the gate that
opens the microphone for one turn after it."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from kame_desktop.audio import wake_word
from kame_desktop.audio.wake_word import (
    CONFIRM,
    STEP,
    THRESHOLDS,
    NoiseSuppressor,
    WakeWordDetector,
    confirm_threshold,
    model_paths,
    suppress_noise,
    threshold,
)
from kame_desktop.bench.wake import _pink
from kame_desktop.errors import ModelFileError
from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE, SpeechEndEvent, SpeechStartEvent, TurnEndEvent
from kame_desktop.listening import LISTEN_TIMEOUT_S, WakeGate


@pytest.fixture(scope="module")
def said(piper_voice):
    """Piper at 24 kHz: the wake word and a question in one breath, and the question alone."""
    lead = np.zeros(SAMPLE_RATE // 2, np.float32)
    return {
        "wake": np.concatenate([lead, piper_voice.synthesize("Alexa, what is the capital of France?"), lead]),
        "plain": np.concatenate([lead, piper_voice.synthesize("What is the capital of France? Please wake me at seven."), lead]),
        "alaska": np.concatenate([lead, piper_voice.synthesize("I like the show about Alaska."), lead]),
    }


def to16k(pcm24: np.ndarray) -> np.ndarray:
    return soxr.resample(pcm24, SAMPLE_RATE, 16_000).astype(np.float32)


def test_the_models_come_from_the_installed_wheel():
    featurizer, head = model_paths("alexa")
    assert featurizer.name == "wakehubert_int8.onnx" and head.name == "alexa.onnx"


def test_sensitivity_moves_the_threshold_around_the_measured_one():
    t = THRESHOLDS["alexa"]
    assert threshold("alexa", 0.5) == pytest.approx(t)
    assert threshold("alexa", 0.9) < t < threshold("alexa", 0.1)
    c = CONFIRM["alexa"][1]
    assert confirm_threshold("alexa", 0.5) == pytest.approx(c)
    assert confirm_threshold("alexa", 0.9) < c < confirm_threshold("alexa", 0.1)
    assert confirm_threshold("wake_up", 0.5) == 0.0, "no second stage"


def test_it_fires_on_the_wake_word_and_not_on_the_question_alone(said):
    detector = WakeWordDetector("alexa")
    x = to16k(said["wake"])
    fired = [i for i in range(0, len(x) - STEP + 1, STEP) if detector.push(x[i : i + STEP])]
    assert len(fired) == 1, "once, then it starts afresh"
    assert fired[0] / 16_000 < 0.5 + 1.2, "within the first words"
    assert detector.fires(x) == [fired[0] // STEP], "the benchmark's fast path fires where push() does"
    detector.reset()
    x = to16k(said["plain"])
    assert not any(detector.push(x[i : i + STEP]) for i in range(0, len(x) - STEP + 1, STEP))
    # the benchmark's batched scores are what push() scores
    batched = detector.probabilities(x)
    detector.reset()
    pushed = []
    for i in range(0, len(x) - STEP + 1, STEP):
        detector.push(x[i : i + STEP])
        pushed.append(detector.last)
    assert np.allclose(batched[: len(pushed)], pushed, atol=1e-4)


def fires_at(detector: WakeWordDetector, x: np.ndarray) -> list[float]:
    return [(i + STEP) / 16_000 for i in range(0, len(x) - STEP + 1, STEP) if detector.push(x[i : i + STEP])]


def test_the_second_stage_turns_down_what_only_the_head_heard(said):
    """Piper's "I like the show about Alaska": the head scores it up to 0.997 (above even the
    package's own threshold, 0.99), but Whisper gives "Alexa" at the start of those 1.5 s a
    probability ~1e-4, far under the confirmation: no wake, from push() or the benchmark's path."""
    detector = WakeWordDetector("alexa")
    x = to16k(said["alaska"])
    assert detector.probabilities(x).max() > 0.99
    assert fires_at(detector, x) == [] and detector.fires(x) == []
    assert detector.candidates >= 2, "Whisper heard each candidate"


def test_a_damaged_confirmation_model_says_so(monkeypatch, tmp_path):
    from kame_desktop.models import embedded

    (tmp_path / "model.bin").write_bytes(b"not a model" * 100)
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(embedded, "embedded_whisper_model", lambda cache_dir=None, progress=None, name="base": tmp_path)
    with pytest.raises(ModelFileError, match=r"cannot load the wake word's confirmation model"):
        WakeWordDetector("alexa")


def test_it_hears_the_wake_word_in_a_noisy_room(said):
    """Pink noise 10 dB under the speech (as `bench wake`'s noisy positives), four draws of it:
    without the noise suppressor Alexa's logit here was 5.2–5.9 (unheard); with it 7.8–9.3."""
    x = to16k(said["wake"])
    speech_rms = np.sqrt(np.mean(x[np.abs(x) > 1e-3] ** 2))
    heard = 0
    for seed in range(4):
        noise = _pink(len(x), np.random.default_rng(seed)) * speech_rms * 10 ** (-10 / 20)
        fired = fires_at(WakeWordDetector("alexa"), np.clip(x + noise, -1, 1).astype(np.float32))
        heard += bool(fired) and fired[0] < 0.5 + 1.2  # within the first words
    assert heard >= 3


def test_the_noise_suppressor_quiets_noise_and_keeps_speech(said):
    speech = to16k(said["wake"])
    noise = 0.05 * _pink(len(speech), np.random.default_rng(0))
    out = NoiseSuppressor()(noise)
    assert np.sqrt(np.mean(out[8_000:] ** 2)) < 0.1 * 0.05, "steady noise is brought down by more than 20 dB"
    kept = NoiseSuppressor()(speech)
    assert 0.5 < np.sqrt(np.mean(kept**2)) / np.sqrt(np.mean(speech[: len(kept)] ** 2)) < 2, "speech keeps its level"
    # however the stream is cut, the same samples come out (the benchmark's batches rely on it)
    mixed = speech + noise
    cut = NoiseSuppressor()
    pieces = np.concatenate([cut(mixed[i : i + 1000]) for i in range(0, len(mixed), 1000)])
    whole = NoiseSuppressor()(mixed)
    n = min(len(pieces), len(whole))
    assert n > len(mixed) - 2_000 and np.array_equal(pieces[:n], whole[:n])
    assert len(suppress_noise(mixed)[1]) == len(mixed) // STEP


def test_a_missing_noise_suppressor_says_how_to_reinstall(monkeypatch, tmp_path):
    real = wake_word.package_dir
    monkeypatch.setattr(wake_word, "package_dir",
                        lambda package=wake_word.PACKAGE, pip=wake_word.PIP: tmp_path if package == "pyrnnoise" else real())
    wake_word._rnnoise.cache_clear()
    try:
        with pytest.raises(ModelFileError, match=r"noise suppressor is missing .*pip install --no-deps --force-reinstall pyrnnoise"):
            WakeWordDetector("alexa")
    finally:
        wake_word._rnnoise.cache_clear()


def test_silence_is_not_scored():
    detector = WakeWordDetector("alexa")
    for _ in range(30):
        detector.push(np.zeros(STEP, np.float32))
    assert detector.scores == 0


def test_a_missing_model_says_how_to_reinstall(monkeypatch, tmp_path):
    monkeypatch.setattr(wake_word, "package_dir", lambda: tmp_path)
    with pytest.raises(ModelFileError, match=r"missing .*pip install --no-deps --force-reinstall ovos-ww-plugin-wakeforge==0\.3\.0"):
        WakeWordDetector("alexa")


def test_a_corrupt_model_says_how_to_reinstall(monkeypatch, tmp_path):
    featurizer, _head = model_paths("alexa")
    (tmp_path / "featurizers" / "wakehubert-tiny").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / wake_word.FEATURIZER).write_bytes(featurizer.read_bytes())
    (tmp_path / "models" / "alexa.onnx").write_bytes(b"not an onnx file" * 100)
    monkeypatch.setattr(wake_word, "package_dir", lambda: tmp_path)
    with pytest.raises(ModelFileError, match=r"cannot load the wake-word model 'alexa'.*reinstall"):
        WakeWordDetector("alexa")


def frames(pcm: np.ndarray):
    for i in range(0, len(pcm) - FRAME_SIZE + 1, FRAME_SIZE):
        yield pcm[i : i + FRAME_SIZE]


def test_the_gate_hears_nothing_until_the_wake_word_then_one_turn(said):
    gate = WakeGate("alexa")
    heard, changes = [], []
    for frame in frames(said["wake"]):
        out, changed = gate.gate(frame, 0.0)
        heard.append(float(np.abs(out).max()))
        changes.append(changed)
    opened = changes.index("listening")
    assert max(heard[: opened + 1]) == 0.0, "until the wake word (and its last frame) only the detector hears"
    assert max(heard[opened + 1 :]) > 0.1, "the question after it is heard"
    # the turn: the user speaks, the turn ends, the answer is spoken, then it waits again
    gate.on_event(SpeechStartEvent("user"))
    gate.on_event(TurnEndEvent("vad"))
    loud = np.full(FRAME_SIZE, 0.1, np.float32)
    for _ in range(20):  # the answer plays: the user can still talk over it
        out, changed = gate.gate(loud, 0.5)
        assert changed is None and out is loud
    gate.on_event(SpeechEndEvent("assistant"))
    states = [gate.gate(loud, 0.0)[1] for _ in range(15)]
    assert "waiting" in states and gate.state == "waiting"
    assert np.abs(gate.gate(loud, 0.0)[0]).max() == 0.0


def test_the_gate_closes_when_nobody_speaks_after_the_wake_word(said):
    gate = WakeGate("alexa")
    for frame in frames(said["wake"]):
        if gate.gate(frame, 0.0)[1] == "listening":
            break
    silence = np.zeros(FRAME_SIZE, np.float32)
    changes = [gate.gate(silence, 0.0)[1] for _ in range(round(LISTEN_TIMEOUT_S / 0.08) + 2)]
    assert changes.count("waiting") == 1 and gate.state == "waiting"


def test_barge_in_keeps_the_gate_open(said):
    gate = WakeGate("alexa")
    for frame in frames(said["wake"]):
        if gate.gate(frame, 0.0)[1] == "listening":
            break
    gate.on_event(SpeechStartEvent("user"))
    gate.on_event(TurnEndEvent("vad"))
    loud = np.full(FRAME_SIZE, 0.1, np.float32)
    for _ in range(5):
        gate.gate(loud, 0.5)  # the answer plays
    gate.on_event(SpeechStartEvent("user"))  # the user talks over it
    gate.on_event(SpeechEndEvent("assistant"))  # the front-end stops its answer
    for _ in range(40):
        out, _changed = gate.gate(loud, 0.0)
    assert gate.state == "listening" and np.abs(out).max() > 0, "a new turn is under way: still heard"
