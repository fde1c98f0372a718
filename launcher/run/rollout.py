"""Rollout: a campaign beyond one launch. Canary waves with a gate between them, a ceiling on
the campaign's running sessions, and following launched sessions to their final outcomes.

- Waves: the manifest's `rollout.waves` (e.g. `[5, "20%", "rest"]`) cut the plan into waves.
  Sessions are ordered by their identity tag (the first 16 hex of sha256(campaign, NUL, key)),
  so a key's wave does not depend on the order of the items (and a wave is a random sample of
  the fleet, not the first rows of a file); a percentage is of the whole plan, rounded up;
  sessions left over after the last size form a final wave.
- Each wave is launched by `apply.apply_plan` with the wave's keys as its selection, followed
  with `status.refresh` until its sessions are final (or the gate's `wait_timeout`), and its
  gate decides: `passed` opens the next wave, `stopped` ends the run (exit 7). Decisions and
  overrides (`--wave N` records `forced` for the waves before N; `--skip-gate` records
  `skipped` for the wave the run resumes at) go to the ledger, so a re-run (also after
  kill -9) resumes at the first wave whose gate is not open: it launches what is left of it
  (apply reconciles intents it finds), follows it and evaluates its gate again.
- Ceiling (`max_running`): an `apply.Admission` that holds each launch while the campaign has
  that many sessions not final, counted from one listing by the campaign tag (pages of 200)
  plus the sessions admitted since that the listing may not show yet; it polls with backoff
  through the injected clock.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from launcher.api.client import DevinClient
from launcher.api.pacing import Clock, MonotonicClock, sleep_unless
from launcher.errors import (
    APIError,
    AuthError,
    ConfigError,
    ExitCode,
    LockLostError,
)
from launcher.ledger.lease import Lease
from launcher.ledger.store import LaunchState, Ledger, off_loop
from launcher.run.apply import ApplyOptions, NullReporter, Reporter, apply_plan
from launcher.run.status import CampaignView, Outcome, classify, watch
from launcher.run.summary import ApplySummary, Result
from launcher.spec.manifest import Gate
from launcher.spec.plan import Plan

OPEN = frozenset({"passed", "skipped", "forced"})  # decisions that let the next wave launch
HEARTBEAT_EVERY = 10.0
NOTE_EVERY = 30.0  # seconds between two "holding" notes


# =========================================================================== waves


@dataclass(frozen=True)
class Wave:
    """One wave of a rollout: its 1-based number and its keys, in plan order."""

    number: int
    keys: tuple[str, ...]


def wave_sizes(sizes: list[int | str], total: int) -> list[int]:
    """How many sessions each wave holds, for a plan of `total` (empty waves are dropped)."""
    out: list[int] = []
    left = total
    for size in sizes:
        if left <= 0:
            break
        if size == "rest":
            n = left
        elif isinstance(size, str):
            n = max(1, math.ceil(total * float(size[:-1]) / 100))
        else:
            n = size
        n = min(n, left)
        out.append(n)
        left -= n
    if left > 0:
        out.append(left)
    return out


def assign_waves(plan: Plan) -> list[Wave]:
    """The plan's waves; one wave of everything when the manifest has no rollout."""
    rollout = plan.manifest.manifest.rollout
    if rollout is None:
        return [Wave(1, tuple(s.key for s in plan.sessions))]
    ranked = sorted(plan.sessions, key=lambda s: (s.identity_tag, s.key))
    number: dict[str, int] = {}
    start = 0
    for i, n in enumerate(wave_sizes(list(rollout.waves), len(ranked)), 1):
        for s in ranked[start : start + n]:
            number[s.key] = i
        start += n
    count = max(number.values(), default=0)
    return [
        Wave(i, tuple(s.key for s in plan.sessions if number[s.key] == i)) for i in range(1, count + 1)
    ]


