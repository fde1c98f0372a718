"""The plan digest: one hash of what apply would send (each session's key and fingerprint, which
covers its whole request and identity tag), and the check that a re-plan is the reviewed plan."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import ConfigError, PlanChangedError

DIGEST_PREFIX = "sha256:"
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_VERSION = 1  # bump when what the digest covers changes: an old digest then never matches
_NAMED = 10  # sessions named in a refusal; the rest are counted


def digest_of(campaign: str, fingerprints: Iterable[tuple[str, str]]) -> str:
    """`sha256:<hex>` over the campaign and each (key, fingerprint), sorted by key.

    A fingerprint hashes the whole create request (secrets by variable name, never a value;
    the identity tag included), so nothing volatile enters: no time, no ledger, no remote status.
    Sorted: reordering the manifest's items sends the same requests."""
    doc = {"v": _VERSION, "campaign": campaign, "sessions": sorted(fingerprints)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DIGEST_PREFIX + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Reviewed:
    """What a reviewed `plan -o json` recorded: the digest, and (from a file) each session's
    fingerprint, so a refusal can name the sessions that differ."""

    source: str  # the file, or "--plan-digest"
    digest: str
    campaign: str | None = None
    fingerprints: Mapping[str, str] | None = None


def reviewed_digest(text: str) -> Reviewed:
    """A digest given on the command line (`--plan-digest sha256:...`)."""
    text = text.strip()
    if not DIGEST_RE.fullmatch(text):
        raise ConfigError(
            f"not a plan digest: {text[:80]!r}",
            hint="pass the `sha256:` + 64 hex digits that `plan -o json` records as `digest`",
        )
    return Reviewed("--plan-digest", text)


def read_reviewed(path: str | Path) -> Reviewed:
    """The reviewed plan from a `plan -o json` file; its digest is checked against its sessions."""
    label = str(path)
    hint = "pass the file `devin-fleet plan MANIFEST -o json` wrote"
    try:
        data: Any = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read the reviewed plan: {exc.strerror}", hint=hint) from None
    except ValueError as exc:
        raise ConfigError(f"{label}: not a JSON plan: {exc}", hint=hint) from None
    if not isinstance(data, dict) or not isinstance(data.get("sessions"), list):
        raise ConfigError(f"{label}: not a plan: no `sessions` list", hint=hint)
    digest, campaign = data.get("digest"), data.get("campaign")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ConfigError(
            f"{label}: the plan records no digest", hint="re-run `plan -o json` with this version"
        )
    try:
        fps = {str(s["key"]): str(s["fingerprint"]) for s in data["sessions"]}
    except (KeyError, TypeError):
        raise ConfigError(f"{label}: a session has no key or fingerprint", hint=hint) from None
    if not isinstance(campaign, str) or digest_of(campaign, fps.items()) != digest:
        raise ConfigError(
            f"{label}: the recorded digest does not match the plan's sessions (edited or cut short?)",
            hint=hint,
        )
    return Reviewed(label, digest, campaign, fps)


def check_reviewed(campaign: str, fingerprints: Mapping[str, str], reviewed: Reviewed) -> None:
    """Raise PlanChangedError, naming what differs, unless the plan is the reviewed one."""
    digest = digest_of(campaign, fingerprints.items())
    if digest == reviewed.digest:
        return
    hint = (
        "review the new plan (re-run `devin-fleet plan MANIFEST -o json`), or apply the "
        "revision that was reviewed"
    )
    if reviewed.fingerprints is None or reviewed.campaign is None:
        raise PlanChangedError(
            f"the plan changed since it was reviewed: its digest is {digest}, the reviewed "
            f"plan's {reviewed.digest} (nothing was sent)",
            hint=hint
            + "; `--plan` with the reviewed `plan -o json` file names the sessions that differ",
        )
    if reviewed.campaign != campaign:
        raise PlanChangedError(
            f"the plan changed since it was reviewed: campaign {campaign!r}, reviewed "
            f"{reviewed.campaign!r} (nothing was sent)",
            hint=hint,
        )
    old = reviewed.fingerprints
    added = [k for k in fingerprints if k not in old]
    removed = [k for k in old if k not in fingerprints]
    changed = [k for k, fp in fingerprints.items() if k in old and old[k] != fp]
    differ = [f"+{k}" for k in added] + [f"-{k}" for k in removed] + [f"~{k}" for k in changed]
    parts = [
        f"{n} {what}"
        for n, what in (
            (len(added), "new"),
            (len(removed), "no longer planned"),
            (len(changed), "changed"),
        )
        if n
    ]
    named = ", ".join(differ[:_NAMED]) + (
        f", and {len(differ) - _NAMED} more" if len(differ) > _NAMED else ""
    )
    raise PlanChangedError(
        f"the plan changed since it was reviewed ({reviewed.source}): {', '.join(parts)} "
        f"session(s): {named} (nothing was sent)",
        differ=differ,
        hint=hint,
    )
