"""`kame-desktop train …`: one subcommand per step, each resumable and idempotent. Heavy modules
load inside the commands, so `kame-desktop --help` does not import torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kame_desktop.choices import DEFAULT_LOCAL_MODEL, EMBEDDED_LLMS, LLM_KINDS, LOCAL_LLM, OPENAI_LLM, one_of
from kame_desktop.errors import KameError

app = typer.Typer(help="Fine-tune KAME on your own dialogues: prepare → simulate-oracle → tokenize → finetune → export.")


@app.command()
def prepare(
    src: Annotated[Path, typer.Argument(help="Canonical layout (audio/ + text/) or a folder of WAVs.")],
    out: Annotated[Path, typer.Argument(help="Dataset folder to write (canonical layout).")],
    whisper_model: Annotated[str, typer.Option(help="For bare WAVs: 'base' (embedded), a CTranslate2 folder or a faster-whisper name.")] = "base",
    language: Annotated[str, typer.Option(help="Language of the speech ('auto' to detect).")] = "en",
    threads: Annotated[int, typer.Option(help="CPU threads for Whisper.")] = 1,
    force: Annotated[bool, typer.Option(help="Redo dialogues already in OUT.")] = False,
) -> None:
    """Import dialogues: validate a canonical dataset, or transcribe two-channel WAVs
    (<id>.wav, left = A, right = B) or pairs <id>_A.wav + <id>_B.wav with word timestamps."""
    from kame_desktop.training.prepare import PrepareSettings
    from kame_desktop.training.prepare import prepare as run

    settings = PrepareSettings(whisper_model, None if language == "auto" else language, threads, force)
    _finish(run(src, out, settings))


@app.command("simulate-oracle")
def simulate_oracle(
    data: Annotated[Path, typer.Argument(help="Dataset folder (from `train prepare`).")],
    strategy: Annotated[str, typer.Option(help="llm (ask an LLM) or random (no LLM: other dialogues' responses, then the truth).")] = "llm",
    llm: Annotated[str, typer.Option(help=f"{one_of(LLM_KINDS)}: {LOCAL_LLM} (embedded {DEFAULT_LOCAL_MODEL}, or --llm-model GGUF or {', '.join(EMBEDDED_LLMS[1:])}), {OPENAI_LLM} (any compatible server).")] = LOCAL_LLM,
    llm_url: Annotated[str | None, typer.Option(help=f"OpenAI-compatible base URL (--llm {OPENAI_LLM}).")] = None,
    llm_model: Annotated[str | None, typer.Option(help=f"Model name ({OPENAI_LLM}; default gpt-4.1-nano) or GGUF path ({LOCAL_LLM}).")] = None,
    llm_threads: Annotated[int, typer.Option(help="CPU threads of the local model (prompt and generation).")] = 2,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once (1 for a llama_cpp.server: it interrupts a running stream for a new request).")] = 4,
    retries: Annotated[int, typer.Option(help="Retries of a failed request (exponential backoff).")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between events.")] = 0.5,
    fallback: Annotated[bool, typer.Option(help="On a final LLM error, store '' (or the hint past half the turn) instead of failing the dialogue.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --strategy random.")] = 0,
    pool: Annotated[Path | None, typer.Option(help="--strategy random: training transcripts to draw responses from (a dataset or text folder; default DATA; never validation or test data).")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="--strategy random: count token lengths in this checkpoint's tokenizer (default: words).")] = None,
    force: Annotated[bool, typer.Option(help="Redo dialogues that have oracle events (cached answers are reused).")] = False,
) -> None:
    """Predict the next turn at every 0.5 s event (oracle_raw/<id>.json). Answers are cached:
    a rerun asks nothing twice. The API key comes from the keyring or KAME_LLM_API_KEY."""
    from kame_desktop.training.simulate_oracle import SimulateSettings
    from kame_desktop.training.simulate_oracle import simulate_oracle as run

    settings = SimulateSettings(strategy=strategy, interval=interval, concurrency=concurrency, retries=retries,
                                fallback=fallback, seed=seed, pool=pool, checkpoint=checkpoint, force=force)
    provider = make_llm(llm, llm_url, llm_model, llm_threads) if strategy == "llm" else None
    _finish(run(data, provider, settings))


PREDICTION_TOKENS = 64  # 30 words with room to spare


def make_llm(kind: str, url: str | None, model: str | None, threads: int = 2):
    """The app's own providers: the embedded llama.cpp model or any OpenAI-compatible server."""
    from kame_desktop.choices import OPENAI_URL, check_choice

    check_choice(kind, LLM_KINDS, "LLM provider (--llm)")
    if kind == LOCAL_LLM:
        from kame_desktop.backend.llm.local import LocalLlm

        return LocalLlm(model_path=model, n_threads=threads, max_tokens=PREDICTION_TOKENS)
    from kame_desktop.backend.llm.openai_compat import OpenAiLlm
    from kame_desktop.config import llm_url_problem
    from kame_desktop.credentials import llm_api_key

    url = OPENAI_URL if url is None else url  # --llm-url "" is an error, not OpenAI's host
    if problem := llm_url_problem(url):
        raise KameError(f"--llm-url: {problem}")
    return OpenAiLlm(url, model or "gpt-4.1-nano", api_key=llm_api_key(), max_tokens=PREDICTION_TOKENS)


