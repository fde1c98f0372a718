"""Rollout: a campaign beyond one launch. Canary waves with a gate between them, a ceiling on
the campaign's running sessions, and following launched sessions to their final outcomes.

- Waves: the manifest's `rollout.waves` cut the plan into waves (`spec.waves`): named ones
  first (`{keys: [...]}` or `{when: "item.risk == 'low'"}`), then sizes (e.g. `[5, "20%",
  "rest"]`) over the sessions left, ordered by their identity tag (the first 16 hex of
  sha256(campaign, NUL, key)), so a key's wave does not depend on the order of the items (and
  a sized wave is a random sample of the fleet, not the first rows of a file); a percentage
  is of the whole plan, rounded up; sessions left over after the last size form a final wave.
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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from launcher.api.client import DevinClient
from launcher.api.pacing import Clock, MonotonicClock
from launcher.errors import (
    ConfigError,
    ExitCode,
    LockLostError,
)
from launcher.ledger.lease import Lease
from launcher.ledger.store import LaunchState, Ledger, off_loop
from launcher.run.apply import apply_plan
from launcher.run.ceiling import RunningCeiling
from launcher.run.options import (
    FOLLOW_INTERVAL,
    FOLLOW_MAX_INTERVAL,
    ApplyOptions,
    RolloutOptions,
)
from launcher.run.status import CampaignView, Outcome, watch
from launcher.run.summary import ApplySummary, NullReporter, Reporter
from launcher.spec.model import Gate
from launcher.spec.plan import Plan
from launcher.spec.waves import Member, assign

OPEN = frozenset({"passed", "skipped", "forced"})  # decisions that let the next wave launch
HEARTBEAT_EVERY = 10.0


# =========================================================================== waves


@dataclass(frozen=True)
class Wave:
    """One wave of a rollout: its 1-based number and its keys, in plan order."""

    number: int
    keys: tuple[str, ...]


def assign_waves(plan: Plan) -> list[Wave]:
    """The plan's waves (`spec.waves` decides membership); one wave of everything when the
    manifest has no rollout."""
    rollout = plan.manifest.manifest.rollout
    if rollout is None:
        return [Wave(1, tuple(s.key for s in plan.sessions))]
    number = assign(rollout, [Member(s.key, s.identity_tag, s.item) for s in plan.sessions])
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
    interval: float = FOLLOW_INTERVAL,
    max_interval: float = FOLLOW_MAX_INTERVAL,
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


# =========================================================================== a whole run


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


_PAST_GATE = (
    "--only selects no session of wave {w}, whose gate is not open yet: launch wave {w} first "
    "(without --only), or pass --skip-gate"
)
_PART_OF_WAVE = (
    "wave {{w}}: {n} session(s) not selected by --only are not launched yet, and the gate "
    "judges the whole wave: launch them (without --only), or pass --skip-gate"
)


def _held(summary: RolloutSummary, wave: int, why: str) -> None:
    """The run stops before a gate it may not pass (exit 4), saying why and what to do."""
    summary.incomplete = why.format(w=wave)
    summary.next_wave = wave


def _done(records: Mapping[str, Any], keys: Collection[str]) -> set[str]:
    """The keys launched, or refused by the API (nothing more to launch for them)."""
    return {
        k
        for k in keys
        if k in records and (records[k].state.launched or records[k].state == LaunchState.refused)
    }


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
        raise ConfigError(
            f"wave {rollout.wave}: the plan has {len(waves)} wave(s)",
            option="wave",
            problem=f"{rollout.wave}: the plan has {len(waves)} wave(s)",
        )
    limit = rollout.max_running or plan.manifest.manifest.budget.max_running
    ceiling = None
    if limit is not None:
        ceiling = RunningCeiling(plan, client, limit, clock=clock, interval=rollout.ceiling_interval)
    deadline = None if rollout.wait_timeout is None else clock.now() + rollout.wait_timeout
    lease = Lease(ledger, ttl=options.lock_ttl)
    await lease.acquire(wait=options.lock_timeout)
    try:
        decided = await off_loop(_open_gates, ledger, waves, rollout)
        await _WaveRun(
            plan=plan,
            client=client,
            ledger=ledger,
            options=options,
            rollout=rollout,
            gate=gate,
            waves=waves,
            decided=decided,
            summary=summary,
            ceiling=ceiling,
            progress=progress,
            follower=follower,
            clock=clock,
            environ=environ,
            stop=stop,
            interrupted=interrupted,
            deadline=deadline,
        ).run()
    finally:
        await lease.release()
    summary.holds = ceiling.holds if ceiling is not None else 0
    summary.interrupted = interrupted is not None and interrupted.is_set()
    return summary


def _open_gates(ledger: Ledger, waves: list[Wave], rollout: RolloutOptions) -> set[int]:
    """The waves whose gate is open: decided so by an earlier run, or now by the overrides
    (recorded: `wave` forces the gates before it, `skip_gate` opens the one this run resumes at)."""
    decided = {e["wave"] for e in ledger.wave_log() if e["decision"] in OPEN}
    if rollout.wave is not None:
        for w in waves[: rollout.wave - 1]:
            if w.number not in decided:
                ledger.record_wave(w.number, "forced", f"--wave {rollout.wave}")
                decided.add(w.number)
    if rollout.skip_gate:
        resume = next((w for w in waves[:-1] if w.number not in decided), None)
        if resume is not None:
            ledger.record_wave(resume.number, "skipped", "--skip-gate")
            decided.add(resume.number)
    return decided


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


@dataclass
class _WaveRun:
    """One rollout run: its inputs, and the state its waves share."""

    plan: Plan
    client: DevinClient
    ledger: Ledger
    options: ApplyOptions  # preflight off after the first wave (proven by it)
    rollout: RolloutOptions
    gate: Gate
    waves: list[Wave]
    decided: set[int]  # waves whose gate is open
    summary: RolloutSummary
    ceiling: RunningCeiling | None
    progress: Callable[[str], Reporter]
    follower: Callable[[str], Follower]
    clock: Clock
    environ: Mapping[str, str] | None
    stop: anyio.Event
    interrupted: anyio.Event | None
    deadline: float | None  # of all following (wait_timeout)
    budget: int | None = None  # --limit counts over the whole run, not per wave

    def _gated(self, w: Wave) -> bool:
        """Whether wave `w`'s gate is still to open the next one."""
        return w is not self.waves[-1] and w.number not in self.decided

    def remaining(self, extra: float | None = None) -> float | None:
        left = None if self.deadline is None else max(0.0, self.deadline - self.clock.now())
        if extra is None:
            return left
        return extra if left is None else min(left, extra)

    async def run(self) -> None:
        """Each wave in turn (launch, follow, gate) until one stops the run; then, with
        `wait`, follow every selected session to the end."""
        self.budget = self.options.limit
        selected: list[str] = []
        for w in self.waves:
            keys = _selected(w.keys, self.options.only)
            if not keys:
                if self._gated(w) and any(
                    _selected(x.keys, self.options.only) for x in self.waves[w.number :]
                ):
                    _held(self.summary, w.number, _PAST_GATE)  # --only must not walk past a shut gate
                    return
                continue
            selected += keys
            label = f"wave {w.number}/{len(self.waves)}" if len(self.waves) > 1 else "apply"
            reporter = self.progress(label)
            if not await self._launch(w, keys, reporter):
                return
            if w is self.waves[-1] or w.number in self.decided:
                continue
            if not await self._gate(w, keys, reporter):
                return
        if self.rollout.wait:
            self.summary.view = await self._follow(selected, self.remaining(None), "following")
            self.summary.followed = not self.stop.is_set()

    async def _launch(self, w: Wave, keys: list[str], reporter: Reporter) -> bool:
        """Launch what is left of wave `w`; False when the run stops here."""
        if self.ceiling is not None:
            self.ceiling.note = reporter.note
        launched = await apply_plan(
            self.plan,
            self.client,
            self.ledger,
            dataclasses.replace(self.options, keys=frozenset(w.keys), limit=self.budget),
            reporter=reporter,
            clock=self.clock,
            environ=self.environ,
            stop=self.stop,
            interrupted=self.interrupted,
            admission=self.ceiling,
        )
        self.summary.applies.append((w.number, launched))
        self.options = dataclasses.replace(self.options, preflight=False)  # proven by the first wave
        if self.budget is not None:
            self.budget = max(0, self.budget - len(launched.results))
        if launched.exit_code not in (ExitCode.ok, ExitCode.failed) or self.stop.is_set():
            self.summary.next_wave = w.number  # a lost lease lands here too: never re-taken
            return False
        # apply_plan released it; this run keeps it until it ends (LockedError if another
        # apply took the campaign in the meantime)
        await off_loop(self.ledger.acquire_lock, ttl=self.options.lock_ttl)
        records = await off_loop(self.ledger.records)
        left = [
            k for k in keys if not (records[k].state.launched or records[k].state == LaunchState.refused)
        ]
        done = _done(records, w.keys) if self._gated(w) and not left else set(w.keys)
        if len(done) < len(w.keys):  # the gate judges the whole wave: the rest of it first
            _held(self.summary, w.number, _PART_OF_WAVE.format(n=len(w.keys) - len(done)))
            return False
        if left:
            why = " (--limit)" if self.budget == 0 else ""
            self.summary.incomplete = f"wave {w.number}: {len(left)} session(s) not launched yet{why}"
            self.summary.next_wave = w.number
            return False
        return True

    async def _gate(self, w: Wave, keys: list[str], reporter: Reporter) -> bool:
        """Follow wave `w` to its end and decide its gate; False when the run stops here."""
        label = f"wave {w.number}/{len(self.waves)}: following"
        view = await self._follow(keys, self.remaining(self.gate.wait_timeout), label)
        self.summary.view = view
        if self.stop.is_set():
            self.summary.next_wave = w.number
            return False
        if view.timed_out:
            await off_loop(
                self.ledger.record_wave,
                w.number,
                "timeout",
                "sessions still running at the wait timeout",
            )
            reporter.note(f"wave {w.number}: sessions still running at the wait timeout")
            self.summary.next_wave = w.number
            return False
        result = evaluate_gate(self.gate, w.number, view.counts())
        self.summary.gates.append(result)
        decision = "passed" if result.passed else "stopped"
        await off_loop(self.ledger.record_wave, w.number, decision, result.describe())
        if result.passed:  # a stop is told once, by the run's summary
            reporter.note(result.describe())
        else:
            self.summary.stopped = result
            self.summary.next_wave = w.number
            return False
        return True

    async def _follow(self, keys: list[str], wait_timeout: float | None, label: str) -> CampaignView:
        return await _follow_locked(
            self.plan,
            self.client,
            self.ledger,
            keys,
            wait_timeout=wait_timeout,
            interval=self.rollout.interval,
            max_interval=self.rollout.max_interval,
            clock=self.clock,
            stop=self.stop,
            follower=self.follower(label),
            lock_ttl=self.options.lock_ttl,
        )
