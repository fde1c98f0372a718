"""Rollout wave membership: which wave each planned key launches in. Named waves first (a key
list or glob, or an expression over the item), a key in the first that names it; then the
sized waves (counts, percentages of the whole plan, "rest") over the sessions left, ranked by
the hash of their key; anything left after the last wave forms a final wave."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher.spec.model import NamedWave, Rollout
from launcher.spec.templating import Rule, TemplateFailure


@dataclass(frozen=True)
class Member:
    """A planned session as wave membership sees it."""

    key: str
    rank: str  # its identity tag: the hash of (campaign, key), a stable random order
    item: Any


def wave_sizes(sizes: Sequence[int | str], total: int, left: int | None = None) -> list[int]:
    """How many sessions each sized wave holds: percentages are of `total` (the plan), counts
    are cut to the `left` sessions still to place (default: all); empty waves are dropped."""
    out: list[int] = []
    left = total if left is None else left
    for size in sizes:
        if left <= 0:
            break
        if size == "rest":
            n = left
        elif isinstance(size, str):
            n = max(1, math.ceil(total * float(size[:-1]) / 100))
        else:
            n = size
        n = min(n, left)
        out.append(n)
        left -= n
    if left > 0:
        out.append(left)
    return out


def compile_when(source: str) -> Rule:
    """A named wave's `when`, compiled (TemplateFailure when it cannot be)."""
    return Rule(source)


def named(wave: NamedWave, member: Member, rule: Rule | None) -> bool:
    """Whether a named wave names this session (an expression that fails to evaluate does not)."""
    if wave.keys is not None:
        return any(fnmatch.fnmatchcase(member.key, g) for g in wave.keys)
    if rule is None:
        return False
    values = {"item": member.item, "output": None, "pull_requests": [], "status": None}
    try:
        return rule.evaluate({**values, "status_detail": None})
    except TemplateFailure:
        return False


def assign(rollout: Rollout, members: Sequence[Member]) -> dict[str, int]:
    """Each key's wave number, 1-based and without gaps (a named wave that names no session,
    refused at plan time, would otherwise leave one)."""
    number: dict[str, int] = {}
    waves = list(rollout.waves)
    named_waves = [w for w in waves if isinstance(w, NamedWave)]
    for i, w in enumerate(named_waves, 1):
        rule = compile_when(w.when) if w.when is not None else None
        for m in members:
            if m.key not in number and named(w, m, rule):
                number[m.key] = i
    sizes = [w for w in waves if not isinstance(w, NamedWave)]
    left = sorted((m for m in members if m.key not in number), key=lambda m: (m.rank, m.key))
    start = 0
    for j, n in enumerate(wave_sizes(sizes, len(members), len(left)), len(named_waves) + 1):
        for m in left[start : start + n]:
            number[m.key] = j
        start += n
    compact = {n: i for i, n in enumerate(sorted(set(number.values())), 1)}
    return {k: compact[n] for k, n in number.items()}


def wave_problems(
    rollout: Rollout, members: Sequence[Member]
) -> list[tuple[tuple[str | int, ...], str, str | None]]:
    """(location, message, hint) of each named wave whose expression does not compile or
    that names no session of the plan: refused at plan time, not found out at apply."""
    out: list[tuple[tuple[str | int, ...], str, str | None]] = []
    for i, w in enumerate(rollout.waves):
        if not isinstance(w, NamedWave):
            continue
        rule = None
        if w.when is not None:
            try:
                rule = compile_when(w.when)
            except TemplateFailure as exc:
                message = exc.message.replace("success rule", "wave expression")
                out.append((("rollout", "waves", i, "when"), message, exc.hint))
                continue
        if not any(named(w, m, rule) for m in members):
            hint = f"keys look like {', '.join(m.key for m in members[:3])}"
            out.append(
                (
                    ("rollout", "waves", i),
                    f"wave {i + 1} names no session of the plan",
                    hint + ("; `when` sees `item`" if w.when else ""),
                )
            )
    return out
