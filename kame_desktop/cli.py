"""Command line: `kame-desktop run`, `doctor`, `install-desktop-entry`, `make-tiny-checkpoint`, `bench`.

Heavy modules (torch, moshi) are imported inside the commands so that `--help` stays fast.
A KameError is printed as one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

from kame_desktop.choices import (
    ASR_KINDS,
    DEFAULT_LOCAL_MODEL,
    EMBEDDED_LLMS,
    LLM_KINDS,
    LOCAL_LLM,
    OPENAI_LLM,
    WHISPER_ASR,
    one_of,
)
from kame_desktop.errors import KameError, OutputError
from kame_desktop.evaluation.cli import app as eval_app  # typer only: its commands import lazily
from kame_desktop.training.cli import app as train_app

app = typer.Typer(
    help="kame-desktop: a voice companion on KAME's tandem speech-to-speech architecture. "
    "Without a command it opens the desktop app.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: logs on stderr, one JSON object as the last stdout line.")
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")

log = logging.getLogger("kame_desktop")


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:  # once per process (and never over a test runner's handlers)
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setLevel(logging.INFO if verbose else logging.WARNING)
        stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(stderr)
        root.setLevel(stderr.level)
        from kame_desktop.logs import add_file_log

        add_file_log()  # the rotating log file (logs.py): what `Report a problem` sends
    logging.captureWarnings(True)  # checkpoint warnings (legacy file, no config) reach stderr


def _print_version(value: bool) -> None:
    if value:
        from kame_desktop import __version__

        typer.echo(f"kame-desktop {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _setup_logging(verbose)
    if ctx.invoked_subcommand is None:  # a double-click or a bare `kame-desktop`: the app
        gui()


@app.command()
def run(
    input: Annotated[Path, typer.Option("--input", "-i", help="Audio file to stream (WAV, FLAC, OGG).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the reply (24 kHz WAV).")],
    frontend: Annotated[
        str, typer.Option(help="auto (KAME where a GPU has room and the weights are here, else lite), kame or lite.")
    ] = "auto",
    checkpoint: Annotated[
        str | None, typer.Option(help="KAME checkpoint folder or Hugging Face repo id (means --frontend kame).")
    ] = None,
    timeline: Annotated[Path | None, typer.Option(help="Write every event as JSON lines here.")] = None,
    oracle_file: Annotated[
        Path | None, typer.Option(help='Scripted oracle: JSON list of {"t", "reset", "text", "tokens"}.')
    ] = None,
    tail: Annotated[float, typer.Option(help="Seconds of silence streamed after the input.")] = 5.0,
    llm: Annotated[
        str | None,
        typer.Option(help=f"Back-end LLM: {one_of(LLM_KINDS)} ({LOCAL_LLM}: the embedded {DEFAULT_LOCAL_MODEL}, or --llm-model GGUF or another embedded model). Lite defaults to {LOCAL_LLM}."),
    ] = None,
    llm_url: Annotated[str | None, typer.Option(help=f"OpenAI-compatible base URL (--llm {OPENAI_LLM}).")] = None,
    llm_model: Annotated[str | None, typer.Option(help=f"Model name ({OPENAI_LLM}); GGUF path or embedded model ({LOCAL_LLM}: {', '.join(EMBEDDED_LLMS)}).")] = None,
    asr: Annotated[str, typer.Option(help=f"Speech recognition: {one_of(ASR_KINDS)}.")] = WHISPER_ASR,
    policy: Annotated[str, typer.Option(help="When to ask the LLM: reactive, polling or end_of_turn.")] = "reactive",
    realtime: Annotated[
        bool | None, typer.Option("--realtime/--no-realtime", help="Pace the input at real time (default: on with --llm).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cuda, mps or cpu.")] = "auto",
    dtype: Annotated[str | None, typer.Option(help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Quantize the LM to int8 (CUDA + bitsandbytes).")] = False,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature; 0 = greedy.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the front-end (torch).")] = None,
    replay_stale_oracle: Annotated[
        bool, typer.Option(help="Reference quirk: keep the oracle run across a session reset.")
    ] = False,
) -> None:
    """Stream an audio file through the front-end (and the back-end with --llm); write the reply
    audio and the timeline. The API key of a cloud LLM comes from the keyring or KAME_LLM_API_KEY."""
    from kame_desktop.assembly import KameOptions, build_session, no_backend, run_settings
    from kame_desktop.audio.sources import AudioFileSource, WavSink
    from kame_desktop.events import EventBus, TimelineWriter
    from kame_desktop.logrepeat import RepeatedWarning
    from kame_desktop.session import check_script_tokens, load_oracle_script

    if not (math.isfinite(tail) and 0 <= tail <= MAX_TAIL_S):
        raise KameError(f"--tail must be a number of seconds from 0 to {MAX_TAIL_S}")
    # Where the results go is checked before anything loads: a bad path must not cost the run.
    check_distinct_files([("--input", input), ("--output", output)] + ([("--timeline", timeline)] if timeline else []))
    check_output_path(output, "--output")
    if timeline:
        check_output_path(timeline, "--timeline")
    settings = run_settings(frontend=frontend, checkpoint=checkpoint, llm=llm, llm_url=llm_url, llm_model=llm_model,
                            asr=asr, policy=policy, device=device, dtype=dtype, int8=int8)
    source = AudioFileSource(input, tail)  # checks the file now; read block by block during the run
    script = load_oracle_script(oracle_file) if oracle_file else []
    bus = EventBus()
    bus.subscribe(ErrorPrinter())
    kame = KameOptions(temperature, seed, threads, replay_stale_oracle)
    try:
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(source.close)
            session = build_session(settings, bus, backend=None if llm is not None else no_backend, kame=kame)
            cleanup.callback(session.close)  # when it fails before the outputs exist
            if oracle_file and session.frontend.kind == "kame":
                check_script_tokens(script, session.frontend.text_card, oracle_file)  # type: ignore[attr-defined]
            # A back-end is paced at real time by default, so ASR and LLM timings are real.
            source.realtime = session.backend is not None if realtime is None else realtime
            past_end = RepeatedWarning(log, "oracle entry for frame %d is past the end of the audio (%d frames): ignored", progress=False)
            for entry in script:
                if entry.frame >= source.frames_total:
                    past_end(entry.frame, source.frames_total)
            past_end.flush()
            if timeline:
                bus.subscribe(cleanup.enter_context(_complete_or_aborted(TimelineWriter(timeline))))
            sink = cleanup.enter_context(_complete_or_aborted(WavSink(output)))
            cleanup.callback(session.close)  # first: its last events reach the outputs before they close
            with terminate_as_exit():
                session.run(source, sink, script)
    except OSError as e:  # a full disk, a file size limit, a folder that went away
        raise OutputError(f"could not write the results ({e.strerror or e}); free some disk space or pick "
                          "another --output / --timeline") from None
    frames = sink.frames_written
    typer.echo(f"wrote {output} ({frames} frames)" + (f" and {timeline}" if timeline else ""), err=True)


MAX_TAIL_S = 3600.0  # an hour of silence after the input: more is a typo


@contextlib.contextmanager
def _complete_or_aborted(part):
    """Close an output when the run completes; abort it when the run fails (nothing
    half-written is left behind)."""
    try:
        yield part
        part.close()
    except BaseException:
        part.abort()
        raise


def check_distinct_files(files: list[tuple[str, Path]]) -> None:
    """Refuse an output that is the input or another output (the same file once links are
    resolved): the reply would replace the recording, or the timeline the reply."""
    for k, (later, path) in enumerate(files):
        for earlier, other in files[:k]:
            if _same_file(path, other):
                what = "the input" if earlier == "--input" else f"the {earlier} file"
                raise OutputError(f"{later} {path} is {what} ({other}): it would be overwritten; "
                                  f"pick another {later} path")


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return a.samefile(b)  # hard links too
    return a.resolve() == b.resolve()


def check_output_path(path: Path, option: str) -> None:
    """Fail now, with the fix, if `path` cannot take an output file."""
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name, e.g. {path / 'reply.wav'}")
    if path.exists() and not path.is_file():
        return  # /dev/stdout, a pipe: written straight through
    folder = path.parent
    try:  # the real test (permission bits do not tell root or a read-only disk apart)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputError(f"{option}: cannot write in the folder {folder} ({e.strerror or e}); pick another path") from None


class ErrorPrinter:
    """Every distinct `error` event once on stderr, in the words of the app's banner: a run whose
    LLM is down still finishes, but says why it answered nothing."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, stamped) -> None:
        from kame_desktop.errors import error_text
        from kame_desktop.events import ErrorEvent

        e = stamped.event
        if isinstance(e, ErrorEvent) and (e.source, e.message) not in self._seen:
            self._seen.add((e.source, e.message))
            typer.echo(f"error: {error_text(e.source, e.message)}", err=True)


