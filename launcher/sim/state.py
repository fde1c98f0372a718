"""Simulated org state: sessions, their seeded lifecycle, the tag index, and list pagination.

Only the server's event loop touches a `SimState`. A session's state is computed lazily from its
creation time and its seeded plan (a list of segments: the first run, then one per resume or
follow-up message), so nothing runs in the background. Time comes from an injected `SimClock`
(real time, or a `ManualClock` in tests); phase lengths are simulated seconds, and `time_scale`
simulated seconds pass per clock second. Timestamps are the clock's Unix seconds.
"""

from __future__ import annotations

import base64
import bisect
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from launcher.api.models import CreateSessionRequest, SessionStatus, StatusDetail, session_path_id
from launcher.sim.clock import SimClock
from launcher.sim.faults import max_in_window
from launcher.sim.instances import Reports, invalid_instance, valid_instance
from launcher.sim.profiles import Fate, ListOrder, Profile

_DELIVERING = (Fate.delivered, Fate.invalid_output, Fate.blocked)
# A finished session with a schema has reported too: structured_output_required defaults to true
# (the agent must deliver its output before it ends its turn).
_REPORTING = (*_DELIVERING, Fate.finished)
_DEVIN_SAYS = {
    Fate.finished: "All done: the task is finished.",
    Fate.delivered: "Done: I opened {pr}. Anything else?",
    Fate.invalid_output: "Done: I opened {pr}. Anything else?",
    Fate.blocked: "I opened {pr} with what I could do; the rest is blocked (see my report).",
    Fate.needs_user: "I need your input before I go on: which approach do you prefer?",
    Fate.error: "I hit an unrecoverable error and stopped.",
    Fate.suspended: "The session was suspended ({detail}).",
}


class SessionEnded(Exception):
    """A message was sent to a session that has exited."""


@dataclass(frozen=True)
class Segment:
    """One run of a session: the first one, or one after a resume / follow-up message."""

    start: float  # clock time
    first: SessionStatus  # new (first run), resuming (after suspension) or running (follow-up)
    first_for: float  # simulated seconds in `first` (0 for a follow-up)
    claimed_for: float  # simulated seconds in claimed (first run only)
    working_for: float  # simulated seconds in running/working, before the ACU cap
    outcome: Fate
    acus_before: float


@dataclass(frozen=True)
class View:
    """What a session looks like at one moment."""

    status: SessionStatus
    detail: StatusDetail | None
    updated: float
    acus: float
    pr_url: str | None
    output: Any
    outcome: Fate | None  # the outcome reached, None while it is still on its way


@dataclass
class Record:
    """One simulated session. `request` never holds session secret values (only their keys)."""

    seq: int
    session_id: str
    created: float
    request: dict[str, Any]
    secret_keys: list[str]
    title: str
    tags: list[str]
    max_acu: float
    suspend_detail: StatusDetail
    pr_url: str
    service_user_id: str
    segments: list[Segment]
    create_fault: str = "none"
    messages: list[tuple[float, str]] = field(default_factory=list)
    terminated_at: float | None = None
    archived: bool = False
    touched: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> dict[str, Any] | None:
        return self.request.get("structured_output_schema")


@dataclass(frozen=True)
class SessionFilter:
    """The list endpoint's filters (already parsed)."""

    tags: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    created_after: int | None = None
    created_before: int | None = None
    updated_after: int | None = None
    updated_before: int | None = None
    playbook_id: str | None = None
    origins: tuple[str, ...] = ()
    is_archived: bool | None = None
    repo_names: tuple[str, ...] = ()

    def needs_scan(self) -> bool:
        """Whether counting matches needs a look at each candidate (else: index sizes)."""
        return len(self.tags) > 1 or any(
            v not in (None, ())
            for k, v in vars(self).items()
            if k != "tags"  # a single tag's index list is exactly its matches
        )


@dataclass(frozen=True)
class Page:
    items: list[Any]
    end_cursor: str | None
    has_next_page: bool
    total: int

    def json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "end_cursor": self.end_cursor,
            "has_next_page": self.has_next_page,
            "total": self.total,
        }