def waves_by_key(plan: Plan) -> dict[str, int]:
    """Each key's wave number (all 1 without a rollout)."""
    return {k: w.number for w in assign_waves(plan) for k in w.keys}


# =========================================================================== the gate


@dataclass(frozen=True)
class GateResult:
    """What a wave's gate decided, and why."""

    wave: int
    passed: bool
    counts: dict[str, int]
    reasons: tuple[str, ...] = ()

    @property
    def success_rate(self) -> float:
        considered = sum(self.counts.values()) - self.counts.get(Outcome.cancelled, 0)
        return self.counts.get(Outcome.succeeded, 0) / considered if considered else 1.0

    def describe(self) -> str:
        c = self.counts
        head = (
            f"wave {self.wave}: {c.get(Outcome.succeeded, 0)} of {sum(c.values())} succeeded "
            f"({self.success_rate:.0%}), {c.get(Outcome.failed, 0)} failed, "
            f"{c.get(Outcome.needs_human, 0)} need a human"
        )
        return head + (": gate passed" if self.passed else ": gate stopped: " + "; ".join(self.reasons))

    def to_json(self) -> dict[str, Any]:
        return {
            "wave": self.wave,
            "passed": self.passed,
            "counts": self.counts,
            "success_rate": round(self.success_rate, 4),
            "reasons": list(self.reasons),
        }


def evaluate_gate(gate: Gate, wave: int, counts: Mapping[str, int]) -> GateResult:
    """Check a finished wave's outcome counts against the gate (cancelled sessions are left out
    of the success rate: cancelling is the owner's call, not a verdict on the campaign)."""
    result = GateResult(wave, True, {str(k): v for k, v in counts.items()})
    reasons = []
    if result.success_rate < gate.min_success_rate:
        reasons.append(
            f"success rate {result.success_rate:.0%} is below min_success_rate "
            f"{gate.min_success_rate:.0%}"
        )
    failed = counts.get(Outcome.failed, 0)
    if gate.max_failed is not None and failed > gate.max_failed:
        reasons.append(f"{failed} failed, more than max_failed {gate.max_failed}")
    human = counts.get(Outcome.needs_human, 0)
    if gate.max_needs_human is not None and human > gate.max_needs_human:
        reasons.append(f"{human} need a human, more than max_needs_human {gate.max_needs_human}")
    return dataclasses.replace(result, passed=not reasons, reasons=tuple(reasons))


# =========================================================================== following


class Follower(Protocol):
    """Where following reports: how many sessions it follows, each one as it turns final."""

    def start(self, total: int) -> None: ...

    def advance(self, key: str, result: str) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self) -> None: ...


