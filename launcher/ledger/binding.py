"""The ledger's target: the API base URL and org its sessions were launched into, bound on the
first launch (or rebuild) and checked by every command that talks to the API, so a ledger is
never silently reused against another org or host (its session ids mean nothing there)."""

from __future__ import annotations

from launcher.errors import LedgerError
from launcher.ledger.store import LedgerStore


def check_target(ledger: LedgerStore, base_url: str, org_id: str, *, claim: bool = False) -> None:
    """Raise LedgerError when the ledger belongs to another target; with `claim` (apply, a
    rebuild from the API), bind an unbound ledger to this one first (`LedgerStore.bind_target`:
    the first binder wins, so two runs cannot bind one ledger to two orgs)."""
    here = (base_url.rstrip("/"), org_id)
    there = ledger.target()  # a plain read: a check never waits for another run's writes
    if there is None and claim:
        there = ledger.bind_target(*here)
    if there is None or there == here:
        return
    where = ledger.where
    own = f"{where[:-3]}.{_slug(org_id)}.db" if where.endswith(".db") else f"<a ledger for {org_id}>"
    raise LedgerError(
        f"ledger {where} holds campaign {ledger.campaign!r}'s launches into org {there[1]} at "
        f"{there[0]}; this command targets org {org_id} at {here[0]}, where those sessions do "
        "not exist",
        path=where,
        hint=f"keep one ledger per org: pass --ledger {own} (or set DEVIN_FLEET_LEDGER) for this "
        "one; if the other was a rehearsal you are done with, move its ledger away; or point "
        "DEVIN_API_BASE_URL / DEVIN_ORG_ID back at the org it belongs to",
    )


def _slug(org_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in org_id) or "org"
