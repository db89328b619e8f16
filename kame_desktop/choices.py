"""Every set of choices the settings, the CLI and the settings dialog offer, defined once.

Torch-free and dependency-free, so the GUI, the CLI's option checks and the download code can
import it without loading a model. Each set is a `Literal` alias (for type hints) and the tuple
of its values (for validation and combo boxes), derived from the alias so the two never drift.
"""

from __future__ import annotations

from typing import Literal, get_args

from kame_desktop.errors import ChoiceError

FrontEndKind = Literal["auto", "kame", "lite"]
FRONTEND_KINDS: tuple[str, ...] = get_args(FrontEndKind)

# The LLM and ASR providers, by the names settings.toml and the command line use: the code
# compares against these names, never a typed string, so a new provider is its entry here plus
# its module (built in backend/factory.py). tests/unit/test_choices.py keeps each Literal and its
# names in step.
LOCAL_LLM = "local"  # llama.cpp in process (backend/llm/local.py)
OPENAI_LLM = "openai"  # any OpenAI-compatible server at the base URL, sent the stored API key
LlmKind = Literal["local", "openai"]
LLM_KINDS: tuple[str, ...] = get_args(LlmKind)
LLM_LABELS = {LOCAL_LLM: "Local (llama.cpp, in process)", OPENAI_LLM: "OpenAI-compatible server"}

WHISPER_ASR = "whisper"  # faster-whisper on this machine
OPENAI_ASR = "openai"  # OpenAI's transcriptions API (or the LLM's server's)
KYUTAI_ASR = "kyutai-stt"  # Kyutai's streaming STT (GPU)
# The LLMs that come embedded (PyPI packages), by the name the GGUF field takes; the first is
# the default (README "Choosing the embedded LLM": it knows the most).
EmbeddedLlm = Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"]
EMBEDDED_LLMS: tuple[str, ...] = get_args(EmbeddedLlm)
DEFAULT_LOCAL_MODEL = EMBEDDED_LLMS[0]

AsrKind = Literal["whisper", "openai", "kyutai-stt"]
ASR_KINDS: tuple[str, ...] = get_args(AsrKind)

Policy = Literal["reactive", "polling", "end_of_turn"]  # when the back-end (re-)asks the LLM
POLICIES: tuple[str, ...] = get_args(Policy)

TurnDetection = Literal["smart", "silence"]  # how the back-end hears that the user has finished
TURN_DETECTIONS: tuple[str, ...] = get_args(TurnDetection)

# How the microphone is heard: while a key is held, always, or after a wake word (for one turn).
ListeningMode = Literal["push_to_talk", "open_mic", "wake_word"]
LISTENING_MODES: tuple[str, ...] = get_args(ListeningMode)
LISTENING_LABELS = {"push_to_talk": "Push to talk", "open_mic": "Open mic", "wake_word": "Wake word"}

# The wake words offered, of those whose models ship in ovos-ww-plugin-wakeforge (audio/wake_word.py:
# its fourth, hey_mycroft_synthetic, heard 0–7 % of `bench wake`'s positives).
WakeWord = Literal["alexa", "wake_up", "hey_mycroft"]
WAKE_WORDS: tuple[str, ...] = get_args(WakeWord)

ComputeDevice = Literal["auto", "cuda", "mps", "cpu"]
COMPUTE_DEVICES: tuple[str, ...] = get_args(ComputeDevice)

Precision = Literal["auto", "bf16", "fp16", "fp32"]  # auto: bf16 on a GPU, fp32 on a CPU
PRECISIONS: tuple[str, ...] = get_args(Precision)

# How the app reaches an MCP server (backend/tools/mcp_servers.py): a program it starts and talks
# to on stdin/stdout, or a streamable-HTTP endpoint.
McpTransport = Literal["stdio", "http"]
MCP_TRANSPORTS: tuple[str, ...] = get_args(McpTransport)

# The cloud LLM the reference uses (spec §8 quirk 9: a setting, with this default).
OPENAI_URL = "https://api.openai.com/v1"
OPENAI_MODEL = "gpt-4.1"
DEFAULT_KAME_REPO = "SakanaAI/kame"

# A KAME checkpoint's file-name keys in config.json and their defaults when absent (spec §1.5);
# None: the file is optional. The loader and the downloader both read the config through these.
CHECKPOINT_NAMES: dict[str, str | None] = {
    "moshi_name": "model.safetensors",
    "mimi_name": "tokenizer-e351c8d8-checkpoint125.safetensors",
    "tokenizer_name": "tokenizer_spm_32k_3.model",
    "mimi_config_name": None,
    "lora_name": None,
}


def one_of(choices: tuple[str, ...]) -> str:
    """The choices as a help text lists them: "a, b or c"."""
    return " or ".join(filter(None, (", ".join(choices[:-1]), choices[-1])))


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` if it is one of `choices`, else a ChoiceError that lists them."""
    if value not in choices:
        raise ChoiceError(f"unknown {what} '{value}'; use one of {', '.join(choices)}")
    return value
