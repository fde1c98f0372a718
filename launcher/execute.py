"""The executor: launches a plan's sessions concurrently, paced, exactly once, into the ledger.

One task group owns a run: a producer feeds a bounded stream, workers launch, and one writer
owns the ledger (group commits in a thread). The intent to create is durable before a request
leaves the process; an ambiguous outcome is resolved by looking the identity tag up, never by
blindly resending (the API has no idempotency key).
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream

from launcher.client import CreateOutcome, DevinClient
from launcher.errors import (
    APIError,
    AuthError,
    CircuitOpenError,
    ConfigError,
    FleetError,
    SecretError,
)
from launcher.ledger import Event, LaunchState, Ledger
from launcher.models import Session
from launcher.pacing import CircuitBreaker, Clock, MonotonicClock, Pacer, backoff_delay
from launcher.plan import Plan, PlannedSession

HEARTBEAT_EVERY = 10.0


class Result(StrEnum):
    """What this run did for one planned session."""

    created = "created"
    adopted = "adopted"  # found by its identity tag after an ambiguous attempt or a crash
    failed = "failed"
    unknown = "unknown"  # ambiguous and not resolvable now: the next run looks again
    not_started = "not_started"  # stopped (Ctrl-C, breaker, auth) before it was sent


class Reporter(Protocol):
    """Where the executor reports progress (the CLI draws it; tests may collect it)."""

    def start(self, total: int) -> None: ...

    def advance(self, key: str, result: Result) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self) -> None: ...


class NullReporter:
    def start(self, total: int) -> None:
        pass

    def advance(self, key: str, result: Result) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class ApplyOptions:
    """How to apply: pacing, selection and time bounds."""

    concurrency: int = 8  # most requests in flight
    rate: float = 5.0  # most creates per second (the adaptive rate never exceeds it)
    only: tuple[str, ...] = ()  # globs over keys
    limit: int | None = None  # most sessions to launch in this run
    replace: tuple[str, ...] = ()  # launched keys whose changed request is launched again
    max_attempts: int = 6  # per session, not counting 429s
    max_rate_limited: int = 200  # 429s per session before giving up
    lookup_grace: float = 3.0  # between the two looks for an ambiguous session
    drain_timeout: float = 30.0  # after a stop, how long in-flight creates may take
    run_timeout: float | None = None  # the whole run
    breaker_threshold: int = 12
    verify_token: bool = True  # GET /v3/self first (off when the caller already checked it)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if not self.rate > 0:
            raise ConfigError("--rate must be positive")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("--limit must not be negative")


@dataclass
class ApplySummary:
    """The outcome of one apply run."""

    campaign: str
    planned: int
    already: int = 0  # launched before this run, unchanged
    changed: list[str] = field(default_factory=list)  # launched, manifest changed, not replaced
    results: dict[str, Result] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # key -> why it failed / is unknown
    interrupted: bool = False
    aborted: FleetError | None = None
    elapsed: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    final_rate: float = 0.0

    def count(self, result: Result) -> int:
        return sum(1 for r in self.results.values() if r == result)

    @property
    def exit_code(self) -> int:
        if self.aborted is not None:
            return self.aborted.exit_code
        if self.interrupted:
            return 130
        if self.count(Result.unknown) or self.count(Result.not_started):
            return 4  # not done yet: re-run to reconcile and resume
        if self.count(Result.failed):
            return 3
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "planned": self.planned,
            "already_launched": self.already,
            "changed_not_relaunched": self.changed,
            "counts": {r.value: self.count(r) for r in Result},
            "failed": {k: self.errors.get(k, "") for k, r in self.results.items()
                       if r == Result.failed},
            "unknown": {k: self.errors.get(k, "") for k, r in self.results.items()
                        if r == Result.unknown},
            "interrupted": self.interrupted,
            "aborted": self.aborted.message if self.aborted else None,
            "elapsed_s": round(self.elapsed, 3),
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "final_rate": round(self.final_rate, 2),
            "exit_code": self.exit_code,
        }


def select(plan: Plan, ledger: Ledger, options: ApplyOptions,
           summary: ApplySummary) -> list[tuple[PlannedSession, bool]]:
    """The sessions this run should launch, each with whether it must be looked up first."""
    records = ledger.records()
    work: list[tuple[PlannedSession, bool]] = []
    for s in plan.sessions:
        if options.only and not any(fnmatch.fnmatchcase(s.key, g) for g in options.only):
            continue
        r = records[s.key]
        if r.state.launched:
            if r.fingerprint != s.fingerprint:
                summary.changed.append(s.key)
            else:
                summary.already += 1
            continue
        work.append((s, r.state in (LaunchState.pending, LaunchState.unknown)))
    if options.limit is not None:
        work = work[: options.limit]
    return work


class _Writer:
    """The one owner of ledger writes during a run: batches events into group commits."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.send, self.recv = anyio.create_memory_object_stream[
            tuple[list[Event], bool, anyio.Event | None]](max_buffer_size=math.inf)

    async def run(self, recv: MemoryObjectReceiveStream[
            tuple[list[Event], bool, anyio.Event | None]]) -> None:
        async with recv:
            async for first in recv:
                batch = [first]
                while True:
                    try:
                        batch.append(recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                events = [e for evs, _, _ in batch for e in evs]
                beat = any(hb for _, hb, _ in batch)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write, events, beat)
                for _, _, done in batch:
                    if done is not None:
                        done.set()

    def _write(self, events: list[Event], beat: bool) -> None:
        if events:
            self.ledger.write_events(events)
        if beat:
            self.ledger.heartbeat()

    async def submit(self, *events: Event, wait: bool = True) -> None:
        done = anyio.Event() if wait else None
        await self.send.send((list(events), False, done))
        if done is not None:
            await done.wait()

    async def heartbeat(self) -> None:
        await self.send.send(([], True, None))


