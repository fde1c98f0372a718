"""The ledger's target: the API base URL and org its sessions were launched into, written on the
first launch (or rebuild) and checked by every command that talks to the API, so a ledger is
never silently reused against another org or host (its session ids mean nothing there)."""

from __future__ import annotations

from dataclasses import dataclass

from launcher.errors import LedgerError
from launcher.ledger.store import Ledger, sqlite_errors

_BASE, _ORG = "api_base_url", "org_id"


@dataclass(frozen=True)
class Target:
    """Where a campaign's sessions live."""

    base_url: str
    org_id: str

    def __str__(self) -> str:
        return f"org {self.org_id} at {self.base_url}"


def bound_target(ledger: Ledger) -> Target | None:
    """The target the ledger is bound to (None for a ledger that never launched anything)."""
    with sqlite_errors(ledger.path, "read"):
        rows = dict(
            ledger.db.execute("SELECT name, value FROM meta WHERE name IN (?, ?)", (_BASE, _ORG))
        )
    if _BASE not in rows or _ORG not in rows:
        return None
    return Target(rows[_BASE], rows[_ORG])


def check_target(ledger: Ledger, base_url: str, org_id: str, *, claim: bool = False) -> None:
    """Raise LedgerError when the ledger belongs to another target; with `claim` (apply, a
    rebuild from the API), bind an unbound ledger to this one first."""
    here = Target(base_url.rstrip("/"), org_id)
    there = bound_target(ledger)  # a plain read: a check never waits for another run's writes
    if there is None and claim:
        with ledger.transaction() as db:  # re-read under the write lock: one run binds it
            there = bound_target(ledger)
            if there is None:
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [(_BASE, here.base_url), (_ORG, here.org_id)]
                )
                return
    if there is None or there == here:
        return
    own = ledger.path.with_name(f"{ledger.path.stem}.{_slug(org_id)}{ledger.path.suffix}")
    raise LedgerError(
        f"ledger {ledger.path} holds campaign {ledger.campaign!r}'s launches into {there}; this "
        f"command targets {here}, where those sessions do not exist",
        path=str(ledger.path),
        hint=f"keep one ledger per org: pass --ledger {own} (or set DEVIN_FLEET_LEDGER) for this "
        "one; if the other was a rehearsal you are done with, move its ledger away; or point "
        "DEVIN_API_BASE_URL / DEVIN_ORG_ID back at the org it belongs to",
    )


def _slug(org_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in org_id) or "org"
