"""The simulator's HTTP face: starlette routes for the v3 API, auth, validation, faults, errors.

Every API route goes through the checks built by `SimApp._route`, in this order: request count,
latency, 401 (token), 403 (permission), 404 (unknown org); creates then check the rate limit,
413/422 (body, validated with the shared `launcher.api.models.CreateSessionRequest`), 400 (platform,
create_as_user_id), and the seeded create faults. Error bodies are FastAPI-style `{"detail": ...}`.
A body with a non-JSON content type gets 422 (FastAPI validates it as raw bytes; no 415).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from launcher.api.models import MAX_TAGS, CreateSessionRequest, api_error_details
from launcher.sim.faults import CreateFault, FaultPlan, retry_after_header
from launcher.sim.profiles import Permission
from launcher.sim.state import Page, Record, SessionEnded, SessionFilter, SimState, page_of

MAX_BODY_BYTES = 1024 * 1024
_ABORT_KEY = "launcher.sim.abort"
_M = TypeVar("_M", bound=BaseModel)


class HTTPProblem(Exception):
    """An error answer: status, FastAPI-style detail, optional headers."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = headers


@dataclass(frozen=True)
class Principal:
    """Who a token is and what it may do."""

    service_user_id: str
    name: str
    permissions: frozenset[Permission]


# --------------------------------------------------------------------------- request models


class _Tags(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(max_length=MAX_TAGS)

    @field_validator("tags")
    @classmethod
    def _not_blank(cls, v: list[str]) -> list[str]:
        if any(not t.strip() for t in v):
            raise ValueError("tags must not be empty strings")
        return v


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1)
    message_as_user_id: str | None = None  # needs ImpersonateOrgSessions; an org member
    attachment_urls: list[str] | None = None


class _PageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # FastAPI ignores unknown query parameters

    first: int = Field(default=100, ge=1, le=200)
    after: str | None = None


class _SessionQuery(_PageQuery):
    tags: list[str] = []
    session_ids: list[str] = []
    created_after: int | None = None
    created_before: int | None = None
    updated_after: int | None = None
    updated_before: int | None = None
    playbook_id: str | None = None
    origins: list[str] = []
    is_archived: bool | None = None
    repo_names: list[str] = []


class _TerminateQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    archive: bool = False


def _query(request: Request, model: type[_M]) -> _M:
    lists = {n for n, f in model.model_fields.items() if f.annotation == list[str]}
    qp = request.query_params
    data = {k: qp.getlist(k) if k in lists else qp[k] for k in qp}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPProblem(422, api_error_details(exc, "query")) from exc


