"""`train finetune SHARDS --base CKPT OUT`: teach a KAME (or plain Moshi) checkpoint to use the
oracle (spec §4.7–4.11), through `accelerate`: the same command runs on a CPU, one GPU, or many
GPUs under DeepSpeed ZeRO-3 or FSDP (see `configs/`).

The model wrapper owns everything the engines need from the model: the gated FFNs hold their two
weights as direct parameters (`…gating.linear_in_weight`: ZeRO-3 gathers a module's parameters
only when that module runs, and moshi's gating reads its child Linears' weights without running
them), activation checkpointing (on when asked, or when the DeepSpeed config has an
`activation_checkpointing` section), and the losses, computed inside `forward`.

`oracle_embedding_mode` (spec §4.8b): `separate` trains `oracle_emb` as a table of its own; `tie`
embeds the oracle with the text table (`oracle_emb` leaves the model; export writes a copy of the
trained `text_emb` in its place).

Every `save_every` steps (and at the end, and on Ctrl-C) the run writes `OUT/step_<N>/`: the
accelerate state (model, optimizer, scheduler, RNG) for `--resume`, whose `model.safetensors` is
also what `train export` reads (under DeepSpeed or FSDP, whose own state is sharded, the weights are
gathered into that file), and `trainer_state.json` (written last: a folder without it is
incomplete). Each step's losses go to `OUT/log.jsonl`. `OUT/run.json` records the settings.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kame_desktop.errors import TrainingDataError
from kame_desktop.fileio import atomic_write_bytes
from kame_desktop.training.dataset import IGNORE, Augmentation, Example, build_examples, collate, shard_files
from kame_desktop.training.streams import StreamLayout
from kame_desktop.training.tokenize import read_shard_layout

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"  # the wrapper's state dict inside a step folder (accelerate's name)
STATE_FILE = "trainer_state.json"
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
TEMPORAL = ("emb.", "text_emb.", "oracle_emb.", "transformer.", "out_norm.", "text_linear.")
DEPTH = ("depformer_in.", "depformer_emb.", "depformer_text_emb.", "depformer.", "depformer_norms.", "linears.")
PARAMETER_SETS = ("all", "tempformer", "depformer", "text_embedding")
ORACLE_EMBEDDING_MODES = ("separate", "tie")


@dataclass(frozen=True)
class LossWeights:
    text_pad: float = 0.5  # PAD labels of the text stream (EPAD counts as a token)
    semantic: float = 100.0  # audio codebook 0
    acoustic: float = 1.0  # audio codebooks 1…


@dataclass(frozen=True)
class FinetuneSettings:
    shards: Path
    base: str
    out: Path
    max_steps: int | None = None  # None: `epochs` passes over the data
    epochs: int = 1
    batch_size: int = 1  # per device
    grad_accum: int = 1
    lr: float = 3e-5  # both parameter groups
    depformer_lr: float | None = None  # None: = lr
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-5
    warmup_steps: int = 100
    grad_clip: float = 1.0
    max_length: int | None = 512
    min_length: int = 0
    main_speakers: tuple[str, ...] = ("A",)
    use_oracle: bool = True
    augmentation: Augmentation = field(default_factory=Augmentation.train)
    weights: LossWeights = field(default_factory=LossWeights)
    parameters: str = "all"
    oracle_embedding_mode: str = "separate"  # or "tie": the text table embeds the oracle
    activation_checkpointing: bool | None = None  # None: as the DeepSpeed config says
    save_every: int = 500
    keep: int = 2  # step folders kept (the newest)
    seed: int = 0
    resume: bool = False
    workers: int = 0


# --- losses (spec §4.9) -------------------------------------------------------------------------


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum()
    return (values * mask).sum() / n.clamp(min=1)


def compute_losses(
    text_logits: torch.Tensor, audio_logits: torch.Tensor, labels: torch.Tensor, pad_id: int,
    weights: LossWeights = LossWeights(),
) -> dict[str, torch.Tensor]:
    """text_logits [B, S, text_card] and audio_logits [B, dep_q, S, card] at input positions
    0…S-1 predict `labels` [B, K, S+1] at positions 1…S. Cross-entropies in fp32, -1 ignored."""
    target = labels[:, :, 1:]
    text_t = target[:, 0]
    ce = F.cross_entropy(text_logits.float().flatten(0, 1), text_t.flatten().clamp(min=0), reduction="none")
    ce = ce.view_as(text_t)
    valid = text_t != IGNORE
    is_pad = text_t == pad_id
    text = _mean(ce, valid & ~is_pad) + weights.text_pad * _mean(ce, valid & is_pad)
    dep_q = audio_logits.shape[1]
    total = audio_logits.new_zeros((), dtype=torch.float32)
    norm = audio_logits.new_zeros((), dtype=torch.float32)
    for k in range(dep_q):
        t = target[:, 1 + k]
        ce_k = F.cross_entropy(audio_logits[:, k].float().flatten(0, 1), t.flatten().clamp(min=0), reduction="none")
        ok = (t != IGNORE).flatten().float()
        w = weights.semantic if k == 0 else weights.acoustic
        total = total + w * (ce_k * ok).sum()
        norm = norm + w * ok.sum()
    audio = total / norm.clamp(min=1)
    return {"loss": text + audio, "text_loss": text, "audio_loss": audio}


# --- the model wrapper ---------------------------------------------------------------------------


class BareGating(nn.Module):
    """moshi's ActivationGating with its weights as direct parameters (ZeRO-3, see above)."""

    def __init__(self, gating: nn.Module) -> None:
        super().__init__()
        self.linear_in_weight = nn.Parameter(gating.linear_in.weight.detach())
        self.linear_out_weight = nn.Parameter(gating.linear_out.weight.detach())
        self.activation = gating.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.linear_in_weight)
        B, T, _ = x.shape
        x = x.view(B, T, 2, -1)
        return F.linear(self.activation(x[..., 0, :]) * x[..., 1, :], self.linear_out_weight)