class _Run:
    """The state of one apply run, shared by its tasks (all on one event loop)."""

    def __init__(self, plan: Plan, client: DevinClient, ledger: Ledger, options: ApplyOptions,
                 reporter: Reporter, clock: Clock, environ: Mapping[str, str] | None,
                 stop: anyio.Event, summary: ApplySummary) -> None:
        self.plan = plan
        self.client = client
        self.ledger = ledger
        self.options = options
        self.reporter = reporter
        self.clock = clock
        self.environ = environ
        self.stop = stop
        self.summary = summary
        self.pacer = Pacer(options.rate, clock)
        self.breaker = CircuitBreaker(options.breaker_threshold)
        self.writer = _Writer(ledger)
        self.known: dict[str, set[str]] = {}
        self.in_flight: set[str] = set()

    def _halt(self, error: FleetError) -> None:
        if self.summary.aborted is None:
            self.summary.aborted = error
            self.reporter.note(error.message)
        self.stop.set()

    def _done(self, key: str, result: Result, error: str | None = None) -> None:
        self.summary.results[key] = result
        if error:
            self.summary.errors[key] = error
        self.reporter.advance(key, result)

    async def worker(self, recv: ObjectReceiveStream[tuple[PlannedSession, bool]]) -> None:
        async with recv:
            async for s, lookup_first in recv:
                if self.stop.is_set():
                    self._done(s.key, Result.not_started)
                    continue
                self.in_flight.add(s.key)
                try:
                    await self.launch(s, lookup_first)
                except AuthError as exc:
                    self._halt(exc)
                    self._done(s.key, Result.not_started, exc.message)
                except Exception as exc:  # a bug or a ledger failure must not hang the run
                    if isinstance(exc, FleetError) and not isinstance(exc, APIError):
                        raise
                    self._done(s.key, Result.unknown, f"{type(exc).__name__}: {exc}")
                finally:
                    self.in_flight.discard(s.key)

    async def launch(self, s: PlannedSession, lookup_first: bool) -> None:
        key = s.key
        if lookup_first:
            found = await self.lookup(s, "earlier attempt's outcome unknown")
            if found is not None:
                return
        attempt = 0
        limited = 0
        retry_at = 0.0  # this request's own Retry-After, as a clock time
        while True:
            ticket = await self.pacer.acquire(self.stop, not_before=retry_at)
            if ticket is None:
                self._done(key, Result.not_started)
                return
            attempt += 1
            body = s.body(self.environ)
            await self.writer.submit(Event(key, "intent", attempt, fingerprint=s.fingerprint))
            result = await self.client.create_session(body)
            o = result.outcome
            if o == CreateOutcome.created:
                assert result.session is not None
                self.pacer.on_success(ticket, result.rate_limit)
                self.breaker.record(True)
                await self._adopt(s, result.session, "created", result.status)
                return
            if o == CreateOutcome.rate_limited:
                limited += 1
                attempt -= 1  # a 429 created nothing and is paced, not counted as a failure
                retry_at = self.pacer.on_429(ticket, result.retry_after, result.rate_limit)
                pause = retry_at - self.clock.now()
                await self.writer.submit(Event(key, "rate_limited", attempt + 1, 429,
                                               detail=f"pause {pause:.1f}s",
                                               state=LaunchState.planned), wait=False)
                if limited >= self.options.max_rate_limited:
                    await self._fail(s, f"rate limited {limited} times", 429)
                    return
                continue
            if o == CreateOutcome.auth:
                await self.writer.submit(Event(key, "auth", attempt, result.status,
                                               detail=result.message, state=LaunchState.planned))
                raise AuthError(f"the API refused the token (HTTP {result.status}): "
                                f"{result.message}", status=result.status,
                                hint="check DEVIN_API_KEY, DEVIN_ORG_ID and the token's "
                                "ManageOrgSessions permission")
            if o == CreateOutcome.rejected:
                self.breaker.record(True)
                await self._fail(s, f"HTTP {result.status}: {result.message}", result.status)
                return
            if o == CreateOutcome.not_sent:
                await self.writer.submit(Event(key, "not_sent", attempt, detail=result.message,
                                               state=LaunchState.planned), wait=False)
                if attempt >= self.options.max_attempts:
                    await self._fail(s, f"could not reach the API: {result.message}")
                    return
                await self._backoff(attempt)
                continue
            # Ambiguous: the session may exist. Never resend blindly: look it up by its tag.
            await self.writer.submit(Event(key, "ambiguous", attempt, result.status,
                                           detail=result.message), wait=False)
            if self.breaker.record(False):
                self._halt(CircuitOpenError(
                    f"{self.breaker.consecutive} consecutive ambiguous or 5xx create outcomes; "
                    "stopped launching", hint="the API looks unhealthy: re-run apply later; it "
                    "reconciles what is unknown"))
            found = await self.lookup(s, result.message)
            if found is not None:
                return
            if self.stop.is_set():
                self._done(key, Result.not_started)
                return
            if attempt >= self.options.max_attempts:
                await self._fail(s, f"gave up after {attempt} attempts: {result.message}",
                                 result.status)
                return
            await self._backoff(attempt)

    async def lookup(self, s: PlannedSession, why: str) -> Result | None:
        """Find a session created by an ambiguous attempt: look twice, a grace apart.

        Returns adopted/unknown when this key is settled, None when it is surely absent.
        """
        known = self.known.get(s.key, set())
        for look in range(2):
            sessions: list[Session] = []
            for tries in range(3):
                try:
                    sessions = [x async for x in self.client.list_sessions(tags=[s.identity_tag])]
                    break
                except AuthError:
                    raise
                except APIError as exc:
                    if tries == 2:
                        await self.writer.submit(Event(s.key, "lookup_failed", detail=exc.message,
                                                       state=LaunchState.unknown))
                        self._done(s.key, Result.unknown, f"{why}; lookup failed: {exc.message}")
                        return Result.unknown
                    await self._backoff(tries + 1)
            fresh = sorted((x for x in sessions if x.session_id not in known),
                           key=lambda x: (x.created_at, x.session_id))
            if fresh:
                if len(fresh) > 1:
                    self.reporter.note(f"{s.key}: {len(fresh)} sessions carry its identity tag; "
                                       f"adopting the first ({fresh[0].session_id})")
                await self._adopt(s, fresh[0], "adopted", None)
                return Result.adopted
            if look == 0:
                await self.clock.sleep(self.options.lookup_grace)
        await self.writer.submit(Event(s.key, "absent", detail="not found by identity tag",
                                       state=LaunchState.planned))
        return None

    async def _adopt(self, s: PlannedSession, session: Session, how: str,
                     status: int | None) -> None:
        self.known.setdefault(s.key, set()).add(session.session_id)
        state = LaunchState.created if how == "created" else LaunchState.adopted
        await self.writer.submit(Event(s.key, how, http_status=status,
                                       session_id=session.session_id, fingerprint=s.fingerprint,
                                       state=state, url=session.url))
        self._done(s.key, Result.created if how == "created" else Result.adopted)

    async def _fail(self, s: PlannedSession, message: str, status: int | None = None) -> None:
        await self.writer.submit(Event(s.key, "rejected", http_status=status, detail=message,
                                       state=LaunchState.failed))
        self._done(s.key, Result.failed, message)

    async def _backoff(self, attempt: int) -> None:
        delay = backoff_delay(attempt, base=0.5, cap=15.0)
        with anyio.move_on_after(delay):
            await self.stop.wait()

    async def heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_EVERY)
            await self.writer.heartbeat()

    async def watchdog(self, scope: anyio.CancelScope) -> None:
        """After a stop, give in-flight creates `drain_timeout`, then cancel them."""
        if self.options.run_timeout is not None:
            with anyio.move_on_after(self.options.run_timeout):
                await self.stop.wait()
            if not self.stop.is_set():
                self.reporter.note(f"run timeout ({self.options.run_timeout:.0f}s): stopping")
                self.stop.set()
        await self.stop.wait()
        await anyio.sleep(self.options.drain_timeout)
        scope.cancel()


