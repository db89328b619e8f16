"""The controller's MicGate: what the session hears of each microphone frame, by the switches the
GUI sets, and the chime that says the wake word was heard."""

from __future__ import annotations

import numpy as np

from kame_desktop.controller import MicGate
from kame_desktop.events import FRAME_SIZE, SAMPLE_RATE
from kame_desktop.listening import ListeningNotice, WakeGate, chime

LOUD = np.full(FRAME_SIZE, 0.5, np.float32)


def heard(gate: MicGate) -> float:
    frame, notice = gate.hear(LOUD)
    assert notice is None and frame.shape == LOUD.shape
    return float(np.abs(frame).max())


def test_push_to_talk_open_mic_and_mute():
    gate = MicGate("push_to_talk")
    assert heard(gate) == 0.0  # key up
    gate.ptt_pressed = True
    assert heard(gate) == 0.5
    gate.muted = True
    assert heard(gate) == 0.0  # mute wins over the key
    gate.listening, gate.ptt_pressed = "open_mic", False
    assert heard(gate) == 0.0  # and over the open microphone
    gate.muted = False
    assert heard(gate) == 0.5
    gate.listening = "wake_word"
    assert heard(gate) == 0.0  # no wake-word model (it failed to load, or is loading): nothing is heard


def test_the_wake_word_opens_the_gate_with_a_notice_and_a_chime(piper_voice):
    lead = np.zeros(SAMPLE_RATE // 2, np.float32)
    speech = np.concatenate([lead, piper_voice.synthesize("Alexa, what is the capital of France?"), lead])
    gate = MicGate("wake_word", wake=WakeGate("alexa"))
    passed, notices = [], []
    for i in range(0, len(speech) - FRAME_SIZE + 1, FRAME_SIZE):
        frame = speech[i : i + FRAME_SIZE]
        out, notice = gate.hear(frame)
        passed.append(bool(np.array_equal(out, frame)) and bool(frame.any()))
        if notice is not None:
            notices.append((len(passed) - 1, notice))
    assert [n for _, n in notices] == [ListeningNotice("wake_word", "listening", "alexa")]
    woke = notices[0][0]
    assert not any(passed[: woke + 1]), "nothing before the word, nor the frame that completed it"
    assert any(passed[woke + 1 :]), "the question after it is heard"
    # The chime plays over the next output frames, then the output goes through untouched.
    quiet = np.zeros(FRAME_SIZE, np.float32)
    ding = np.concatenate([gate.mix_chime(quiet) for _ in range(2)])
    assert np.allclose(ding[: len(chime())], chime()) and not ding[len(chime()) :].any()
    assert gate.mix_chime(quiet) is quiet
