"""Kyutai's streaming STT (`kyutai/stt-1b-en_fr`) through moshi, on a GPU.

Mimi encodes each 80 ms frame at 24 kHz; the LM steps once per frame and samples one text
token, emitted `audio_delay_seconds` after the audio it transcribes. Text is never revised, so
each word is final as soon as the next word's first piece ("▁…") arrives; the open word is the
partial. Turns come from the same Silero VAD as the other providers. Follows the reference
`stt_from_file_pytorch.py` of kyutai-labs/delayed-streams-modeling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kame_desktop.audio.vad import SileroVad
from kame_desktop.backend.asr.base import SegmentingAsr
from kame_desktop.errors import AsrError, DeviceError
from kame_desktop.events import (
    FRAME_SECONDS,
    FRAME_SIZE,
    SAMPLE_RATE,
    AsrFinalEvent,
    AsrPartialEvent,
    Event,
    Word,
)
from kame_desktop.models.accelerator import require_kame


class KyutaiStt(SegmentingAsr):
    """`AsrProvider` over Kyutai STT. Loads (and may download) the model in the constructor.
    The segmenting base only cuts turns here: the model reads the 24 kHz audio itself."""

    keeps_audio = False

    def __init__(self, hf_repo: str = "kyutai/stt-1b-en_fr", device: str = "cuda", vad: SileroVad | None = None) -> None:
        require_kame("Kyutai STT")
        import torch

        if not (device.startswith("cuda") and torch.cuda.is_available()):
            raise DeviceError("Kyutai STT needs a CUDA GPU; pick the Whisper recognizer on this machine")
        from moshi.models import LMGen, loaders

        try:
            info = loaders.CheckpointInfo.from_hf_repo(hf_repo)
            self._mimi = info.get_mimi(device=device)
            self._tokenizer = info.get_text_tokenizer()
            lm = info.get_moshi(device=device, dtype=torch.bfloat16)
        except Exception as e:  # hub and loading errors come in many types
            raise AsrError(f"Could not load Kyutai STT '{hf_repo}' ({e}); check the repo id and your connection") from e
        self._lm_gen = LMGen(lm, temp=0.0, temp_text=0.0)  # greedy: a transcript, not a sample
        self._delay = float(info.stt_config.get("audio_delay_seconds", 0.5))
        self._prefix_frames = round(float(info.stt_config.get("audio_silence_prefix_seconds", 1.0)) / FRAME_SECONDS)
        self._pad_id = int((info.raw_config or {}).get("text_padding_token_id", 3))
        super().__init__(vad)
        self._torch, self._device = torch, device
        self._mimi.streaming_forever(1)
        self._lm_gen.streaming_forever(1)
        self.name = f"kyutai:{hf_repo.rsplit('/', 1)[-1]}"
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._mimi.reset_streaming()
        self._lm_gen.reset_streaming()
        self._pending = np.zeros(0, np.float32)
        self._word: list[Any] = []  # [text, start] of the open word, or empty
        for _ in range(self._prefix_frames):  # the model expects some silence before speech
            self._step(np.zeros(FRAME_SIZE, np.float32))

    def feed(self, pcm: np.ndarray, t_end: float) -> list[Event]:
        x = np.asarray(pcm, np.float32).reshape(-1)
        events: list[Event] = []
        audio = np.concatenate([self._pending, x])
        n = len(audio) // FRAME_SIZE * FRAME_SIZE
        self._pending = audio[n:]
        for i in range(0, n, FRAME_SIZE):
            piece = self._step(audio[i : i + FRAME_SIZE])
            if piece is not None:
                # The token describes audio `delay` before the end of this frame.
                t = t_end - (len(audio) - i - FRAME_SIZE) / SAMPLE_RATE - self._delay
                events += self._on_piece(piece, round(t, 3))
        return events + super().feed(x, t_end)  # the VAD: turn boundaries

    def _utterance_ended(self, sample: int) -> list[Event]:
        return self._close_word(self._buf.t_end, clear=True)

    def flush(self, t_end: float) -> list[Event]:
        return self._close_word(t_end, clear=True) + super().flush(t_end)

    def _step(self, frame: np.ndarray) -> str | None:
        from kame_desktop.models.compute import streaming_step

        torch = self._torch
        with torch.no_grad(), streaming_step(self._device):  # one graphed model steps at a time
            chunk = torch.from_numpy(frame).to(self._device)[None, None]
            tokens = self._lm_gen.step(self._mimi.encode(chunk))
            tokens = None if tokens is None else tokens.cpu()  # a capture elsewhere forbids later syncs
        if tokens is None:  # the LM's own delays are not filled yet
            return None
        token = int(tokens[0, 0, 0].item())
        return None if token in (0, self._pad_id) else self._tokenizer.id_to_piece(token)

    def _on_piece(self, piece: str, t: float) -> list[Event]:
        events: list[Event] = []
        if piece.startswith("▁") and self._word:  # a new word begins: the open one is final
            events += self._close_word(t)
        if self._word:
            self._word[0] += piece
        else:
            self._word = [piece.lstrip("▁"), t]
        text = self._word[0].strip()
        if text:
            events.append(AsrPartialEvent(text, (Word(text, self._word[1], max(t, self._word[1])),)))
        return events

    def _close_word(self, t: float, clear: bool = False) -> list[Event]:
        """Commit the open word; `clear` also empties the partial (nothing follows it)."""
        if not self._word or not self._word[0].strip():
            self._word = []
            return []
        text, start = self._word[0].strip(), self._word[1]
        self._word = []
        final = AsrFinalEvent(text, (Word(text, start, max(round(t, 3), start)),))
        return [final, AsrPartialEvent("")] if clear else [final]