def bare_gating_(model: nn.Module) -> int:
    """Replace every ActivationGating in place; returns how many."""
    from moshi.modules.gating import ActivationGating

    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ActivationGating):
                setattr(module, name, BareGating(child))  # also right for a ModuleList's "0", "1"…
                count += 1
    return count


_BARE_KEY = re.compile(r"\.linear_(in|out)_weight$")


def inference_key(key: str) -> str:
    """`…gating.linear_in_weight` → `…gating.linear_in.weight` (the released layout)."""
    return _BARE_KEY.sub(r".linear_\1.weight", key)


class TextTableOracle(nn.Module):
    """Tie mode's oracle embedding: the text table itself, held outside the module tree so that
    it is neither a second parameter nor a second state-dict entry."""

    def __init__(self, text_emb: nn.Module) -> None:
        super().__init__()
        self._text_emb = (text_emb,)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._text_emb[0](ids)


class KameTrainModel(nn.Module):
    def __init__(
        self, lm: nn.Module, layout: StreamLayout, weights: LossWeights, activation_checkpointing: bool,
        oracle_embedding_mode: str = "separate",
    ) -> None:
        super().__init__()
        self.lm = lm
        self.pad_id = layout.pad_id
        self.weights = weights
        if oracle_embedding_mode == "tie":
            del lm.oracle_emb
            lm.oracle_emb = TextTableOracle(lm.text_emb)
        bare_gating_(lm)
        lm.transformer.checkpointing = activation_checkpointing
        if getattr(lm, "depformer", None) is not None:
            lm.depformer.checkpointing = activation_checkpointing

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, oracle: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """input_ids/labels [B, K, L] (delayed, initial column first), oracle [B, 1, L]."""
        from moshi.utils.compile import no_compile

        oracle_in = None if oracle is None else oracle[:, :, :-1]
        # moshi compiles its RoPE lazily: tens of seconds on a CPU per shape, and one more thing
        # to go wrong under ZeRO-3 and checkpointing. Eager everywhere.
        with no_compile():
            out, text_logits = self.lm.forward_text(input_ids[:, :, :-1], oracle_tokens=oracle_in)
            audio_logits = self.lm.forward_depformer_training(input_ids[:, :, 1:], out)
        return compute_losses(text_logits[:, 0], audio_logits, labels, self.pad_id, self.weights)


