"""Remote checks: prove the token works, that every value the manifest references and the token
may read exists in the org (secrets, playbooks, knowledge notes, the user to create as, session
links), and that every tag the plan sends is allowed; say which checks could not run and why."""

from __future__ import annotations

from launcher.api.client import DevinClient
from launcher.errors import APIError, AuthError, Problem, RemoteCheckError
from launcher.spec.plan import ATTEMPT_TAG_PREFIX, FP_TAG_PREFIX, KEY_TAG_PREFIX, Plan
from launcher.spec.source import Loc

NOTE = "note: "  # a returned line that is a note (what could not be checked, by design), no warning
UNCHECKABLE = frozenset({403, 404, 405})  # a reference list we cannot read: "not verified"
_REFERENCE_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("secret_ids", "/secrets", "secret"),
    ("playbook_id", "/playbooks", "playbook"),
    ("child_playbook_id", "/playbooks", "playbook"),
    ("knowledge_ids", "/knowledge/notes", "knowledge note"),
    ("create_as_user_id", "/members/users", "org member"),
)
# The tags devin-fleet adds, by kind (an org's allow-list cannot hold per-session ones).
_IDENTITY_KINDS = (
    (KEY_TAG_PREFIX, "per-session identity tags"),
    (FP_TAG_PREFIX, "per-session fingerprint tags"),
    (ATTEMPT_TAG_PREFIX, "relaunch attempt tags"),
)


def _field_loc(plan: Plan, fleet: str, name: str, ref: str) -> Loc:
    """Where the manifest writes `name` for `fleet`: the fleet's session (which wins when set)
    or the defaults; for a list, the element written as `ref` when there is one."""
    m = plan.manifest.manifest
    base: Loc = ("defaults",)
    source = m.defaults
    for i, f in enumerate(m.fleets):
        if f.name == fleet and getattr(f.session, name) is not None:
            base, source = ("fleets", i, "session"), f.session
            break
    value = getattr(source, name)
    if isinstance(value, list) and ref in value:
        return (*base, name, value.index(ref))
    return (*base, name)


async def check_remote(plan: Plan, client: DevinClient) -> list[str]:
    """Prove the token works (GET /v3/self), then that every referenced id exists; returns
    warnings.

    Raises AuthError for a token that does not work (401), RemoteCheckError with one located
    problem per manifest field that names a missing id. A 403 on /self, and a 403, 404 or 405
    on a list endpoint (no permission, or no such list on this API), is a warning ("not
    verified"), never a failure: preflight never blocks on what it cannot check.
    """
    warnings: list[str] = []
    try:
        await client.whoami()
    except AuthError as exc:
        if exc.status != 403:
            raise
        warnings.append("the token may not read /v3/self (ReadAccountMeta): token not verified")
    cache: dict[str, set[str] | None] = {}
    problems: list[Problem] = []
    seen: set[tuple[str, Loc]] = set()
    for field_name, path, label in _REFERENCE_CHECKS:
        refs: dict[str, set[str]] = {}
        for s in plan.sessions:
            value = s.request.get(field_name)
            for ref in [value] if isinstance(value, str) else value or []:
                refs.setdefault(ref, set()).add(s.fleet)
        if not refs:
            continue
        if path not in cache:
            try:
                cache[path] = await client.list_ids(path)
                why = "403"
            except APIError as exc:
                if exc.status not in UNCHECKABLE:
                    raise
                cache[path], why = None, str(exc.status)
            if cache[path] is None:
                # What cannot be checked never blocks: the create itself is the final check.
                warnings.append(
                    f"{label} ids not verified: GET {path} answered {why} (no permission, or "
                    "this API has no such list)"
                )
        have = cache[path]
        if have is None:
            continue
        for ref, fleets in sorted(refs.items()):
            if ref in have:
                continue
            for fleet in sorted(fleets):
                loc = _field_loc(plan, fleet, field_name, ref)
                if (ref, loc) in seen:
                    continue
                seen.add((ref, loc))
                problems.append(
                    plan.manifest.problem(
                        loc,
                        f"{label} {ref!r} does not exist in org {client.config.org_id}",
                        f"check the id (GET {path} lists them)",
                    )
                )
    problems += await _check_tags(plan, client, warnings)
    await _check_links(plan, client, problems, warnings)
    if any(s.request.get("platform") not in (None, "default") for s in plan.sessions):
        labels = sorted({str(s.request["platform"]) for s in plan.sessions} - {"default"})
        warnings.append(
            f"{NOTE}platform {', '.join(map(repr, labels))} not verified: the API publishes no list of "
            "an org's platform labels (a create with an unknown one is refused, and apply stops "
            "at the first such refusal)"
        )
    if problems:
        raise RemoteCheckError(problems, warnings)
    return warnings


