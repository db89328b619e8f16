"""`kame-desktop train …`: one subcommand per step, each resumable and idempotent. Heavy modules
load inside the commands, so `kame-desktop --help` does not import torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kame_desktop.errors import KameError

app = typer.Typer(help="Fine-tune KAME on your own dialogues: prepare → simulate-oracle → tokenize → finetune → export.")


def _finish(report) -> None:
    typer.echo(report.summary(), err=True)
    if report.failed:
        typer.echo(f"{report.failed} dialogue(s) failed (see the lines above); rerun after fixing them", err=True)
        raise typer.Exit(1)


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
    strategy: Annotated[str, typer.Option(help="llm (ask an LLM) or random (no LLM: distractors, then the truth).")] = "llm",
    llm: Annotated[str, typer.Option(help="local (embedded SmolLM2, or --llm-model GGUF) or openai (any compatible server).")] = "local",
    llm_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL (--llm openai).")] = None,
    llm_model: Annotated[str | None, typer.Option(help="Model name (openai; default gpt-4.1-nano) or GGUF path (local).")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 4,
    retries: Annotated[int, typer.Option(help="Retries of a failed request (exponential backoff).")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between events.")] = 0.5,
    fallback: Annotated[bool, typer.Option(help="On a final LLM error, store '' (or the hint past half the turn) instead of failing the dialogue.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --strategy random.")] = 0,
    force: Annotated[bool, typer.Option(help="Redo dialogues that have oracle events (cached answers are reused).")] = False,
) -> None:
    """Predict the next turn at every 0.5 s event (oracle_raw/<id>.json). Answers are cached:
    a rerun asks nothing twice. The API key comes from the keyring or KAME_LLM_API_KEY."""
    from kame_desktop.training.simulate_oracle import SimulateSettings
    from kame_desktop.training.simulate_oracle import simulate_oracle as run

    settings = SimulateSettings(strategy=strategy, interval=interval, concurrency=concurrency, retries=retries,
                                fallback=fallback, seed=seed, force=force)
    provider = make_llm(llm, llm_url, llm_model, concurrency) if strategy == "llm" else None
    _finish(run(data, provider, settings))


PREDICTION_TOKENS = 96  # 30 words with room to spare


def make_llm(kind: str, url: str | None, model: str | None, concurrency: int):
    """The app's own providers: the embedded llama.cpp model or any OpenAI-compatible server."""
    if kind == "local":
        from kame_desktop.backend.llm.local import LocalLlm

        return LocalLlm(model_path=model, n_threads=2, max_tokens=PREDICTION_TOKENS)
    if kind == "openai":
        from kame_desktop.backend.llm.openai_compat import OpenAiLlm
        from kame_desktop.config import llm_api_key

        return OpenAiLlm(url or "https://api.openai.com/v1", model or "gpt-4.1-nano", api_key=llm_api_key(),
                         max_tokens=PREDICTION_TOKENS)
    raise KameError(f"--llm must be local or openai, not {kind!r}")


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
