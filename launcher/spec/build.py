"""The planner: expands a manifest's fleets (data files, inline items, matrices) into an
ordered, validated, deterministic `Plan`, reporting every problem at once, located."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from launcher.api.models import DRAFT7_KEYWORDS, MAX_TAGS, CreateSessionRequest, check_output_schema
from launcher.errors import ManifestError, Problem, validation_errors, validation_message
from launcher.spec.identity import stamp
from launcher.spec.items import Item, read_items
from launcher.spec.manifest import (
    IncompleteManifest,
    LoadedManifest,
    Problems,
    load_manifest,
    resolve_file,
)
from launcher.spec.model import FileRef, SessionTemplate
from launcher.spec.plan import LAUNCHER_TAGS, Plan, PlannedSession, campaign_tag, fingerprint, item_tag
from launcher.spec.source import MAX_MANIFEST_BYTES, Loc, dotted_path, load_json_or_yaml, read_text
from launcher.spec.templating import Rule, TemplateFailure, Templates
from launcher.spec.waves import Member, wave_problems

SECRET_PLACEHOLDER = "***"
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
    loaded: LoadedManifest, fi: int, templates: Templates, problems: Problems
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
    own = LAUNCHER_TAGS if m.identity == "tags" else 1  # `identity: title`: the campaign tag only
    if n_tags + own > MAX_TAGS:
        what = "campaign, key, fingerprint, attempt" if own > 1 else "the campaign tag"
        problems.add(
            loaded.problem(
                locs["tags"],
                f"{n_tags} tags plus devin-fleet's {own} ({what}) is more than the API's {MAX_TAGS}",
                f"use at most {MAX_TAGS - own} tags",
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
    problems: Problems,
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
    loaded: LoadedManifest, ref: FileRef | dict[str, Any], loc: Loc, problems: Problems
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
    problems = Problems()
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
    if m.rollout is not None and sessions:  # named waves: each names a session
        members = [Member(s.key, s.identity_tag, s.item) for s in sessions]
        for loc, message, hint in wave_problems(m.rollout, members):
            problems.add(loaded.problem(loc, message, hint))
    if problems:
        raise ManifestError(problems.problems())
    warnings = []
    env = os.environ if environ is None else environ
    missing = sorted({n for s in sessions for _, n in s.secret_env if n not in env})
    if missing:
        warnings.append(secrets_warning(missing))
    return Plan(m.campaign, loaded, tuple(sessions), tuple(warnings), schemas, rules)


def _compile_rule(loaded: LoadedManifest, fi: int, problems: Problems) -> Rule | None:
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
    problems: Problems,
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
    request.update(_rendered_fields(fields, locs, render))
    ctag, itag = campaign_tag(m.campaign), item_tag(m.campaign, key)
    tags = [
        render(t, loc, "tags") for t, loc in zip(fields.get("tags") or [], spec.tag_locs, strict=True)
    ]
    _identify(request, tags, ctag, itag, m.identity, key)
    secret_env: list[tuple[int, str]] = []
    if "session_secrets" in fields:
        request["session_secrets"], secret_env = _secrets(fields, locs, render)
    if spec.schema is not None:
        request["structured_output_schema"] = spec.schema  # one object: checked once, shared
    for name in failed:  # still check the other fields: every problem is reported at once
        request.pop(name, None)
    try:
        model = CreateSessionRequest.model_validate(request)
    except ValidationError as exc:
        for loc, message in _invalid(exc, locs, spec.index, failed):
            problems.add(loaded.problem(loc, message), item.origin)
        return None
    if failed:
        return None
    body = model.body()
    fp = _fingerprint(body, secret_env, spec.schema_digest)
    body = stamp(body, m.identity, itag, fp, 1)
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


def _identify(
    request: dict[str, Any], tags: list[str], ctag: str, itag: str, identity: str, key: str
) -> None:
    """The tags sent; with `identity: title` only the campaign tag (the key stands in for a title)."""
    if identity == "title":
        request["tags"] = list(dict.fromkeys([*tags, ctag]))
        request["title"] = request.get("title") or key
    else:
        request["tags"] = list(dict.fromkeys([*tags, ctag, itag]))


def _invalid(
    exc: ValidationError, locs: Mapping[str, Loc], fleet: int, failed: set[str]
) -> list[tuple[Loc, str]]:
    """Where the manifest wrote each field the API model refused, and why (fields whose
    templates failed were reported already)."""
    out = []
    for err in validation_errors(exc):
        eloc = err["loc"]
        name = str(eloc[0]) if eloc else "prompt"
        if name not in failed:
            base = locs.get(name, ("fleets", fleet, "session"))
            out.append(((*base, *eloc[1:]), validation_message(err)))
    return out


Render = Callable[[str, Loc, str], str]  # (template, where it was written, field) -> text


def _rendered_fields(
    fields: Mapping[str, Any], locs: Mapping[str, Loc], render: Render
) -> dict[str, Any]:
    """The request's fields beyond the prompt, tags and secrets, rendered."""
    out: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        if name in fields:
            out[name] = render(fields[name], locs[name], name)
    for name in _CONVERTED_FIELDS:
        if name in fields:
            v = fields[name]
            if isinstance(v, str):
                v = render(v, locs[name], name).strip()
                if not v:  # rendered empty: leave the field out (the API default applies)
                    continue
            out[name] = v
    for name in _LIST_FIELDS:
        if name in fields:
            out[name] = [render(v, (*locs[name], i), name) for i, v in enumerate(fields[name])]
    return out


def _secrets(
    fields: Mapping[str, Any], locs: Mapping[str, Loc], render: Render
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The session secrets, their values as placeholders, and (index, env variable) of each:
    values are read from the environment only when sessions are launched."""
    secrets, secret_env = [], []
    for i, s in enumerate(fields["session_secrets"]):
        sloc = (*locs["session_secrets"], i)
        sens = (
            render(s.sensitive, (*sloc, "sensitive"), "session_secrets").strip()
            if isinstance(s.sensitive, str)
            else s.sensitive
        )
        key = render(s.key, (*sloc, "key"), "session_secrets")
        secrets.append({"key": key, "value": SECRET_PLACEHOLDER, "sensitive": sens})
        secret_env.append((i, s.value.env))
    return secrets, secret_env


def _fingerprint(
    body: Mapping[str, Any], secret_env: list[tuple[int, str]], schema_digest: str | None
) -> str:
    """The fingerprint sees which variable each secret comes from, never a value, and the
    schema by its digest (hashed once per fleet); over the body without its own tag, so old
    fingerprints stay valid."""
    fp_body = dict(body)
    if secret_env:
        fp_body["session_secrets"] = [
            dict(s, value=f"env:{name}")
            for s, (_, name) in zip(body["session_secrets"], secret_env, strict=True)
        ]
    if schema_digest is not None:
        fp_body["structured_output_schema"] = f"sha256:{schema_digest}"
    return fingerprint(fp_body)


def _check_budget(
    loaded: LoadedManifest, sessions: list[PlannedSession], n_items: int, problems: Problems
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