@app.command()
def tokenize(
    data: Annotated[Path, typer.Argument(help="Dataset folder (with oracle_raw/ unless --no-oracle).")],
    checkpoint: Annotated[str, typer.Option(help="Target checkpoint (folder or HF repo): its tokenizer, Mimi and stream layout.")],
    oracle: Annotated[bool, typer.Option("--oracle/--no-oracle", help="Include the oracle events.")] = True,
    shards: Annotated[Path | None, typer.Option(help="Where the Parquet shards go (default DATA/shards).")] = None,
    prefix: Annotated[str | None, typer.Option(help="dialogue_id prefix (default: DATA's name).")] = None,
    per_shard: Annotated[int, typer.Option(help="Dialogues per shard.")] = 100_000,
    allow_misaligned: Annotated[bool, typer.Option(help="Keep dialogues whose text does not align (drop what does not fit).")] = False,
    device: Annotated[str, typer.Option(help="Device for Mimi (cpu, cuda).")] = "cpu",
    force: Annotated[bool, typer.Option(help="Re-encode every dialogue.")] = False,
) -> None:
    """Mimi codes, frame-aligned text and oracle tokens → Parquet shards."""
    from kame_desktop.training.tokenize import TokenizeSettings
    from kame_desktop.training.tokenize import tokenize as run

    settings = TokenizeSettings(checkpoint=checkpoint, use_oracle=oracle, prefix=prefix, shards=shards,
                                dialogues_per_shard=per_shard, strict_text=not allow_misaligned, device=device, force=force)
    _finish(run(data, settings))


