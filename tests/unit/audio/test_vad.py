"""Silero VAD on espeak-ng sentences."""

from __future__ import annotations

import numpy as np
from fixtures.speech import SENTENCES

from kame_desktop.events import SAMPLE_RATE


def test_vad_finds_each_sentence_whatever_the_chunking(speech):
    import soxr

    from kame_desktop.audio.vad import SileroVad

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


