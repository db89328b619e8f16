"""The five sentences streamed once through the recognizer (fixtures.speech has the recognizer)."""

from __future__ import annotations

import time

import pytest
from fixtures.speech import feed_all

from kame_desktop.events import SAMPLE_RATE


@pytest.fixture(scope="module")
def stream_run(whisper_asr, speech):
    """The five sentences streamed once: (events with their t_end, wall seconds, audio seconds)."""
    pcm, _ = speech
    whisper_asr.reset()
    start = time.perf_counter()
    events = feed_all(whisper_asr, pcm)
    return events, time.perf_counter() - start, len(pcm) / SAMPLE_RATE
