"""The scripted user's turn-taking, against a fake companion: the next question comes 2 s after
the reply has gone quiet, or 15 s after the question when no reply ends."""

from __future__ import annotations

import numpy as np

from kame_desktop.audio.sources import NullSink
from kame_desktop.evaluation.dialog import Dialog
from kame_desktop.events import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE

TONE = (0.1 * np.sin(2 * np.pi * 440 * np.arange(FRAME_SIZE) / SAMPLE_RATE)).astype(np.float32)
SILENCE = np.zeros(FRAME_SIZE, dtype=np.float32)


def utterance(frames: int) -> np.ndarray:
    return np.tile(TONE, frames)


def converse(utterances, replies):
    """Drive the dialog frame by frame as Session.run does; `replies[i]` = (delay, length) in
    frames after utterance i has ended, or None for no reply."""
    segments = []
    dialog = Dialog(utterances, realtime=False, on_segment=lambda s, pcm: segments.append((s, len(pcm))))
    sink = dialog.sink(NullSink())
    frame, current, reply_at = 0, None, None
    while dialog.read() is not None:
        if len(dialog.segments) != current:  # the next utterance starts with this frame
            current = len(dialog.segments)
            end = frame + len(utterances[current]) // FRAME_SIZE
            reply = replies[current]
            reply_at = None if reply is None else (end + reply[0], end + reply[0] + reply[1])
        loud = reply_at is not None and reply_at[0] <= frame < reply_at[1]
        sink.write(TONE if loud else SILENCE)
        frame += 1
        assert frame < 10_000
    return segments


def test_turns_follow_the_reply_and_the_cap():
    gap, cap = round(2.0 / FRAME_SECONDS), round(15.0 / FRAME_SECONDS)
    segments = converse([utterance(20), utterance(10), utterance(5)], [(6, 30), None, (-3, 8)])
    (first, n1), (second, n2), (third, _) = segments
    # Reply to the first: frames 26..55, quiet from 56 on; the next question 2 s later.
    assert first.start == 0 and second.start == 56 + gap
    assert n1 == second.start * FRAME_SIZE
    # No reply: the third question comes 15 s after the second ended.
    assert third.start == second.start + 10 + cap
    assert n2 == (third.start - second.start) * FRAME_SIZE
    assert [s.index for s, _ in segments] == [0, 1, 2]
    assert second.speech_end_s == (second.start + 10) * FRAME_SECONDS
