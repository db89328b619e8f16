"""OracleStream frame by frame (spec §2.2–2.4)."""

from kame_desktop.frontend.kame.oracle import OracleStream

START, PAD = 48, 3


def fed(stream: OracleStream, steps: range) -> list[int]:
    return [stream.select(s) for s in steps]


def test_empty_stream_feeds_pad():
    stream = OracleStream(START, PAD)
    assert fed(stream, range(5)) == [PAD] * 5


def test_reset_feeds_start_at_next_step_then_tokens_one_per_frame():
    stream = OracleStream(START, PAD)
    stream.reset(step=2, request=7)
    assert stream.append([10, 11], step=2) == 0
    assert fed(stream, range(7)) == [PAD, PAD, START, 10, 11, PAD, PAD]
    assert stream.request == 7


def test_worked_example_of_the_spec():
    stream = OracleStream(START, PAD)
    ids, late = [], {}
    updates = {2: ("reset", [10, 11]), 4: (None, [12]), 8: (None, [13, 14]), 10: ("reset", [])}
    for step in range(13):
        if step in updates:
            reset, tokens = updates[step]
            if reset:
                stream.reset(step)
            late[step] = stream.append(tokens, step)
        ids.append(stream.select(step))
    assert ids == [3, 3, 48, 10, 11, 12, 3, 3, 3, 3, 48, 3, 3]
    assert late == {2: 0, 4: 0, 8: 2, 10: 0}


def test_late_tokens_are_dropped_not_shifted_and_later_ones_keep_their_slots():
    stream = OracleStream(START, PAD)
    stream.reset(step=0)
    # Slots 1, 2, 3, 4: the first two are already past at step 3.
    assert stream.append([20, 21, 22, 23], step=3) == 2
    assert fed(stream, range(3, 6)) == [22, 23, PAD]


def test_reset_mid_answer_discards_the_old_tail():
    stream = OracleStream(START, PAD)
    stream.reset(step=0, request=1)
    stream.append([20, 21, 22, 23, 24], step=0)
    assert fed(stream, range(3)) == [START, 20, 21]
    stream.reset(step=3, request=2)
    stream.append([30], step=3)
    assert fed(stream, range(3, 7)) == [START, 30, PAD, PAD]
    assert stream.request == 2


def test_append_without_reset_starts_a_run_and_empty_append_is_a_no_op():
    stream = OracleStream(START, PAD)
    assert stream.append([], step=4) == 0
    assert stream.tokens is None
    stream.append([9], step=4)
    assert fed(stream, range(4, 7)) == [START, 9, PAD]


def test_clear_forgets_the_run():
    stream = OracleStream(START, PAD)
    stream.reset(step=0, request=3)
    stream.append([9, 9], step=0)
    stream.clear()
    assert fed(stream, range(4)) == [PAD] * 4
    assert stream.request is None
