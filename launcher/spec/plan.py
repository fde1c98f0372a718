"""The planner: expands a manifest's fleets (data files, inline items, matrices) into an
ordered, validated, deterministic plan of sessions.

Per session: its key, its two identity tags, a fingerprint of the canonical request, and the
exact create-session body (secret values as "***": they are read from the environment only
when sessions are launched).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from launcher.api.models import DRAFT7_KEYWORDS, MAX_TAGS, CreateSessionRequest, check_output_schema
from launcher.errors import ManifestError, Problem, SecretError, validation_errors, validation_message
from launcher.spec.digest import digest_of
from launcher.spec.items import Item, read_items
from launcher.spec.manifest import (
    MAX_REPEATED,
    FileRef,
    IncompleteManifest,
    LoadedManifest,
    SessionTemplate,
    load_manifest,
    resolve_file,
)
from launcher.spec.source import MAX_MANIFEST_BYTES, Loc, dotted_path, load_json_or_yaml, read_text
from launcher.spec.templating import Rule, TemplateFailure, Templates

SECRET_PLACEHOLDER = "***"
# The tags devin-fleet adds to every session (the tag budget, documented in the README):
# `fleet:<campaign>`, `fleet-key:<16 hex>` (identity), `fleet-fp:<8 hex>` (the fingerprint, so a
# ledger rebuilt from the API tells `=` from `~`), and `fleet-attempt:<n>` reserved for
# relaunches (attempt 1 carries none). A manifest may set the rest of the API's 50.
LAUNCHER_TAGS = 4
IDENTITY_TAGS = LAUNCHER_TAGS  # kept for importers of the old name
FP_TAG_PREFIX = "fleet-fp:"
KEY_TAG_PREFIX = "fleet-key:"
ATTEMPT_TAG_PREFIX = "fleet-attempt:"
_LIST_FIELDS = ("repos", "attachment_urls", "knowledge_ids", "secret_ids", "session_links")
_TEXT_FIELDS = (
    "title",
    "playbook_id",
    "child_playbook_id",
    "create_as_user_id",
    "devin_mode",
    "platform",
)
# Not strings in the API: a template's text is converted (by the API model) after rendering.
_CONVERTED_FIELDS = ("max_acu_limit", "bypass_approval", "structured_output_required", "resumable")


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


def fingerprint_tag(fingerprint: str) -> str:
    """`fleet-fp:<first 8 hex of the fingerprint>`: what a session was launched from."""
    return f"{FP_TAG_PREFIX}{fingerprint[:8]}"


def attempt_of(tags: list[str] | tuple[str, ...]) -> int:
    """The launch attempt a session's tags name (1 when it carries no `fleet-attempt:` tag)."""
    for t in tags:
        if t.startswith(ATTEMPT_TAG_PREFIX) and t[len(ATTEMPT_TAG_PREFIX) :].isdigit():
            return int(t[len(ATTEMPT_TAG_PREFIX) :])
    return 1


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
        """The request as the ledger keeps it: the output schema by digest, each secret by the
        name of its variable (`env:NAME`, as the fingerprint sees it), no fingerprint tag."""
        out = dict(self.request)
        env = dict(self.secret_env)
        if env and isinstance(out.get("session_secrets"), list):
            out["session_secrets"] = [
                dict(s, value=f"env:{env[i]}") if i in env else s
                for i, s in enumerate(out["session_secrets"])
            ]
        if isinstance(out.get("tags"), list):  # the fingerprint tag is derived from the rest
            out["tags"] = [x for x in out["tags"] if not str(x).startswith(FP_TAG_PREFIX)]
        if (schema := out.get("structured_output_schema")) is not None:
            text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
            out["structured_output_schema"] = f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        return out

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
            "tags": list(self.tags),
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


# =========================================================================== keys


