"""The executor: launches a plan's sessions concurrently, paced, exactly once, into the ledger.

One task group owns a run: a producer feeds a bounded stream, workers launch, and one writer
owns the ledger (group commits in a thread). Before any create, the campaign's sessions are
listed by tag and every planned key the API already has is adopted (the API is the source of
truth). The intent to create is durable before a request leaves the process, and the campaign
lease is checked (fencing) right before it is sent. An ambiguous outcome is deferred to the end
of the run and resolved by looking the identity tag up after a wait covering the list lag
(observed in this run, else stated or assumed; and the request timeout), never by blindly
resending (the API has no idempotency key). A key the start listing did not show is created only
once a listing taken a list lag after the run started agrees. Every wait goes through the Clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import ObjectReceiveStream, TaskGroup

from launcher.api.client import CreateOutcome, CreateResult, DevinClient
from launcher.api.listlag import LagProbe
from launcher.api.models import Session
from launcher.api.pacing import (
    CircuitBreaker,
    Clock,
    MonotonicClock,
    Pacer,
    Ticket,
    backoff_delay,
    sleep_unless,
)
from launcher.api.refusals import campaign_refusal
from launcher.errors import (
    APIError,
    AuthError,
    CircuitOpenError,
    FleetError,
    LockLostError,
    SecretError,
    leaves,
    redact,
)
from launcher.ledger.binding import check_target
from launcher.ledger.lease import Lease
from launcher.ledger.store import EventKind, Ledger, LedgerEvent, off_loop
from launcher.ledger.writer import LedgerWriter
from launcher.run.budget import check_relaunch
from launcher.run.options import ApplyOptions
from launcher.run.startup import StartView, before_creates, confirm_absent, keep_lag, select
from launcher.run.summary import Admission, ApplySummary, NullReporter, Reporter, Result
from launcher.spec.identity import carrying, lookup_tag
from launcher.spec.plan import Plan, PlannedSession


@dataclass
class _Deferred:
    """An ambiguous key waiting for its lookup at the end of the run."""

    session: PlannedSession
    since: float  # clock time of the ambiguous outcome
    # No HTTP answer (timeout, dropped): the request may still be in transit for this long.
    in_transit: float | None


@dataclass(eq=False)
class _ApplyRun:
    """The state of one apply run, shared by its tasks (all on one event loop)."""

    plan: Plan
    client: DevinClient
    ledger: Ledger
    options: ApplyOptions
    reporter: Reporter
    clock: Clock
    environ: Mapping[str, str] | None
    stop: anyio.Event
    summary: ApplySummary
    admission: Admission | None = None

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.options.rate, self.clock)
        self.breaker = CircuitBreaker(self.options.breaker_threshold)
        env = os.environ if self.environ is None else self.environ
        # Every session-secret value this run knows: never stored, never printed.
        self.secrets = sorted(
            {v for n in self.plan.secret_env_names() if len(v := env.get(n, "")) >= 3},
            key=len,
            reverse=True,
        )
        self.client.secrets.update(self.secrets)  # redacted from its texts before they are cut
        self.writer = LedgerWriter(self.ledger, self.redact, on_lost=lambda why: self.lease.lose(why))
        self.known: dict[str, set[str]] = {}
        self.intents: dict[str, str] = {}  # key -> fingerprint of its latest create intent
        self.in_flight: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.ambiguous_keys: set[str] = set()
        self.deferred: dict[str, _Deferred] = {}
        self.lease = Lease(self.ledger, ttl=self.options.lock_ttl, clock=self.clock)
        self.lease.on_lost(self._lost)
        self.lag = LagProbe(self.client, self.clock, self.stop)
        self.task_group: TaskGroup | None = None
        self.pool: TaskGroup | None = None  # the workers' group: parked keys wait in it
        self.slots = anyio.CapacityLimiter(self.options.concurrency)

    # ------------------------------------------------------------------ helpers

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def _halt(self, error: FleetError) -> None:
        if self.summary.aborted is None:
            error.message = self.redact(error.message)
            self.summary.aborted = error
            self.reporter.note(error.message)
        self.stop.set()

    def _done(self, key: str, result: Result, error: str | None = None) -> None:
        self.summary.results[key] = result
        if self.pacer.remaining:
            self.pacer.remaining -= 1
        if error:
            self.summary.errors[key] = self.redact(error)
        if self.admission is not None:
            self.admission.done(key, result)
        self.reporter.advance(key, result)

    async def wait_or_stop(self, delay: float) -> bool:
        """Sleep `delay` on the run's clock, or less if the run is stopped; True if stopped."""
        return await sleep_unless(self.clock, delay, self.stop)

    def start_view(self) -> StartView:
        """What the start of the run (`startup`) works with."""
        return StartView(
            self.plan, self.client, self.ledger, self.options, self.summary, self.reporter.note
        )

    # ------------------------------------------------------------------ the lease (fencing)

    @property
    def lease_lost(self) -> bool:
        return self.lease.lost.is_set()

    def _lost(self, why: str) -> None:
        """The lease was found lost (`Lease.held`, or a heartbeat): fence the writer, stop."""
        self.writer.fenced = True
        self._halt(
            LockLostError(
                f"lost the campaign lock ({why}): stopped sending creates at once",
                hint="another apply may be running this campaign; check `devin-fleet status`, "
                "then re-run apply when it is done (it reconciles with the API first)",
            )
        )

    async def watchdog(self, scope: anyio.CancelScope) -> None:
        """After a stop, give in-flight creates `drain_timeout`, then cancel them."""
        if self.options.run_timeout is not None and not await self.wait_or_stop(
            self.options.run_timeout
        ):
            self.reporter.note(f"run timeout ({self.options.run_timeout:g}s): stopping")
            self.stop.set()
        await self.stop.wait()
        await self.clock.sleep(self.options.drain_timeout)
        scope.cancel()

    # ------------------------------------------------------------------ launching

    async def worker(
        self, recv: ObjectReceiveStream[tuple[PlannedSession, bool]], deferred: bool = False
    ) -> None:
        async with recv:
            async for s, lookup_first in recv:
                await self.handle(s, lookup_first, deferred)

    async def handle(
        self,
        s: PlannedSession,
        lookup_first: bool,
        deferred: bool = False,
        resume: tuple[float, int] | None = None,
    ) -> None:
        """Take one key to its outcome for this run (or park it: see `launch`)."""
        if self.stop.is_set():
            self._stopped(s.key)
            return
        self.in_flight.add(s.key)
        returned = False
        try:
            if deferred:
                await self.resolve(s)
            else:
                await self.launch(s, lookup_first, resume)
            returned = True
        except AuthError as exc:
            returned = True
            self._halt(exc)
            self._done(s.key, Result.unknown if deferred else Result.not_started, exc.message)
        except Exception as exc:  # a bug or a ledger failure must not hang the run
            if isinstance(exc, FleetError) and not isinstance(exc, APIError):
                raise
            returned = True
            self._done(s.key, Result.unknown, f"{type(exc).__name__}: {exc}")
        finally:
            self.in_flight.discard(s.key)
            if not returned and s.key not in self.summary.results:  # the drain ended
                self._done(s.key, Result.unknown, "cancelled in flight: the next run looks it up")

    def _stopped(self, key: str) -> None:
        if key in self.ambiguous_keys or key in self.deferred:
            self._done(key, Result.unknown, "ambiguous; not looked up yet: the next run looks it up")
        else:
            self._done(key, Result.not_started)

    async def launch(
        self, s: PlannedSession, lookup_first: bool, resume: tuple[float, int] | None = None
    ) -> None:
        """Create `s` (paced, fenced, its intent recorded first). A 429 parks the key: it
        waits out its own Retry-After in a task of its own while its worker launches others,
        and `resume` (retry time, 429s so far) carries on from there."""
        key = s.key
        self.deferred.pop(key, None)
        if lookup_first:
            found = await self.lookup(s, "earlier attempt's outcome unknown")
            if found is not None:
                return
        retry_at, limited = resume or (0.0, 0)  # retry_at: its own Retry-After (clock time)
        while True:
            if await self.wait_or_stop(retry_at - self.clock.now()):
                self._stopped(key)
                return
            sent = await self._send(s, retry_at)
            if sent is None:
                return
            attempt, ticket, result = sent
            o = result.outcome
            message = self.redact(result.message)
            if o == CreateOutcome.created:
                assert result.session is not None
                self.pacer.on_success(ticket, result.rate_limit)
                self.breaker.record(True)
                by_title = self.plan.manifest.manifest.identity == "title"
                self.lag.created(s.identity_tag, result.session.session_id if by_title else None)
                if self.task_group is not None and self.options.list_lag is None:
                    self.lag.start(self.task_group)  # measured, for this run and the next ones
                await self._adopt(s, result.session, EventKind.created, result.status)
                return
            if o == CreateOutcome.rate_limited:
                limited += 1
                self.attempts[key] = attempt - 1  # a 429 created nothing and is not a failure
                retry_at = self.pacer.on_429(ticket, result.retry_after, result.rate_limit)
                pause = retry_at - self.clock.now()
                await self.writer.submit(
                    LedgerEvent(key, EventKind.rate_limited, attempt, 429, detail=f"pause {pause:.1f}s"),
                    wait=False,
                )
                if limited >= self.options.max_rate_limited:
                    await self._give_up(s, f"rate limited {limited} times", 429)
                    return
                if self.pool is not None:  # park: its worker goes on with the next key
                    self.pool.start_soon(self.handle, s, False, False, (retry_at, limited))
                    return
                continue
            if o == CreateOutcome.auth:
                await self.writer.submit(
                    LedgerEvent(key, EventKind.auth, attempt, result.status, detail=message)
                )
                raise AuthError(
                    f"the API refused the token (HTTP {result.status}): {message}",
                    status=result.status,
                    hint="check DEVIN_API_KEY, DEVIN_ORG_ID and the token's "
                    "ManageOrgSessions permission",
                )
            if o == CreateOutcome.rejected:
                self.breaker.record(True)
                await self._refused(s, f"HTTP {result.status}: {message}", result.status)
                if (refusal := campaign_refusal(s.key, result.status, message)) is not None:
                    self._halt(refusal)
                return
            if o == CreateOutcome.not_sent:
                await self.writer.submit(
                    LedgerEvent(key, EventKind.not_sent, attempt, detail=message), wait=False
                )
                if attempt >= self.options.max_attempts:
                    await self._give_up(s, f"could not reach the API: {message}")
                    return
                if await self.wait_or_stop(backoff_delay(attempt, base=0.5, cap=15.0)):
                    self._stopped(key)
                    return
                continue
            await self._ambiguous(s, attempt, result.status, message)
            return

    async def _send(self, s: PlannedSession, retry_at: float) -> tuple[int, Ticket, CreateResult] | None:
        """One create of `s`: its intent durable first, then paced, then fenced. None when
        nothing was sent (stopped, or the lease is lost: the key is settled)."""
        key = s.key
        async with self.slots:  # at most `concurrency` in flight, parked keys included
            attempt = self.attempts.get(key, 0) + 1
            body = s.body(self.environ)
            # The intent is durable before the pacer admits the create, so the request
            # leaves as soon as it is admitted: a group commit's few milliseconds between
            # the two would make the server see the paced gaps unevenly.
            intent = LedgerEvent(
                key, EventKind.intent, attempt, fingerprint=s.fingerprint, launch_attempt=s.attempt
            )
            await self.writer.submit(intent)
            self.intents[key] = s.fingerprint
            ticket = await self.pacer.acquire(self.stop, not_before=retry_at)
            if ticket is None:  # stopped while waiting for the rate: nothing was sent
                await self.writer.submit(
                    LedgerEvent(key, EventKind.not_sent, attempt, detail="stopped before sending"),
                    wait=False,
                )
                self._stopped(key)
                return None
            if not await self.lease.held():  # fencing: right before the request leaves
                self._done(key, Result.not_started, "not sent: this run lost the campaign lock")
                return None
            self.attempts[key] = attempt
            return attempt, ticket, await self.client.create_session(body)

    async def _ambiguous(
        self, s: PlannedSession, attempt: int, status: int | None, message: str
    ) -> None:
        """The session may exist. Never resend blindly: defer the key to the end of the run
        and look its identity tag up once the list has caught up."""
        key = s.key
        self.ambiguous_keys.add(key)
        await self.writer.submit(LedgerEvent(key, EventKind.ambiguous, attempt, status, detail=message))
        if self.breaker.record(False):
            self._halt(
                CircuitOpenError(
                    f"{self.breaker.consecutive} consecutive ambiguous or 5xx create outcomes; "
                    "stopped launching",
                    hint="the API looks unhealthy: re-run apply later; it reconciles what is unknown",
                )
            )
        in_transit = self.client.config.read_timeout if status is None else None
        self.deferred[key] = _Deferred(s, self.clock.now(), in_transit)
        self.summary.errors[key] = message
        if self.task_group is not None:
            self.lag.start(self.task_group)

    async def resolve(self, s: PlannedSession) -> None:
        """A deferred key, after its wait: adopted if found, else resent (within the attempt
        limit); ambiguous attempts exhausted leave it unknown, never resent without a lookup."""
        found = await self.lookup(s, "ambiguous create")
        if found is not None:
            return
        if self.attempts.get(s.key, 0) >= self.options.max_attempts:
            why = self.summary.errors.get(s.key, "")
            await self.writer.submit(
                LedgerEvent(
                    s.key,
                    EventKind.unresolved,
                    self.attempts[s.key],
                    detail=f"gave up after {self.attempts[s.key]} ambiguous attempts: {why}",
                )
            )
            self._done(s.key, Result.unknown, f"gave up after {self.attempts[s.key]} attempts: {why}")
            return
        await self.launch(s, False)

    async def lookup(self, s: PlannedSession, why: str) -> Result | None:
        """Find the session of an ambiguous attempt by its identity tag (one look: callers
        wait for the list lag first). Returns adopted/unknown when the key is settled, None
        when it is surely absent."""
        known = self.known.get(s.key, set())
        tag = lookup_tag(self.plan.manifest.manifest.identity, self.plan.campaign_tag, s.identity_tag)
        sessions: list[Session] = []
        for tries in range(3):
            try:
                async with self.slots:
                    sessions = [x async for x in self.client.list_sessions(tags=[tag])]
                break
            except AuthError:
                raise
            except APIError as exc:
                if tries == 2:
                    message = self.redact(exc.message)
                    await self.writer.submit(LedgerEvent(s.key, EventKind.lookup_failed, detail=message))
                    self._done(s.key, Result.unknown, f"{why}; lookup failed: {message}")
                    return Result.unknown
                if await self.wait_or_stop(backoff_delay(tries + 1, base=0.5, cap=15.0)):
                    self._done(s.key, Result.unknown, f"{why}; not looked up: stopped")
                    return Result.unknown
        fresh = carrying(sessions, s.identity_tag, s.attempt, known)
        if fresh:
            if len(fresh) > 1:
                self.reporter.note(
                    f"DUPLICATE: {s.key}: {len(fresh)} sessions carry its identity tag; "
                    f"adopting the earliest ({fresh[0].session_id}); "
                    "`devin-fleet cancel --duplicates` ends the others"
                )
                self.summary.duplicates[s.key] = [x.session_id for x in fresh]
            await self._adopt(s, fresh[0], EventKind.adopted, None)
            return Result.adopted
        await self.writer.submit(
            LedgerEvent(s.key, EventKind.absent, detail="not found by identity tag")
        )
        return None

    async def _adopt(
        self, s: PlannedSession, session: Session, how: EventKind, status: int | None
    ) -> None:
        self.known.setdefault(s.key, set()).add(session.session_id)
        # An adopted session is what its creating intent sent, not necessarily today's plan.
        fp = s.fingerprint if how == EventKind.created else self.intents.get(s.key, s.fingerprint)
        await self.writer.submit(
            LedgerEvent(
                s.key,
                how,
                http_status=status,
                session_id=session.session_id,
                fingerprint=fp,
                url=session.url,
                launch_attempt=s.attempt,
            )
        )
        self.summary.errors.pop(s.key, None)
        self._done(s.key, Result.created if how == EventKind.created else Result.adopted)

    async def _refused(self, s: PlannedSession, message: str, status: int | None = None) -> None:
        await self.writer.submit(
            LedgerEvent(s.key, EventKind.refused, http_status=status, detail=message)
        )
        self._done(s.key, Result.failed, message)

    async def _give_up(self, s: PlannedSession, message: str, status: int | None = None) -> None:
        if s.key in self.ambiguous_keys:  # an earlier attempt may have created it
            await self.writer.submit(
                LedgerEvent(s.key, EventKind.unresolved, http_status=status, detail=message)
            )
            self._done(s.key, Result.unknown, message + " (an earlier attempt was ambiguous)")
            return
        await self.writer.submit(
            LedgerEvent(s.key, EventKind.gave_up, http_status=status, detail=message)
        )
        self._done(s.key, Result.gave_up, message)


