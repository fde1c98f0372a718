"""The planner: expands a manifest into an ordered, validated, deterministic plan of sessions.

Per session: its key, its two identity tags, a fingerprint of the canonical request, and the
exact create-session body (secret values as "***": they are read from the environment only
when sessions are launched).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from launcher.errors import ManifestError, Problem, SecretError
from launcher.manifest import (
    MAX_MANIFEST_BYTES,
    FileRef,
    LoadedManifest,
    Loc,
    SessionTemplate,
    load_json_or_yaml,
    read_items,
    read_text,
    resolve_file,
)
from launcher.models import MAX_TAGS, CreateSessionRequest, check_output_schema
from launcher.templating import TemplateFailure, Templates

SECRET_PLACEHOLDER = "***"
IDENTITY_TAGS = 2
_LIST_FIELDS = ("repos", "attachment_urls", "knowledge_ids", "secret_ids", "session_links")
_SCALAR_FIELDS = ("title", "playbook_id", "child_playbook_id", "max_acu_limit", "bypass_approval",
                  "create_as_user_id", "devin_mode", "platform", "structured_output_required",
                  "resumable")


def campaign_tag(campaign: str) -> str:
    """The tag every session of a campaign carries: `fleet:<campaign>`."""
    return f"fleet:{campaign}"


def item_tag(campaign: str, key: str) -> str:
    """The tag that identifies one planned session: `fleet-key:<16 hex of sha256(campaign, key)>`.

    Short, deterministic and unique per (campaign, key): it is how apply finds a session whose
    create call failed ambiguously, since the API has no idempotency key.
    """
    digest = hashlib.sha256(f"{campaign}\x00{key}".encode()).hexdigest()[:16]
    return f"fleet-key:{digest}"


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

    @property
    def identity_tag(self) -> str:
        return self.tags[1]

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
        return {"key": self.key, "fleet": self.fleet, "fingerprint": self.fingerprint,
                "tags": list(self.tags), "request": self.request}


@dataclass(frozen=True)
class Plan:
    """An ordered plan of a campaign's sessions."""

    campaign: str
    manifest: LoadedManifest
    sessions: tuple[PlannedSession, ...]
    warnings: tuple[str, ...] = ()
    schemas: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # fleet -> schema

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
            "unbounded_acu_sessions": sum(1 for s in self.sessions
                                          if "max_acu_limit" not in s.request),
        }

    def secret_env_names(self) -> list[str]:
        return sorted({name for s in self.sessions for _, name in s.secret_env})

    def missing_secret_env(self, environ: Mapping[str, str] | None = None) -> list[str]:
        env = os.environ if environ is None else environ
        return [n for n in self.secret_env_names() if n not in env]

    def to_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign,
                "sessions": [s.to_json() for s in self.sessions],
                "totals": self.totals(),
                "warnings": list(self.warnings)}

    def by_key(self) -> dict[str, PlannedSession]:
        return {s.key: s for s in self.sessions}