def parameter_groups(model: KameTrainModel, settings: FinetuneSettings) -> list[dict[str, Any]]:
    """Temporal and depth groups (spec §4.10), restricted to the chosen trainable set."""
    wanted = {
        "all": TEMPORAL + DEPTH,
        "tempformer": TEMPORAL,
        "depformer": DEPTH,
        "text_embedding": ("text_emb.", "oracle_emb.", "depformer_text_emb."),
    }[settings.parameters]
    temporal, depth = [], []
    for name, p in model.lm.named_parameters():
        p.requires_grad_(name.startswith(wanted))
        if not p.requires_grad:
            continue
        (depth if name.startswith(DEPTH) else temporal).append(p)
    groups = [
        {"params": temporal, "lr": settings.lr, "weight_decay": settings.weight_decay},
        {"params": depth, "lr": settings.depformer_lr or settings.lr, "weight_decay": settings.weight_decay},
    ]
    return [g for g in groups if g["params"]]


# --- data ---------------------------------------------------------------------------------------


class ShardDataset(torch.utils.data.Dataset):
    """Examples of every shard row and main speaker, built on access from the Arrow tables."""

    def __init__(self, files: list[Path], layout: StreamLayout, settings: FinetuneSettings) -> None:
        import pyarrow.parquet as pq

        self.layout = layout
        self.settings = settings
        self.tables = [pq.read_table(p) for p in files]
        self.index: list[tuple[int, int, str, int]] = []  # table, row, main speaker, chunk
        for t, table in enumerate(self.tables):
            for r in range(table.num_rows):
                row = self._row(t, r)
                for speaker in settings.main_speakers:
                    for c in range(len(self._examples(row, speaker))):
                        self.index.append((t, r, speaker, c))
        if not self.index:
            raise TrainingDataError(f"{settings.shards}: no training examples (all shorter than --min-length?)")

    def _row(self, t: int, r: int) -> dict[str, Any]:
        return self.tables[t].slice(r, 1).to_pylist()[0]

    def _examples(self, row: dict[str, Any], speaker: str) -> list[Example]:
        s = self.settings
        return build_examples(row, self.layout, speaker, s.max_length, s.min_length, s.use_oracle)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, Example]:
        t, r, speaker, c = self.index[i]
        return i, self._examples(self._row(t, r), speaker)[c]


