"""The embedded Whisper model assembled once into a private cache, and a recognizer over it."""

from __future__ import annotations

import shutil
import time

import pytest
from fixtures.speech import feed_all

from kame_desktop import embedded
from kame_desktop.events import SAMPLE_RATE


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A private cache folder holding the assembled embedded model (shared by this module)."""
    root = tmp_path_factory.mktemp("kame-cache")
    embedded.embedded_whisper_model(root)
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
