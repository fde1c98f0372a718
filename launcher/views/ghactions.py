"""GitHub Actions' files and conventions: step outputs with multi-line-safe delimiters, the step
summary within its 1 MiB, at most 10 error annotations a step, and the pull request of an event."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from launcher.views.markdown import SUMMARY_LIMIT, fit_markdown, size

MAX_ANNOTATIONS = 10  # GitHub shows at most 10 error annotations per step
SUMMARY_HINT = "the rest is in this step's log"


def output_block(name: str, value: str) -> str:
    """`name<<DELIM ... DELIM`: safe for any value, multi-line included (the delimiter is random
    and checked not to occur in the value, so a value cannot set other outputs)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"not an output name: {name!r}")
    while True:
        delim = f"ghadelimiter_{secrets.token_hex(16)}"
        if delim not in value:
            return f"{name}<<{delim}\n{value}\n{delim}\n"


def write_outputs(path: str | Path | None, outputs: Mapping[str, str]) -> None:
    """Append outputs to `$GITHUB_OUTPUT` (nothing outside a workflow)."""
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        for name, value in outputs.items():
            f.write(output_block(name, value))


def append_summary(path: str | Path | None, text: str, *, limit: int = SUMMARY_LIMIT) -> str:
    """Append markdown to `$GITHUB_STEP_SUMMARY`, cut so the file stays under `limit` bytes;
    what was written (nothing outside a workflow)."""
    if not path:
        return ""
    p = Path(path)
    have = p.stat().st_size if p.exists() else 0
    room = limit - have - 64  # a margin for the separating blank line
    if room <= 200:
        return ""
    fitted = fit_markdown(text, room, unit="bytes", more=SUMMARY_HINT)
    with open(p, "a", encoding="utf-8") as f:
        f.write(("\n" if have else "") + fitted)
    assert size(fitted, "bytes") <= room
    return fitted


def cap_annotations(lines: Sequence[str], limit: int = MAX_ANNOTATIONS) -> list[str]:
    """At most `limit` `::error` lines: past it, the first `limit - 1` and one that counts the
    rest (GitHub would drop them silently). Other lines pass through."""
    errors = [ln for ln in lines if ln.startswith("::error")]
    if len(errors) <= limit:
        return list(lines)
    keep = set(errors[: limit - 1])
    out = [ln for ln in lines if not ln.startswith("::error") or ln in keep]
    rest = len(errors) - (limit - 1)
    out.append(
        f"::error title=devin-fleet::{rest} more problem(s) not annotated (GitHub shows "
        f"{limit} a step): every problem is in this step's log"
    )
    return out


def event_pr(event_path: str | Path | None) -> int | None:
    """The pull request of the event that started the workflow (`$GITHUB_EVENT_PATH`):
    pull_request / pull_request_target, or an issue comment on a pull request."""
    if not event_path:
        return None
    try:
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(event, dict):
        return None
    pr = event.get("pull_request")
    if isinstance(pr, dict) and isinstance(pr.get("number"), int):
        return int(pr["number"])
    issue = event.get("issue")
    if isinstance(issue, dict) and issue.get("pull_request") and isinstance(issue.get("number"), int):
        return int(issue["number"])
    return None
