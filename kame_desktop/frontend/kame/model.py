"""KAME's model on top of PyPI `moshi` (spec §1.3, §1.7).

`KameLMModel` is Moshi's LMModel plus one table, `oracle_emb` [text_card + 1, dim], whose output
is added to the text embedding at the temporal transformer's input only, in the reference's
order: `audio + (text + oracle)`. The order matters: in bf16, `(audio + text) + oracle` rounds
differently, which is why moshi's summed-condition slot is not used.

`KameLMGen` is moshi's LMGen with the main step replaced by a callable that picks this step's
oracle id from an OracleStream (from the step counter *before* the step) and passes it to
`forward_text`; sampling, the depformer and streaming are inherited unchanged.
"""

from __future__ import annotations

import torch
from moshi.models.lm import LMGen, LMModel, LMOutput, _LMGenState
from moshi.models.lm_utils import ScaledEmbedding, _delay_sequence, _init_layer, _undelay_sequence
from moshi.utils.compile import CUDAGraphed

from kame_desktop.frontend.kame.oracle import OracleStream


class KameLMModel(LMModel):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.oracle_emb = ScaledEmbedding(
            self.text_card + 1,
            self.dim,
            norm=kwargs.get("norm_emb", False),
            zero_idx=self.zero_token_id,
            demux_second_stream=kwargs.get("demux_second_text_stream", False),
            device=kwargs.get("device"),
            dtype=kwargs.get("dtype"),
        )
        _init_layer(self.oracle_emb)  # same truncated normal as the other tables

    def forward_text(
        self,
        sequence: torch.Tensor,
        sum_condition: torch.Tensor | None = None,
        cross_attention_src: torch.Tensor | None = None,
        oracle_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal transformer over `sequence` [B, K, S]; `oracle_tokens` is [B, 1, S] or [B, S]."""
        B, K, S = sequence.shape
        assert K == self.num_codebooks, f"Sequence shape {sequence.shape} must match the number of codebooks."
        audio = None
        for cb_index in range(self.num_audio_codebooks):
            emb = self.emb[cb_index](sequence[:, cb_index + self.audio_offset])
            audio = emb if audio is None else audio + emb
        text = self.text_emb(sequence[:, 0])
        if oracle_tokens is not None:
            if oracle_tokens.dim() == 3:
                oracle_tokens = oracle_tokens[:, 0]
            text = text + self.oracle_emb(oracle_tokens)
        input_ = text if audio is None else audio + text
        if sum_condition is not None:
            input_ = input_ + sum_condition.to(input_)
        if cross_attention_src is not None:
            cross_attention_src = cross_attention_src.to(input_)
        transformer_out = self.transformer(input_, cross_attention_src=cross_attention_src)
        if self.out_norm:
            transformer_out = self.out_norm(transformer_out)
        text_logits = self.text_linear(transformer_out)[:, None]
        return transformer_out, text_logits

    def forward(
        self,
        codes: torch.Tensor,
        condition_tensors=None,
        oracle_tokens: torch.Tensor | None = None,
    ) -> LMOutput:
        """Teacher-forced forward (training, tests). The oracle is aligned like the text stream
        (spec §1.4): a start token is prepended and the last column dropped."""
        B, K, T = codes.shape
        assert K == self.num_codebooks, (K, self.num_codebooks)
        if condition_tensors is not None:
            raise ValueError("KAME models have no conditioners")
        initial = self._get_initial_token().expand(B, -1, -1)
        delayed = torch.cat([initial, _delay_sequence(self.delays, codes, initial)], dim=2)
        oracle_in = None
        if oracle_tokens is not None:
            if oracle_tokens.shape != (B, 1, T):
                raise ValueError(f"oracle_tokens must have shape {(B, 1, T)}, got {tuple(oracle_tokens.shape)}")
            start = torch.full_like(oracle_tokens[:, :, :1], self.text_initial_token_id)
            oracle_in = torch.cat([start, oracle_tokens], dim=2)[:, :, :-1]
        transformer_out, text_logits = self.forward_text(delayed[:, :, :-1], oracle_tokens=oracle_in)
        logits = self.forward_depformer_training(delayed[:, :, 1:], transformer_out)
        logits, logits_mask = _undelay_sequence(
            self.delays[self.audio_offset : self.audio_offset + self.dep_q], logits, fill_value=float("NaN")
        )
        logits_mask &= codes[:, self.audio_offset : self.audio_offset + self.dep_q] != self.zero_token_id
        text_logits, text_mask = _undelay_sequence(self.delays[:1], text_logits, fill_value=float("NaN"))
        text_mask &= codes[:, :1] != self.zero_token_id
        return LMOutput(logits, logits_mask, text_logits, text_mask)


class KameLMGen(LMGen):
    """LMGen whose temporal step is fed one oracle token per frame from `oracle`."""

    def __init__(self, lm_model: KameLMModel, oracle: OracleStream, **kwargs) -> None:
        super().__init__(lm_model, **kwargs)
        self.oracle = oracle
        self.last_oracle_id: int = oracle.pad_id  # what the latest step was fed

    @property
    def step_count(self) -> int:
        """LM steps since the last streaming reset (the OracleStream's clock)."""
        state = self._streaming_state
        return 0 if state is None else state.offset_cpu

    def _init_streaming_state(self, batch_size: int) -> _LMGenState:
        state = super()._init_streaming_state(batch_size)
        lm = self.lm_model
        rows = batch_size * (2 if self.cfg_coef != 1.0 else 1)  # both halves of a CFG batch
        # One buffer for the whole session: a CUDA graph copies its tensor arguments into the
        # captured buffers on every call, so shape and dtype must never change.
        oracle_ids = torch.full((rows, 1, 1), self.oracle.pad_id, dtype=torch.long, device=lm.device)
        graphed = CUDAGraphed(
            lambda i, s, c, o: lm.forward_text(i, s, c, o), disable=lm.device.type != "cuda"
        )

        def main_step(input_, sum_condition, cross_condition):
            # offset_cpu is read before LMGen._step increments it.
            self.last_oracle_id = self.oracle.select(state.offset_cpu)
            oracle_ids.fill_(self.last_oracle_id)
            return graphed(input_, sum_condition, cross_condition, oracle_ids)

        state.graphed_main = main_step  # type: ignore[assignment]
        return state
