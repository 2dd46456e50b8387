"""The in-epoch progress line: plain periodic lines in a log, an in-place redraw on a terminal."""

from __future__ import annotations

import io

from runtime.progress import ProgressLine, format_duration
from training.events import Position


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(line: ProgressLine, clock: FakeClock, epoch: int, batches: range, per_epoch: int) -> None:
    for batch in batches:
        clock.now += 1.0  # one second per step, 64 samples per step
        line.update(Position(epoch, batch, epoch * per_epoch + batch), per_epoch, 64)


def test_a_log_gets_a_plain_line_per_interval_with_step_rate_and_time_left() -> None:
    stream, clock = io.StringIO(), FakeClock()
    line = ProgressLine(stream, epochs=8, interactive=False, interval_s=10, clock=clock)
    drive(line, clock, epoch=2, batches=range(1, 101), per_epoch=100)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 9  # every 10 s over 100 s, none at the last step (the epoch line follows)
    assert lines[0] == "progress: epoch 3/8  step 11/100 (11%)  64 samples/s  1m29s left in epoch"
    assert lines[-1].startswith("progress: epoch 3/8  step 91/100 (91%)")
    assert lines[-1].endswith("0m09s left in epoch")


def test_a_terminal_line_is_redrawn_in_place_and_cleared() -> None:
    stream, clock = io.StringIO(), FakeClock()
    line = ProgressLine(stream, epochs=1, interactive=True, interval_s=0.5, clock=clock)
    drive(line, clock, epoch=0, batches=range(1, 5), per_epoch=10)
    assert stream.getvalue().count("\r\033[K") == 3 and "\n" not in stream.getvalue()
    line.clear()
    assert stream.getvalue().endswith("\r\033[K")


def test_after_a_mid_epoch_resume_the_rate_counts_only_steps_seen_here() -> None:
    stream, clock = io.StringIO(), FakeClock()
    line = ProgressLine(stream, epochs=2, interactive=False, interval_s=5, clock=clock)
    drive(line, clock, epoch=1, batches=range(41, 52), per_epoch=50)
    first = stream.getvalue().splitlines()[0]
    assert "step 46/50 (92%)" in first and "64 samples/s" in first and "0m04s left" in first


def test_durations_read_as_a_clock() -> None:
    assert format_duration(5) == "0m05s"
    assert format_duration(3725) == "1h02m05s"
    assert format_duration(-3) == "0m00s"
