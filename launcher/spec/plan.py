"""The plan: an ordered, deterministic list of the sessions a campaign would create (built by
`spec.build` from a manifest), and the tags that identify a launch.

Per session: its key, its two identity tags, a fingerprint of the canonical request, and the
exact create-session body (secret values as "***": they are read from the environment only
when sessions are launched).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json

from launcher.errors import SecretError
from launcher.spec.diff import stored_request
from launcher.spec.digest import digest_of
from launcher.spec.identity import ATTEMPT_TAG_PREFIX as ATTEMPT_TAG_PREFIX
from launcher.spec.identity import FP_TAG_PREFIX as FP_TAG_PREFIX
from launcher.spec.identity import KEY_TAG_PREFIX as KEY_TAG_PREFIX
from launcher.spec.identity import attempt_of as attempt_of
from launcher.spec.identity import fingerprint_tag as fingerprint_tag
from launcher.spec.manifest import (
    LoadedManifest,
)
from launcher.spec.templating import Rule

# The tags devin-fleet adds to every session (the tag budget, documented in the README):
# `fleet:<campaign>`, `fleet-key:<16 hex>` (identity), `fleet-fp:<8 hex>` (the fingerprint, so a
# ledger rebuilt from the API tells `=` from `~`), and `fleet-attempt:<n>` reserved for
# relaunches (attempt 1 carries none). A manifest may set the rest of the API's 50.
LAUNCHER_TAGS = 4
IDENTITY_TAGS = LAUNCHER_TAGS  # kept for importers of the old name


def campaign_tag(campaign: str) -> str:
    """The tag every session of a campaign carries: `fleet:<campaign>`."""
    return f"fleet:{campaign}"


def item_tag(campaign: str, key: str) -> str:
    """The tag that identifies one planned session: `fleet-key:<16 hex of sha256(campaign, key)>`.

    Short, deterministic and unique per (campaign, key): it is how apply finds a session whose
    create call failed ambiguously, since the API has no idempotency key.
    """
    digest = hashlib.sha256(f"{campaign}\x00{key}".encode()).hexdigest()[:16]
    return f"{KEY_TAG_PREFIX}{digest}"


@dataclass(frozen=True)
class PlannedSession:
    """One session the plan would create."""

    key: str
    fleet: str
    index: int
    item: Any
    origin: str
    tags: tuple[str, str]  # identity tags: (campaign tag, item tag)
    fingerprint: str
    request: dict[str, Any]  # the body, secret values replaced by "***"
    secret_env: tuple[tuple[int, str], ...] = ()  # (session_secrets index, env var name)
    attempt: int = 1  # the launch attempt (a relaunch's request carries `fleet-attempt:<n>`)

    @property
    def identity_tag(self) -> str:
        return self.tags[1]

    @property
    def stored(self) -> dict[str, Any]:
        """The request as the ledger keeps it (`diff.stored_request`)."""
        return stored_request(self.request, self.secret_env, FP_TAG_PREFIX)

    def body(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The request to send, with secret values read from the environment (never stored)."""
        if not self.secret_env:
            return self.request
        env = os.environ if environ is None else environ
        missing = [name for _, name in self.secret_env if name not in env]
        if missing:
            raise SecretError(missing)
        body = dict(self.request)
        secrets = [dict(s) for s in body["session_secrets"]]
        for i, name in self.secret_env:
            secrets[i]["value"] = env[name]
        body["session_secrets"] = secrets
        return body

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fleet": self.fleet,
            "fingerprint": self.fingerprint,
            # the identity tags sent (with `identity: title` only the campaign tag: the key
            # travels in the title), as `request.tags` has them
            "tags": [t for t in self.tags if t in self.request.get("tags", ())],
            "request": self.request,
        }


@dataclass(frozen=True)
class Plan:
    """An ordered plan of a campaign's sessions."""

    campaign: str
    manifest: LoadedManifest
    sessions: tuple[PlannedSession, ...]
    warnings: tuple[str, ...] = ()
    schemas: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # fleet -> schema
    rules: dict[str, Rule] = field(default_factory=dict)  # fleet -> compiled success_when

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def campaign_tag(self) -> str:
        return campaign_tag(self.campaign)

    @property
    def total_acu(self) -> int:
        return sum(s.request.get("max_acu_limit") or 0 for s in self.sessions)

    def totals(self) -> dict[str, Any]:
        budget = self.manifest.manifest.budget
        return {
            "sessions": len(self.sessions),
            "max_sessions": budget.max_sessions,
            "acu": self.total_acu,
            "max_total_acu": budget.max_total_acu,
            "unbounded_acu_sessions": sum(1 for s in self.sessions if "max_acu_limit" not in s.request),
        }

    @property
    def digest(self) -> str:
        """`sha256:...` of what apply would send (see `launcher.spec.digest`)."""
        return digest_of(self.campaign, self.fingerprints().items())

    def fingerprints(self) -> dict[str, str]:
        return {s.key: s.fingerprint for s in self.sessions}

    def secret_env_names(self) -> list[str]:
        return sorted({name for s in self.sessions for _, name in s.secret_env})

    def missing_secret_env(self, environ: Mapping[str, str] | None = None) -> list[str]:
        env = os.environ if environ is None else environ
        return [n for n in self.secret_env_names() if n not in env]

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "digest": self.digest,
            "sessions": [s.to_json() for s in self.sessions],
            "totals": self.totals(),
            "warnings": list(self.warnings),
        }

    def by_key(self) -> dict[str, PlannedSession]:
        return {s.key: s for s in self.sessions}

    def json_chunks(
        self,
        extras: Sequence[Mapping[str, Any]] | None = None,
        gone: Sequence[str] | None = None,
        *,
        batch: int = 1000,
    ) -> Iterator[bytes]:
        """`to_json()` as UTF-8 JSON, one line, in chunks of `batch` sessions: what `plan -o
        json` prints. With `extras` (one mapping per session: its change, note, changed fields,
        wave) merged into each session, and `gone`, a "gone" list (the ledger's diff).

        pydantic-core's encoder writes bytes straight from the dicts, and a chunk at a time
        never holds the whole document (200 MB for 100,000 sessions) as a str and as bytes.
        """
        head = {"campaign": self.campaign, "digest": self.digest}
        yield to_json(head)[:-1] + b',"sessions":['
        for start in range(0, len(self.sessions), batch):
            entries = [s.to_json() for s in self.sessions[start : start + batch]]
            if extras is not None:
                for entry, extra in zip(entries, extras[start : start + batch], strict=True):
                    entry.update(extra)
            body = to_json(entries)[1:-1]  # the items of the list, without its brackets
            yield (b"," + body) if start else body
        tail: dict[str, Any] = {"totals": self.totals(), "warnings": list(self.warnings)}
        if gone is not None:
            tail["gone"] = list(gone)
        yield b"]," + to_json(tail)[1:]


def fingerprint(request: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a request (secret values stand as their env names)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