class NullFollower:
    def start(self, total: int) -> None:
        pass

    def advance(self, key: str, result: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass


async def follow(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    keys: Collection[str] | None = None,
    *,
    wait_timeout: float | None = None,
    interval: float = 5.0,
    max_interval: float = 60.0,
    clock: Clock | None = None,
    stop: anyio.Event | None = None,
    follower: Follower | None = None,
    max_failures: int = 5,
) -> CampaignView:
    """`status.watch` over `keys` (one campaign listing per round), telling `follower` how
    many sessions it follows and each one as it turns final."""
    follower = follower or NullFollower()
    final: set[str] = set()
    started = False

    def on_refresh(view: CampaignView, _wait: float) -> None:
        nonlocal started
        if not started:
            follower.start(len(view.sessions))
            started = True
        for s in view.sessions:
            if s.outcome.final and s.key not in final:
                final.add(s.key)
                follower.advance(s.key, s.outcome.value)

    try:
        return await watch(
            plan,
            client,
            ledger,
            keys=keys,
            interval=interval,
            max_interval=max_interval,
            wait_timeout=wait_timeout,
            on_refresh=on_refresh,
            on_error=lambda exc: follower.note(f"refresh failed, retrying: {exc.message}"),
            max_failures=max_failures,
            clock=clock,
            stop=stop,
        )
    finally:
        if started:
            follower.finish()


# =========================================================================== the ceiling


class RunningCeiling:
    """An `apply.Admission` that keeps at most `limit` of the campaign's sessions not final.

    Running = sessions carrying the campaign tag whose status is not final in the last listing
    + sessions admitted and not finished launching + launched ones the listing did not show
    yet (list lag). It over-counts rather than under-counts: the ceiling is never exceeded by
    anything this process launches.
    """

    def __init__(
        self,
        plan: Plan,
        client: DevinClient,
        limit: int,
        *,
        clock: Clock | None = None,
        interval: float = 2.0,
        max_interval: float = 30.0,
        note: Callable[[str], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ConfigError("--max-running must be at least 1")
        self.plan = plan
        self.client = client
        self.limit = limit
        self.clock = clock or MonotonicClock()
        self.interval = interval
        self.max_interval = max_interval
        self.note = note or (lambda _m: None)
        self.tag_key = {s.identity_tag: s.key for s in plan.sessions}
        self.pending: set[str] = set()  # admitted, launch not finished
        self.launched: set[str] = set()  # created/adopted by this process
        self.listed: set[str] = set()  # keys the last listing showed (any state)
        self.listed_running = 0
        self.listings = 0
        self.holds = 0  # times a launch had to wait
        self._noted: float | None = None  # when a hold was last said

    @property
    def running(self) -> int:
        return self.listed_running + len(self.pending) + len(self.launched - self.listed)

    async def _list(self) -> None:
        running, listed = 0, set()
        async for s in self.client.list_sessions(tags=[self.plan.campaign_tag]):
            if not classify(s.status, s.status_detail, delivered=False).final:
                running += 1
            key = next((self.tag_key[t] for t in s.tags if t in self.tag_key), None)
            if key is not None:
                listed.add(key)
        self.listed_running, self.listed = running, listed
        self.listings += 1

    async def _list_retrying(self, stop: anyio.Event, tries: int = 5) -> None:
        """`_list`, retrying a failed listing (5xx, network) with a pause; raises after `tries`
        (an error then ends the run; in-flight creates are reconciled by the next one)."""
        for attempt in range(1, tries + 1):
            try:
                await self._list()
                return
            except AuthError:
                raise
            except APIError as exc:
                if attempt == tries:
                    raise
                self.note(f"listing the campaign failed, retrying: {exc.message}")
                await sleep_unless(self.clock, self.interval * attempt, stop)
                if stop.is_set():
                    return

    async def admit(self, key: str, stop: anyio.Event) -> bool:
        wait: float | None = None
        if self.listings == 0:
            await self._list_retrying(stop)
        while not stop.is_set():
            if self.running < self.limit:
                self.pending.add(key)
                return True
            before = self.running
            await self._list_retrying(stop)
            if self.running < self.limit or stop.is_set():
                continue
            if wait is None:  # a new hold; said at most every NOTE_EVERY (a big fleet holds often)
                self.holds += 1
                if self._noted is None or self.clock.now() - self._noted >= NOTE_EVERY:
                    self._noted = self.clock.now()
                    self.note(f"holding: {self.running} running (ceiling {self.limit})")
            if wait is None or self.running != before:
                wait = self.interval
            else:
                wait = min(self.max_interval, wait * 1.5)
            await sleep_unless(self.clock, wait, stop)
        return False

    def done(self, key: str, result: Result) -> None:
        self.pending.discard(key)
        if result in (Result.created, Result.adopted):
            self.launched.add(key)


# =========================================================================== a whole run


@dataclass(frozen=True)
class RolloutOptions:
    """What `apply` does beyond launching: follow, waves, ceiling."""

    wait: bool = False  # follow every selected session to a final outcome
    wait_timeout: float | None = None  # bounds all following in this run (seconds)
    wave: int | None = None  # go straight to this wave (earlier gates: `forced`)
    skip_gate: bool = False  # open the gate of the wave this run resumes at
    max_running: int | None = None  # overrides the manifest's budget.max_running
    interval: float = 5.0  # first follow interval (grows while nothing changes)
    max_interval: float = 60.0
    ceiling_interval: float = 2.0  # first poll interval while holding at the ceiling

    def __post_init__(self) -> None:
        if self.wait_timeout is not None and not self.wait_timeout > 0:
            raise ConfigError("--wait-timeout must be positive")
        if self.wave is not None and self.wave < 1:
            raise ConfigError("--wave must be at least 1")
        if self.max_running is not None and self.max_running < 1:
            raise ConfigError("--max-running must be at least 1")


@dataclass
class RolloutSummary:
    """What one `apply` run did across waves, and the outcomes it followed."""

    campaign: str
    waves: int
    planned: int = 0
    applies: list[tuple[int, ApplySummary]] = field(default_factory=list)  # (wave, summary)
    gates: list[GateResult] = field(default_factory=list)
    stopped: GateResult | None = None  # the gate that stopped the rollout
    incomplete: str | None = None  # why the run stopped before its waves were launched
    view: CampaignView | None = None  # the last follow (the whole selection with --wait)
    followed: bool = False  # `view` is a follow of every selected session
    next_wave: int | None = None  # the wave a re-run starts at (None: all launched)
    holds: int = 0  # times the ceiling held a launch
    interrupted: bool = False

    @property
    def apply(self) -> ApplySummary:
        """Every wave's apply summary folded into one."""
        out = ApplySummary(self.campaign, self.planned)
        for _, s in self.applies:
            out.results.update(s.results)
            out.errors.update(s.errors)
            out.changed += [k for k in s.changed if k not in out.changed]
            out.elapsed += s.elapsed
            out.requests = max(out.requests, s.requests)
            out.rate_limited += s.rate_limited
            out.final_rate = s.final_rate
            out.aborted = out.aborted or s.aborted
            out.interrupted = out.interrupted or s.interrupted
            out.reconciled += s.reconciled
            out.duplicates.update(s.duplicates)
            out.strays = max(out.strays, s.strays)  # each wave's reconcile sees them all
            if s.observed_lag is not None:
                out.observed_lag = max(out.observed_lag or 0.0, s.observed_lag)
        out.already = sum(s.already for _, s in self.applies)
        return out

    @property
    def exit_code(self) -> ExitCode:
        launched = self.apply.exit_code
        if launched not in (ExitCode.ok, ExitCode.failed) or self.interrupted:
            return launched if launched != ExitCode.ok else ExitCode.interrupted
        if self.incomplete is not None:
            return ExitCode.unfinished
        if self.view is not None and self.view.timed_out:
            return ExitCode.wait_timeout
        if self.stopped is not None:
            return ExitCode.gate_stopped
        if self.followed and self.view is not None:
            return self.view.exit_code
        return launched

    def to_json(self) -> dict[str, Any]:
        data = self.apply.to_json()
        data["exit_code"] = int(self.exit_code)
        data["interrupted"] = data["interrupted"] or self.interrupted
        data["rollout"] = {
            "waves": self.waves,
            "launched_waves": [w for w, _ in self.applies],
            "gates": [g.to_json() for g in self.gates],
            "stopped": self.stopped.to_json() if self.stopped else None,
            "next_wave": self.next_wave,
            "incomplete": self.incomplete,
            "ceiling_holds": self.holds,
        }
        if self.view is not None:
            data["followed"] = {
                "counts": self.view.counts(),
                "timed_out": self.view.timed_out,
                "exit_code": int(self.view.exit_code),
            }
        return data


def _selected(keys: tuple[str, ...], only: tuple[str, ...]) -> list[str]:
    return [k for k in keys if not only or any(fnmatch.fnmatchcase(k, g) for g in only)]


async def run_rollout(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    options: ApplyOptions | None = None,
    rollout: RolloutOptions | None = None,
    *,
    progress: Callable[[str], Reporter] | None = None,
    follower: Callable[[str], Follower] | None = None,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    stop: anyio.Event | None = None,
    interrupted: anyio.Event | None = None,
) -> RolloutSummary:
    """Launch the plan wave by wave (one wave without a rollout), with the gates between them,
    the running ceiling, and, with `wait`, follow every selected session to the end.

    `progress(label)` makes the reporter of each wave's launch, `follower(label)` that of each
    follow. `stop`/`interrupted` as in `apply_plan` (a stop also ends following).
    """
    options = options or ApplyOptions()
    rollout = rollout or RolloutOptions()
    clock = clock or MonotonicClock()
    stop = stop or anyio.Event()
    progress = progress or (lambda _label: NullReporter())
    follower = follower or (lambda _label: NullFollower())
    gate = plan.manifest.manifest.rollout.gate if plan.manifest.manifest.rollout else Gate()
    waves = assign_waves(plan)
    summary = RolloutSummary(plan.campaign, len(waves), len(plan))
    if rollout.wave is not None and rollout.wave > len(waves):
        raise ConfigError(f"--wave {rollout.wave}: the plan has {len(waves)} wave(s)")
    limit = rollout.max_running or plan.manifest.manifest.budget.max_running
    ceiling = None
    if limit is not None:
        ceiling = RunningCeiling(plan, client, limit, clock=clock, interval=rollout.ceiling_interval)
    deadline = None if rollout.wait_timeout is None else clock.now() + rollout.wait_timeout

    def remaining(extra: float | None = None) -> float | None:
        left = None if deadline is None else max(0.0, deadline - clock.now())
        if extra is None:
            return left
        return extra if left is None else min(left, extra)

    lease = Lease(ledger, ttl=options.lock_ttl)
    await lease.acquire()
    try:
        decided = {e["wave"] for e in await off_loop(ledger.wave_log) if e["decision"] in OPEN}
        if rollout.wave is not None:
            for w in waves[: rollout.wave - 1]:
                if w.number not in decided:
                    await off_loop(ledger.record_wave, w.number, "forced", f"--wave {rollout.wave}")
                    decided.add(w.number)
        if rollout.skip_gate:
            resume = next((w for w in waves[:-1] if w.number not in decided), None)
            if resume is not None:
                await off_loop(ledger.record_wave, resume.number, "skipped", "--skip-gate")
                decided.add(resume.number)
        await _waves(
            plan, client, ledger, options, rollout, gate, waves, decided, summary,
            ceiling, progress, follower, clock, environ, stop, interrupted, remaining,
        )  # fmt: skip
    finally:
        await lease.release()
    summary.holds = ceiling.holds if ceiling is not None else 0
    summary.interrupted = interrupted is not None and interrupted.is_set()
    return summary


async def _follow_locked(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    keys: Collection[str],
    *,
    lock_ttl: float,
    **kw: Any,
) -> CampaignView:
    """`follow`, renewing the campaign lease (apply_plan is not running then, so nothing else
    writes the ledger). A lease found lost (paused past it, and another apply took the
    campaign over) stops the run: no gate is decided and no wave launched on a lost lease."""
    lost: list[LockLostError] = []
    view: CampaignView | None = None
    # Real time for the heartbeat (the follow's clock may be a test's virtual one); the lease
    # was acquired by the caller, so this run only renews it.
    lease = Lease(ledger, ttl=lock_ttl, every=HEARTBEAT_EVERY)
    async with anyio.create_task_group() as tg:

        def stop_following(_why: str) -> None:
            lost.append(
                LockLostError(
                    "lost the campaign lock while following the fleet: stopped",
                    hint="another apply holds this campaign now; re-run when it is done",
                )
            )
            tg.cancel_scope.cancel()

        lease.on_lost(stop_following)
        tg.start_soon(lease.keep)
        view = await follow(plan, client, ledger, keys, **kw)
        tg.cancel_scope.cancel()
    if lost or view is None:
        raise lost[0] if lost else LockLostError("following stopped without a view")
    return view


async def _waves(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    options: ApplyOptions,
    rollout: RolloutOptions,
    gate: Gate,
    waves: list[Wave],
    decided: set[int],
    summary: RolloutSummary,
    ceiling: RunningCeiling | None,
    progress: Callable[[str], Reporter],
    follower: Callable[[str], Follower],
    clock: Clock,
    environ: Mapping[str, str] | None,
    stop: anyio.Event,
    interrupted: anyio.Event | None,
    remaining: Callable[[float | None], float | None],
) -> None:
    many = len(waves) > 1
    selected: list[str] = []
    budget = options.limit  # --limit counts over the whole run, not per wave
    for w in waves:
        keys = _selected(w.keys, options.only)
        if not keys:
            continue
        selected += keys
        label = f"wave {w.number}/{len(waves)}" if many else "apply"
        reporter = progress(label)
        if ceiling is not None:
            ceiling.note = reporter.note
        launched = await apply_plan(
            plan,
            client,
            ledger,
            dataclasses.replace(options, keys=frozenset(w.keys), limit=budget),
            reporter=reporter,
            clock=clock,
            environ=environ,
            stop=stop,
            interrupted=interrupted,
            admission=ceiling,
        )
        summary.applies.append((w.number, launched))
        options = dataclasses.replace(options, preflight=False)  # proven by the first wave
        if budget is not None:
            budget = max(0, budget - len(launched.results))
        if launched.exit_code not in (ExitCode.ok, ExitCode.failed) or stop.is_set():
            summary.next_wave = w.number  # a lost lease lands here too: never re-taken
            return
        # apply_plan released it; this run keeps it until it ends (LockedError if another
        # apply took the campaign in the meantime)
        await off_loop(ledger.acquire_lock, ttl=options.lock_ttl)
        records = await off_loop(ledger.records)
        left = [
            k for k in keys if not (records[k].state.launched or records[k].state == LaunchState.refused)
        ]
        if left:
            why = " (--limit)" if budget == 0 else ""
            summary.incomplete = f"wave {w.number}: {len(left)} session(s) not launched yet{why}"
            summary.next_wave = w.number
            return
        if w is waves[-1] or w.number in decided:
            continue
        view = await _follow_locked(
            plan,
            client,
            ledger,
            keys,
            wait_timeout=remaining(gate.wait_timeout),
            interval=rollout.interval,
            max_interval=rollout.max_interval,
            clock=clock,
            stop=stop,
            follower=follower(f"wave {w.number}/{len(waves)}: following"),
            lock_ttl=options.lock_ttl,
        )
        summary.view = view
        if stop.is_set():
            summary.next_wave = w.number
            return
        if view.timed_out:
            await off_loop(
                ledger.record_wave, w.number, "timeout", "sessions still running at the wait timeout"
            )
            reporter.note(f"wave {w.number}: sessions still running at the wait timeout")
            summary.next_wave = w.number
            return
        result = evaluate_gate(gate, w.number, view.counts())
        summary.gates.append(result)
        decision = "passed" if result.passed else "stopped"
        await off_loop(ledger.record_wave, w.number, decision, result.describe())
        reporter.note(result.describe())
        if not result.passed:
            summary.stopped = result
            summary.next_wave = w.number
            return
    if rollout.wait:
        summary.view = await _follow_locked(
            plan,
            client,
            ledger,
            selected,
            wait_timeout=remaining(None),
            interval=rollout.interval,
            max_interval=rollout.max_interval,
            clock=clock,
            stop=stop,
            follower=follower("following"),
            lock_ttl=options.lock_ttl,
        )
        summary.followed = not stop.is_set()