def encode_cursor(kind: str, value: int) -> str:
    raw = json.dumps({"k": kind, "v": value}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The position a cursor stands for; ValueError when it is not one of ours for `kind`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if data["k"] == kind and isinstance(data["v"], int) and data["v"] >= 0:
            return int(data["v"])
    except (ValueError, KeyError, TypeError):
        pass
    raise ValueError(f"invalid cursor {cursor!r}")


def page_of(kind: str, items: list[Any], first: int, after: str | None) -> Page:
    """Offset pagination over a small, stable list (secrets, playbooks, notes, messages)."""
    start = decode_cursor(kind, after) if after else 0
    chunk = items[start : start + first]
    more = start + first < len(items)
    return Page(chunk, encode_cursor(kind, start + first) if more else None, more, len(items))


class SimState:
    """Sessions of one simulated org, with a tag index for list filters."""

    def __init__(
        self,
        profile: Profile,
        *,
        org_id: str,
        seed: int,
        time_scale: float,
        clock: SimClock,
    ) -> None:
        self.profile = profile
        self.org_id = org_id
        self.seed = seed
        self.scale = time_scale
        self.clock = clock
        self.records: list[Record] = []  # index == seq == creation order
        self.by_id: dict[str, Record] = {}
        self.tag_index: dict[str, list[int]] = {}  # tag -> ascending seqs
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.create_times: list[float] = []  # monotonic arrival of every create (pacing checks)
        self.message_times: list[float] = []  # arrival of every message send (pacing checks)
        # Every create as the bucket saw it, on the machine's monotonic clock (comparable with
        # a client process's): (received, reached the bucket, accepted, title). The benches
        # measure from it how unevenly paced creates arrive.
        self.create_log: list[tuple[float, float, bool, str | None]] = []
        self.first_request_at: float | None = None  # arrival of the first API request (clock)
        self.creates_in_flight = 0
        self.creates_max_in_flight = 0  # the most create requests being answered at once
        self._acu_rate = profile.lifecycle.acus_per_hour / 3600.0
        self._weights = profile.outcomes.weights()

    # ------------------------------------------------------------------ creation

    def create(
        self, req: CreateSessionRequest, *, service_user_id: str, create_fault: str = "none"
    ) -> Record:
        seq = len(self.records)
        rng = random.Random(f"{self.seed}:session:{seq}")
        session_id = f"devin-{rng.getrandbits(128):032x}"
        life = self.profile.lifecycle
        outcome = rng.choices(list(self._weights), weights=list(self._weights.values()))[0]
        now = self.clock.now()
        created = max(now, self.records[-1].created) if self.records else now
        request = req.model_dump(mode="json", exclude_none=True, exclude={"session_secrets"})
        repo = (req.repos or ["acme/sim-repo"])[0]
        rec = Record(
            seq=seq,
            session_id=session_id,
            created=created,
            request=request,
            secret_keys=[s.key for s in req.session_secrets or []],
            title=req.title or " ".join(req.prompt.split()[:8])[:80],
            tags=list(dict.fromkeys(req.tags or [])),
            max_acu=float(req.max_acu_limit or life.default_max_acu),
            suspend_detail=rng.choice(life.suspend_details),
            pr_url=f"https://github.com/{repo}/pull/{1000 + seq}",
            service_user_id=service_user_id,
            segments=[
                Segment(
                    start=created,
                    first=SessionStatus.new,
                    first_for=life.new_seconds,
                    claimed_for=life.claimed_seconds,
                    working_for=rng.uniform(life.working_seconds_min, life.working_seconds_max),
                    outcome=outcome,
                    acus_before=0.0,
                )
            ],
            create_fault=create_fault,
            messages=[(created, req.prompt)],
            touched=created,
        )
        self.records.append(rec)
        self.by_id[session_id] = rec
        for tag in rec.tags:
            self._index_add(tag, seq)
        return rec

    def get(self, devin_id: str) -> Record | None:
        return self.by_id.get(session_path_id(devin_id))

    # ------------------------------------------------------------------ lifecycle

    def _segment_view(self, rec: Record, seg: Segment, at: float) -> View:
        t = max(0.0, (at - seg.start) * self.scale)
        claimed_end = seg.first_for + seg.claimed_for
        room = max(0.0, rec.max_acu - seg.acus_before)
        cap_after = room / self._acu_rate if self._acu_rate > 0 else float("inf")
        work = min(seg.working_for, cap_after)
        outcome = Fate.suspended if cap_after < seg.working_for else seg.outcome
        work_end = claimed_end + work

        def when(sim_offset: float) -> float:
            return seg.start + sim_offset / self.scale

        if t < seg.first_for:
            return View(seg.first, None, seg.start, seg.acus_before, None, None, None)
        if t < claimed_end:
            return View(
                SessionStatus.claimed, None, when(seg.first_for), seg.acus_before, None, None, None
            )
        if t < work_end:
            acus = seg.acus_before + (t - claimed_end) * self._acu_rate
            early = self.profile.lifecycle.early_output and t >= claimed_end + work / 2
            output = self._output(rec, outcome) if early and outcome in _REPORTING else None
            return View(
                SessionStatus.running,
                StatusDetail.working,
                when(claimed_end),
                acus,
                None,
                output,
                None,
            )
        acus = seg.acus_before + work * self._acu_rate
        status, detail = {
            Fate.finished: (SessionStatus.running, StatusDetail.finished),
            Fate.delivered: (SessionStatus.running, StatusDetail.waiting_for_user),
            Fate.invalid_output: (SessionStatus.running, StatusDetail.waiting_for_user),
            Fate.blocked: (SessionStatus.running, StatusDetail.waiting_for_user),
            Fate.needs_user: (SessionStatus.running, StatusDetail.waiting_for_user),
            Fate.error: (SessionStatus.error, None),
            Fate.suspended: (SessionStatus.suspended, rec.suspend_detail),
        }[outcome]
        if cap_after < seg.working_for:
            detail = StatusDetail.usage_limit_exceeded
        delivering = outcome in _DELIVERING
        return View(
            status,
            detail,
            when(work_end),
            acus,
            rec.pr_url if delivering else None,
            self._output(rec, outcome) if outcome in _REPORTING else None,
            outcome,
        )

    def _output(self, rec: Record, outcome: Fate) -> Any:
        schema = rec.schema
        if schema is None:
            return None
        reports: Reports = "blocked" if outcome is Fate.blocked else "success"
        if reports not in rec.outputs:
            value, ok = valid_instance(schema, rec.session_id, reports)
            rec.outputs[reports] = value
            rec.outputs.setdefault("valid_ok", ok)
            rec.outputs.setdefault("invalid", invalid_instance(schema, value))
        if outcome is Fate.invalid_output and rec.outputs["invalid"] is not None:
            return rec.outputs["invalid"]
        return rec.outputs[reports]

    def view(self, rec: Record, at: float | None = None) -> View:
        now = self.clock.now() if at is None else at
        end = min(now, rec.terminated_at) if rec.terminated_at is not None else now
        current = self._segment_view(rec, rec.segments[-1], end)
        pr_url, output = current.pr_url, current.output
        for seg in reversed(rec.segments[:-1]):  # a PR / output from an earlier run stays
            earlier = self._segment_view(rec, seg, end)
            pr_url = pr_url or earlier.pr_url
            output = output if output is not None else earlier.output
        updated = max(current.updated, rec.touched)
        if rec.terminated_at is not None and now >= rec.terminated_at:
            return View(SessionStatus.exit, None, rec.terminated_at, current.acus, pr_url, output, None)
        return View(
            current.status, current.detail, updated, current.acus, pr_url, output, current.outcome
        )

    def send_message(self, rec: Record, text: str, *, accept_ended: bool = False) -> None:
        """Record a user message; it resumes a suspended session or restarts an idle one. An
        ended session refuses it (SessionEnded), or only records it with `accept_ended`."""
        now = self.clock.now()
        view = self.view(rec, now)
        if view.status is SessionStatus.exit:
            if not accept_ended:
                raise SessionEnded(rec.session_id)
            rec.messages.append((now, text))
            return
        rec.messages.append((now, text))
        idle = view.status is SessionStatus.running and view.detail in (
            StatusDetail.waiting_for_user,
            StatusDetail.finished,
        )
        if view.status is not SessionStatus.suspended and not idle:
            return  # still on its way (or errored): the message is just recorded
        life = self.profile.lifecycle
        rng = random.Random(f"{self.seed}:session:{rec.seq}:segment:{len(rec.segments)}")
        resuming = view.status is SessionStatus.suspended
        rec.segments.append(
            Segment(
                start=now,
                first=SessionStatus.resuming if resuming else SessionStatus.running,
                first_for=life.resuming_seconds if resuming else 0.0,
                claimed_for=0.0,
                working_for=rng.uniform(life.working_seconds_min, life.working_seconds_max) / 2,
                outcome=Fate.delivered if rec.schema is not None else Fate.finished,
                acus_before=view.acus,
            )
        )
        rec.touched = now

    def messages(self, rec: Record) -> list[dict[str, Any]]:
        """User messages as sent, and Devin's message at the end of each run reached so far."""
        now = self.clock.now()
        end = min(now, rec.terminated_at) if rec.terminated_at is not None else now
        events = [(at, "user", text) for at, text in rec.messages]
        for seg in rec.segments:
            v = self._segment_view(rec, seg, end)
            if v.outcome is not None:
                text = _DEVIN_SAYS[v.outcome].format(pr=rec.pr_url, detail=v.detail)
                events.append((v.updated, "devin", text))
        events.sort(key=lambda e: e[0])
        return [
            {
                "event_id": f"event-{rec.session_id[6:14]}-{i}",
                "source": source,
                "message": text,
                "created_at": int(at),
            }
            for i, (at, source, text) in enumerate(events)
        ]

    # ------------------------------------------------------------------ changes

    def terminate(self, rec: Record, *, archive: bool = False) -> None:
        now = self.clock.now()
        if rec.terminated_at is None:
            rec.terminated_at = now
        rec.archived = rec.archived or archive
        rec.touched = now

    def archive(self, rec: Record) -> None:
        rec.archived = True
        rec.touched = self.clock.now()

    def set_tags(self, rec: Record, tags: Iterable[str]) -> None:
        new = list(dict.fromkeys(tags))
        for tag in set(rec.tags) - set(new):
            seqs = self.tag_index[tag]
            del seqs[bisect.bisect_left(seqs, rec.seq)]
            if not seqs:
                del self.tag_index[tag]
        for tag in set(new) - set(rec.tags):
            self._index_add(tag, rec.seq)
        rec.tags = new
        rec.touched = self.clock.now()

    def _index_add(self, tag: str, seq: int) -> None:
        seqs = self.tag_index.setdefault(tag, [])
        if not seqs or seqs[-1] < seq:
            seqs.append(seq)  # the usual case: a new session is the newest
        else:
            bisect.insort(seqs, seq)

    # ------------------------------------------------------------------ rendering

    def session_json(self, rec: Record, *, full: bool = True) -> dict[str, Any]:
        """The session object; `full` adds what only get/list fill (not the create response)."""
        v = self.view(rec)
        body: dict[str, Any] = {
            "session_id": rec.session_id,
            "url": f"https://app.devin.ai/sessions/{rec.session_id.removeprefix('devin-')}",
            "status": v.status.value,
            "tags": list(rec.tags),
            "org_id": self.org_id,
            "created_at": int(rec.created),
            "updated_at": int(v.updated),
            "acus_consumed": round(v.acus, 4),
            "pull_requests": [{"pr_url": v.pr_url, "pr_state": "open"}] if v.pr_url else [],
            "title": rec.title,
            "user_id": rec.request.get("create_as_user_id"),
            "service_user_id": rec.service_user_id,
            "playbook_id": rec.request.get("playbook_id"),
            "parent_session_id": None,
            "child_session_ids": [],
            "is_archived": rec.archived,
            "origin": "api",
        }
        if full:
            body["status_detail"] = v.detail.value if v.detail else None
            body["structured_output"] = v.output
        return body

    # ------------------------------------------------------------------ listing

    def _visible(self, rec: Record, now: float) -> bool:
        return rec.created + self.profile.faults.list_lag_seconds <= now

    def _matches(self, rec: Record, f: SessionFilter, now: float) -> bool:
        if not self._visible(rec, now):
            return False
        if f.tags and not set(f.tags).issubset(rec.tags):
            return False
        created = int(rec.created)
        if f.created_after is not None and created < f.created_after:
            return False
        if f.created_before is not None and created > f.created_before:
            return False
        if f.updated_after is not None or f.updated_before is not None:
            updated = int(self.view(rec, now).updated)
            if f.updated_after is not None and updated < f.updated_after:
                return False
            if f.updated_before is not None and updated > f.updated_before:
                return False
        if f.playbook_id is not None and rec.request.get("playbook_id") != f.playbook_id:
            return False
        if f.origins and "api" not in f.origins:
            return False
        if f.is_archived is not None and rec.archived != f.is_archived:
            return False
        return not f.repo_names or bool(set(f.repo_names) & set(rec.request.get("repos", [])))

    def _candidates(self, f: SessionFilter) -> list[int] | range:
        """Ascending seqs that may match: from the ids, the smallest tag index, or everything."""
        if f.session_ids:
            found = (self.get(i) for i in f.session_ids)
            return sorted({r.seq for r in found if r is not None})
        if f.tags:
            lists = [self.tag_index.get(t, []) for t in f.tags]
            return min(lists, key=len)
        return range(len(self.records))

    def _descending(self, seqs: list[int] | range, below: int) -> Iterator[Record]:
        for i in range(bisect.bisect_left(seqs, below) - 1, -1, -1):
            yield self.records[seqs[i]]

    def _ascending(self, seqs: list[int] | range, above: int) -> Iterator[Record]:
        for i in range(bisect.bisect_right(seqs, above), len(seqs)):
            yield self.records[seqs[i]]

    def list_sessions(self, f: SessionFilter, first: int, after: str | None) -> Page:
        """Newest first (or oldest first, a profile guess); the cursor is the last seq
        returned, so pages never repeat or skip."""
        now = self.clock.now()
        seqs = self._candidates(f)
        chosen: list[Record] = []
        more = False
        if self.profile.guesses.list_order is ListOrder.oldest_first:
            order = self._ascending(seqs, decode_cursor("s", after) if after else -1)
        else:
            order = self._descending(seqs, decode_cursor("s", after) if after else len(self.records))
        for rec in order:
            if self._matches(rec, f, now):
                if len(chosen) == first:
                    more = True
                    break
                chosen.append(rec)
        if f.needs_scan():
            total = sum(1 for seq in seqs if self._matches(self.records[seq], f, now))
        else:  # visibility is the only filter: invisible ones are the newest
            total = len(seqs)
            for rec in self._descending(seqs, len(self.records)):
                if self._visible(rec, now):
                    break
                total -= 1
        cursor = encode_cursor("s", chosen[-1].seq) if more else None
        return Page([self.session_json(r) for r in chosen], cursor, more, total)

    # ------------------------------------------------------------------ introspection

    def snapshot(self) -> list[dict[str, Any]]:
        """Every session created, in creation order, with key request fields (no secret values)."""
        out = []
        for rec in self.records:
            v = self.view(rec)
            req = rec.request
            out.append(
                {
                    "seq": rec.seq,
                    "session_id": rec.session_id,
                    "created_at": int(rec.created),
                    # exact real times: created, and when the status turned final (None while
                    # new/claimed/working), so tests can replay who was running when
                    "created_time": rec.created,
                    "settled_time": v.updated
                    if v.outcome is not None or v.status is SessionStatus.exit
                    else None,
                    "title": rec.title,
                    "prompt": req["prompt"],
                    "tags": list(rec.tags),
                    "repos": req.get("repos"),
                    "session_links": req.get("session_links"),
                    "playbook_id": req.get("playbook_id"),
                    "platform": req.get("platform"),
                    "devin_mode": req.get("devin_mode"),
                    "max_acu_limit": req.get("max_acu_limit"),
                    "create_as_user_id": req.get("create_as_user_id"),
                    "session_secret_keys": list(rec.secret_keys),
                    "has_schema": rec.schema is not None,
                    "planned_outcome": rec.segments[0].outcome.value,
                    "create_fault": rec.create_fault,
                    "status": v.status.value,
                    "status_detail": v.detail.value if v.detail else None,
                    "is_archived": rec.archived,
                    "terminated": rec.terminated_at is not None,
                    "messages": len(rec.messages),
                }
            )
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": len(self.records),
            "requests": dict(self.requests),
            "responses": dict(self.responses),
            "faults": dict(self.faults),
            # The most create requests (answered 429 or not) that arrived in any one second.
            "creates_max_per_second": max_in_window(self.create_times, 1.0),
            "creates_max_in_flight": self.creates_max_in_flight,
            # Clock times (Unix epoch scale) that split a run's wall time: start-up, the
            # requests before the first create, the creates, the wait for the last answer.
            "first_request_at": self.first_request_at,
            "first_create_at": self.create_times[0] if self.create_times else None,
            "last_create_at": self.create_times[-1] if self.create_times else None,
            "messages_max_per_second": max_in_window(self.message_times, 1.0),
            "first_message_at": self.message_times[0] if self.message_times else None,
            "last_message_at": self.message_times[-1] if self.message_times else None,
        }
