"""Session identity: how a launched session carries its (campaign, key, attempt) and the
fingerprint it was launched from, so apply finds it again without an idempotency key: as tags
(`identity: tags`, the default) or as a readable title suffix (`identity: title`), for orgs
whose session-tag allow-list cannot hold one tag per session."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any, Literal

from launcher.api.models import Session

IdentityMode = Literal["tags", "title"]
KEY_TAG_PREFIX = "fleet-key:"
FP_TAG_PREFIX = "fleet-fp:"
ATTEMPT_TAG_PREFIX = "fleet-attempt:"
# `... [fleet 1a2b3c4d5e6f7a8b fp 0a1b2c3d]`, `... [fleet 1a2b3c4d5e6f7a8b fp 0a1b2c3d attempt 2]`:
# the same 16 hex as the `fleet-key:` tag (8 would collide at ~1% in a 10,000-session campaign).
TITLE_SUFFIX = re.compile(r" ?\[fleet ([0-9a-f]{16})(?: fp ([0-9a-f]{8}))?(?: attempt ([0-9]+))?\]$")


def fingerprint_tag(fingerprint: str) -> str:
    """`fleet-fp:<first 8 hex of the fingerprint>`: what a session was launched from."""
    return f"{FP_TAG_PREFIX}{fingerprint[:8]}"


def attempt_of(tags: Sequence[str]) -> int:
    """The launch attempt a session's tags (or `markers`) name (1 when none is named)."""
    for t in tags:
        if t.startswith(ATTEMPT_TAG_PREFIX) and t[len(ATTEMPT_TAG_PREFIX) :].isdigit():
            return int(t[len(ATTEMPT_TAG_PREFIX) :])
    return 1


def markers(tags: Sequence[str], title: str | None) -> tuple[str, ...]:
    """A session's identity markers as tags: its own tags, plus the ones its title suffix
    stands for. Both modes are read always, so a campaign that switched mode still matches."""
    m = TITLE_SUFFIX.search(title or "")
    if m is None:
        return tuple(tags)
    extra = [f"{KEY_TAG_PREFIX}{m[1]}"]
    if m[2]:
        extra.append(f"{FP_TAG_PREFIX}{m[2]}")
    if m[3] and int(m[3]) >= 2:
        extra.append(f"{ATTEMPT_TAG_PREFIX}{m[3]}")
    return (*tags, *extra)


def session_markers(session: Session) -> tuple[str, ...]:
    """`markers` of a session the API returned."""
    return markers(session.tags, session.title)


def stamp(
    request: dict[str, Any], mode: IdentityMode, identity_tag: str, fingerprint: str, attempt: int
) -> dict[str, Any]:
    """The request carrying its identity (any earlier stamp replaced): with `tags`, the identity
    tag plus `fleet-fp:<8 hex>` and, from attempt 2, `fleet-attempt:<n>`; with `title`, only
    the tags the request had (the campaign tag among them) and the title suffix."""
    out = dict(request)
    own = (FP_TAG_PREFIX, ATTEMPT_TAG_PREFIX, KEY_TAG_PREFIX)
    tags = [t for t in out.get("tags", []) if not t.startswith(own)]
    if mode == "tags":
        tags += [identity_tag, fingerprint_tag(fingerprint)]
        if attempt >= 2:
            tags.append(f"{ATTEMPT_TAG_PREFIX}{attempt}")
    else:
        suffix = f"[fleet {identity_tag.removeprefix(KEY_TAG_PREFIX)} fp {fingerprint[:8]}"
        suffix += f" attempt {attempt}]" if attempt >= 2 else "]"
        title = TITLE_SUFFIX.sub("", str(out.get("title") or "")).rstrip()
        out["title"] = f"{title} {suffix}" if title else suffix
    out["tags"] = tags
    return out


def lookup_tag(mode: str, campaign_tag: str, identity_tag: str) -> str:
    """The tag a session is looked up by: its identity tag, or with `identity: title` the
    campaign tag (the identity is in the title: matched by `carrying`, a listing per lookup)."""
    return campaign_tag if mode == "title" else identity_tag


def carrying(
    sessions: Sequence[Session], identity_tag: str, attempt: int, known: Collection[str] = ()
) -> list[Session]:
    """The sessions that carry `identity_tag` at `attempt` (in tags or title) and are not
    `known` already, earliest first (then by id: the order every machine agrees on)."""
    return sorted(
        (
            x
            for x in sessions
            if x.session_id not in known
            and identity_tag in (marks := session_markers(x))
            and attempt_of(marks) == attempt
        ),
        key=lambda x: (x.created_at, x.session_id),
    )
