"""The SQLite backend's one translation of sqlite3 errors into LedgerErrors (the ledger's path,
what happened, what to do), and the decorator that gives every read its lock and translation."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from launcher.errors import LedgerError

BUSY_TIMEOUT = 10.0  # seconds a write waits for another process's write transaction


@contextmanager
def sqlite_errors(
    path: Path, doing: str, blocker: Callable[[], tuple[str, str] | None] | None = None
) -> Iterator[None]:
    """The one place sqlite3 errors become LedgerErrors: the ledger's path, and what to do
    (when the database is locked, `blocker` says by whom, since when, whether it is paused)."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc).lower()
        message = f"cannot {doing} ledger {path}: {exc}"
        if "locked" in text or "busy" in text:
            hint = "another devin-fleet process is using it; wait for it to finish, then retry"
            who = blocker() if blocker is not None else None
            if who:
                message, hint = f"{message}: {who[0]}", who[1]
        elif "malformed" in text or "not a database" in text or "corrupt" in text:
            hint = (
                "the file is damaged or not a devin-fleet ledger; restore it from a backup "
                "(it is the only record of what was launched), or pass --ledger PATH"
            )
        elif "full" in text:  # SQLITE_FULL: "database or disk is full"
            message = f"cannot {doing} ledger {path}: the disk is full"
            hint = (
                "nothing recorded so far was lost (a write that failed rolled back, and apply "
                "looks up any create it could not record); free some space, then re-run"
            )
        elif "readonly" in text or "unable to open" in text or "permission" in text:
            hint = "check that the file and its folder exist and are readable and writable"
        else:
            hint = "re-run with --debug to see the full error"
        raise LedgerError(message, path=str(path), hint=hint) from exc


_F = TypeVar("_F", bound=Callable[..., Any])


def reads(method: _F) -> _F:
    """Ledger reads hold the connection's lock (callers run in worker threads) and translate
    sqlite3 errors like writes do (through `sqlite_errors`)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:  # a SqliteLedger
        with self._mutex, sqlite_errors(self.path, "read", self._blocker):
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)
