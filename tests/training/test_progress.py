"""The progress report counts finished steps and, off a terminal, prints plain lines (issue 15)."""

import io

from distill_jax.training.progress import Progress


def test_the_bar_moves_only_when_steps_are_known_to_be_finished():
    stream = io.StringIO()
    progress = Progress(100, 20, interactive=True, file=stream)  # Resumed at step 20.
    assert progress.bar.n == 20
    line = progress.finished(30, 10, seconds=5.0, loss=1.5)
    assert progress.bar.n == 30 and progress.lines == []  # A terminal gets the bar, not lines.
    assert line.startswith("train: step 30/100 (30%) 2.00 steps/s, ETA 0:00:35, loss 1.5000")
    progress.close()


def test_off_a_terminal_each_interval_is_one_plain_line():
    progress = Progress(12, 0, interactive=False, file=io.StringIO())
    for step in (4, 8, 12):
        progress.finished(step, 4, seconds=2.0, loss=2.0)
    assert [line.split(",")[0] for line in progress.lines] == [
        "train: step 4/12 (33%) 2.00 steps/s",
        "train: step 8/12 (67%) 2.00 steps/s",
        "train: step 12/12 (100%) 2.00 steps/s",
    ]
    assert all("\r" not in line for line in progress.lines) and progress.lines[-1].split(", ")[1] == "ETA 0:00:00"
    progress.close()
