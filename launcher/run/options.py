"""The options of a run, with their defaults written once: how `apply` launches (pacing,
selection, time bounds) and what it does beyond launching (follow, waves, ceiling). The CLI
reads its defaults from here; invalid values raise ConfigError naming the option, not a flag."""

from __future__ import annotations

import math
from dataclasses import dataclass

from launcher.errors import ConfigError
from launcher.ledger.store import LOCK_TTL

FOLLOW_INTERVAL = 5.0  # first interval between refreshes while following (it grows)
FOLLOW_MAX_INTERVAL = 60.0  # the longest
MESSAGE_RATE = 1.0  # messages per second
LOCK_TIMEOUT = 10.0  # how long apply and message wait for a lease another run holds
# The embedded simulator (`--sim`) has no limit and answers at once: 100/s launches 2,000
# sessions in 20 s.
SIM_RATE = 100.0


@dataclass(frozen=True)
class ApplyOptions:
    """How to apply: pacing, selection and time bounds."""

    concurrency: int = 8  # most requests in flight
    # Most creates per second (the adaptive rate never exceeds it). The API publishes no limit
    # (devin-api.md section 5; one client saw no 429 at 3 concurrent creates; creates take
    # 0.6-1.2 s), so with 8 in flight the concurrency, not the rate, governs at about 7-13/s;
    # 20/s is the simulator's rate-limited profile, and a lower limit is learned from 429s.
    rate: float = 20.0
    only: tuple[str, ...] = ()  # globs over keys
    keys: frozenset[str] | None = None  # explicit selection (a rollout wave), with `only`
    limit: int | None = None  # most sessions to launch in this run
    max_attempts: int = 6  # per session, not counting 429s
    max_rate_limited: int = 200  # 429s per session before giving up
    lookup_grace: float = 3.0  # least wait between an ambiguous create and its lookup
    list_lag: float | None = None  # stated list lag bound (None: measured, else ASSUMED_LIST_LAG)
    lock_ttl: float = LOCK_TTL  # the lease: heartbeat every ttl/6, stop sending past ttl/2
    lock_timeout: float = LOCK_TIMEOUT  # how long to wait for a lease another run holds
    reconcile: bool = True  # list the campaign tag and adopt what exists before creating
    drain_timeout: float = 30.0  # after a stop, how long in-flight creates may take
    run_timeout: float | None = None  # the whole run
    breaker_threshold: int = 12
    preflight: bool = True  # prove the token and referenced ids first (off: the caller did)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError.invalid("concurrency", "must be at least 1", self.concurrency)
        if not 0 < self.rate < math.inf:
            raise ConfigError.invalid("rate", "must be a positive number per second", self.rate)
        if self.limit is not None and self.limit < 0:
            raise ConfigError.invalid("limit", "must not be negative", self.limit)
        if not 0 <= self.lookup_grace < math.inf:
            raise ConfigError.invalid("lookup_grace", "must be a number of seconds", self.lookup_grace)
        if self.list_lag is not None and not 0 <= self.list_lag < math.inf:
            raise ConfigError.invalid("list_lag", "must be a number of seconds", self.list_lag)
        if self.run_timeout is not None and not 0 < self.run_timeout < math.inf:
            raise ConfigError.invalid(
                "timeout", "must be a positive number of seconds", self.run_timeout
            )
        if not self.lock_ttl > 0:
            raise ConfigError.invalid("lock_ttl", "must be positive", self.lock_ttl)
        if not 0 <= self.lock_timeout < math.inf:
            raise ConfigError.invalid("lock_timeout", "must be a number of seconds", self.lock_timeout)


@dataclass(frozen=True)
class RolloutOptions:
    """What `apply` does beyond launching: follow, waves, ceiling."""

    wait: bool = False  # follow every selected session to a final outcome
    wait_timeout: float | None = None  # bounds all following in this run (seconds)
    wave: int | None = None  # go straight to this wave (earlier gates: `forced`)
    skip_gate: bool = False  # open the gate of the wave this run resumes at
    max_running: int | None = None  # overrides the manifest's budget.max_running
    interval: float = FOLLOW_INTERVAL  # first follow interval (grows while nothing changes)
    max_interval: float = FOLLOW_MAX_INTERVAL
    ceiling_interval: float = 2.0  # first poll interval while holding at the ceiling

    def __post_init__(self) -> None:
        if self.wait_timeout is not None and not self.wait_timeout > 0:
            raise ConfigError.invalid("wait_timeout", "must be positive", self.wait_timeout)
        if self.wave is not None and self.wave < 1:
            raise ConfigError.invalid("wave", "must be at least 1", self.wave)
        if self.max_running is not None and self.max_running < 1:
            raise ConfigError.invalid("max_running", "must be at least 1", self.max_running)