async def apply_plan(plan: Plan, client: DevinClient, ledger: Ledger,
                     options: ApplyOptions | None = None, *, reporter: Reporter | None = None,
                     clock: Clock | None = None, environ: Mapping[str, str] | None = None,
                     stop: anyio.Event | None = None, interrupted: anyio.Event | None = None,
                     ) -> ApplySummary:
    """Launch every planned session that is not launched yet; return what happened.

    `stop` (set by the caller, e.g. on Ctrl-C) stops starting new creates and lets in-flight
    ones finish within `drain_timeout`; set `interrupted` too so the summary says so.
    """
    options = options or ApplyOptions()
    reporter = reporter or NullReporter()
    clock = clock or MonotonicClock()
    stop = stop or anyio.Event()
    summary = ApplySummary(plan.campaign, len(plan))
    started = time.monotonic()
    missing = plan.missing_secret_env(environ)
    if missing:
        raise SecretError(missing)
    ledger.acquire_lock()
    try:
        ledger.sync_plan(plan, replace=options.replace)
        work = select(plan, ledger, options, summary)
        run = _Run(plan, client, ledger, options, reporter, clock, environ, stop, summary)
        run.known = ledger.session_ids_by_key()  # one query, not one per key
        if work and options.verify_token:
            try:
                await client.whoami()
            except AuthError as exc:
                if exc.status != 403:  # 403: no ReadAccountMeta; creating may still be allowed
                    raise
        reporter.start(len(work))
        try:
            await _run(run, work)
        finally:
            reporter.finish()
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(FleetError):
            ledger.release_lock()
    summary.interrupted = interrupted is not None and interrupted.is_set()
    summary.elapsed = time.monotonic() - started
    summary.requests = client.requests
    summary.rate_limited = run.pacer.rate_limited
    summary.final_rate = run.pacer.adaptive.rate
    return summary


