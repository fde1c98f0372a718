"""Launch attempts in the ledger: the durable relaunch request ("key K: attempt n -> n+1",
written before anything is sent), and every earlier attempt kept whole (its session, outcome,
pull requests and output), with whether it is to be terminated first. The store keeps them;
these are the calls the relaunch and status code make."""

from __future__ import annotations

from collections.abc import Iterable

from launcher.ledger.records import AttemptRecord
from launcher.ledger.store import LedgerStore

ENDED = ("exit", "error")  # a session in these states is not live

__all__ = ["ENDED", "AttemptRecord", "attempt_history", "relaunch", "remember", "set_termination"]


def relaunch(
    ledger: LedgerStore, key: str, *, live: bool, keep: bool, request: str, expected: int | None = None
) -> int | None:
    """Record a relaunch of `key` before anything is sent (`LedgerStore.relaunch`): returns the
    new attempt number, or None when another run relaunched it meanwhile."""
    return ledger.relaunch(key, live=live, keep=keep, request=request, expected=expected)


def attempt_history(ledger: LedgerStore, key: str | None = None) -> list[AttemptRecord]:
    """Every earlier attempt (superseded by a relaunch), by key then attempt."""
    return ledger.attempt_history(key)


def set_termination(ledger: LedgerStore, key: str, attempt: int, termination: str) -> None:
    """Record what became of an earlier attempt to terminate first (`done`)."""
    ledger.set_termination(key, attempt, termination)


def remember(ledger: LedgerStore, attempts: Iterable[AttemptRecord]) -> int:
    """Keep earlier attempts the ledger never saw (rebuilt from the API); returns how many."""
    return ledger.remember_attempts(attempts)
