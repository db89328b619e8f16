"""The stream layout of a target checkpoint: how many audio streams and codebooks, the special
ids and the delays. Read from the checkpoint's LM config (spec §1.1–1.2), never assumed: the
Moshi 7B values (17 streams, 8 codebooks, PAD 3, EPAD 0, start 32000/2048) and a tiny
checkpoint's own both come through here."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

FRAME_RATE = 12.5  # Mimi frames per second
SAMPLE_RATE = 24_000
FRAME_SIZE = 1920


def _lm_default(name: str) -> Any:
    from moshi.models.lm import LMModel

    return inspect.signature(LMModel.__init__).parameters[name].default


@dataclass(frozen=True)
class StreamLayout:
    text_card: int
    card: int
    n_q: int  # audio streams fed to the LM (Moshi's then the user's)
    dep_q: int  # audio streams the LM generates (Moshi's)
    delays: tuple[int, ...]  # per stream: text, Moshi audio, user audio
    pad_id: int  # text PAD: nothing said this frame; also the default oracle token
    epad_id: int  # text EPAD: the frame before a piece that follows padding

    @classmethod
    def from_lm_kwargs(cls, kwargs: dict[str, Any]) -> StreamLayout:
        pad = kwargs.get("existing_text_padding_id")
        epad = kwargs.get("existing_text_end_padding_id")
        return cls(
            text_card=int(kwargs["text_card"]),
            card=int(kwargs["card"]),
            n_q=int(kwargs["n_q"]),
            dep_q=int(kwargs["dep_q"]),
            delays=tuple(int(d) for d in kwargs["delays"]),
            pad_id=int(_lm_default("existing_text_padding_id") if pad is None else pad),
            epad_id=int(_lm_default("existing_text_end_padding_id") if epad is None else epad),
        )

    @property
    def num_codebooks(self) -> int:
        """Mimi codebooks per speaker."""
        return max(self.dep_q, self.n_q - self.dep_q)

    @property
    def user_q(self) -> int:
        return self.n_q - self.dep_q

    @property
    def streams(self) -> int:
        """Streams the LM sees per frame: text + n_q audio."""
        return 1 + self.n_q

    @property
    def text_start(self) -> int:
        """Text initial token, also the oracle start token."""
        return self.text_card

    @property
    def audio_start(self) -> int:
        return self.card

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    def to_json(self) -> dict[str, Any]:
        return {
            "text_card": self.text_card, "card": self.card, "n_q": self.n_q, "dep_q": self.dep_q,
            "delays": list(self.delays), "pad_id": self.pad_id, "epad_id": self.epad_id,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StreamLayout:
        return cls(
            text_card=raw["text_card"], card=raw["card"], n_q=raw["n_q"], dep_q=raw["dep_q"],
            delays=tuple(raw["delays"]), pad_id=raw["pad_id"], epad_id=raw["epad_id"],
        )
