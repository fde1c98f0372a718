"""Messages to a campaign's sessions (`devin-fleet message`): rendered from a template, paced
like creates, and sent exactly once per (session, text) across re-runs and crashes.

The protocol mirrors creates: the intent is committed to the ledger before the POST; a send
whose outcome is unknown (a timeout, a dropped connection, a 5xx, or a crash after the intent)
stays `pending`, and before anything is sent again the session's messages are read back
(`GET .../messages`) to see whether it arrived.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from launcher.api.client import CreateOutcome, CreateResult, DevinClient
from launcher.api.pacing import Clock, MonotonicClock, Pacer
from launcher.errors import APIError, AuthError, LockLostError
from launcher.ledger.binding import check_target
from launcher.ledger.lease import Lease
from launcher.ledger.store import Ledger, off_loop
from launcher.run.options import LOCK_TIMEOUT, MESSAGE_RATE
from launcher.run.status import SessionView
from launcher.spec.plan import Plan
from launcher.spec.templating import TemplateFailure, Templates

CONCURRENCY = 8  # messages in flight by default (as apply's creates); the pacer sets the rate
MAX_MESSAGE_CHARS = 100_000


class MessageError(Exception):
    """The message template does not render for a session (internal: the CLI reports it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def digest(text: str) -> str:
    """What identifies a message to a session: sha256 of its text, 32 hex digits."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Outgoing:
    """One message to one session."""

    key: str
    session_id: str
    text: str
    digest: str
    pending: bool = False  # an earlier attempt's outcome is unknown: look it up first


@dataclass(frozen=True)
class MessageBatch:
    todo: list[Outgoing]
    already: list[Outgoing]  # the ledger says these were delivered
    ended: list[str] = field(default_factory=list)  # keys of sessions that have exited


@dataclass
class MessageReport:
    sent: int = 0
    found: int = 0  # an unknown earlier send turned out delivered: not sent again
    errors: dict[str, str] = field(default_factory=dict)


def session_context(s: SessionView) -> dict[str, Any]:
    return {
        "key": s.key,
        "fleet": s.fleet,
        "session_id": s.session_id,
        "url": s.url,
        "status": s.status,
        "status_detail": s.status_detail,
        "outcome": s.outcome.value,
        "reason": s.reason,
        "pull_requests": s.pull_requests,
        "acus_consumed": s.acus_consumed,
    }


def prepare_messages(
    plan: Plan, sessions: Sequence[SessionView], source: str, ledger: Ledger
) -> MessageBatch:
    """Render the message for each session (`item`, `output`, `session`, `vars`, `campaign`)
    and split what is still to send from what the ledger says was delivered."""
    if not source.strip():
        raise MessageError("the message is empty")
    templates = Templates()
    try:
        templates.compile(source)
    except TemplateFailure as exc:
        raise MessageError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    known = ledger.messages()
    m = plan.manifest.manifest
    todo: list[Outgoing] = []
    already: list[Outgoing] = []
    ended: list[str] = []
    for s in sessions:
        if not s.session_id:
            continue
        if s.status == "exit":
            ended.append(s.key)
            continue
        values = {
            "item": s.item,
            "output": s.structured_output,
            "session": session_context(s),
            "vars": m.vars,
            "campaign": m.campaign,
        }
        try:
            text = templates.render(source, values).strip()
        except TemplateFailure as exc:
            raise MessageError(f"{s.key}: {exc.message}") from None
        if not text:
            raise MessageError(f"{s.key}: the message renders empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise MessageError(f"{s.key}: the message is {len(text):,} characters")
        d = digest(text)
        record = known.get((s.session_id, d))
        if record is not None and record.state == "sent":
            already.append(Outgoing(s.key, s.session_id, text, d))
        else:
            pending = record is not None and record.state == "pending"
            todo.append(Outgoing(s.key, s.session_id, text, d, pending=pending))
    return MessageBatch(todo, already, ended)


async def delivered(client: DevinClient, out: Outgoing) -> bool:
    """Whether the session already holds this message (read back from the API)."""
    for msg in await client.list_messages(out.session_id):
        if msg.get("source") not in (None, "user"):
            continue
        if str(msg.get("message", "")).strip() == out.text:
            return True
    return False


async def _settled_by_lookup(
    client: DevinClient,
    ledger: Ledger,
    out: Outgoing,
    report: MessageReport,
    auth: list[AuthError],
    why: str | None = None,
) -> Literal["found", "error", "auth"] | None:
    """Read the session's messages back: None when `out` is surely not there; else `found`
    (recorded as sent), `error` (the lookup failed or, after `why`, it is not there: an error
    of the report) or `auth`."""
    try:
        found = await delivered(client, out)
    except AuthError as exc:
        auth.append(exc)
        return "auth"
    except APIError as exc:
        report.errors[out.key] = f"outcome unknown and the lookup failed: {exc.message}"
        return "error"
    if found:
        await off_loop(ledger.message_outcome, out.session_id, out.digest, "sent", "found by lookup")
        report.found += 1
        return "found"
    if why is not None:
        report.errors[out.key] = f"outcome unknown ({why}): the next run looks it up first"
        return "error"
    return None


def _record_answer(
    ledger: Ledger, out: Outgoing, result: CreateResult, report: MessageReport
) -> Literal["sent", "retry", "auth", "failed", "ambiguous"]:
    """Record what the API answered to `out` (the ledger, the report); say what comes next."""
    if result.outcome is CreateOutcome.created:
        ledger.message_outcome(out.session_id, out.digest, "sent")
        report.sent += 1
        return "sent"
    if result.outcome is CreateOutcome.rate_limited:
        ledger.message_outcome(out.session_id, out.digest, "not_sent", "rate limited")
        return "retry"
    if result.outcome is CreateOutcome.auth:
        ledger.message_outcome(out.session_id, out.digest, "not_sent", result.message)
        return "auth"
    if result.outcome in (CreateOutcome.not_sent, CreateOutcome.rejected):
        ledger.message_outcome(out.session_id, out.digest, result.outcome.value, result.message)
        report.errors[out.key] = result.message
        return "failed"
    return "ambiguous"


async def _sender_lease(ledger: Ledger, lost: list[LockLostError], wait: float) -> Lease:
    """The campaign lease, held while messages go out: it keeps two senders (or a sender and
    an apply) apart, without which two runs could both find a message unsent and both send it.
    While another run holds it, wait up to `wait` seconds. Its loss is appended to `lost`."""
    lease = Lease(ledger)  # its own clock: heartbeats keep real time whatever paces the sends
    await lease.acquire(wait=wait)
    lease.on_lost(
        lambda _why: lost.append(
            LockLostError(
                "lost the campaign lock: stopped sending messages at once",
                hint="another run holds this campaign now; re-run `message` "
                "when it is done (what was sent is recorded: nothing repeats)",
            )
        )
    )
    return lease


def recheck(todo: Sequence[Outgoing], ledger: Ledger, report: MessageReport) -> list[Outgoing]:
    """The batch as the ledger says now, under the lease: it was built before the prompt, and
    another run may have sent (or tried) the same text since. Sent ones are dropped (counted as
    found), ones another run left pending are looked up before any send."""
    known = ledger.messages()
    left = []
    for out in todo:
        record = known.get((out.session_id, out.digest))
        state = record.state if record is not None else None
        if state == "sent":
            report.found += 1
        else:
            left.append(dataclasses.replace(out, pending=out.pending or state == "pending"))
    return left


async def send_messages(
    client: DevinClient,
    ledger: Ledger,
    batch: MessageBatch,
    *,
    rate: float = MESSAGE_RATE,
    clock: Clock | None = None,
    concurrency: int = CONCURRENCY,
    on_done: Callable[[str, str], None] | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
) -> MessageReport:
    """Send every message of `batch` once, paced as creates, holding the campaign lock (waited
    for `lock_timeout` s, else LockedError); AuthError (401/403) after stopping. `on_done(key,
    result)` hears of each message as it settles: `sent`, `found` or `error`."""
    await off_loop(check_target, ledger, client.config.base_url, client.config.org_id)
    pacer = Pacer(rate, clock or MonotonicClock())
    pacer.remaining = len(batch.todo)
    report = MessageReport()
    auth: list[AuthError] = []
    lost: list[LockLostError] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(out: Outgoing, scope: anyio.CancelScope) -> str | None:
        if out.pending:
            async with limiter:
                settled = await _settled_by_lookup(client, ledger, out, report, auth)
            if settled is not None:
                return None if settled == "auth" else settled
        retry_at = 0.0  # this message's own Retry-After (clock time): parked out of the slots
        while True:
            await pacer.wait_until(retry_at)
            async with limiter:
                ticket = await pacer.acquire(not_before=retry_at)
                assert ticket is not None  # no stop event: acquire always admits in the end
                # A long, slowly paced run keeps its lease, and never sends on a lost one
                # (paused past the lease and taken over: the other run may send it too).
                if not await lease.held():  # the fence: right before the intent and the POST
                    scope.cancel()
                    return None
                await off_loop(ledger.message_intent, out.key, out.session_id, out.digest, out.text)
                result = await client.send_message(out.session_id, out.text)
            answer = await off_loop(_record_answer, ledger, out, result, report)
            if answer == "sent":
                pacer.on_success(ticket, result.rate_limit)
                return "sent"
            if answer == "retry":
                retry_at = pacer.on_429(ticket, result.retry_after, result.rate_limit)
                continue
            if answer == "auth":
                auth.append(AuthError(result.message, status=result.status))
                scope.cancel()
                return None
            if answer == "failed":
                return "error"
            async with limiter:  # ambiguous: read back once (else the next run looks again)
                settled = await _settled_by_lookup(client, ledger, out, report, auth, result.message)
            return None if settled == "auth" else settled

    async def tracked(out: Outgoing, scope: anyio.CancelScope) -> None:
        try:
            result = await one(out, scope)
        finally:
            pacer.remaining = max(0, (pacer.remaining or 0) - 1)  # for the end game
        if result is not None and on_done is not None:
            on_done(out.key, result)

    lease = await _sender_lease(ledger, lost, lock_timeout)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lease.keep)
            async with anyio.create_task_group() as senders:
                for out in await off_loop(recheck, batch.todo, ledger, report):
                    senders.start_soon(tracked, out, senders.cancel_scope)
            tg.cancel_scope.cancel()  # every message is done: end the heartbeat
    finally:
        await lease.release()
    if auth or lost:
        raise (auth or lost)[0]
    return report
