"""The field-level difference between what was launched and what the manifest asks for now
(`plan` names the changed fields of a `~` session; `plan --diff` shows them)."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

TEXT_FIELDS = ("prompt",)  # shown as a unified diff; every other field as old -> new


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Top-level request fields whose values differ (added or removed ones too), in the new
    request's order, then the removed ones."""
    names = [*new, *(k for k in old if k not in new)]
    return [n for n in names if old.get(n) != new.get(n)]


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def field_diff(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """A readable diff of one session's request: unified for the prompt, old -> new otherwise."""
    out: list[str] = []
    for name in changed_fields(old, new):
        a, b = old.get(name), new.get(name)
        if name in TEXT_FIELDS and isinstance(a, str) and isinstance(b, str):
            out.extend(
                line.rstrip("\n")
                for line in difflib.unified_diff(
                    a.splitlines(keepends=True),
                    b.splitlines(keepends=True),
                    fromfile=f"{key}: {name} (launched)",
                    tofile=f"{key}: {name} (manifest)",
                )
            )
        else:
            out.append(f"{key}: {name}: {_show(a)} -> {_show(b)}")
    return "\n".join(out)


def stored_request(
    request: Mapping[str, Any], secret_env: Iterable[tuple[int, str]], fp_tag_prefix: str
) -> dict[str, Any]:
    """A planned request as the ledger keeps it (what a later `plan --diff` compares with): the
    output schema by digest, each secret by the name of its variable (`env:NAME`, as the
    fingerprint sees it), without the fingerprint tag (derived from all the rest)."""
    out = dict(request)
    env = dict(secret_env)
    if env and isinstance(out.get("session_secrets"), list):
        out["session_secrets"] = [
            dict(s, value=f"env:{env[i]}") if i in env else s
            for i, s in enumerate(out["session_secrets"])
        ]
    if isinstance(out.get("tags"), list):
        out["tags"] = [x for x in out["tags"] if not str(x).startswith(fp_tag_prefix)]
    if (schema := out.get("structured_output_schema")) is not None:
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        out["structured_output_schema"] = f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return out
