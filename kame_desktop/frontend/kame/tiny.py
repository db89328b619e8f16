"""A tiny random KAME checkpoint in the released on-disk layout (spec §7.1): config.json with
file-name keys and LM kwargs, LM safetensors with `oracle_emb.weight`, a SentencePiece model
trained on a short text, and a small Mimi through `mimi_config_name`. It runs faster than real
time on a CPU, so tests and curious users can try the whole pipeline without a GPU."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

from kame_desktop.fileio import atomic_write_bytes

# Our own short text: enough variety for a SentencePiece vocabulary of a few hundred pieces.
_TOKENIZER_TEXT = """\
Hello, how are you today? I am fine, thank you for asking.
The capital of France is Paris, and the capital of Japan is Tokyo.
What is the weather like this morning? It looks like rain in the afternoon.
A voice companion listens while you speak and answers without waiting.
The large language model keeps predicting the answer while the user is still talking.
Its words stream into the speech model one token every eighty milliseconds.
Could you tell me a short story about a turtle who wanted to fly?
Once upon a time, a small turtle watched the birds and dreamed of the sky.
Numbers like one, two, three, ten, twenty and one hundred are easy to say.
Please remind me to call my sister tomorrow evening at seven o'clock.
Sure, I will remind you. Is there anything else I can help you with?
Mount Everest is the highest mountain on Earth, almost nine kilometres tall.
Water boils at one hundred degrees Celsius at sea level.
Thank you, goodbye, and have a wonderful day!
"""

TINY_LM_KWARGS: dict[str, Any] = {
    "dim": 32,
    "existing_text_padding_id": 3,
    "n_q": 4,
    "dep_q": 2,
    "card": 64,  # = the tiny Mimi's bins
    "num_heads": 2,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 50,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 16,
    "depformer_dim_feedforward": 66,
    "depformer_num_heads": 1,
    "depformer_num_layers": 1,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 2,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 0, 1],
}


def tiny_mimi_config() -> dict[str, Any]:
    """Stock Mimi framing (24 kHz, 12.5 Hz, 1920 samples) with very small layers (~130 k params)."""
    from moshi.models.loaders import _mimi_config

    config = copy.deepcopy(_mimi_config)
    config["seanet"].update(dimension=32, n_filters=4)
    config["quantizer"].update(dimension=16, n_q=8, bins=64, input_dimension=32, output_dimension=32)
    config["transformer"].update(
        d_model=32, num_heads=2, num_layers=1, dim_feedforward=64, input_dimension=32, output_dimensions=[32]
    )
    return config


def train_tiny_tokenizer(vocab_size: int = 256) -> bytes:
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_TOKENIZER_TEXT.splitlines()),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,  # Moshi's ids: 0 doubles as EPAD, 3 is PAD
        character_coverage=1.0,
        minloglevel=2,
    )
    return model.getvalue()


def make_tiny_checkpoint(
    folder: Path,
    *,
    dim: int = 32,
    num_layers: int = 2,
    seed: int = 0,
    with_oracle: bool = True,
    lm_gen_config: dict[str, Any] | None = None,
) -> Path:
    """Write a random tiny checkpoint into `folder` and return the folder."""
    import sentencepiece
    import torch
    from moshi.models.loaders import get_mimi
    from safetensors.torch import save

    from kame_desktop.frontend.kame.model import KameLMModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_bytes = train_tiny_tokenizer()
    text_card = sentencepiece.SentencePieceProcessor(model_proto=tokenizer_bytes).vocab_size()
    lm_kwargs = dict(TINY_LM_KWARGS, dim=dim, num_layers=num_layers, text_card=text_card)

    torch.manual_seed(seed)
    lm = KameLMModel(**lm_kwargs)
    state = {k: v.contiguous() for k, v in lm.state_dict().items()}
    if not with_oracle:  # a plain Moshi-layout file
        del state["oracle_emb.weight"]
    mimi_config = tiny_mimi_config()
    mimi = get_mimi(None, mimi_config, num_codebooks=max(lm_kwargs["dep_q"], lm_kwargs["n_q"] - lm_kwargs["dep_q"]))
    mimi_state = {k: v.contiguous() for k, v in mimi.state_dict().items()}

    config = {
        "moshi_name": "model.safetensors",
        "mimi_name": "mimi.safetensors",
        "tokenizer_name": "tokenizer.model",
        "mimi_config_name": "mimi_config.json",
        "lm_gen_config": lm_gen_config or {},
        **lm_kwargs,
    }
    atomic_write_bytes(folder / "tokenizer.model", tokenizer_bytes)
    atomic_write_bytes(folder / "model.safetensors", save(state, metadata={"format": "pt"}))
    atomic_write_bytes(folder / "mimi.safetensors", save(mimi_state, metadata={"format": "pt"}))
    atomic_write_bytes(folder / "mimi_config.json", json.dumps(mimi_config, indent=2).encode())
    atomic_write_bytes(folder / "config.json", json.dumps(config, indent=2).encode())  # last: marks completion
    return folder
