"""`devin-fleet ledger ...`: commands on a campaign's ledger itself (copy it between SQLite and
PostgreSQL); they parse, call `launcher.ledger.location`, and render."""

from __future__ import annotations

import click

from launcher.cli.common import out
from launcher.errors import LedgerError
from launcher.ledger.location import POSTGRES_SCHEMES, copy_ledger, describe, sqlite_campaign


@click.group()
def ledger() -> None:
    """The ledger itself: copy a campaign's ledger (SQLite <-> PostgreSQL)."""


@ledger.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("dest", metavar="DST")
@click.option("--campaign", help="The campaign to copy (read from SRC when it is a SQLite file).")
def copy(source: str, dest: str, campaign: str | None) -> None:
    """Copy a campaign's whole ledger from SRC to DST (paths or URLs: sqlite:///x.db,
    postgresql://user@host/db), atomically into a DST without one, then verified."""
    name = campaign or sqlite_campaign(source)
    if name is None and not source.startswith(tuple(f"{s}:" for s in POSTGRES_SCHEMES)):
        # a SQLite location with no ledger in it: say so, not "name the campaign"
        raise LedgerError(
            f"no ledger at {describe(source)}",
            hint="pass the ledger file an apply wrote (.devin-fleet/<campaign>.db by default)",
        )
    if name is None:
        raise click.BadParameter(
            "name the campaign to copy from a PostgreSQL ledger", param_hint="--campaign"
        )
    counts = copy_ledger(source, dest, name)
    what = ", ".join(f"{n} {table}" for table, n in counts.items())
    out.print(
        f"copied campaign {name!r}: {describe(source)} -> {describe(dest)} ({what}); verified",
        markup=False,
    )