class EpochSampler(torch.utils.data.Sampler):
    """A fresh seeded permutation per epoch, the same on every process. The epoch is ours to
    set (`use_epoch`), not accelerate's `set_epoch`, whose counter restarts at 0 on resume."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class Collator:
    """Per-example RNGs seeded by (seed, epoch, example): augmentation does not depend on the
    worker count, and a resumed run draws what the uninterrupted one would have."""

    def __init__(self, layout: StreamLayout, aug: Augmentation, seed: int, use_oracle: bool) -> None:
        self.layout, self.aug, self.seed, self.use_oracle = layout, aug, seed, use_oracle
        self.epoch = 0
        self.step = 0

    def __call__(self, items: list[tuple[int, Example]]) -> dict[str, torch.Tensor]:
        rngs = [np.random.default_rng([self.seed, self.epoch, i]) for i, _ in items]
        batch = collate([e for _, e in items], self.layout, self.aug, rngs, self.step)
        out = {"input_ids": torch.from_numpy(batch.input_ids), "labels": torch.from_numpy(batch.labels)}
        out["oracle"] = torch.from_numpy(batch.oracle) if self.use_oracle else None
        return out


# --- checkpoints --------------------------------------------------------------------------------


def step_dirs(out: Path) -> list[tuple[int, Path]]:
    """Complete step folders, oldest first."""
    found = []
    for d in out.glob("step_*"):
        m = re.fullmatch(r"step_(\d+)", d.name)
        if m and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def _settings_json(settings: FinetuneSettings) -> dict[str, Any]:
    raw = asdict(settings)
    raw["shards"], raw["out"] = str(settings.shards), str(settings.out)
    return raw


_RESUME_KEYS = ("base", "batch_size", "grad_accum", "max_length", "min_length", "main_speakers", "use_oracle", "seed",
                "oracle_embedding_mode")


def _check_resume(out: Path, settings: FinetuneSettings) -> None:
    path = out / RUN_FILE
    if not path.is_file():
        raise TrainingDataError(f"{out}: no {RUN_FILE}; nothing to resume (drop --resume to start)")
    old = {"oracle_embedding_mode": "separate"} | json.loads(path.read_text())["settings"]  # runs before the option: separate
    new = _settings_json(settings)
    changed = [k for k in _RESUME_KEYS if json.dumps(old.get(k)) != json.dumps(new.get(k))]
    if changed:
        raise TrainingDataError(f"{out}: cannot resume with a different {', '.join(changed)} than the run used")


# --- the loop -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    first_step: int  # the first step this call ran (1-based)
    last_step: int  # the last completed step
    losses: list[float]  # per step run by this call
    seconds_per_step: float
    interrupted: bool = False
    is_main: bool = True  # the process that reports (others stay quiet)


def _activation_checkpointing(settings: FinetuneSettings, accelerator) -> bool:
    if settings.activation_checkpointing is not None:
        return settings.activation_checkpointing
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return bool(plugin is not None and "activation_checkpointing" in (plugin.deepspeed_config or {}))


def _uses_deepspeed_optimizer(accelerator) -> bool:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return bool(plugin is not None and "optimizer" in (plugin.deepspeed_config or {}))


def finetune(
    settings: FinetuneSettings, show_progress: bool = True, on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FinetuneResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from kame_desktop.frontend.kame.checkpoint import load_lm, resolve_checkpoint

    if settings.oracle_embedding_mode not in ORACLE_EMBEDDING_MODES:
        raise TrainingDataError(f"oracle_embedding_mode must be one of {', '.join(ORACLE_EMBEDDING_MODES)}")
    files = shard_files(settings.shards)
    base = resolve_checkpoint(settings.base)
    layout = StreamLayout.from_lm_kwargs(base.lm_kwargs)
    _check_shards(files, layout, settings)
    if settings.resume:
        _check_resume(settings.out, settings)
    elif step_dirs(settings.out):
        raise TrainingDataError(f"{settings.out} already holds a run; pass --resume to continue it or pick another folder")

    accelerator = Accelerator(gradient_accumulation_steps=settings.grad_accum)
    set_seed(settings.seed)
    lm = load_lm(base, torch.device("cpu"), torch.float32).train()  # fp32 master weights (spec §4.10)
    model = KameTrainModel(lm, layout, settings.weights, _activation_checkpointing(settings, accelerator),
                           settings.oracle_embedding_mode)
    dataset = ShardDataset(files, layout, settings)
    loop = _Loop(settings, accelerator, EpochSampler(len(dataset), settings.seed),
                 Collator(layout, settings.augmentation, settings.seed, settings.use_oracle))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, sampler=loop.sampler, collate_fn=loop.collator,
        num_workers=settings.workers,
    )
    batches_per_epoch = math.ceil(len(dataset) / (settings.batch_size * accelerator.num_processes))
    # accelerate syncs at the end of the data too: a short last accumulation is a step of its own
    loop.steps_per_epoch = math.ceil(batches_per_epoch / settings.grad_accum)
    loop.total_steps = settings.max_steps or loop.steps_per_epoch * settings.epochs
    loop.prepare(model, loader, parameter_groups(model, settings))
    step = _start_or_resume(accelerator, settings, layout)
    if step >= loop.total_steps:
        return FinetuneResult(settings.out, step + 1, step, [], 0.0, is_main=accelerator.is_main_process)
    return loop.run(step, show_progress, on_step)


def _check_shards(files: list[Path], layout: StreamLayout, settings: FinetuneSettings) -> None:
    for f in files:
        shard = read_shard_layout(f)
        if StreamLayout.from_json(shard) != layout:
            raise TrainingDataError(
                f"{f} was tokenized for another stream layout ({shard}) than {settings.base} ({layout.to_json()}); "
                "rerun tokenize with --checkpoint set to the base"
            )
        if settings.use_oracle and not shard.get("oracle"):
            raise TrainingDataError(f"{f} has no oracle events; tokenize with oracle_raw/ or finetune with --no-oracle")


def _start_or_resume(accelerator, settings: FinetuneSettings, layout: StreamLayout) -> int:
    """The last completed step: the newest checkpoint's (its state loaded) on --resume, else 0
    with a fresh log and run.json."""
    out = settings.out
    step = 0
    if settings.resume:
        done = step_dirs(out)
        if done:
            step, last = done[-1]
            accelerator.load_state(str(last))
            log.info("resumed from %s", last)
        if accelerator.is_main_process:
            _truncate_log(out / LOG_FILE, step)  # steps logged after the checkpoint run again
    elif accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(out / LOG_FILE, 0)
        local = Path(settings.base.removeprefix("file://")).expanduser()
        base_source = str(local.resolve()) if local.is_dir() else settings.base  # export may run elsewhere
        atomic_write_bytes(out / RUN_FILE, json.dumps({
            "settings": _settings_json(settings), "layout": layout.to_json(), "base_source": base_source,
        }, indent=1).encode())
    return step


class _Loop:
    """The optimizer, its schedule and the step loop of one finetune call."""

    def __init__(self, settings: FinetuneSettings, accelerator, sampler: EpochSampler, collator: Collator) -> None:
        self.settings, self.accelerator, self.sampler, self.collator = settings, accelerator, sampler, collator
        self.steps_per_epoch = self.total_steps = 0

    def prepare(self, model: KameTrainModel, loader, groups: list[dict[str, Any]]) -> None:
        s, accelerator = self.settings, self.accelerator
        self.engine_schedules = _uses_deepspeed_optimizer(accelerator)
        if self.engine_schedules:  # the DeepSpeed config's AdamW and WarmupLR, filled from these values
            from accelerate.utils import DummyOptim, DummyScheduler

            optimizer = DummyOptim(groups, lr=s.lr, weight_decay=s.weight_decay)
            scheduler = DummyScheduler(optimizer, total_num_steps=self.total_steps, warmup_num_steps=s.warmup_steps)
            self.model, self.optimizer, self.loader, self.scheduler = accelerator.prepare(
                model, optimizer, loader, scheduler)
        else:
            optimizer = torch.optim.AdamW(groups, lr=s.lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay)
            warmup = max(1, s.warmup_steps)
            # Linear warm-up then constant (WarmupLR), stepped once per optimizer step by us: a
            # prepared scheduler would step once per process.
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
            self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
            accelerator.register_for_checkpointing(self.scheduler)

    def run(self, step: int, show_progress: bool, on_step) -> FinetuneResult:
        s, accelerator, out = self.settings, self.accelerator, self.settings.out
        losses: list[float] = []
        first = step + 1
        interrupted = False
        started = time.perf_counter()
        progress = _progress(show_progress and accelerator.is_main_process, self.total_steps, step)
        try:
            while step < self.total_steps:
                epoch = step // self.steps_per_epoch
                skip = (step % self.steps_per_epoch) * s.grad_accum  # batches of this epoch already used
                self.sampler.use_epoch(epoch)
                self.collator.epoch = epoch
                epoch_loader = accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
                accum: dict[str, float] = {}
                for batch in epoch_loader:
                    self.collator.step = step
                    result, lr = self._micro_step(batch)
                    for k, v in result.items():
                        accum[k] = accum.get(k, 0.0) + float(v.detach()) / s.grad_accum
                    if not accelerator.sync_gradients:
                        continue
                    if not self.engine_schedules:
                        self.scheduler.step()
                    step += 1
                    record = self._log(step, accum, lr)
                    accum = {}
                    losses.append(record["loss"])
                    progress(step, record["loss"])
                    if on_step is not None:
                        on_step(step, record)
                    if step % s.save_every == 0 or step == self.total_steps:
                        save_checkpoint(accelerator, self.model, out, step, s.keep)
                    if step >= self.total_steps:
                        break
        except KeyboardInterrupt:
            interrupted = True
            if step and not (out / f"step_{step}" / STATE_FILE).exists():
                save_checkpoint(accelerator, self.model, out, step, s.keep)
            log.warning("interrupted at step %d; continue with --resume", step)
        finally:
            progress(None, None)
        elapsed = time.perf_counter() - started
        return FinetuneResult(out, first, step, losses, elapsed / max(1, len(losses)), interrupted,
                              accelerator.is_main_process)

    def _micro_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        accelerator = self.accelerator
        with accelerator.accumulate(self.model):
            result = self.model(**batch)
            accelerator.backward(result["loss"])
            if accelerator.sync_gradients and self.settings.grad_clip > 0:
                accelerator.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            if self.engine_schedules:
                self.scheduler.step()
            self.optimizer.zero_grad()
        return result, lr

    def _log(self, step: int, accum: dict[str, float], lr: float) -> dict[str, Any]:
        """The step's losses averaged over the processes, appended to log.jsonl."""
        keys = sorted(accum)  # the same order on every process
        means = self.accelerator.reduce(torch.tensor([accum[k] for k in keys], device=self.accelerator.device), "mean")
        record = {"step": step, **{k: round(float(v), 5) for k, v in zip(keys, means, strict=True)}, "lr": lr}
        if self.accelerator.is_main_process:
            with (self.settings.out / LOG_FILE).open("a") as f:
                f.write(json.dumps(record) + "\n")
        return record


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log records up to `step` (a crash after the last checkpoint logged more)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the crash
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