@app.command()
def finetune(
    shards: Annotated[Path, typer.Argument(help="Parquet shards (a folder or one file) from `train tokenize`.")],
    out: Annotated[Path, typer.Argument(help="Run folder: step_<N>/ checkpoints, log.jsonl.")],
    base: Annotated[str, typer.Option(help="Base checkpoint: a KAME or plain Moshi folder or HF repo (the one tokenized for).")],
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: --epochs over the data).")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the data when --steps is not given.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Examples per device and micro-step.")] = 1,
    grad_accum: Annotated[int, typer.Option(help="Micro-steps per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(help="Learning rate of both parameter groups.")] = 3e-5,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps, then constant.")] = 100,
    max_length: Annotated[int, typer.Option(help="Split dialogues into near-equal chunks of at most this many frames (0: whole).")] = 512,
    min_length: Annotated[int, typer.Option(help="Drop chunks shorter than this.")] = 0,
    speakers: Annotated[str, typer.Option(help="Main speaker(s) the model plays: A, B or A,B.")] = "A",
    oracle: Annotated[bool, typer.Option("--oracle/--no-oracle", help="Train with the oracle stream.")] = True,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Simulated-oracle augmentation (shift 1.0, skip 0.1–0.7).")] = True,
    jitter: Annotated[int, typer.Option(help="Move each event later by up to this many frames.")] = 0,
    hint_only: Annotated[bool, typer.Option(help="Feed the ground-truth hint instead of the prediction.")] = False,
    hint_only_warmup: Annotated[
        str | None, typer.Option(help="START,END steps: hint-only before START, fading out linearly by END (with --hint-only).")
    ] = None,
    parameters: Annotated[str, typer.Option(help="Trainable set: all, tempformer, depformer, text_embedding.")] = "all",
    oracle_embedding_mode: Annotated[
        str, typer.Option(help="separate (train the oracle table) or tie (the text table embeds the oracle).")
    ] = "separate",
    activation_checkpointing: Annotated[
        bool | None, typer.Option("--activation-checkpointing/--no-activation-checkpointing",
                                  help="Default: on when the DeepSpeed config has an activation_checkpointing section.")
    ] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (and at the end).")] = 500,
    keep: Annotated[int, typer.Option(help="Step folders to keep.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT from its last checkpoint.")] = False,
) -> None:
    """Fine-tune through accelerate (CPU, one GPU, or `accelerate launch --config_file …` for
    DeepSpeed ZeRO-3 / FSDP). Ctrl-C saves a checkpoint; --resume continues from it."""
    from dataclasses import replace

    from kame_desktop.training.dataset import Augmentation
    from kame_desktop.training.finetune import ORACLE_EMBEDDING_MODES, PARAMETER_SETS, FinetuneSettings
    from kame_desktop.training.finetune import finetune as run

    main_speakers = tuple(s.strip() for s in speakers.split(",") if s.strip())
    if not main_speakers or set(main_speakers) - {"A", "B"}:
        raise KameError("--speakers must be A, B or A,B")
    if parameters not in PARAMETER_SETS:
        raise KameError(f"--parameters must be one of {', '.join(PARAMETER_SETS)}")
    if oracle_embedding_mode not in ORACLE_EMBEDDING_MODES:
        raise KameError(f"--oracle-embedding-mode must be one of {', '.join(ORACLE_EMBEDDING_MODES)}")
    warmup = None
    if hint_only_warmup:
        try:
            start, end = (int(x) for x in hint_only_warmup.split(","))
        except ValueError:
            raise KameError("--hint-only-warmup must be START,END (two step numbers)") from None
        warmup = (start, end)
    aug = Augmentation.train() if augment else Augmentation()
    aug = replace(aug, max_jitter=jitter, hint_only=hint_only, hint_only_warmup=warmup)
    settings = FinetuneSettings(
        shards=shards, base=base, out=out, max_steps=steps, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum,
        lr=lr, warmup_steps=warmup_steps, max_length=max_length or None, min_length=min_length,
        main_speakers=main_speakers, use_oracle=oracle, augmentation=aug,
        parameters=parameters, oracle_embedding_mode=oracle_embedding_mode, activation_checkpointing=activation_checkpointing, save_every=save_every, keep=keep,
        seed=seed, resume=resume,
    )
    result = run(settings)
    if result.is_main and result.losses:
        typer.echo(f"finetune: steps {result.first_step}–{result.last_step}, loss {result.losses[0]:.3f} → "
                   f"{result.losses[-1]:.3f}, {result.seconds_per_step:.3f} s/step; checkpoints in {out}", err=True)
    elif result.is_main:
        typer.echo(f"finetune: nothing to do (the run in {out} is at step {result.last_step})", err=True)
    if result.interrupted:
        raise typer.Exit(130)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A finetune run folder (its newest checkpoint) or one step_<N>/ folder.")],
    out: Annotated[Path, typer.Argument(help="Checkpoint folder to write (released KAME layout).")],
    dtype: Annotated[str, typer.Option(help="Weights dtype: bf16, fp16 or fp32.")] = "bf16",
    oracle_embedding_mode: Annotated[
        str | None, typer.Option(help="separate or tie; default: the run's (an explicit one must agree).")
    ] = None,
) -> None:
    """Write a checkpoint that `kame-desktop run --checkpoint OUT` and the app load."""
    from kame_desktop.training.export import export as run_export

    run_export(run, out, dtype, oracle_embedding_mode)
    typer.echo(f"wrote a KAME checkpoint to {out}", err=True)


def _finish(report) -> None:
    typer.echo(report.summary(), err=True)
    if report.failed:
        typer.echo(f"{report.failed} dialogue(s) failed (see the lines above); rerun after fixing them", err=True)
        raise typer.Exit(1)
