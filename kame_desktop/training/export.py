"""`train export RUN OUT`: a finetune run's weights as a checkpoint in the released KAME layout
(spec §1.5): `config.json` (the base's, with its file-name keys), `model.safetensors` with
`oracle_emb.weight` and the inference key names, the tokenizer, and Mimi (copied from a local
base, referenced with `hf://` for a hub base). Training-only parts are dropped: the bare gating
names go back to `…gating.linear_in.weight`, the wrapper's `lm.` prefix goes, and any tensor the
inference model does not have is left out (each named in the log). A run in `tie` mode (spec
§4.8b) trained no oracle table of its own: `oracle_emb` is written as a copy of the trained
`text_emb`, checked equal. The engine, the model picker and `kame-desktop run --checkpoint OUT`
load the result.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from kame_desktop.errors import TrainingDataError
from kame_desktop.fileio import atomic_write_bytes, atomic_writer
from kame_desktop.training.finetune import (
    ORACLE_EMBEDDING_MODES,
    RUN_FILE,
    WEIGHTS_FILE,
    inference_key,
    step_dirs,
)

log = logging.getLogger(__name__)

DTYPES = ("bf16", "fp16", "fp32")


def _find_weights(run: Path) -> tuple[Path, Path]:
    """(run folder, weights file): RUN is a finetune output folder or one of its step folders."""
    if (run / WEIGHTS_FILE).is_file() and (run.parent / RUN_FILE).is_file():
        return run.parent, run / WEIGHTS_FILE
    if not (run / RUN_FILE).is_file():
        raise TrainingDataError(f"{run}: not a finetune run (no {RUN_FILE})")
    done = step_dirs(run)
    if not done:
        raise TrainingDataError(f"{run}: no finished checkpoint (step_<N>/) yet")
    return run, done[-1][1] / WEIGHTS_FILE


def export(run: Path, out: Path, dtype: str = "bf16", oracle_embedding_mode: str | None = None) -> Path:
    """`oracle_embedding_mode`: None reads the run's; an explicit one must agree with it."""
    import torch
    from safetensors.torch import load_file, save_file

    from kame_desktop.frontend.kame.checkpoint import build_lm, resolve_checkpoint

    if dtype not in DTYPES:
        raise TrainingDataError(f"--dtype must be one of {', '.join(DTYPES)}")
    run_dir, weights = _find_weights(run)
    info = json.loads((run_dir / RUN_FILE).read_text())
    if oracle_embedding_mode not in (None, *ORACLE_EMBEDDING_MODES):
        raise TrainingDataError(f"--oracle-embedding-mode must be one of {', '.join(ORACLE_EMBEDDING_MODES)}")
    mode = info["settings"].get("oracle_embedding_mode", "separate")  # runs from before the option: separate
    if oracle_embedding_mode not in (None, mode):
        raise TrainingDataError(f"{run_dir} was trained with oracle_embedding_mode {mode!r}, not {oracle_embedding_mode!r}")
    base_source = info.get("base_source") or info["settings"]["base"]
    base = resolve_checkpoint(base_source)
    raw = load_file(str(weights))
    # "module." is DDP's wrapper, "lm." the training wrapper's
    state = {inference_key(k.removeprefix("module.").removeprefix("lm.")): v for k, v in raw.items()}
    if mode == "tie":
        state["oracle_emb.weight"] = state["text_emb.weight"].clone()
    expected = build_lm(base.lm_kwargs, "meta", torch.float32).state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise TrainingDataError(f"{weights}: lacks {len(missing)} tensor(s) of the model, e.g. {missing[0]}")
    dropped = sorted(set(state) - set(expected))
    for key in dropped:
        log.info("export: dropping training-only tensor %s", key)
    target = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    tensors = {k: (v.to(target) if v.dtype.is_floating_point else v).contiguous() for k, v in state.items() if k in expected}
    if mode == "tie" and not torch.equal(tensors["oracle_emb.weight"], tensors["text_emb.weight"]):
        raise TrainingDataError(f"{weights}: the tied oracle table differs from the text table after the cast")

    out.mkdir(parents=True, exist_ok=True)
    config = _base_config(base)
    _copy(base.tokenizer, out / base.tokenizer.name)
    config["tokenizer_name"] = base.tokenizer.name
    local = Path(base_source.removeprefix("file://")).expanduser().is_dir()
    if local:
        _copy(base.mimi_weights, out / base.mimi_weights.name)
        config["mimi_name"] = base.mimi_weights.name
    else:  # a hub base: reference its Mimi rather than copying hundreds of MB
        config["mimi_name"] = f"hf://{base_source}/{config.get('mimi_name') or base.mimi_weights.name}"
    if base.mimi_config is not None:
        atomic_write_bytes(out / "mimi_config.json", json.dumps(base.mimi_config, indent=2).encode())
        config["mimi_config_name"] = "mimi_config.json"
    config["moshi_name"] = "model.safetensors"
    tmp = out / ".model.safetensors.tmp"  # written in place, not built in memory (7B: 15 GB in bf16)
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    atomic_write_bytes(out / "config.json", json.dumps(config, indent=2).encode())  # last: marks completion
    return out


def _base_config(base) -> dict:
    """The base checkpoint's config as released: file-name keys, model_type, lm_gen_config, LM kwargs."""
    config = {"moshi_name": "model.safetensors", "mimi_name": base.mimi_weights.name,
              "tokenizer_name": base.tokenizer.name, "model_type": base.model_type,
              "lm_gen_config": dict(base.lm_gen_config)}
    return {**config, **base.lm_kwargs}


def _copy(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    with src.open("rb") as f, atomic_writer(dst) as g:
        shutil.copyfileobj(f, g)
