"""Cancel: terminate a campaign's live sessions (all, or selected by glob), or the extra ones no
planned key owns (strays, duplicates), and record it in the ledger; safe to re-run."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from launcher.api.client import DevinClient
from launcher.errors import APIError, AuthError
from launcher.ledger.binding import check_target
from launcher.ledger.store import EventKind, Ledger, LedgerEvent, off_loop
from launcher.run.status import CONCURRENCY, CampaignView, Outcome


class CancelResult(StrEnum):
    terminated = "terminated"
    already_gone = "already gone"  # 404: nothing to terminate (recorded as cancelled anyway)
    error = "error"  # not terminated: re-run cancel


@dataclass
class CancelReport:
    """What a cancel did, by label (a key, or a session id for strays and duplicates)."""

    results: dict[str, CancelResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def cancelled(self) -> int:
        """How many are gone now (terminated, or already gone)."""
        return sum(1 for r in self.results.values() if r != CancelResult.error)

    def to_json(self, campaign: str, selected: list[str]) -> dict[str, Any]:
        """The report of `cancel -o json`."""
        return {
            "campaign": campaign,
            "selected": selected,
            "results": {k: v.value for k, v in self.results.items()},
            "errors": dict(self.errors),
            "cancelled": self.cancelled,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class CancelTargets:
    """What a cancel would terminate, chosen from a refreshed view of the campaign."""

    targets: list[tuple[str, str]]  # (label, session id): label is the key, or "stray"
    listing: list[str]  # one line per target, for the confirmation
    what: str  # "live", or "stray or duplicate"
    of: str = ""  # " of items removed from the manifest" with `gone`
    by_id: bool = False  # extras (strays, duplicates): terminated by session id

    @property
    def selected(self) -> list[str]:
        return [label for label, _ in self.targets]


def cancel_targets(
    view: CampaignView,
    only: tuple[str, ...] = (),
    *,
    gone: bool = False,
    strays: bool = False,
    duplicates: bool = False,
) -> CancelTargets:
    """The campaign's live sessions to cancel (`cancellable`), or with `strays`/`duplicates`
    the extra sessions no planned key owns (`extras`)."""
    if strays or duplicates:
        extra = extras(view, strays=strays, duplicates=duplicates)
        listing = [f"  {label}  {sid}" for label, sid in extra]
        return CancelTargets(extra, listing, "stray or duplicate", by_id=True)
    by_key = {s.key: s for s in view.sessions}
    keys = cancellable(view, only, gone=gone)
    return CancelTargets(
        [(k, by_key[k].session_id or "") for k in keys],
        [f"  {k}  {by_key[k].session_id}  {by_key[k].outcome.value}" for k in keys],
        "live",
        " of items removed from the manifest" if gone else "",
    )


async def cancel_campaign(
    client: DevinClient, ledger: Ledger, chosen: CancelTargets, *, archive: bool = False
) -> CancelReport:
    """Terminate what `cancel_targets` chose (and archive it), recorded in the ledger: planned
    keys by key (`cancel_sessions`), extras by session id (`cancel_ids`)."""
    if chosen.by_id:
        return await cancel_ids(client, ledger, chosen.targets, archive=archive)
    return await cancel_sessions(client, ledger, chosen.selected, archive=archive)


def cancellable(view: CampaignView, only: tuple[str, ...] = (), *, gone: bool = False) -> list[str]:
    """Keys of sessions still live and not delivered (running or needing a human) that match
    `only` (globs), and with `gone` only those whose item was removed from the manifest.
    Delivered and failed sessions are left alone; cancelled ones too (re-runs are no-ops)."""
    return [
        s.key
        for s in view.sessions
        if s.session_id
        and s.outcome in (Outcome.running, Outcome.needs_human)
        and s.status != "exit"
        and (not only or any(fnmatch.fnmatchcase(s.key, g) for g in only))
        and not (gone and s.in_plan)
    ]


async def _terminate(
    client: DevinClient,
    targets: list[tuple[str, str]],
    report: CancelReport,
    archive: bool,
    on_done: Callable[[list[str]], None],
) -> None:
    """Terminate each (label, session id), `CONCURRENCY` at a time, into `report` by label.

    A session the API no longer knows counts as done. An AuthError stops the rest and is
    raised; `on_done(labels)` records what was terminated whatever stopped the rest.
    """
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    auth: list[AuthError] = []

    async def one(label: str, sid: str, scope: anyio.CancelScope) -> None:
        async with limiter:
            try:
                existed = await client.terminate(sid, archive=archive)
            except AuthError as exc:
                auth.append(exc)
                scope.cancel()
                return
            except APIError as exc:
                report.results[label], report.errors[label] = CancelResult.error, exc.message
                return
        report.results[label] = CancelResult.terminated if existed else CancelResult.already_gone

    try:
        async with anyio.create_task_group() as tg:
            for label, sid in targets:
                tg.start_soon(one, label, sid, tg.cancel_scope)
    finally:
        done = [k for k, v in report.results.items() if v != CancelResult.error]
        with anyio.CancelScope(shield=True):  # recorded whatever stopped the rest
            await off_loop(on_done, done)
    if auth:
        raise auth[0]


async def cancel_sessions(
    client: DevinClient, ledger: Ledger, keys: list[str], *, archive: bool = False
) -> CancelReport:
    """Terminate the sessions of `keys` (and archive them); record what was done in the ledger.

    A session the API no longer knows counts as cancelled. AuthError stops everything (after
    recording what was already terminated); other errors are per session.
    """
    await off_loop(check_target, ledger, client.config.base_url, client.config.org_id)
    records = await off_loop(ledger.records)
    report = CancelReport()
    targets = []
    for key in keys:
        r = records.get(key)
        if r is None or not r.session_id:
            report.results[key], report.errors[key] = CancelResult.error, "not launched"
        else:
            targets.append((key, r.session_id))
    await _terminate(
        client, targets, report, archive, lambda done: ledger.mark_cancelled(done, archived=archive)
    )
    report.results = {k: report.results[k] for k in keys if k in report.results}
    return report


def extras(view: CampaignView, *, strays: bool, duplicates: bool) -> list[tuple[str, str]]:
    """(label, session id) of sessions no planned key owns: live strays (label `stray`), and
    the extra live sessions of duplicated keys, keeping each key's earliest (label: the key)."""
    out: list[tuple[str, str]] = []
    if duplicates:
        out += [(key, sid) for key, ids in view.duplicates.items() for sid in ids[1:]]
    if strays:
        out += [("stray", x.session_id) for x in view.strays]
    return out


async def cancel_ids(
    client: DevinClient, ledger: Ledger, targets: list[tuple[str, str]], *, archive: bool = False
) -> CancelReport:
    """Terminate sessions by id (strays, duplicates); log each in the ledger's event log (the
    planned keys' rows are untouched: the session each key keeps stays its own). The report
    is by session id."""
    await off_loop(check_target, ledger, client.config.base_url, client.config.org_id)
    report = CancelReport()
    label_of = {sid: label for label, sid in targets}

    def record(done: list[str]) -> None:
        ledger.write_events(
            LedgerEvent(label_of[sid], EventKind.cancelled, session_id=sid, detail="extra session ended")
            for sid in done
        )

    await _terminate(client, [(sid, sid) for _, sid in targets], report, archive, record)
    return report
