"""Reconcile: the API is the source of truth. List a campaign's sessions by its tag (200 a page)
and match them to planned keys by their identity tags, so that a lost, fresh or stale ledger
never relaunches what exists, and strays and duplicates become visible.

Identity of a launch = (campaign, key, attempt): `fleet:<campaign>`, `fleet-key:<16 hex>`, and
`fleet-attempt:<n>` for n >= 2. `fleet-fp:<8 hex>` tells what the session was launched from.
With `identity: title` the same markers travel in a title suffix (`launcher.spec.identity`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from launcher.api.client import DevinClient
from launcher.api.models import Session
from launcher.ledger.binding import check_target
from launcher.ledger.records import AttemptRecord, Record
from launcher.ledger.store import EventKind, Ledger, LedgerEvent, off_loop
from launcher.spec.identity import session_markers
from launcher.spec.plan import FP_TAG_PREFIX, Plan, PlannedSession, attempt_of

ENDED = frozenset({"exit", "error"})  # a session in these states is not live


def fp_prefix(session: Session) -> str | None:
    """The 8-hex fingerprint prefix a session's `fleet-fp:` tag carries, if any."""
    for t in session_markers(session):
        if t.startswith(FP_TAG_PREFIX):
            return t[len(FP_TAG_PREFIX) :]
    return None


def _order(s: Session) -> tuple[float, str]:
    return (s.created_at, s.session_id)


@dataclass
class Reconciliation:
    """What the API holds under a campaign's tag, matched to the plan."""

    by_key: dict[str, list[Session]] = field(default_factory=dict)  # latest attempt, earliest first
    attempts: dict[str, int] = field(default_factory=dict)  # key -> its latest attempt listed
    other_attempts: dict[str, list[Session]] = field(default_factory=dict)
    strays: list[Session] = field(default_factory=list)  # campaign tag, no planned key
    listed: int = 0
    requests: int = 0

    def duplicates(self) -> dict[str, list[Session]]:
        """Keys with more than one live session for one attempt: the one to keep first, then
        the extras. The keeper is a rule every machine agrees on without its ledger (two
        runners healing at once must keep the same one): the earliest `created_at`, then the
        smallest session id."""
        out = {}
        for key, sessions in self.by_key.items():
            live = [s for s in sessions if s.status not in ENDED]
            if len(live) > 1:
                out[key] = sorted(live, key=_order)
        return out

    def warnings(self) -> list[str]:
        out = []
        dups = self.duplicates()
        if dups:
            extra = sum(len(v) - 1 for v in dups.values())
            first = next(iter(dups))
            out.append(
                f"DUPLICATES: {len(dups)} key(s) have more than one live session ({extra} extra; "
                f"first: {first}: {', '.join(s.session_id for s in dups[first])}); "
                "`devin-fleet cancel --duplicates` ends the extras, keeping the earliest"
            )
        live = [x for x in self.strays if x.status not in ENDED]  # ended ones need nothing
        if live:
            out.append(
                f"{len(live)} live session(s) carry the campaign tag but match no planned key "
                "(removed items, or another manifest's): `status` lists them, "
                "`cancel --strays` ends them"
            )
        return out


async def scan(plan: Plan, client: DevinClient, *, page_size: int = 200) -> Reconciliation:
    """One listing of the campaign tag (page_size a page), matched to the plan's keys."""
    before = client.requests
    keys = {s.identity_tag: s.key for s in plan.sessions}
    rec = Reconciliation()
    async for session in client.list_sessions(tags=[plan.campaign_tag], first=page_size):
        rec.listed += 1
        key = next((keys[t] for t in session_markers(session) if t in keys), None)
        if key is None:
            rec.strays.append(session)
            continue
        rec.by_key.setdefault(key, []).append(session)
    # Each key's latest attempt is its current one; earlier attempts are set aside.
    for key, sessions in list(rec.by_key.items()):
        latest = max(attempt_of(session_markers(x)) for x in sessions)
        rec.attempts[key] = latest
        rec.by_key[key] = sorted(
            (x for x in sessions if attempt_of(session_markers(x)) == latest), key=_order
        )
        older = [x for x in sessions if attempt_of(session_markers(x)) != latest]
        if older:
            rec.other_attempts[key] = sorted(older, key=_order)
    rec.strays.sort(key=_order)
    rec.requests = client.requests - before
    return rec


def adopted_fingerprint(s: PlannedSession, session: Session, intents: Mapping[str, str]) -> str:
    """The fingerprint of the intent that created `session`: the ledger's last intent for the
    key when it has one, else what the session's `fleet-fp:` tag says (the planned fingerprint
    when the prefix matches, the bare prefix otherwise, so `plan` shows `~`). A session
    launched before fingerprint tags existed is taken as unchanged (the README says so)."""
    if s.key in intents:
        return intents[s.key]
    prefix = fp_prefix(session)
    if prefix is None or s.fingerprint.startswith(prefix):
        return s.fingerprint
    return f"{FP_TAG_PREFIX}{prefix}"