async def apply_plan(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    options: ApplyOptions | None = None,
    *,
    reporter: Reporter | None = None,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    stop: anyio.Event | None = None,
    interrupted: anyio.Event | None = None,
    admission: Admission | None = None,
) -> ApplySummary:
    """Launch every planned session that is not launched yet; return what happened.

    `stop` (set by the caller, e.g. on Ctrl-C) stops starting new creates and lets in-flight
    ones finish within `drain_timeout`; set `interrupted` too so the summary says so.
    `admission`, when given, is awaited before each session is handed to a worker.
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
    # Bound to its org on the first launch: another org's ledger is refused, never reused.
    await off_loop(check_target, ledger, client.config.base_url, client.config.org_id, claim=True)
    run = _ApplyRun(plan, client, ledger, options, reporter, clock, environ, stop, summary, admission)
    await run.lease.acquire(wait=options.lock_timeout)
    try:
        await off_loop(ledger.sync_plan, plan)
        # relaunches count: the plan's rest may no longer fit the budget
        await off_loop(check_relaunch, plan, ledger)
        listed_at = clock.now()
        halt = await before_creates(plan, client, ledger, options, summary, reporter.note)
        if halt is not None:
            run._halt(halt)  # may not list sessions: nothing is sent blind
        work = await off_loop(select, plan, ledger, options, summary)
        if not run.stop.is_set():
            work = await confirm_absent(run.start_view(), run.lag, run.lease, work, listed_at)
        run.known = await off_loop(ledger.session_ids_by_key)  # one query, not one per key
        run.intents = await off_loop(ledger.intent_fingerprints)
        run.lease.last_beat = clock.now()
        run.pacer.remaining = len(work)  # the end game starts near its end
        reporter.start(len(work))
        try:
            await _drive(run, work)
        finally:
            reporter.finish()
        await keep_lag(ledger, client, run.lag)
    finally:
        await run.lease.release()  # shielded: cancellation cannot cut it short
    summary.interrupted = interrupted is not None and interrupted.is_set()
    summary.elapsed = time.monotonic() - started
    summary.requests = client.requests
    summary.rate_limited = run.pacer.rate_limited
    summary.final_rate = run.pacer.adaptive.rate
    summary.observed_lag = run.lag.lag if run.lag.samples else None
    return summary


async def _pool(run: _ApplyRun, items: Sequence[tuple[PlannedSession, bool]], deferred: bool) -> None:
    """Run `items` through `concurrency` workers (deferred ones are resolved, not launched)."""
    send, recv = anyio.create_memory_object_stream[tuple[PlannedSession, bool]](
        max_buffer_size=run.options.concurrency
    )
    async with anyio.create_task_group() as workers:
        run.pool = workers
        async with recv:
            for _ in range(run.options.concurrency):
                workers.start_soon(run.worker, recv.clone(), deferred)
        async with send:
            for item in items:
                admitted = (
                    deferred  # a deferred key is only looked up: nothing new starts running
                    or run.admission is None
                    or run.stop.is_set()
                    or await run.admission.admit(item[0].key, run.stop)
                )
                if run.stop.is_set() or not admitted:
                    run._stopped(item[0].key)
                    continue
                await send.send(item)
    run.pool = None


async def _settle_deferred(run: _ApplyRun) -> None:
    """Rounds of lookups for the keys whose creates were ambiguous, each after its wait."""
    while run.deferred and not run.stop.is_set():
        await run.lag.first_figure()  # the lag is being measured: wait for its first figure
        now, grace = run.clock.now(), run.options.lookup_grace
        due = max(
            d.since + run.lag.lookup_wait(grace, d.in_transit, run.options.list_lag)
            for d in run.deferred.values()
        )
        if due > now:
            run.reporter.note(
                f"{len(run.deferred)} ambiguous create(s): looking them up in {due - now:.1f}s "
                f"(list lag seen: {run.lag.lag:.1f}s)"
            )
            if await run.wait_or_stop(due - now):
                break
        batch = [(d.session, True) for d in run.deferred.values()]
        run.deferred.clear()
        await _pool(run, batch, deferred=True)


async def _drive(run: _ApplyRun, work: Sequence[tuple[PlannedSession, bool]]) -> None:
    # Keys whose earlier outcome is unknown were just looked for in the reconcile listing;
    # their second look comes after the lag wait, with the run's ambiguous keys. A crashed
    # run's request got no answer: it waits the request timeout too (it may be in transit).
    fresh = [(s, False) for s, uncertain in work if not uncertain]
    now = run.clock.now()
    for s, uncertain in work:
        if uncertain:
            run.deferred[s.key] = _Deferred(s, now, run.client.config.read_timeout)
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(run.writer.run, run.writer.recv)
            try:
                async with anyio.create_task_group() as tg:
                    run.task_group = tg
                    tg.start_soon(run.lease.keep)
                    tg.start_soon(run.watchdog, tg.cancel_scope)
                    if run.deferred:
                        run.lag.start(tg)
                    await _pool(run, fresh, deferred=False)
                    await _settle_deferred(run)
                    await run.lag.settle(run.options.list_lag, run.reporter.note)
                    tg.cancel_scope.cancel()  # workers are done: end heartbeat and watchdog
            finally:
                # Whatever happened, every event queued so far reaches the ledger ...
                for s, _ in work:  # ... and every key reaches the summary and the reporter once
                    if s.key in run.summary.results:
                        continue
                    if s.key in run.in_flight:
                        run._done(s.key, Result.unknown, "cancelled in flight: the next run looks it up")
                    elif s.key in run.deferred:
                        run._done(
                            s.key,
                            Result.unknown,
                            "ambiguous; not looked up yet: the next run looks it up",
                        )
                    else:
                        run._done(s.key, Result.not_started)
                run.writer.send.close()
    except BaseExceptionGroup as group:
        fleet = [e for e in leaves(group) if isinstance(e, FleetError)]
        if fleet:
            raise fleet[0] from None
        raise