def save_checkpoint(accelerator, model, out: Path, step: int, keep: int) -> Path:
    """`OUT/step_<N>/`: accelerate state (its model.safetensors: the weights) + trainer_state.json (last)."""
    from accelerate.utils import DistributedType
    from safetensors.torch import save_file

    final = out / f"step_{step}"
    tmp = out / f".step_{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    # Plain and DDP runs: save_state wrote the model's state as model.safetensors (DDP's keys
    # start with "module."), the weights export reads. DeepSpeed and FSDP save shards instead.
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    state = accelerator.get_state_dict(model) if sharded else None  # gathers the shards on the main process
    if accelerator.is_main_process:
        if state is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS_FILE),
                      metadata={"format": "pt"})
        (tmp / STATE_FILE).write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in step_dirs(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _progress(show: bool, total: int, start: int):
    """A rich bar with the loss; returns update(step, loss), update(None, None) closes it."""
    if not show:
        return lambda step, loss: None
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("finetune"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TimeRemainingColumn(), console=Console(file=sys.stderr))
    task = bar.add_task("finetune", total=total, completed=start, loss="-")
    bar.start()

    def update(step: int | None, loss: float | None) -> None:
        if step is None:
            bar.stop()
        else:
            bar.update(task, completed=step, loss=f"{loss:.3f}")

    return update
