"""The paper's latency: end of the user's speech → first audible reply sample.

"Audible" is the rule of `bench lite` (a 20 ms window above −40 dBFS), applied to the session's
output from the moment the question starts to play. The end of the user's speech is known from
the synthesized question. A reply that starts before the question has ended gives a negative
latency: a KAME front-end makes sound from its first frame, so its figure is what was measured,
not a claim that it answered before hearing the question.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from kame_desktop.bench.lite import WINDOW, loud_windows
from kame_desktop.events import SAMPLE_RATE

WINDOW_S = WINDOW / SAMPLE_RATE
LEFTOVER_PAUSE_S = 0.5  # longer than the gaps between words and sentences of one reply


def reply_onset_s(out: np.ndarray, start_s: float) -> float | None:
    """Time (in `out`'s clock) of the first loud window at or after `start_s`. A sound that was
    still running when the turn started (the previous reply, cut by the user's barge-in or still
    going: loud within LEFTOVER_PAUSE_S before `start_s`) is skipped up to its first pause of
    LEFTOVER_PAUSE_S; speech has shorter gaps between its words. None: nothing audible."""
    loud = loud_windows(out)
    first = round(start_s / WINDOW_S)
    pause = round(LEFTOVER_PAUSE_S / WINDOW_S)
    prior = loud[loud < first]
    if len(prior) and first - prior[-1] <= pause:
        run = loud[loud >= prior[-1]]
        pauses = np.flatnonzero(np.diff(run) > pause)
        later = run[pauses[0] + 1 :] if len(pauses) else run[:0]
    else:
        later = loud[loud >= first]
    return float(later[0] * WINDOW_S) if len(later) else None


def turn_latency_ms(before: np.ndarray, turn: np.ndarray, speech_end_s: float) -> float | None:
    """Latency of one turn from its reply audio (`turn`, from the moment the question starts;
    speech end relative to that), with the output just `before` it so that a sound still running
    from the previous reply is recognised as such."""
    n = min(len(before), round(LEFTOVER_PAUSE_S * SAMPLE_RATE)) // WINDOW * WINDOW  # whole windows
    lead = before[len(before) - n :]
    return latency_ms(np.concatenate([lead, turn]), len(lead) / SAMPLE_RATE, len(lead) / SAMPLE_RATE + speech_end_s)


def latency_ms(out: np.ndarray, start_s: float, speech_end_s: float) -> float | None:
    """Latency of the reply to a question played from `start_s` whose speech ends at
    `speech_end_s` (both in `out`'s clock); negative when the reply starts earlier."""
    onset = reply_onset_s(out, start_s)
    return None if onset is None else round((onset - speech_end_s) * 1000, 1)


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def p90(values: Sequence[float]) -> float | None:
    return round(float(np.percentile(values, 90)), 1) if values else None
