"""Open mic on speakers: with echo cancellation the companion neither hears itself nor barges in
on itself, and still hears the user talking over it.

The microphone is simulated: user speech + the app's own output through an echo path (40 ms
later, half the amplitude: speakers at a moderate volume next to a laptop mic). The far end is
fed frame by frame as the device does. The streaming Whisper ASR and the Silero VAD then listen
to the processed microphone; without echo cancellation (the control) they hear the echo.
WebRTC's canceller adapts during the first few hundred ms of far-end speech, so the ASR and the
echo-only VAD check start after `WARMUP_S` (a session's canceller lives across turns: it adapts
once, on the first reply).
"""

from __future__ import annotations

import re
import shutil
import sys
import time

import numpy as np
import pytest

from kame_desktop.audio.aec import EchoCanceller, NullEchoCanceller
from kame_desktop.errors import DeviceError
from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE, AsrFinalEvent

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng for speech")

APP = ("the quick brown fox jumps over the lazy dog near the river bank",
       "seven purple elephants were dancing on the kitchen table at midnight")
USER = ("please tell me about the weather in Paris today",
        "what time does the museum open tomorrow morning")
USER_WORDS = {"please", "tell", "weather", "paris", "today", "time", "museum", "open", "tomorrow", "morning"}
APP_WORDS = {"quick", "brown", "fox", "jumps", "jump", "lazy", "dog", "river", "bank", "riverbank", "seven",
             "purple", "elephants", "elephant", "dancing", "kitchen", "table", "midnight"}
ECHO_DELAY_S = 0.040
ECHO_GAIN = 0.5
LEVEL_DB = -22.0  # both voices at the same speaking level (RMS) before the echo path
WARMUP_S = 1.0  # the canceller adapts on the first ~0.3 s of far-end speech
USER1_S = 2.0  # the first user sentence starts 2 s into the first app sentence
GAP_S = 0.5  # between the app's sentences; the second user sentence starts 1 s into the second


def at_level(x: np.ndarray, db: float = LEVEL_DB) -> np.ndarray:
    return (x * 10 ** (db / 20) / np.sqrt(np.mean(np.square(x)))).astype(np.float32)


