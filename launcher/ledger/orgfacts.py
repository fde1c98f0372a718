"""What an org's API was seen to do (its list lag), kept beside a folder's SQLite ledgers
(`org-facts.json`): a SQLite ledger is one campaign's, and a new campaign in the same folder
should not start from nothing. A PostgreSQL ledger keeps these in a table of its own."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

ORG_FACTS = "org-facts.json"


def _name(base_url: str, org_id: str) -> str:
    return f"{base_url.rstrip('/')} {org_id}"


def _read(folder: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads((folder / ORG_FACTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: a figure is an optimisation, never required
    return data if isinstance(data, dict) else {}


def folder_list_lag(folder: Path, base_url: str, org_id: str) -> tuple[float, float] | None:
    """(list lag, Unix time measured) kept in `folder` for the org, or None."""
    fact = _read(folder).get(_name(base_url, org_id))
    try:
        return (float(fact["list_lag"]), float(fact["measured_at"])) if fact else None
    except (KeyError, TypeError, ValueError):
        return None


def keep_folder_list_lag(folder: Path, base_url: str, org_id: str, lag: float, at: float) -> None:
    """Keep the org's list lag in `folder` (atomically replaced; a failure to write is not an
    error: the ledger itself has the figure)."""
    facts = _read(folder)
    facts[_name(base_url, org_id)] = {"list_lag": lag, "measured_at": at}
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".org-facts-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(facts, f, indent=1, sort_keys=True)
        os.replace(tmp, folder / ORG_FACTS)
    except OSError:
        return
