"""Kyutai STT: its guard rail here, transcription on a GPU."""

from __future__ import annotations

import pytest
from fixtures.speech import SENTENCES, feed_all, wer, words_of

from kame_desktop.errors import DeviceError
from kame_desktop.events import AsrFinalEvent, TurnEndEvent


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