def words_of(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


@pytest.fixture(scope="module")
def scene():
    """(far end, microphone, start of the first user sentence in samples)."""
    from kame_desktop.bench.speech import speak

    app = [at_level(speak(t, speed=150)) for t in APP]
    user = [at_level(speak(t, speed=150)) for t in USER]
    far = np.concatenate([app[0], np.zeros(round(GAP_S * SAMPLE_RATE), np.float32), app[1],
                          np.zeros(SAMPLE_RATE, np.float32)])
    far = far[: len(far) // FRAME_SIZE * FRAME_SIZE]
    delay = round(ECHO_DELAY_S * SAMPLE_RATE)
    mic = np.zeros_like(far)
    mic[delay:] = ECHO_GAIN * far[:-delay]
    u1 = round(USER1_S * SAMPLE_RATE)
    u2 = len(app[0]) + round((GAP_S + 1.0) * SAMPLE_RATE)
    app2_end = len(app[0]) + round(GAP_S * SAMPLE_RATE) + len(app[1])
    assert u1 < len(app[0]) and u2 < app2_end and u2 + len(user[1]) <= len(far)  # talking over the app
    mic[u1 : u1 + len(user[0])] += user[0]
    mic[u2 : u2 + len(user[1])] += user[1]
    return far, mic, u1


def run_canceller(canceller, far: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, float]:
    """Processed microphone and the processing time per 80 ms frame, fed as the device does:
    each frame queued for playback goes to the far end, then the captured frame is cleaned."""
    out = np.empty_like(mic)
    start = time.perf_counter()
    for i in range(0, len(mic), FRAME_SIZE):
        canceller.far_end(far[i : i + FRAME_SIZE])
        out[i : i + FRAME_SIZE] = canceller.process(mic[i : i + FRAME_SIZE])
    return out, (time.perf_counter() - start) / (len(mic) // FRAME_SIZE)


@pytest.fixture(scope="module")
def processed(scene):
    far, mic, _ = scene
    on, per_frame = run_canceller(EchoCanceller(), far, mic)
    off, _ = run_canceller(NullEchoCanceller(), far, mic)
    return {"on": on, "off": off, "per_frame_s": per_frame}


@pytest.fixture(scope="module")
def asr(tmp_path_factory):
    from kame_desktop.backend.asr.whisper import WhisperAsr
    from kame_desktop.models import embedded

    cache = tmp_path_factory.mktemp("kame-cache")
    model = embedded.embedded_whisper_model(cache)
    asr = WhisperAsr(model)
    asr.adaptive_pacing = False  # a pass per 0.4 s of audio whatever the CPU: same words on a busy machine
    yield asr
    shutil.rmtree(cache, ignore_errors=True)  # 145 MB


def transcribe(asr, pcm: np.ndarray) -> list[str]:
    """Committed words of the streaming ASR over `pcm` (from the end of the warm-up)."""
    asr.reset()
    start = round(WARMUP_S * SAMPLE_RATE) // FRAME_SIZE * FRAME_SIZE
    events = []
    for i in range(start, len(pcm), FRAME_SIZE):
        events += asr.feed(pcm[i : i + FRAME_SIZE], (i + FRAME_SIZE) / SAMPLE_RATE)
    events += asr.flush(len(pcm) / SAMPLE_RATE)
    return [w for e in events if isinstance(e, AsrFinalEvent) for w in words_of(e.text)]


@pytest.fixture(scope="module")
def heard(asr, processed):
    result = {k: transcribe(asr, processed[k]) for k in ("on", "off")}
    for k, words in result.items():  # the figures, for `pytest -s`
        print(f"\nAEC {k}: {' '.join(words)}", file=sys.stderr)
    return result


def user_heard_and_echo_not(words: list[str]) -> bool:
    """Most of the user's words are in the transcript and none of the app's. A user word counts
    when Whisper heard it, inflected or not ("open" in "opened"): the small model's endings on
    processed speech are not what this tests."""
    found = {w for w in USER_WORDS if any(h.startswith(w) for h in words)}
    return len(found) >= 0.6 * len(USER_WORDS) and not APP_WORDS & set(words)


def test_with_aec_the_user_is_heard_over_playback_and_the_echo_is_not(heard):
    assert user_heard_and_echo_not(heard["on"]), heard["on"]


def test_without_aec_the_echo_is_transcribed(heard):
    # The control: the same check fails on the unprocessed microphone. Whisper hears the two
    # overlapping voices as the app's words, or as neither ("release me i'll be a mouth"),
    # depending on the model build; either way the echo costs the user's words.
    assert not user_heard_and_echo_not(heard["off"]), heard["off"]


def test_no_barge_in_on_the_echo(processed, scene):
    import soxr

    from kame_desktop.audio.vad import SileroVad

    _, _, u1 = scene
    starts = {}
    for k in ("on", "off"):
        echo_only = processed[k][round(WARMUP_S * SAMPLE_RATE) : u1]  # the app talks, the user doesn't
        events = SileroVad().process(soxr.resample(echo_only, SAMPLE_RATE, 16_000).astype(np.float32))
        starts[k] = [t for kind, t in events if kind == "start"]
    assert starts["on"] == []
    assert starts["off"], "the control: the echo alone should look like speech to the VAD"


def test_cancelling_is_cheap(processed):
    # A budget, not a speed: at most half of the 80 ms frame (about 1 ms here on a quiet machine).
    assert processed["per_frame_s"] < 0.040


def test_frames_must_be_whole_10ms_blocks():
    canceller = EchoCanceller()
    with pytest.raises(ValueError, match="multiple of 10 ms"):
        canceller.process(np.zeros(100, np.float32))
    out = canceller.process(np.zeros(FRAME_SIZE, np.float32))
    assert out.shape == (FRAME_SIZE,) and out.dtype == np.float32


def test_null_canceller_passes_the_microphone_through():
    x = np.linspace(-1, 1, FRAME_SIZE, dtype=np.float32)
    null = NullEchoCanceller()
    null.far_end(x)
    assert np.array_equal(null.process(x), x)


def test_missing_livekit_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "livekit", None)  # import livekit → ImportError
    with pytest.raises(DeviceError, match=r"pip install livekit .*headset"):
        EchoCanceller()


# --- the first reply: the canceller has heard no far-end speech yet ---------------------------------


def speak_first_reply(tts, echo_settle_s: float | None = None, user: np.ndarray | None = None) -> list:
    """A lite front-end speaks its session's first reply over the simulated echo path (after
    silence, as a session starts), with echo cancellation on; `user` talks from 1 s into the
    reply. Returns the front-end's events."""
    from kame_desktop.events import OracleDone, OracleReset, OracleText, TurnEnded
    from kame_desktop.frontend.lite.engine import ECHO_SETTLE_S, LiteFrontEnd

    front = LiteFrontEnd(tts, echo_settle_s=ECHO_SETTLE_S if echo_settle_s is None else echo_settle_s)
    canceller = EchoCanceller()
    delay = round(ECHO_DELAY_S * SAMPLE_RATE)
    pending = np.zeros(delay, np.float32)  # what the microphone picks up next (the echo path)
    signals = [OracleReset(1), OracleText(1, "The quick brown fox jumps over the lazy dog near the river bank."),
               OracleDone(1), TurnEnded("vad", 1)]
    events, spoken, silent = [], 0, 0
    try:
        for n in range(2000):
            mic = pending[:FRAME_SIZE].copy()
            pending = pending[FRAME_SIZE:]
            if user is not None and spoken:  # the user's voice joins the echo at 1 s into the reply
                at = spoken * FRAME_SIZE - SAMPLE_RATE
                if 0 <= at < len(user):
                    mic[: len(user[at : at + FRAME_SIZE])] += user[at : at + FRAME_SIZE]
            result = front.step(canceller.process(mic), signals if n == 10 else ())
            canceller.far_end(result.pcm)
            pending = np.concatenate([pending, ECHO_GAIN * result.pcm])
            events += result.events
            if front.state.play.speaking:
                spoken += 1
            elif spoken:
                silent += 1
                if silent > 10:
                    break
            else:
                time.sleep(0.002)  # let the TTS thread synthesize the reply
    finally:
        front.close()
    return events


def test_the_first_reply_does_not_interrupt_itself(piper_voice):
    # A cold canceller (it has heard only silence) and the reply's own echo: spoken to the end.
    # (On this echo path WebRTC converges fast enough that it holds without the settle window too.)
    from kame_desktop.events import BargeInEvent

    events = speak_first_reply(piper_voice)
    said = "".join(e.piece for e in events if e.kind == "assistant_token")
    assert said.split() == ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "near", "the", "river", "bank."]
    assert not [e for e in events if isinstance(e, BargeInEvent)]


def test_the_user_still_interrupts_the_first_reply(piper_voice, scene):
    from kame_desktop.bench.speech import speak
    from kame_desktop.events import BargeInEvent

    user = at_level(speak(USER[0], speed=150))
    assert [e for e in speak_first_reply(piper_voice, user=user) if isinstance(e, BargeInEvent)]
