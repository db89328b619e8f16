"""Cloud (or any OpenAI-compatible) transcription, one request per utterance.

The same Silero VAD as the local provider cuts turns; each finished utterance goes out as a
16 kHz WAV made in memory to `audio.transcriptions.create` (the sync client: `feed` already runs
on the back-end's worker thread). There are no partials. Word times come from the service
(`verbose_json` for whisper-* models) or, when it gives none, are spread evenly over the speech.
"""

from __future__ import annotations

import io
import os
import wave

import numpy as np

from kame_desktop.audio.vad import SileroVad
from kame_desktop.backend.asr.base import SegmentingAsr
from kame_desktop.credentials import redact
from kame_desktop.errors import AsrError
from kame_desktop.events import AsrFinalEvent, Event, Word

SR = SegmentingAsr.RATE


def wav_bytes(pcm16k: np.ndarray) -> bytes:
    """16-bit mono WAV at 16 kHz (what every transcription endpoint accepts)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(pcm16k, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _scores(segments: object) -> tuple[float | None, float | None]:
    """(avg_logprob, no_speech_prob) from verbose_json's segments (whisper-1 gives them; the
    gpt-4o transcription models give none: their words are trusted)."""
    scores = [(getattr(s, "avg_logprob", None), getattr(s, "no_speech_prob", None)) for s in segments or ()]
    scores = [(float(lp), float(ns or 0.0)) for lp, ns in scores if lp is not None]
    if not scores:
        return None, None
    return round(sum(lp for lp, _ in scores) / len(scores), 3), round(max(ns for _, ns in scores), 3)


def spread_words(text: str, start: float, end: float) -> tuple[Word, ...]:
    """Words of `text` given equal shares of [start, end]."""
    tokens = text.split()
    step = (end - start) / max(len(tokens), 1)
    return tuple(Word(t, round(start + i * step, 3), round(start + (i + 1) * step, 3)) for i, t in enumerate(tokens))


class OpenAiAsr(SegmentingAsr):
    """`AsrProvider` over an OpenAI-compatible `/audio/transcriptions` endpoint."""

    def __init__(
        self,
        base_url: str | None = None,  # None: api.openai.com
        model: str = "whisper-1",
        api_key: str | None = None,
        language: str | None = "en",
        vad: SileroVad | None = None,
        timeout_s: float = 30.0,
        max_utterance_s: float = 60.0,
    ) -> None:
        import openai

        super().__init__(vad)
        self._openai = openai
        # Local servers need no key, but the client insists on one.
        self._key = api_key or os.environ.get("OPENAI_API_KEY") or "unused"
        self._client = openai.OpenAI(base_url=base_url, api_key=self._key, timeout=timeout_s, max_retries=1)
        self.base_url = str(self._client.base_url)
        self.model = model
        self.language = language
        self.max_utterance_s = max_utterance_s
        self.name = f"openai:{model}"
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._speech_from: int | None = None  # sample where the current speech began

    def _utterance_started(self, sample: int) -> list[Event]:
        self._speech_from = sample
        return []

    def _more_audio(self, n: int) -> list[Event]:
        if len(self._buf.samples) <= self.max_utterance_s * SR:
            return []
        events = self._transcribe(self._buf.total)  # bound memory and request size
        self._speech_from = self._buf.total
        return events

    def _utterance_ended(self, sample: int) -> list[Event]:
        events = self._transcribe(sample)
        self._speech_from = None
        return events

    def _transcribe(self, end_sample: int) -> list[Event]:
        assert self._speech_from is not None
        start, end = self._buf.time_of(self._speech_from), self._buf.time_of(min(end_sample, self._buf.total))
        t0 = self._buf.time_of(self._buf.start)  # the request's audio begins here
        audio = self._buf.samples[: max(end_sample + round(0.2 * SR) - self._buf.start, 0)]
        self._buf.drop_before(end_sample)
        verbose = self.model.startswith("whisper")  # only whisper-* gives word timestamps
        try:
            result = self._client.audio.transcriptions.create(
                model=self.model,
                file=("utterance.wav", wav_bytes(audio), "audio/wav"),
                **({"language": self.language} if self.language else {}),
                **({"response_format": "verbose_json", "timestamp_granularities": ["word"]} if verbose else {}),
            )
        except self._openai.OpenAIError as e:
            self.reset()
            raise AsrError(self._explain(e)) from None  # `from None`: the cause may echo the key
        text = (result if isinstance(result, str) else getattr(result, "text", "") or "").strip()
        if not text:
            return []
        api_words = getattr(result, "words", None)
        if api_words:
            words = tuple(Word(w.word.strip(), round(t0 + w.start, 3), round(t0 + w.end, 3)) for w in api_words)
        else:
            words = spread_words(text, start, end)
        return [AsrFinalEvent(text, words, *_scores(getattr(result, "segments", None)))]

    def _explain(self, e: Exception) -> str:
        o = self._openai
        where = f"the transcription service at {self.base_url}"
        if isinstance(e, o.APITimeoutError):
            return f"{where} did not answer in time; check the connection or try again"
        if isinstance(e, o.APIConnectionError):
            return f"Cannot reach {where}; check the URL in Settings and your network"
        if isinstance(e, o.AuthenticationError | o.PermissionDeniedError):
            return f"{where} refused the API key; set a valid key in Settings"
        if isinstance(e, o.NotFoundError):
            return f"{where} does not know model '{self.model}' or has no /audio/transcriptions; check both in Settings"
        if isinstance(e, o.RateLimitError):
            return f"{where} is rate-limiting or out of quota; wait a moment or check your plan"
        if isinstance(e, o.APIStatusError):
            detail = redact(str(getattr(e, "message", "")), self._key)[:200]  # redact, then cut
            return f"{where} answered HTTP {e.status_code} ({detail}); try again or check Settings"
        return f"{where} sent a response that is not a transcription; check the URL and model in Settings"