@contextlib.contextmanager
def terminate_as_exit():
    """SIGTERM (a service manager, `kill`) ends the run like Ctrl-C does: the cleanup runs and
    no temp file is left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        typer.echo("error: stopped by SIGTERM; no output was written", err=True)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def gui() -> None:
    """Open the desktop app (a second launch raises the running window)."""
    from kame_desktop.gui.app import main as gui_main

    raise typer.Exit(gui_main())


@app.command()
def doctor(
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check this machine: one line per check (ok, warn or fail) with the fix. Exit code 0: ready;
    1: usable but degraded (no GPU → lite, no microphone, the cloud LLM down); 2: cannot run."""
    from kame_desktop.doctor import exit_code, render_json, render_text, run_checks

    checks = run_checks()
    typer.echo(render_json(checks) if json_output else render_text(checks))
    raise typer.Exit(exit_code(checks))


@app.command("qt-probe", hidden=True)
def qt_probe() -> None:
    """For `doctor`: open a Qt application (a missing platform plugin aborts this process)."""
    from PySide6.QtCore import qVersion
    from PySide6.QtGui import QGuiApplication

    qt = QGuiApplication(sys.argv[:1])
    typer.echo(f"qt-platform: {qt.platformName()} (Qt {qVersion()})")


@app.command("install-desktop-entry")
def install_desktop_entry_cmd() -> None:
    """Linux: add kame-desktop to the desktop's launcher (a .desktop file and the icon in your
    home folder), so it opens by double-click."""
    from kame_desktop.desktop import install_desktop_entry

    for path in install_desktop_entry():
        typer.echo(f"wrote {path}", err=True)