def fingerprint(request: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a request (secret values stand as their env names)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# =========================================================================== building


class _Problems:
    """Collects problems; the same problem on many items is reported once, with a count."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int | None, str, str], list[Any]] = {}

    def add(self, problem: Problem, origin: str | None = None) -> None:
        k = (problem.file, problem.line, problem.field, problem.message)
        if k in self._seen:
            self._seen[k][1] += 1
        else:
            self._seen[k] = [problem, 0, origin]

    def extend(self, problems: list[Problem]) -> None:
        for p in problems:
            self.add(p)

    def __bool__(self) -> bool:
        return bool(self._seen)

    def problems(self) -> list[Problem]:
        out = []
        for problem, more, origin in self._seen.values():
            msg = problem.message
            if origin:
                msg += f" [item {origin}" + (f", and {more} more item(s)]" if more else "]")
            out.append(Problem(problem.file, problem.line, problem.col, problem.field, msg,
                               problem.hint))
        return out


@dataclass
class _FleetSpec:
    """A fleet's merged template, with where each field was written (for error locations)."""

    name: str
    index: int
    fields: dict[str, Any]
    locs: dict[str, Loc]
    key_source: str | None
    schema: dict[str, Any] | None


def _merge(loaded: LoadedManifest, fi: int, problems: _Problems) -> _FleetSpec | None:
    m = loaded.manifest
    fleet = m.fleets[fi]
    fields: dict[str, Any] = {}
    locs: dict[str, Loc] = {}
    for source, loc in ((m.defaults, ("defaults",)), (fleet.session, ("fleets", fi, "session"))):
        for name in source.model_fields_set:
            value = getattr(source, name)
            if value is None:
                continue
            if name == "tags" and "tags" in fields:
                fields["tags"] = list(dict.fromkeys([*fields["tags"], *value]))  # union, in order
            else:
                fields[name] = value
            locs[name] = (*loc, name)
    ok = True
    if "prompt_file" in fields:
        path = resolve_file(loaded, fields["prompt_file"])
        try:
            fields["prompt"] = read_text(path, limit=MAX_MANIFEST_BYTES, label=fields["prompt_file"])
            locs["prompt"] = locs["prompt_file"]
        except ManifestError as exc:
            problems.add(loaded.problem(locs["prompt_file"], exc.problems[0].message))
            ok = False
        del fields["prompt_file"]
    if "prompt" not in fields:
        problems.add(loaded.problem(("fleets", fi, "session"), "no `prompt` (or `prompt_file`)",
                                    "every session needs a prompt: set it in session or defaults"))
        ok = False
    schema = None
    if (ref := fields.get("structured_output_schema")) is not None:
        sloc = locs["structured_output_schema"]
        if isinstance(ref, FileRef):
            try:
                schema = load_json_or_yaml(resolve_file(loaded, ref.file), ref.file,
                                           MAX_MANIFEST_BYTES)
            except ManifestError as exc:
                problems.add(loaded.problem(sloc, exc.problems[0].render()))
                return None
        else:
            schema = ref
        if not isinstance(schema, dict):
            problems.add(loaded.problem(sloc, "the schema must be a JSON object"))
            return None
        if reason := check_output_schema(schema):
            problems.add(loaded.problem(sloc, reason))
            return None
        fields["structured_output_schema"] = schema
    n_tags = len(fields.get("tags") or [])
    if n_tags + IDENTITY_TAGS > MAX_TAGS:
        problems.add(loaded.problem(locs["tags"], f"{n_tags} tags plus {IDENTITY_TAGS} identity "
                                    f"tags is more than the API's {MAX_TAGS}",
                                    f"use at most {MAX_TAGS - IDENTITY_TAGS} tags"))
        ok = False
    if not ok:
        return None
    return _FleetSpec(fleet.name, fi, fields, locs, fleet.key, schema)


def _default_key(value: Any) -> str:
    if isinstance(value, Mapping):
        return "-".join(str(v) for v in value.values() if v is not None)
    if isinstance(value, list):
        return "-".join(str(v) for v in value)
    return str(value)


def build_plan(loaded: LoadedManifest, *, environ: Mapping[str, str] | None = None) -> Plan:
    """Expand and validate every session of a manifest; raise ManifestError with all problems.

    Deterministic: the same manifest and files give the same plan, byte for byte, in JSON.
    """
    m = loaded.manifest
    templates = Templates()
    problems = _Problems()
    sessions: list[PlannedSession] = []
    keys: dict[str, tuple[str, int, str]] = {}
    schemas: dict[str, dict[str, Any] | None] = {}
    ctag = campaign_tag(m.campaign)

    for fi, fleet in enumerate(m.fleets):
        try:
            items = read_items(loaded, fi)
        except ManifestError as exc:
            problems.extend(exc.problems)
            continue
        if not items:
            problems.add(loaded.problem(("fleets", fi, "for_each"), "empty fleet: no items",
                                        "add items, or remove the fleet"))
            continue
        spec = _merge(loaded, fi, problems)
        if spec is None:
            continue
        schemas[fleet.name] = spec.schema
        for idx, item in enumerate(items):
            ctx = {"item": item.value, "vars": m.vars, "campaign": m.campaign,
                   "fleet": fleet.name, "index": idx}
            planned = _plan_one(loaded, spec, templates, ctx, idx, item.value, item.origin,
                                ctag, problems)
            if planned is None:
                continue
            if planned.key in keys:
                f0, i0, o0 = keys[planned.key]
                problems.add(loaded.problem(
                    ("fleets", fi, "key"),
                    f"duplicate key {planned.key!r}: item {o0} (fleet {f0}) and item "
                    f"{item.origin} (fleet {fleet.name})",
                    "make `key:` unique, e.g. '{{ fleet }}-{{ item.repo }}'"))
                continue
            keys[planned.key] = (fleet.name, idx, item.origin)
            sessions.append(planned)

    if not problems:
        _check_budget(loaded, sessions, problems)
    if problems:
        raise ManifestError(problems.problems())

    warnings = []
    env = os.environ if environ is None else environ
    missing = sorted({n for s in sessions for _, n in s.secret_env if n not in env})
    if missing:
        warnings.append(f"environment variable(s) for session secrets not set: {', '.join(missing)}"
                        " (apply will refuse until they are)")
    return Plan(m.campaign, loaded, tuple(sessions), tuple(warnings), schemas)


def _plan_one(loaded: LoadedManifest, spec: _FleetSpec, templates: Templates,
              ctx: dict[str, Any], idx: int, value: Any, origin: str, ctag: str,
              problems: _Problems) -> PlannedSession | None:
    fields = spec.fields

    def render(text: str, loc: Loc) -> str | None:
        try:
            return templates.render(text, ctx)
        except TemplateFailure as exc:
            problems.add(loaded.problem(loc, exc.message, exc.hint), origin)
            return None

    if spec.key_source is not None:
        key = render(spec.key_source, ("fleets", spec.index, "key"))
        if key is None:
            return None
        key = key.strip()
        if not key:
            problems.add(loaded.problem(("fleets", spec.index, "key"), "key renders empty"), origin)
            return None
    else:
        key = _default_key(value)
        if not key:
            problems.add(loaded.problem(("fleets", spec.index, "for_each"),
                                        "item has no values to derive a key from",
                                        "set `key:` on the fleet"), origin)
            return None

    request: dict[str, Any] = {}
    failed = False
    prompt = render(fields["prompt"], spec.locs["prompt"])
    failed |= prompt is None
    request["prompt"] = prompt
    for name in _SCALAR_FIELDS:
        if name in fields:
            v = fields[name]
            if isinstance(v, str):
                v = render(v, spec.locs[name])
                failed |= v is None
            request[name] = v
    for name in _LIST_FIELDS:
        if name in fields:
            out = []
            for i, v in enumerate(fields[name]):
                r = render(v, (*spec.locs[name], i)) if isinstance(v, str) else v
                failed |= r is None
                out.append(r)
            request[name] = out
    tags = []
    for i, v in enumerate(fields.get("tags") or []):
        r = render(v, (*spec.locs["tags"], i))
        failed |= r is None
        tags.append(r)
    itag = item_tag(loaded.manifest.campaign, key)
    request["tags"] = list(dict.fromkeys([*tags, ctag, itag]))
    secret_env: list[tuple[int, str]] = []
    if "session_secrets" in fields:
        secrets = []
        for i, s in enumerate(fields["session_secrets"]):
            k = render(s.key, (*spec.locs["session_secrets"], i, "key"))
            sens = s.sensitive
            if isinstance(sens, str):
                sens = render(sens, (*spec.locs["session_secrets"], i, "sensitive"))
            failed |= k is None or sens is None
            secrets.append({"key": k, "value": SECRET_PLACEHOLDER, "sensitive": sens})
            secret_env.append((i, s.value.env))
        request["session_secrets"] = secrets
    if spec.schema is not None:
        request["structured_output_schema"] = spec.schema
    if failed:
        return None
    try:
        model = CreateSessionRequest.model_validate(request)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            name = str(loc[0]) if loc else "prompt"
            base = spec.locs.get(name, ("fleets", spec.index, "session"))
            msg = err["msg"].removeprefix("Value error, ")
            if isinstance(err.get("input"), str | int | float) and err["type"] != "missing":
                msg += f" (got {err['input']!r})"
            problems.add(loaded.problem((*base, *loc[1:]), msg), origin)
        return None
    body = model.body()
    # The fingerprint sees which variable each secret comes from, never a value.
    fp_body = dict(body)
    if secret_env:
        fp_body["session_secrets"] = [dict(s, value=f"env:{name}")
                                      for s, (_, name) in zip(body["session_secrets"], secret_env,
                                                              strict=True)]
    return PlannedSession(key=key, fleet=spec.name, index=idx, item=value, origin=origin,
                          tags=(ctag, itag), fingerprint=fingerprint(fp_body), request=body,
                          secret_env=tuple(secret_env))


def _check_budget(loaded: LoadedManifest, sessions: list[PlannedSession],
                  problems: _Problems) -> None:
    budget = loaded.manifest.budget
    if budget.max_sessions is not None and len(sessions) > budget.max_sessions:
        problems.add(loaded.problem(("budget", "max_sessions"),
                                    f"the plan has {len(sessions):,} sessions; the budget allows "
                                    f"{budget.max_sessions:,}",
                                    "raise budget.max_sessions or narrow the fleets"))
    if budget.max_total_acu is not None:
        unbounded = [s.key for s in sessions if "max_acu_limit" not in s.request]
        if unbounded:
            problems.add(loaded.problem(("budget", "max_total_acu"),
                                        f"{len(unbounded)} session(s) have no max_acu_limit "
                                        f"(first: {unbounded[0]!r}), so the total is unbounded",
                                        "set max_acu_limit in defaults"))
        else:
            total = sum(s.request["max_acu_limit"] for s in sessions)
            if total > budget.max_total_acu:
                problems.add(loaded.problem(("budget", "max_total_acu"),
                                            f"the plan may use {total:,} ACUs; the budget allows "
                                            f"{budget.max_total_acu:,}",
                                            "raise budget.max_total_acu or lower max_acu_limit"))
