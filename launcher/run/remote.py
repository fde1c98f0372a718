"""Remote checks: prove the token works and that every id the manifest references (secrets,
playbooks, knowledge notes) exists in the org, before anything is created."""

from __future__ import annotations

from launcher.api.client import DevinClient
from launcher.errors import APIError, AuthError, Problem, RemoteCheckError
from launcher.spec.plan import Plan
from launcher.spec.source import Loc

UNCHECKABLE = frozenset({403, 404, 405})  # a reference list we cannot read: "not verified"
_REFERENCE_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("secret_ids", "/secrets", "secret"),
    ("playbook_id", "/playbooks", "playbook"),
    ("child_playbook_id", "/playbooks", "playbook"),
    ("knowledge_ids", "/knowledge/notes", "knowledge note"),
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
    if problems:
        raise RemoteCheckError(problems)
    return warnings
