"""The OpenAI-compatible transcription provider against a stub server."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from fixtures.http_server import Handler, LocalServer
from fixtures.speech import GAP_S, feed_all

from kame_desktop.errors import AsrError
from kame_desktop.events import (
    FRAME_SIZE,
    SAMPLE_RATE,
    AsrFinalEvent,
    SpeechEndEvent,
    SpeechStartEvent,
    TurnEndEvent,
)


class TranscriberHandler(Handler):
    def do_POST(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Authorization", ""), self.body()))
        status, reply = server.reply
        if status == 401:  # real services echo (part of) the key
            reply = {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization')}"}}
        self.send_json(reply, status)


@pytest.fixture
def stub_transcriber():
    """A stub /v1/audio/transcriptions: answers `reply` = (status, JSON body); keeps the bodies."""
    server = LocalServer(TranscriberHandler, "/v1")
    server.requests, server.reply = [], (200, {"text": "hello"})
    yield server.start()
    server.stop()


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
    segments = [{"id": i, "seek": 0, "start": 0.5, "end": 1.1, "text": "The weather", "tokens": [1], "temperature": 0.0,
                 "avg_logprob": lp, "compression_ratio": 1.0, "no_speech_prob": ns} for i, (lp, ns) in enumerate([(-0.2, 0.1), (-0.6, 0.3)])]
    stub_transcriber.reply = (200, {"text": "The weather", "language": "english", "duration": 3.0, "words": words,
                                    "segments": segments})
    asr = OpenAiAsr(stub_transcriber.url, model="whisper-1")
    final = next(e for _, e in feed_all(asr, pcm) if isinstance(e, AsrFinalEvent))
    assert b"verbose_json" in stub_transcriber.requests[0][2]
    assert (final.avg_logprob, final.no_speech_prob) == (-0.4, 0.3), "the segments' scores reach the back-end"
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




def test_a_fragment_of_the_key_does_not_leak():
    # Before: only the whole key was replaced: a server that echoes the key cut short (or a key
    # across the 200-character limit) left most of it in the error.
    import httpx2 as httpx  # what this openai release builds on
    import openai

    from kame_desktop.backend.asr.openai_asr import OpenAiAsr

    key = "sk-proj-AbCdEfGhIjKlMnOp0123"
    asr = OpenAiAsr("http://127.0.0.1:9/v1", api_key=key)
    response = httpx.Response(500, request=httpx.Request("POST", "http://127.0.0.1:9/v1/audio/transcriptions"))
    message = asr._explain(openai.InternalServerError(f"bad key {key[:20]}...", response=response, body=None))
    assert "HTTP 500" in message and "***" in message
    assert not any(key[i : i + 8] in message for i in range(1, len(key) - 7)), message
