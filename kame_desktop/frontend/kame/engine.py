"""The KAME streaming engine: per 80 ms frame, Mimi encode → LM step with this frame's oracle
token → Mimi decode. It is the FrontEnd the inference thread drives; the back-end reaches it only
through signals, applied here, between steps (the OracleStream's single writer)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kame_desktop.errors import CheckpointError, DeviceError, KameError
from kame_desktop.events import (
    FRAME_SIZE,
    AssistantTokenEvent,
    ErrorEvent,
    Event,
    OracleLateEvent,
    OracleReset,
    OracleResetEvent,
    OracleText,
    OracleTokenEvent,
    OracleTokens,
    Signal,
)
from kame_desktop.frontend.base import FrameResult
from kame_desktop.frontend.kame import checkpoint as ckpt
from kame_desktop.frontend.kame.model import KameLMGen, KameLMModel
from kame_desktop.frontend.kame.oracle import OracleStream
from kame_desktop.models.compute import (
    int8_unavailable_reason,
    parse_dtype,
    pick_device,
    release_accelerator_memory,
    streaming_step,
)

log = logging.getLogger(__name__)

START_PIECE = "<start>"
_GEN_KEYS = ("use_sampling", "temp", "temp_text", "top_k", "top_k_text")


def generation_kwargs(lm_gen_config: dict[str, Any], temperature: float | None) -> dict[str, Any]:
    """Sampling settings: the checkpoint's lm_gen_config, then the user's temperature (for text
    and audio alike). Temperature 0 means greedy, so runs can be compared token for token."""
    unknown = sorted(set(lm_gen_config) - set(_GEN_KEYS))
    if unknown:
        raise CheckpointError(f"lm_gen_config has settings KAME does not know: {', '.join(unknown)}")
    kwargs = dict(lm_gen_config)
    if temperature is not None:
        kwargs["temp"] = kwargs["temp_text"] = temperature
    if kwargs.get("temp", 0.8) <= 0 and kwargs.get("temp_text", 0.7) <= 0:
        kwargs["use_sampling"] = False
    return kwargs


class KameFrontEnd:
    kind = "kame"

    def __init__(
        self,
        lm: KameLMModel,
        mimi,
        tokenizer,
        *,
        model_name: str = "kame",
        lm_gen_config: dict[str, Any] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        replay_stale_oracle: bool = False,
        warmup_frames: int = 4,
    ) -> None:
        self.lm = lm
        self.mimi = mimi
        self.tokenizer = tokenizer
        self.model = model_name
        self.device = str(lm.device)
        self.seed = seed
        # Reference quirk (spec §2.6): the oracle run survived a session reset; off by default.
        self.replay_stale_oracle = replay_stale_oracle
        self.pad_id = lm.text_padding_token_id
        self.epad_id = lm.end_of_text_padding_id
        self.oracle = OracleStream(start_id=lm.text_initial_token_id, pad_id=self.pad_id)
        self.lm_gen = KameLMGen(lm, self.oracle, **generation_kwargs(lm_gen_config or {}, temperature))
        self.mimi.streaming_forever(1)
        self.lm_gen.streaming_forever(1)
        self._first_frame = True
        self._warm_up(warmup_frames)
        self.reset()

    @classmethod
    def load(
        cls,
        source: str,
        *,
        device: str = "auto",
        dtype: str | None = None,
        int8: bool = False,
        temperature: float | None = None,
        seed: int | None = None,
        replay_stale_oracle: bool = False,
        **resolve_kwargs: Any,
    ) -> KameFrontEnd:
        """Load a checkpoint folder or hub repo onto the chosen device."""
        files = ckpt.resolve_checkpoint(source, **resolve_kwargs)
        torch_device = pick_device(device)
        release_accelerator_memory()  # what an earlier, dropped model left in the cache
        torch_dtype = parse_dtype(dtype, torch_device)
        if int8:
            _check_int8(torch_device)
        estimate = ckpt.estimate_memory(files.lm_kwargs, torch_dtype, int8)
        log.info("loading %s on %s (%s): %s", source, torch_device, torch_dtype, estimate.describe())
        ckpt.check_fits(estimate, torch_device, int8)
        lm = ckpt.load_lm(files, torch_device, torch_dtype, int8)
        mimi = ckpt.load_mimi(files, torch_device)
        tokenizer = ckpt.load_tokenizer(files)
        return cls(
            lm,
            mimi,
            tokenizer,
            model_name=source,
            lm_gen_config=files.lm_gen_config,
            temperature=temperature,
            seed=seed,
            replay_stale_oracle=replay_stale_oracle,
        )

    @property
    def lm_step(self) -> int:
        """LM steps since the last reset: the clock the OracleStream is anchored to."""
        return self.lm_gen.step_count

    @property
    def text_card(self) -> int:
        return self.lm.text_card

    def _warm_up(self, frames: int) -> None:
        silence = np.zeros(FRAME_SIZE, dtype=np.float32)
        for _ in range(frames):
            self._codec_and_lm(silence)
        if self.lm.device.type == "cuda":
            torch.cuda.synchronize()

    def _check_open(self) -> None:
        if self.lm is None:
            raise KameError("the KAME front-end was closed; start a new session")

    def reset(self) -> None:
        self._check_open()
        self.lm_gen.reset_streaming()
        self.mimi.reset_streaming()
        if not self.replay_stale_oracle:
            self.oracle.clear()
        self._first_frame = True
        if self.seed is not None:
            torch.manual_seed(self.seed)

    def close(self) -> None:
        """Free the model now: the generator's CUDA-graph closures hold it in reference cycles,
        so dropping the object alone would leave ~16 GB on the GPU until the cyclic GC ran."""
        if self.lm is None:
            return
        stop_streaming(self.lm_gen)  # drops the graphs, KV caches and closures
        stop_streaming(self.mimi)
        self.lm = self.mimi = self.lm_gen = None  # type: ignore[assignment]
        release_accelerator_memory()  # moshi modules are cycles too (_cached_children holds self)

    def piece(self, token_id: int) -> str:
        if token_id == self.oracle.start_id:
            return START_PIECE
        if token_id >= self.tokenizer.vocab_size():  # a tokenizer smaller than text_card (load allows it)
            return f"<{token_id}>"
        return self.tokenizer.id_to_piece(token_id)

    def _apply(self, signal: Signal) -> list[Event]:
        step = self.lm_step
        if isinstance(signal, OracleReset):
            self.oracle.reset(step, signal.request)
            return [OracleResetEvent(signal.request)]
        if isinstance(signal, OracleText):
            ids = self.tokenizer.encode(signal.text)
        elif isinstance(signal, OracleTokens):
            ids = list(signal.tokens)
            bad = [i for i in ids if not 0 <= i <= self.text_card]
            if bad:
                return [ErrorEvent("frontend", f"oracle token ids out of range 0..{self.text_card}: {bad}")]
        else:
            return []  # turn and speech signals matter to the lite front-end only
        late = self.oracle.append(ids, step)
        return [OracleLateEvent(self.oracle.request, late)] if late else []

    @torch.no_grad()
    def _codec_and_lm(self, frame: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
        self._check_open()
        with streaming_step(self.lm.device):
            return self._codec_and_lm_locked(frame)

    def _codec_and_lm_locked(self, frame: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
        pcm = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).to(self.lm.device)[None, None]
        codes = self.mimi.encode(pcm)
        if self._first_frame:
            # Inherited from the Moshi server: the codec restarts once after the first frame.
            self.mimi.reset_streaming()
            self._first_frame = False
        tokens = self.lm_gen.step(codes)
        if tokens is None:
            return np.zeros(FRAME_SIZE, dtype=np.float32), None
        out = self.mimi.decode(tokens[:, 1:])
        return out[0, 0].float().cpu().numpy(), tokens.cpu()  # no CUDA use outside the step lock

    def step(self, frame: np.ndarray, signals: Sequence[Signal] = ()) -> FrameResult:
        if frame.shape != (FRAME_SIZE,):
            raise ValueError(f"a frame is {FRAME_SIZE} samples, got shape {frame.shape}")
        events: list[Event] = []
        for signal in signals:
            events.extend(self._apply(signal))
        pcm, tokens = self._codec_and_lm(frame)
        fed = self.lm_gen.last_oracle_id
        if fed != self.pad_id:
            events.append(OracleTokenEvent(self.oracle.request, fed, self.piece(fed)))
        if tokens is not None:
            text_id = int(tokens[0, 0, 0])
            if text_id not in (self.pad_id, self.epad_id):
                events.append(AssistantTokenEvent(text_id, self.piece(text_id).replace("\u2581", " ")))
        return FrameResult(pcm, tuple(events))


def stop_streaming(module) -> None:
    """Leave a `streaming_forever` for good: exit every state the discarded ExitStack would have
    exited (LMGen's closes the LM's own streaming, its KV caches), then drop them."""
    for _name, child in module._cached_children or []:
        if child._streaming_state is not None:
            child._streaming_state.__exit__(None, None, None)
    module._stop_streaming()


def _check_int8(device: torch.device) -> None:
    reason = int8_unavailable_reason(device)
    if reason is not None:
        raise DeviceError(f"{reason}; on this device use bf16/fp32 or the lite front-end")