async def _body(
    request: Request, model: type[_M], *, limit: int = MAX_BODY_BYTES, lenient: bool = False
) -> _M:
    """Read and validate a JSON body the way FastAPI does; 413 past `limit` bytes. `lenient`
    drops unknown top-level fields instead of refusing them (a profile guess)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        # uvicorn discards the unread rest, so the client still reads this answer
        raise HTTPProblem(413, f"request body exceeds {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise HTTPProblem(413, f"request body exceeds {limit} bytes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: Any
    if ctype and not (ctype == "application/json" or ctype.endswith("+json")):
        data = bytes(raw)  # FastAPI: not JSON, validated as raw bytes -> 422 model_type
    elif not raw:
        raise HTTPProblem(422, [{"loc": ["body"], "msg": "Field required", "type": "missing"}])
    else:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            pos = getattr(exc, "pos", 0)
            detail = [{"loc": ["body", pos], "msg": "JSON decode error", "type": "json_invalid"}]
            raise HTTPProblem(422, detail) from exc
    if lenient and isinstance(data, dict):
        data = {k: v for k, v in data.items() if k in model.model_fields}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPProblem(422, api_error_details(exc)) from exc


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _paged(make: Callable[[], Page]) -> Response:
    """A page as JSON; a cursor we did not issue is a 400."""
    try:
        return _json(make().json())
    except ValueError as exc:
        raise HTTPProblem(400, str(exc)) from exc


# --------------------------------------------------------------------------- the app


Handler = Callable[[Request, Principal], Awaitable[Response]]


class SimApp:
    """Routes of one simulated org; state is touched only from the server's event loop."""

    def __init__(self, state: SimState, plan: FaultPlan, *, token: str, introspection: bool) -> None:
        self.state = state
        self.plan = plan
        self.profile = state.profile
        self.token = token
        self.main = Principal("user-sim-service", "devin-fleet-sim", frozenset(Permission))
        self.others = {
            t.token: Principal(f"user-sim-{t.name}", t.name, frozenset(t.permissions))
            for t in self.profile.tokens
        }
        self.request_number = 0
        self.create_number = 0
        self.stopping: anyio.Event | None = None  # set by the server; created in its loop
        org = "/v3/organizations/{org_id}"
        one = f"{org}/sessions/{{devin_id}}"
        sessions, view = Permission.ManageOrgSessions, Permission.ViewOrgSessions
        tags: dict[str, tuple[Permission, Handler]] = {
            "GET": (Permission.ManageEnterpriseSettings, self.allowed_tags)
        }
        table: dict[str, dict[str, tuple[Permission, Handler]]] = {
            "/v3/self": {"GET": (Permission.ReadAccountMeta, self.whoami)},
            f"{org}/sessions": {
                "POST": (sessions, self.create),
                "GET": (view, self.list_sessions),
            },
            one: {"GET": (view, self.get), "DELETE": (sessions, self.terminate)},
            f"{one}/archive": {"POST": (sessions, self.archive)},
            f"{one}/messages": {
                "GET": (view, self.list_messages),
                "POST": (sessions, self.send_message),
            },
            f"{one}/tags": {
                "GET": (view, self.get_tags),
                "POST": (sessions, self.append_tags),
                "PUT": (sessions, self.replace_tags),
            },
            f"{org}/secrets": {"GET": (Permission.ManageOrgSecrets, self.secrets)},
            f"{org}/playbooks": {"GET": (Permission.ManageAccountPlaybooks, self.playbooks)},
            f"{org}/playbooks/{{playbook_id}}": {
                "GET": (Permission.ManageAccountPlaybooks, self.playbook)
            },
            f"{org}/knowledge/notes": {"GET": (Permission.ManageAccountKnowledge, self.notes)},
            f"{org}/members/users": {"GET": (Permission.ViewOrgMembership, self.members)},
            "/v3/enterprise/organizations/{org_id}/tags": tags,
            "/v3beta1/enterprise/organizations/{org_id}/tags": tags,
        }
        routes = [self._route(path, methods) for path, methods in table.items()]
        if introspection:
            routes += [
                Route("/_sim/sessions", self.sim_sessions, methods=["GET"]),
                Route("/_sim/stats", self.sim_stats, methods=["GET"]),
                Route("/_sim/creates", self.sim_creates, methods=["GET"]),
            ]
        self.starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPProblem: self._api_error, HTTPException: self._http_error},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Outermost layer: counts response codes and lets a route cut the connection."""
        if scope["type"] != "http" or scope["path"].startswith("/_sim/"):
            await self.starlette(scope, receive, send)
            return
        aborted: list[bool] = []

        async def abort() -> bool:
            aborted.append(await _abort(send, receive))
            return aborted[-1]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not any(aborted):
                self.state.responses[str(message["status"])] += 1
            await send(message)

        scope[_ABORT_KEY] = abort

        await self.starlette(scope, receive, counting_send)

    # ------------------------------------------------------------------ plumbing

    def _route(self, path: str, methods: dict[str, tuple[Permission, Handler]]) -> Route:
        """One route per path (so a 405 lists every allowed method), with the shared checks."""
        org = "/organizations/{org_id}" in path
        short = path.split("/organizations/{org_id}")[-1]
        short = short.replace("{devin_id}", "{id}").replace("{playbook_id}", "{id}")

        async def endpoint(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            if method == "POST" and short == "/sessions":
                request.state.received = time.monotonic()  # before any latency fault
                self.state.creates_in_flight += 1
                self.state.creates_max_in_flight = max(
                    self.state.creates_max_in_flight, self.state.creates_in_flight
                )
                try:
                    return await handle(request, method)
                finally:
                    self.state.creates_in_flight -= 1
            return await handle(request, method)

        async def handle(request: Request, method: str) -> Response:
            permission, handler = methods[method]
            self.state.requests[f"{method} {short}"] += 1
            if self.state.first_request_at is None:
                self.state.first_request_at = self.state.clock.now()
            self.request_number += 1
            if delay := self.plan.latency(self.request_number):
                self.state.faults["latency"] += 1
                await self._sleep(delay)
            principal = self._authenticate(request)
            if not self._may(principal, permission):
                raise HTTPProblem(403, f"this token lacks the {permission.value} permission")
            if org and request.path_params["org_id"] != self.state.org_id:
                raise HTTPProblem(404, "Organization not found")
            return await handler(request, principal)

        return Route(path, endpoint, methods=list(methods))

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the simulator's clock, but end early when the server stops (so stopping
        never waits on a fault)."""
        stopping = self.stopping
        if stopping is None:
            await self.state.clock.sleep(seconds)
            return
        async with anyio.create_task_group() as tg:

            async def cut_short() -> None:
                await stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(cut_short)
            await self.state.clock.sleep(seconds)
            tg.cancel_scope.cancel()

    def _may(self, who: Principal, permission: Permission) -> bool:
        if permission in who.permissions:
            return True
        return (
            permission is Permission.ViewOrgSessions
            and self.profile.guesses.manage_implies_view
            and Permission.ManageOrgSessions in who.permissions
        )

    def _member(self, who: Principal, user_id: str | None, field: str) -> None:
        """Acting as another user needs ImpersonateOrgSessions and an org member."""
        if user_id is None:
            return
        if Permission.ImpersonateOrgSessions not in who.permissions:
            raise HTTPProblem(403, f"{field} needs the ImpersonateOrgSessions permission")
        if user_id not in self.profile.members:
            status = self.profile.guesses.unknown_member_status
            raise HTTPProblem(status, f"user {user_id!r} is not an org member")

    def _authenticate(self, request: Request) -> Principal:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise HTTPProblem(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
        if hmac.compare_digest(value.encode(), self.token.encode()):
            return self.main
        if value in self.others:
            return self.others[value]
        raise HTTPProblem(401, "Invalid or expired token", {"WWW-Authenticate": "Bearer"})

    def _session(self, request: Request) -> Record:
        rec = self.state.get(request.path_params["devin_id"])
        if rec is None:
            raise HTTPProblem(404, "Session not found")
        return rec

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPProblem)
        return _json({"detail": exc.detail}, exc.status, exc.headers)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _json({"detail": exc.detail}, exc.status_code, exc.headers)

    # ------------------------------------------------------------------ sessions

    async def create(self, request: Request, who: Principal) -> Response:
        limit = self.profile.faults.rate_limit
        now = self.state.clock.now()
        self.state.create_times.append(now)
        wait = self.plan.rate_limited(now)
        at = time.monotonic()
        received = getattr(request.state, "received", at)
        logged = len(self.state.create_log)
        self.state.create_log.append((received, at, wait is None, None))
        rate_headers = self.plan.rate_headers()
        if wait is not None and limit is not None:
            self.state.faults["rate_limited"] += 1
            self.state.create_log[logged] = (received, at, False, await _title(request))
            if limit.retry_after:
                rate_headers["Retry-After"] = retry_after_header(wait, limit.retry_after_format)
            raise HTTPProblem(
                429, "Rate limit exceeded; slow down session creation", rate_headers or None
            )
        guesses = self.profile.guesses
        req = await _body(
            request,
            CreateSessionRequest,
            limit=guesses.max_body_bytes,
            lenient=guesses.unknown_body_fields,
        )
        self.state.create_log[logged] = (received, at, True, req.title)
        listed = self.profile.allowed_tags
        if listed is not None:
            bad = [(i, t) for i, t in enumerate(req.tags or []) if t not in listed]
            if bad:
                detail = [
                    {
                        "loc": ["body", "tags", i],
                        "msg": f"Tag {t!r} is not in the organization's allowed session tags",
                        "type": "value_error",
                    }
                    for i, t in bad
                ]
                raise HTTPProblem(422, detail)
        if req.platform is not None and req.platform.lower() != "default":
            labels = self.profile.platforms
            if req.platform.lower() not in {label.lower() for label in labels}:
                allowed = ", ".join(["default", *labels])
                raise HTTPProblem(400, f"Unknown platform {req.platform!r}; available: {allowed}")
        self._member(who, req.create_as_user_id, "create_as_user_id")
        fault = self.plan.create_fault(self.create_number)
        self.create_number += 1
        if fault is not CreateFault.none:
            self.state.faults[fault.value] += 1
        if fault is CreateFault.error_before:
            raise HTTPProblem(500, "Internal Server Error")
        rec = self.state.create(req, service_user_id=who.service_user_id, create_fault=fault.value)
        body = self.state.session_json(rec, full=False)
        if fault is CreateFault.error_after:
            raise HTTPProblem(500, "Internal Server Error")
        if fault is CreateFault.drop_after:
            abort: Callable[[], Awaitable[bool]] = request.scope[_ABORT_KEY]
            if await abort():
                return Response(status_code=500)  # never sent: the connection is gone
            raise HTTPProblem(500, "Internal Server Error")  # no transport to cut: degrade
        if fault is CreateFault.delay_after:
            await self._sleep(self.profile.faults.delay_seconds)
        return _json(body, headers=rate_headers or None)

    async def list_sessions(self, request: Request, who: Principal) -> Response:
        q = _query(request, _SessionQuery)
        f = SessionFilter(
            tags=tuple(q.tags),
            session_ids=tuple(q.session_ids),
            created_after=q.created_after,
            created_before=q.created_before,
            updated_after=q.updated_after,
            updated_before=q.updated_before,
            playbook_id=q.playbook_id,
            origins=tuple(q.origins),
            is_archived=q.is_archived,
            repo_names=tuple(q.repo_names),
        )
        return _paged(lambda: self.state.list_sessions(f, q.first, q.after))

    async def get(self, request: Request, who: Principal) -> Response:
        return _json(self.state.session_json(self._session(request)))

    async def terminate(self, request: Request, who: Principal) -> Response:
        rec = self._session(request)
        self.state.terminate(rec, archive=_query(request, _TerminateQuery).archive)
        return _json(self.state.session_json(rec))

    async def archive(self, request: Request, who: Principal) -> Response:
        rec = self._session(request)
        self.state.archive(rec)
        return _json(self.state.session_json(rec))

    async def list_messages(self, request: Request, who: Principal) -> Response:
        rec = self._session(request)
        q = _query(request, _PageQuery)
        return _paged(lambda: page_of("m", self.state.messages(rec), q.first, q.after))

    async def send_message(self, request: Request, who: Principal) -> Response:
        limit = self.profile.faults.message_rate_limit
        now = self.state.clock.now()
        self.state.message_times.append(now)
        wait = self.plan.message_rate_limited(now)
        rate_headers = self.plan.message_rate_headers()
        if wait is not None and limit is not None:
            self.state.faults["messages_rate_limited"] += 1
            if limit.retry_after:
                rate_headers["Retry-After"] = retry_after_header(wait, limit.retry_after_format)
            raise HTTPProblem(
                429, "Rate limit exceeded; slow down sending messages", rate_headers or None
            )
        rec = self._session(request)
        msg = await _body(request, _Message, limit=self.profile.guesses.max_body_bytes)
        self._member(who, msg.message_as_user_id, "message_as_user_id")
        ended = self.profile.guesses.ended_session_message_status
        try:
            self.state.send_message(rec, msg.message, accept_ended=ended is None)
        except SessionEnded as exc:
            assert ended is not None
            raise HTTPProblem(ended, "the session has ended; it cannot take messages") from exc
        return _json(self.state.session_json(rec))

    async def get_tags(self, request: Request, who: Principal) -> Response:
        return _json({"tags": list(self._session(request).tags)})

    async def append_tags(self, request: Request, who: Principal) -> Response:
        rec = self._session(request)
        tags = list(dict.fromkeys([*rec.tags, *(await _body(request, _Tags)).tags]))
        return self._set_tags(rec, tags)

    async def replace_tags(self, request: Request, who: Principal) -> Response:
        rec = self._session(request)
        return self._set_tags(rec, (await _body(request, _Tags)).tags)

    def _set_tags(self, rec: Record, tags: list[str]) -> Response:
        tags = list(dict.fromkeys(tags))
        if len(tags) > MAX_TAGS:
            raise HTTPProblem(400, f"a session can carry at most {MAX_TAGS} tags ({len(tags)} given)")
        self.state.set_tags(rec, tags)
        return _json({"tags": list(rec.tags)})

    # ------------------------------------------------------------------ account

    async def whoami(self, request: Request, who: Principal) -> Response:
        return _json(
            {
                "principal_type": "service_user",
                "service_user_id": who.service_user_id,
                "service_user_name": who.name,
                "org_id": self.state.org_id,
            }
        )

    async def allowed_tags(self, request: Request, who: Principal) -> Response:
        if self.profile.allowed_tags is None:
            raise HTTPProblem(403, "session tags are not enabled for this enterprise")
        return _json({"tags": list(self.profile.allowed_tags)})

    async def members(self, request: Request, who: Principal) -> Response:
        users = [{"user_id": u, "email": f"{u}@sim.invalid", "name": u} for u in self.profile.members]
        q = _query(request, _PageQuery)
        return _paged(lambda: page_of("users", users, q.first, q.after))

    def _seeded(self, kind: str, request: Request, items: list[BaseModel]) -> Response:
        q = _query(request, _PageQuery)
        return _paged(lambda: page_of(kind, [i.model_dump() for i in items], q.first, q.after))

    async def secrets(self, request: Request, who: Principal) -> Response:
        return self._seeded("secrets", request, list(self.profile.secrets))

    async def playbooks(self, request: Request, who: Principal) -> Response:
        return self._seeded("playbooks", request, list(self.profile.playbooks))

    async def playbook(self, request: Request, who: Principal) -> Response:
        wanted = request.path_params["playbook_id"]
        for p in self.profile.playbooks:
            if p.playbook_id == wanted:
                return _json(p.model_dump())
        raise HTTPProblem(404, "Playbook not found")

    async def notes(self, request: Request, who: Principal) -> Response:
        return self._seeded("notes", request, list(self.profile.knowledge_notes))

    # ------------------------------------------------------------------ introspection

    async def sim_sessions(self, request: Request) -> Response:
        sessions = self.state.snapshot()
        return _json({"count": len(sessions), "sessions": sessions})

    async def sim_stats(self, request: Request) -> Response:
        return _json(self.state.stats())

    async def sim_creates(self, request: Request) -> Response:
        """Every create as the bucket saw it (the machine's monotonic clock): when it was
        received, when it reached the bucket (after any latency fault), whether it was taken,
        and its title (to match it with the client's send)."""
        rows = [
            {"received": r, "at": a, "accepted": ok, "title": title}
            for r, a, ok, title in self.state.create_log
        ]
        return _json({"count": len(rows), "creates": rows})


async def _title(request: Request) -> str | None:
    """The title of a small create body refused before it was read (for the create log)."""
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > 65536:
        return None
    try:
        title = json.loads(await request.body()).get("title")
    except Exception:  # any unreadable body: no title to log
        return None
    return title if isinstance(title, str) else None


async def _abort(send: Send, receive: Receive) -> bool:
    """Reset the connection under this request with no HTTP response; False if we cannot.

    uvicorn passes its RequestResponseCycle's bound `send`, whose `.transport` is the asyncio
    transport. SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean EOF.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Wait until uvicorn has seen the loss, else it would answer for us with its own 500.
    with anyio.move_on_after(1.0):
        while (await receive())["type"] != "http.disconnect":
            pass
    return True


def build_app(state: SimState, plan: FaultPlan, *, token: str, introspection: bool) -> SimApp:
    """The ASGI app serving `state`."""
    return SimApp(state, plan, token=token, introspection=introspection)