async def _run(run: _Run, work: Sequence[tuple[PlannedSession, bool]]) -> None:
    send_work, recv_work = anyio.create_memory_object_stream[tuple[PlannedSession, bool]](
        max_buffer_size=run.options.concurrency)
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(run.writer.run, run.writer.recv)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run.heartbeat)
                    tg.start_soon(run.watchdog, tg.cancel_scope)
                    async with anyio.create_task_group() as workers:
                        async with recv_work:
                            for _ in range(run.options.concurrency):
                                workers.start_soon(run.worker, recv_work.clone())
                        async with send_work:
                            for item in work:
                                if run.stop.is_set():
                                    run._done(item[0].key, Result.not_started)
                                    continue
                                await send_work.send(item)
                    tg.cancel_scope.cancel()  # workers are done: end heartbeat and watchdog
            finally:
                # Whatever happened, every event queued so far reaches the ledger.
                for s, _ in work:
                    if s.key not in run.summary.results:
                        run.summary.results[s.key] = Result.unknown if s.key in run.in_flight \
                            else Result.not_started
                        if s.key in run.in_flight:
                            run.summary.errors[s.key] = "cancelled in flight: the next run " \
                                                        "looks it up"
                run.writer.send.close()
    except BaseExceptionGroup as group:
        fleet = [e for e in _leaves(group) if isinstance(e, FleetError)]
        if fleet:
            raise fleet[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