async def _check_tags(plan: Plan, client: DevinClient, warnings: list[str]) -> list[Problem]:
    """Every tag the plan sends that the org's allow-list (when it has one and the token may
    read it) does not hold: manifest tags at their manifest line, devin-fleet's by kind."""
    sent: dict[str, set[str]] = {}  # tag -> fleets that send it
    for s in plan.sessions:
        for t in s.request.get("tags") or []:
            sent.setdefault(t, set()).add(s.fleet)
    allowed = await client.allowed_tags()
    if allowed is None:
        warnings.append(
            f"{NOTE}allowed session tags not checked: GET /v3/enterprise/organizations/"
            f"{client.config.org_id}/tags answered 403 (the token lacks "
            "ManageEnterpriseSettings, or the org does not restrict tags)"
        )
        return []
    missing = {t: f for t, f in sent.items() if t not in set(allowed)}
    problems: list[Problem] = []
    org = client.config.org_id
    kinds: dict[str, list[str]] = {}
    for tag, fleets in sorted(missing.items()):
        kind = next((k for prefix, k in _IDENTITY_KINDS if tag.startswith(prefix)), None)
        if kind is not None:
            kinds.setdefault(kind, []).append(tag)
        elif tag == plan.campaign_tag:
            problems.append(
                plan.manifest.problem(
                    ("campaign",),
                    f"the campaign tag {tag!r} is not in org {org}'s allowed session tags",
                    f"ask an admin to register {tag!r} (one tag per campaign)",
                )
            )
        else:
            for fleet in sorted(fleets):
                problems.append(
                    plan.manifest.problem(
                        _field_loc(plan, fleet, "tags", tag),
                        f"tag {tag!r} is not in org {org}'s allowed session tags",
                        "register it (POST /v3/enterprise/organizations/{org_id}/tags), or drop it",
                    )
                )
    for kind, tags in kinds.items():
        problems.append(
            plan.manifest.problem(
                ("identity",) if ("identity",) in plan.manifest.marks.values else ("campaign",),
                f"{len(tags)} {kind} ({tags[0]}, ...) are not in org {org}'s allowed session "
                "tags, and an allow-list cannot hold one tag per session",
                f"set `identity: title` (only {plan.campaign_tag!r} is sent: register that one)",
            )
        )
    return problems


async def _check_links(
    plan: Plan, client: DevinClient, problems: list[Problem], warnings: list[str]
) -> None:
    """Sessions named in `session_links` exist in the org (one list request per 100)."""
    links: dict[str, set[str]] = {}
    for s in plan.sessions:
        for ref in s.request.get("session_links") or []:
            links.setdefault(ref, set()).add(s.fleet)
    if not links:
        return
    found: set[str] = set()
    ids = sorted(links)
    try:
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            found |= {x.session_id async for x in client.list_sessions(session_ids=chunk)}
    except AuthError as exc:
        if exc.status != 403:
            raise
        warnings.append("session_links not verified: the token may not list sessions (403)")
        return
    for ref in ids:
        if ref in found or f"devin-{ref}" in found:
            continue
        for fleet in sorted(links[ref]):
            problems.append(
                plan.manifest.problem(
                    _field_loc(plan, fleet, "session_links", ref),
                    f"session {ref!r} does not exist in org {client.config.org_id}",
                    "check the id (`devin-...`)",
                )
            )