@app.command("make-tiny-checkpoint")
def make_tiny_checkpoint_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder to write the checkpoint into.")],
    dim: Annotated[int, typer.Option(help="LM width.")] = 32,
    num_layers: Annotated[int, typer.Option(help="Temporal transformer layers.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a random tiny KAME checkpoint in the released layout (runs in real time on a CPU)."""
    from kame_desktop.frontend.kame.tiny import make_tiny_checkpoint

    make_tiny_checkpoint(folder, dim=dim, num_layers=num_layers, seed=seed)
    typer.echo(f"wrote a tiny KAME checkpoint to {folder}", err=True)


@bench_app.command("frontend")
def bench_frontend(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    steps: Annotated[int, typer.Option(help="Timed LM steps per variant (at least 200 for the report).")] = 200,
    threads: Annotated[int, typer.Option(help="CPU threads for torch.")] = 2,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto; meta with --shape 7b: the plan only.")] = "cpu",
    shape: Annotated[
        str, typer.Option(help="tiny (oracle overhead) or 7b (Moshi-7B shape, random weights: frame time vs 80 ms).")
    ] = "tiny",
    int8: Annotated[bool, typer.Option("--int8", help="With --shape 7b: int8 temporal layers (CUDA).")] = False,
) -> None:
    """Overhead of the oracle path (our engine's LM step vs a bare moshi LMGen step), or with
    --shape 7b the frame time and memory of a Moshi-7B-sized front-end on a GPU."""
    from kame_desktop.bench.frontend import run_bench

    _print_bench(run_bench(steps=steps, threads=threads, device=device, shape=shape, int8=int8), json_output)


@bench_app.command("oracle-lag")
def bench_oracle_lag(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    questions: Annotated[int, typer.Option(
        help="How many espeak-ng utterances: short questions and longer requests in turn (each runs once per policy).")] = 12,
    threads: Annotated[int, typer.Option(help="Threads for each of torch, whisper and llama.cpp.")] = 1,
    llm_url: Annotated[
        str | None, typer.Option(help="An OpenAI-compatible server instead of the embedded LLM (adds the cancel-at-ask arm).")
    ] = None,
    scripted_llm: Annotated[
        bool, typer.Option("--scripted-llm", help="A scripted cloud-like LLM on 127.0.0.1 (300–900 ms first token, 40 words/s).")
    ] = False,
    asr_model: Annotated[
        str | None, typer.Option(help="A Whisper model instead of the app's default ('auto', 'tiny.en', 'base', a folder).")
    ] = None,
) -> None:
    """Oracle lag (end of a user word → first oracle token that includes it): reactive vs polling;
    with a server, adopting answers on their first text vs cancelling at ask (oracle_gap_share)."""
    from kame_desktop.bench.oracle_lag import run_bench

    if llm_url and scripted_llm:
        raise typer.BadParameter("give --llm-url or --scripted-llm, not both")
    _print_bench(run_bench(questions=questions, threads=threads, llm_url=llm_url, scripted_llm=scripted_llm,
                           asr_model=asr_model), json_output)


@bench_app.command("lite")
def bench_lite(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    questions: Annotated[
        int, typer.Option(help="How many Piper-spoken questions (each runs every arm: speculation, none, cascade, previous).")
    ] = 10,
    llm_model: Annotated[
        str | None, typer.Option(help="An embedded LLM name or a GGUF file instead of the app's default.")
    ] = None,
    asr_model: Annotated[
        str | None, typer.Option(help="A Whisper model instead of the app's default ('auto', 'tiny.en', 'base', a folder).")
    ] = None,
    memory_items: Annotated[
        int, typer.Option(min=0, max=22, help="Also run the headline with memory on and this many items stored (memory_*).")
    ] = 0,
) -> None:
    """Lite front-end response latency (end of user speech → first answer sample): with speculation vs
    without, vs the plain cascade and the previous defaults; what was heard; mid-sentence pauses cut off."""
    from kame_desktop.bench.lite import run_bench

    _print_bench(run_bench(questions=questions, llm_model=llm_model, asr_model=asr_model, memory_items=memory_items),
                 json_output)


@bench_app.command("idle")
def bench_idle(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    seconds: Annotated[float, typer.Option(help="Seconds of silence fed to the idle lite session.")] = 60.0,
) -> None:
    """Idle cost of a lite session fed silence (% of one core), and the time to listening, cold and warm."""
    from kame_desktop.bench.idle import run_bench

    _print_bench(run_bench(seconds=seconds), json_output)


@bench_app.command("wake")
def bench_wake(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
) -> None:
    """Each wake word: detection rate (Piper, espeak-ng), false wakes in 30 min of speech, the CPU
    waiting costs and wake → listening latency; the default word's figures at the top level."""
    from kame_desktop.bench.wake import run_bench

    _print_bench(run_bench(), json_output)


@bench_app.command("unclear")
def bench_unclear(
    json_output: Annotated[bool, typer.Option("--json", help="Print only the JSON object on stdout.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N `facts` questions.")] = None,
    snr_db: Annotated[float, typer.Option(help="Speech-to-noise ratio of the `noise` condition, in dB.")] = -10.0,
    conditions: Annotated[str, typer.Option(help="Comma-separated: clean, noise, noise_snr-5, noise_snr0, cut.")] = (
        "clean,noise,noise_snr-5,noise_snr0,cut"),
    details: Annotated[bool, typer.Option(help="Every question's heard words and scores in the JSON.")] = False,
) -> None:
    """"Didn't catch that": how often the companion asks to repeat the `facts` questions (Piper)
    clean, with noise over their end, and cut mid-word, through the app's Whisper and rule."""
    from kame_desktop.bench.unclear import CONDITIONS, run_bench

    chosen = tuple(c.strip() for c in conditions.split(",") if c.strip())
    if unknown := [c for c in chosen if c not in CONDITIONS]:
        raise typer.BadParameter(f"unknown condition {unknown[0]!r}; choose from {', '.join(CONDITIONS)}")
    _print_bench(run_bench(limit=limit, snr_db=snr_db, conditions=chosen, details=details), json_output)


def _print_bench(result: dict, json_output: bool) -> None:
    import json

    if not json_output:
        for key, value in result.items():
            typer.echo(f"{key:>30}: {value}", err=True)
    typer.echo(json.dumps(result))


def main() -> None:
    try:
        app()
    except KameError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