def adoptions(
    plan: Plan,
    ledger: Ledger,
    rec: Reconciliation,
    *,
    how: str,
    records: Mapping[str, Record] | None = None,
) -> list[LedgerEvent]:
    """`adopted` events for every planned key the ledger does not hold as launched but the API
    has a session for (the earliest, for the current attempt)."""
    records = ledger.records() if records is None else records
    intents = ledger.intent_fingerprints()
    known = ledger.session_ids_by_key()  # sessions the ledger already had (e.g. replaced ones)
    events = []
    for s in plan.sessions:
        r = records.get(s.key)
        if r is not None and r.state.launched:
            continue
        # The API's latest attempt of the key, if it is not older than the ledger's current one
        # (a relaunch recorded but not created yet leaves the earlier attempt the API's latest).
        attempt = rec.attempts.get(s.key, 1)
        if r is not None and attempt < r.launch_attempt:
            continue
        found = [x for x in rec.by_key.get(s.key, []) if x.session_id not in known.get(s.key, ())]
        if not found:
            continue
        first = found[0]
        events.append(
            LedgerEvent(
                s.key,
                EventKind.adopted,
                session_id=first.session_id,
                fingerprint=adopted_fingerprint(s, first, intents),
                detail=how,
                url=first.url,
                launch_attempt=attempt,
            )
        )
    return events


def duplicate_events(rec: Reconciliation, ledger: Ledger) -> list[LedgerEvent]:
    """One `duplicate` event per extra live session not logged as one yet (status, apply)."""
    logged = ledger.session_ids_by_key()
    events = []
    for key, live in rec.duplicates().items():
        for extra in live[1:]:
            if extra.session_id not in logged.get(key, set()):
                events.append(
                    LedgerEvent(
                        key,
                        EventKind.duplicate,
                        session_id=extra.session_id,
                        detail="extra live session",
                    )
                )
    return events


def remember_earlier(ledger: Ledger, earlier: Mapping[str, list[Session]]) -> int:
    """Keep the earlier attempts the API lists and the ledger never saw (a lost ledger rebuilt
    from the API): `results --history` lists them and their pull requests. Returns how many."""
    known = ledger.session_ids_by_key()
    have = {(a.key, a.attempt) for a in ledger.attempt_history()}
    now = time.time()
    new = []
    for key, sessions in earlier.items():
        for x in sessions:  # earliest first: one per (key, attempt), the earliest
            n = attempt_of(session_markers(x))
            if x.session_id in known.get(key, ()) or (key, n) in have:
                continue
            have.add((key, n))
            new.append(
                AttemptRecord(
                    key=key,
                    attempt=n,
                    session_id=x.session_id,
                    url=x.url,
                    fingerprint=None,
                    status=x.status,
                    status_detail=x.status_detail,
                    outcome=None,
                    acus_consumed=x.acus_consumed,
                    pull_requests=json.loads(json.dumps([p.model_dump() for p in x.pull_requests])),
                    structured_output=x.structured_output,
                    created_at=float(x.created_at),
                    superseded_at=now,
                    termination="none" if x.status in ENDED else "kept",
                    request="rebuilt",
                )
            )
    return ledger.remember_attempts(new)


def keep_the_keepers(
    rec: Reconciliation, ledger: Ledger, records: Mapping[str, Record] | None = None
) -> int:
    """Point a key's ledger row at the keeper of its sessions (the earliest created, then the
    smallest id: `Reconciliation.duplicates`' rule) when it holds a later one, so every ledger
    follows the session every machine keeps, and ending the extras (here or on another
    machine) never ends the one it follows. Returns how many rows moved."""
    records = ledger.records() if records is None else records
    moved = 0
    for key, sessions in rec.by_key.items():
        r = records.get(key)
        keeper = sessions[0]
        held = r.session_id if r is not None and r.state.launched else None
        if held and held != keeper.session_id and any(x.session_id == held for x in sessions[1:]):
            ledger.keep_session(key, keeper.session_id, keeper.url)
            moved += 1
    return moved


async def rebuild(plan: Plan, client: DevinClient, ledger: Ledger) -> Reconciliation:
    """Bring the ledger up to what the API holds: rows for the plan, adopted sessions, logged
    duplicates (used by apply, status/results/cancel on a fresh clone, `plan --check-remote`)."""
    await off_loop(check_target, ledger, client.config.base_url, client.config.org_id, claim=True)
    await off_loop(ledger.sync_plan, plan)
    rec = await scan(plan, client)
    events = await off_loop(adoptions, plan, ledger, rec, how="reconcile")
    events += await off_loop(duplicate_events, rec, ledger)
    if events:
        await off_loop(ledger.write_events, events)
    await off_loop(keep_the_keepers, rec, ledger)
    return rec
