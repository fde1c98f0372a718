"""Progress on stderr: periodic plain lines without a terminal, a live bar with one."""

from __future__ import annotations

import io

from launcher.run.summary import Result
from launcher.views.progress import ProgressReporter


def test_plain_lines_without_a_terminal_carry_counts_by_outcome() -> None:
    stream = io.StringIO()
    rep = ProgressReporter("apply", stream=stream, every=0.0, force_terminal=False)
    rep.start(3)
    rep.advance("a", Result.created)
    rep.advance("b", Result.failed)
    rep.advance("c", Result.created)
    rep.note("something worth knowing")
    rep.finish()
    text = stream.getvalue()
    assert "apply: 3 to do" in text
    assert "apply: 2/3" in text and "created=1 failed=1" in text
    assert text.rstrip().endswith("apply: 3/3 created=2 failed=1")
    assert "note: something worth knowing" in text


def test_a_terminal_gets_a_live_bar_with_done_total_and_counts() -> None:
    stream = io.StringIO()
    rep = ProgressReporter("apply", stream=stream, force_terminal=True)
    rep.start(2)
    rep.advance("a", Result.created)
    rep.advance("b", Result.adopted)
    rep.finish()
    text = stream.getvalue()
    assert "2/2" in text and "adopted=1 created=1" in text
    assert "\x1b[" in text  # drawn with terminal control sequences, not plain lines
    assert "to do" not in text