def _scalar(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _default_key(value: Any) -> str:
    """An item's values joined by '-' (mapping values in their order; nulls left out)."""
    if isinstance(value, Mapping):
        return "-".join(_scalar(v) for v in value.values() if v is not None)
    if isinstance(value, list):
        return "-".join(_scalar(v) for v in value)
    return _scalar(value)


# =========================================================================== building


class _Problems:
    """Collects problems, once each: the same problem on many items is one line with a count,
    and past MAX_REPEATED different problems at one field the rest are counted."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int | None, int | None, str, str], list[Any]] = {}
        self._per_field: dict[tuple[str, int | None, str], int] = {}

    def add(self, problem: Problem, origin: str | None = None) -> None:
        k = (problem.file, problem.line, problem.col, problem.field, problem.message)
        if k in self._seen:
            self._seen[k][1] += 1
            return
        where = (problem.file, problem.line, problem.field)
        self._per_field[where] = n = self._per_field.get(where, 0) + 1
        if n <= MAX_REPEATED:
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
                msg += f" [item {origin}" + (f", and {more:,} more item(s)]" if more else "]")
            out.append(
                Problem(problem.file, problem.line, problem.col, problem.field, msg, problem.hint)
            )
        for (file, line, field_), n in self._per_field.items():
            if n > MAX_REPEATED:
                first = next(
                    p
                    for p, _, _ in self._seen.values()
                    if (p.file, p.line, p.field) == (file, line, field_)
                )
                out.append(
                    Problem(
                        file,
                        line,
                        first.col,
                        field_,
                        f"and {n - MAX_REPEATED:,} more different problem(s) here, in other items",
                    )
                )
        return out


@dataclass
class _FleetSpec:
    """A fleet's merged template, with where each field was written (for error locations)."""

    name: str
    index: int
    fields: dict[str, Any]
    locs: dict[str, Loc]
    tag_locs: list[Loc]
    key_source: str | None
    schema: dict[str, Any] | None
    schema_digest: str | None
    prompt_file: str | None  # the label of the prompt's file, when it came from one


def _template_problem(
    loaded: LoadedManifest, loc: Loc, exc: TemplateFailure, prompt_file: str | None = None
) -> Problem:
    """Locate a template failure: the template's own line, inside the manifest or its file."""
    if prompt_file is not None:
        return Problem(prompt_file, exc.line or 1, 1, dotted_path(loc), exc.message, exc.hint)
    problem = loaded.problem(loc, exc.message, exc.hint)
    if exc.line and problem.line is not None:
        if loc in loaded.marks.block:  # `|` / `>`: the text starts on the next line
            return replace(problem, line=problem.line + exc.line, col=1)
        if exc.line > 1:
            return replace(problem, line=problem.line + exc.line - 1, col=1)
    return problem


def _merge(
    loaded: LoadedManifest, fi: int, templates: Templates, problems: _Problems
) -> _FleetSpec | None:
    """defaults, then the fleet's session: the session's fields win; tags are unioned."""
    m = loaded.manifest
    fleet = m.fleets[fi]
    fields: dict[str, Any] = {}
    locs: dict[str, Loc] = {}
    tag_locs: list[Loc] = []
    for source, base in ((m.defaults, ("defaults",)), (fleet.session, ("fleets", fi, "session"))):
        for name in SessionTemplate.model_fields:  # a fixed order: the plan is deterministic
            value = getattr(source, name)
            if value is None:
                continue
            if name == "tags":
                for i, tag in enumerate(value):
                    if tag not in fields.setdefault("tags", []):
                        fields["tags"].append(tag)
                        tag_locs.append((*base, name, i))
            else:
                fields[name] = value
            locs[name] = (*base, name)
            if name in ("prompt", "prompt_file"):  # the session's choice replaces the default's
                other = "prompt_file" if name == "prompt" else "prompt"
                fields.pop(other, None)
                locs.pop(other, None)
    ok = True
    prompt_file = None
    if "prompt_file" in fields:
        prompt_file = loaded.file_label(fields["prompt_file"])
        try:
            fields["prompt"] = read_text(
                resolve_file(loaded, fields["prompt_file"]), limit=MAX_MANIFEST_BYTES, label=prompt_file
            )
        except ManifestError as exc:
            problems.extend(_forward(loaded, locs["prompt_file"], exc))
            ok = False
        locs["prompt"] = locs.pop("prompt_file")
        del fields["prompt_file"]
    elif "prompt" not in fields:
        problems.add(
            loaded.problem(
                ("fleets", fi, "session"),
                "no `prompt` (or `prompt_file`)",
                "every session needs a prompt: set it in session or defaults",
            )
        )
        ok = False
    ok &= _compile_all(loaded, fi, fields, locs, tag_locs, prompt_file, templates, problems)
    schema, digest = None, None
    if "structured_output_schema" in fields:
        schema = _load_schema(
            loaded, fields.pop("structured_output_schema"), locs["structured_output_schema"], problems
        )
        if schema is None:
            ok = False
        else:
            digest = hashlib.sha256(
                json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            ).hexdigest()
    n_tags = len(fields.get("tags") or [])
    if n_tags + IDENTITY_TAGS > MAX_TAGS:
        problems.add(
            loaded.problem(
                locs["tags"],
                f"{n_tags} tags plus devin-fleet's {LAUNCHER_TAGS} (campaign, key, fingerprint, "
                f"attempt) is more than the API's {MAX_TAGS}",
                f"use at most {MAX_TAGS - LAUNCHER_TAGS} tags",
            )
        )
        ok = False
    if not ok:
        return None
    return _FleetSpec(fleet.name, fi, fields, locs, tag_locs, fleet.key, schema, digest, prompt_file)


def _forward(loaded: LoadedManifest, loc: Loc, exc: ManifestError) -> list[Problem]:
    """Problems of a file the manifest names: located in that file when they have a line,
    else at the manifest field that names it."""
    return [
        replace(p, field=p.field or dotted_path(loc))
        if p.line is not None
        else loaded.problem(loc, f"{p.file}: {p.message}", p.hint)
        for p in exc.problems
    ]


def _compile_all(
    loaded: LoadedManifest,
    fi: int,
    fields: dict[str, Any],
    locs: dict[str, Loc],
    tag_locs: list[Loc],
    prompt_file: str | None,
    templates: Templates,
    problems: _Problems,
) -> bool:
    """Compile a fleet's templates once: a syntax error is one problem, not one per item."""
    sources: list[tuple[str, Loc, str | None]] = []
    key = loaded.manifest.fleets[fi].key
    if key is not None:
        sources.append((key, ("fleets", fi, "key"), None))
    if isinstance(fields.get("prompt"), str):
        sources.append((fields["prompt"], locs["prompt"], prompt_file))
    for name in (*_TEXT_FIELDS, *_CONVERTED_FIELDS):
        if isinstance(fields.get(name), str):
            sources.append((fields[name], locs[name], None))
    for name in _LIST_FIELDS:
        sources += [(v, (*locs[name], i), None) for i, v in enumerate(fields.get(name) or [])]
    sources += [(t, loc, None) for t, loc in zip(fields.get("tags") or [], tag_locs, strict=True)]
    for i, s in enumerate(fields.get("session_secrets") or []):
        sources += [
            (text, (*locs["session_secrets"], i, part), None)
            for part, text in (("key", s.key), ("sensitive", s.sensitive))
            if isinstance(text, str)
        ]
    ok = True
    for source, loc, file in sources:
        try:
            templates.compile(source)
        except TemplateFailure as exc:
            problems.add(_template_problem(loaded, loc, exc, file))
            ok = False
    try:
        uses_index = key is not None and "index" in templates.variables(key)
    except TemplateFailure:
        uses_index = False  # reported above
    if uses_index:
        problems.add(
            loaded.problem(
                ("fleets", fi, "key"),
                "a key may not use `index`: it changes when items are inserted or reordered",
                "build the key from the item's own values",
            )
        )
        ok = False
    return ok


def _load_schema(
    loaded: LoadedManifest, ref: FileRef | dict[str, Any], loc: Loc, problems: _Problems
) -> dict[str, Any] | None:
    """The fleet's structured-output schema, inline or from a file, checked once."""
    if isinstance(ref, FileRef):
        try:
            schema = load_json_or_yaml(
                resolve_file(loaded, ref.file), loaded.file_label(ref.file), MAX_MANIFEST_BYTES
            )
        except ManifestError as exc:
            problems.extend(_forward(loaded, loc, exc))
            return None
    else:
        schema = ref
        if schema and not (set(schema) & DRAFT7_KEYWORDS):
            problems.add(
                loaded.problem(
                    loc,
                    "not a JSON Schema: none of its keys "
                    f"({', '.join(map(str, schema))}) is a Draft 7 keyword",
                    "write an inline schema, or {file: path}",
                )
            )
            return None
    if not isinstance(schema, dict):
        problems.add(loaded.problem(loc, "the schema must be a JSON object"))
        return None
    if reason := check_output_schema(schema):
        problems.add(loaded.problem(loc, reason))
        return None
    return schema


def secrets_warning(missing: list[str]) -> str:
    """The plan's warning that session secrets' variables are unset (commands that only read
    the campaign leave it out)."""
    return (
        f"environment variable(s) for session secrets not set: {', '.join(missing)}"
        " (apply will refuse until they are)"
    )


def build_plan(
    loaded: LoadedManifest,
    *,
    environ: Mapping[str, str] | None = None,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """Expand and validate every session of a manifest; raise ManifestError with all problems.
    Templates see `previous` (the key's earlier attempt, for a relaunch) or None.

    Deterministic: the same manifest and files give the same plan, byte for byte, in JSON.
    """
    m = loaded.manifest
    templates = Templates()
    problems = _Problems()
    sessions: list[PlannedSession] = []
    keys: dict[str, tuple[str, str]] = {}
    schemas: dict[str, dict[str, Any] | None] = {}
    rules: dict[str, Rule] = {}
    n_items = 0
    for fi, fleet in enumerate(m.fleets):
        if fi in loaded.skipped_fleets:  # broken in the manifest itself: reported already
            continue
        try:
            items = read_items(loaded, fi)
        except ManifestError as exc:
            problems.extend(exc.problems)
            items = None
        spec = _merge(loaded, fi, templates, problems)
        if (rule := _compile_rule(loaded, fi, problems)) is not None:
            rules[fleet.name] = rule
        if items is None:
            continue
        n_items += len(items)
        if not items:
            problems.add(
                loaded.problem(
                    ("fleets", fi, "for_each"), "empty fleet: no items", "add items, or remove the fleet"
                )
            )
            continue
        if spec is None:
            continue
        schemas[fleet.name] = spec.schema
        for idx, item in enumerate(items):
            planned = _plan_one(loaded, spec, templates, idx, item, problems, previous or {})
            if planned is None:
                continue
            if planned.key in keys:
                f0, o0 = keys[planned.key]
                loc: Loc = ("fleets", fi, "key") if fleet.key else ("fleets", fi, "for_each")
                problems.add(
                    loaded.problem(
                        loc,
                        f"duplicate key {planned.key!r}: item {o0} (fleet {f0}) and item "
                        f"{item.origin} (fleet {fleet.name})",
                        "make `key:` unique in the campaign, e.g. '{{ fleet }}-{{ item.repo }}'",
                    )
                )
                continue
            keys[planned.key] = (fleet.name, item.origin)
            sessions.append(planned)
    _check_budget(loaded, sessions, n_items, problems)
    if problems:
        raise ManifestError(problems.problems())
    warnings = []
    env = os.environ if environ is None else environ
    missing = sorted({n for s in sessions for _, n in s.secret_env if n not in env})
    if missing:
        warnings.append(secrets_warning(missing))
    return Plan(m.campaign, loaded, tuple(sessions), tuple(warnings), schemas, rules)


def _compile_rule(loaded: LoadedManifest, fi: int, problems: _Problems) -> Rule | None:
    """The fleet's success rule (its own, else the campaign's), compiled once; located errors."""
    m = loaded.manifest
    own = m.fleets[fi].success_when
    source, loc = (own, ("fleets", fi, "success_when")) if own else (m.success_when, ("success_when",))
    if source is None:
        return None
    try:
        return Rule(source)
    except TemplateFailure as exc:
        problems.add(loaded.problem(loc, exc.message, exc.hint))
        return None


def plan_manifest(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Plan:
    """`load_manifest`, then `build_plan`; raise one ManifestError with every problem of both.

    When the manifest's structure has problems, the fleets whose own definition is fine are
    still expanded, and their problems are reported with the structural ones.
    """
    try:
        loaded = load_manifest(path)
    except IncompleteManifest as exc:
        if exc.salvaged is None:
            raise
        try:
            build_plan(exc.salvaged, environ=environ)
        except ManifestError as more:
            label = exc.salvaged.label
            merged = list(dict.fromkeys([*exc.problems, *more.problems]))
            merged.sort(key=lambda p: (p.file != label, p.file, p.line or 0, p.col or 0))
            raise ManifestError(merged) from None
        raise
    return build_plan(loaded, environ=environ)


def _plan_one(
    loaded: LoadedManifest,
    spec: _FleetSpec,
    templates: Templates,
    idx: int,
    item: Item,
    problems: _Problems,
    previous: Mapping[str, Mapping[str, Any]],
) -> PlannedSession | None:
    m = loaded.manifest
    fields, locs = spec.fields, spec.locs
    values = {"item": item.value, "vars": m.vars, "campaign": m.campaign, "fleet": spec.name}
    bound = templates.bind({**values, "index": idx, "previous": None})
    failed: set[str] = set()  # fields whose templates failed (already reported)

    def render(text: str, loc: Loc, name: str, file: str | None = None) -> str:
        try:
            return bound(text)
        except TemplateFailure as exc:
            problems.add(_template_problem(loaded, loc, exc, file), item.origin)
            failed.add(name)
            return ""

    if spec.key_source is not None:
        key = render(spec.key_source, ("fleets", spec.index, "key"), "key").strip()
        if failed:
            return None
    else:
        key = _default_key(item.value)
    if key in previous:  # a relaunch: the prompt may say what the last attempt did
        bound = templates.bind({**values, "index": idx, "previous": dict(previous[key])})
    if not key:
        where = "key" if spec.key_source else "for_each"
        problems.add(
            loaded.problem(
                ("fleets", spec.index, where),
                "the item's key is empty",
                "set `key:` on the fleet, from values every item has",
            ),
            item.origin,
        )
        return None

    request: dict[str, Any] = {
        "prompt": render(fields["prompt"], locs["prompt"], "prompt", spec.prompt_file)
    }
    for name in _TEXT_FIELDS:
        if name in fields:
            request[name] = render(fields[name], locs[name], name)
    for name in _CONVERTED_FIELDS:
        if name in fields:
            v = fields[name]
            if isinstance(v, str):
                v = render(v, locs[name], name).strip()
                if not v:  # rendered empty: leave the field out (the API default applies)
                    continue
            request[name] = v
    for name in _LIST_FIELDS:
        if name in fields:
            request[name] = [render(v, (*locs[name], i), name) for i, v in enumerate(fields[name])]
    ctag, itag = campaign_tag(m.campaign), item_tag(m.campaign, key)
    tags = [
        render(t, loc, "tags") for t, loc in zip(fields.get("tags") or [], spec.tag_locs, strict=True)
    ]
    request["tags"] = list(dict.fromkeys([*tags, ctag, itag]))
    secret_env: list[tuple[int, str]] = []
    if "session_secrets" in fields:
        secrets = []
        for i, s in enumerate(fields["session_secrets"]):
            sloc = (*locs["session_secrets"], i)
            sens = (
                render(s.sensitive, (*sloc, "sensitive"), "session_secrets").strip()
                if isinstance(s.sensitive, str)
                else s.sensitive
            )
            secrets.append(
                {
                    "key": render(s.key, (*sloc, "key"), "session_secrets"),
                    "value": SECRET_PLACEHOLDER,
                    "sensitive": sens,
                }
            )
            secret_env.append((i, s.value.env))
        request["session_secrets"] = secrets
    if spec.schema is not None:
        request["structured_output_schema"] = spec.schema  # one object: checked once, shared
    for name in failed:  # still check the other fields: every problem is reported at once
        request.pop(name, None)
    try:
        model = CreateSessionRequest.model_validate(request)
    except ValidationError as exc:
        for err in validation_errors(exc):
            eloc = err["loc"]
            name = str(eloc[0]) if eloc else "prompt"
            if name in failed:
                continue
            base = locs.get(name, ("fleets", spec.index, "session"))
            problems.add(loaded.problem((*base, *eloc[1:]), validation_message(err)), item.origin)
        return None
    if failed:
        return None
    body = model.body()
    # The fingerprint sees which variable each secret comes from, never a value, and the
    # schema by its digest (hashed once per fleet).
    fp_body = dict(body)
    if secret_env:
        fp_body["session_secrets"] = [
            dict(s, value=f"env:{name}")
            for s, (_, name) in zip(body["session_secrets"], secret_env, strict=True)
        ]
    if spec.schema_digest is not None:
        fp_body["structured_output_schema"] = f"sha256:{spec.schema_digest}"
    fp = fingerprint(fp_body)  # over the body without its own tag: old fingerprints stay valid
    body["tags"] = [*body["tags"], fingerprint_tag(fp)]
    return PlannedSession(
        key=key,
        fleet=spec.name,
        index=idx,
        item=item.value,
        origin=item.origin,
        tags=(ctag, itag),
        fingerprint=fp,
        request=body,
        secret_env=tuple(secret_env),
    )


def _check_budget(
    loaded: LoadedManifest, sessions: list[PlannedSession], n_items: int, problems: _Problems
) -> None:
    """The budget, checked on what is known: every item counts; ACUs of planned sessions."""
    budget = loaded.manifest.budget
    if budget.max_sessions is not None and n_items > budget.max_sessions:
        problems.add(
            loaded.problem(
                ("budget", "max_sessions"),
                f"the plan has {n_items:,} sessions; the budget allows {budget.max_sessions:,}",
                "raise budget.max_sessions or narrow the fleets",
            )
        )
    if budget.max_total_acu is not None:
        unbounded = [s.key for s in sessions if "max_acu_limit" not in s.request]
        if unbounded:
            problems.add(
                loaded.problem(
                    ("budget", "max_total_acu"),
                    f"{len(unbounded):,} session(s) have no max_acu_limit "
                    f"(first: {unbounded[0]!r}), so the total is unbounded",
                    "set max_acu_limit in defaults",
                )
            )
        else:
            total = sum(s.request["max_acu_limit"] for s in sessions)
            if total > budget.max_total_acu:
                problems.add(
                    loaded.problem(
                        ("budget", "max_total_acu"),
                        f"the plan may use {total:,} ACUs; the budget allows {budget.max_total_acu:,}",
                        "raise budget.max_total_acu or lower max_acu_limit",
                    )
                )
