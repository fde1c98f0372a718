"""A fake of GitHub's issue-comments API over loopback (starlette served by uvicorn, like the
project's simulator): tokens that are users or a workflow's installation token, pagination with
`Link` headers, 422 for an oversized body, 403 for someone else's comment or a read-only token."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LIMIT = 65_536
READ_ONLY = "Resource not accessible by integration"


@dataclass
class Token:
    login: str
    installation: bool = False  # a workflow's GITHUB_TOKEN: GET /user is refused
    read_only: bool = False  # a fork's pull request: no writes


@dataclass
class FakeGitHub:
    base_url: str = ""
    repo: str = "acme/campaigns"
    tokens: dict[str, Token] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # pr -> comments
    commit_prs: dict[str, list[int]] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    next_id: int = 1000
    page_size: int = 100  # the most a page holds (GitHub's per_page cap); tests lower it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, pr: int, login: str, body: str) -> dict[str, Any]:
        self.next_id += 1
        c = {
            "id": self.next_id,
            "body": body,
            "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"},
            "html_url": f"https://github.example/{self.repo}/pull/{pr}#issuecomment-{self.next_id}",
        }
        self.comments.setdefault(pr, []).append(c)
        return c

    def writes(self) -> list[tuple[str, str, int]]:
        return [e for e in self.log if e[0] != "GET"]

    # ------------------------------------------------------------------ handlers

    def _who(self, request: Request) -> Token | None:
        auth = request.headers.get("authorization", "")
        return self.tokens.get(auth.removeprefix("Bearer "))

    def _answer(self, request: Request, status: int, body: Any, **kw: Any) -> Response:
        self.log.append((request.method, request.url.path, status))
        return JSONResponse(body, status_code=status, **kw)

    async def user(self, request: Request) -> Response:
        who = self._who(request)
        if who is None:
            return self._answer(request, 401, {"message": "Bad credentials"})
        if who.installation:
            return self._answer(request, 403, {"message": READ_ONLY})
        return self._answer(request, 200, {"login": who.login, "id": 1})

    async def list_or_create(self, request: Request) -> Response:
        who = self._who(request)
        if who is None:
            return self._answer(request, 401, {"message": "Bad credentials"})
        pr = int(request.path_params["pr"])
        with self.lock:
            if request.method == "GET":
                per = min(int(request.query_params.get("per_page", 30)), self.page_size)
                page = int(request.query_params.get("page", 1))
                items = self.comments.get(pr, [])
                chunk = items[(page - 1) * per : page * per]
                headers = {}
                if page * per < len(items):
                    url = f"{self.base_url}{request.url.path}?per_page={per}&page={page + 1}"
                    headers["Link"] = f'<{url}>; rel="next", <{url}>; rel="last"'
                return self._answer(request, 200, chunk, headers=headers)
            if who.read_only:
                return self._answer(request, 403, {"message": READ_ONLY})
            body = (await request.json())["body"]
            if len(body) > LIMIT:
                return self._too_long(request)
            return self._answer(request, 201, self.add(pr, who.login, body))

    def _too_long(self, request: Request) -> Response:
        errors = [{"resource": "IssueComment", "code": "custom", "field": "body"}]
        errors[0]["message"] = f"body is too long (maximum is {LIMIT} characters)"
        return self._answer(request, 422, {"message": "Validation Failed", "errors": errors})

    async def edit(self, request: Request) -> Response:
        who = self._who(request)
        if who is None:
            return self._answer(request, 401, {"message": "Bad credentials"})
        cid = int(request.path_params["cid"])
        with self.lock:
            found = [(pr, c) for pr, cs in self.comments.items() for c in cs if c["id"] == cid]
            if not found:
                return self._answer(request, 404, {"message": "Not Found"})
            pr, c = found[0]
            if who.read_only:
                return self._answer(request, 403, {"message": READ_ONLY})
            if c["user"]["login"] != who.login:
                return self._answer(request, 403, {"message": "Must have admin rights to Repository."})
            if request.method == "DELETE":
                self.comments[pr].remove(c)
                self.log.append((request.method, request.url.path, 204))
                return Response(status_code=204)
            body = (await request.json())["body"]
            if len(body) > LIMIT:
                return self._too_long(request)
            c["body"] = body
            return self._answer(request, 200, c)

    async def commit_pulls(self, request: Request) -> Response:
        prs = self.commit_prs.get(request.path_params["sha"], [])
        return self._answer(request, 200, [{"number": n} for n in prs])

    def app(self) -> Starlette:
        base = "/repos/{owner}/{name}"
        return Starlette(
            routes=[
                Route("/user", self.user),
                Route(base + "/issues/{pr:int}/comments", self.list_or_create, methods=["GET", "POST"]),
                Route(base + "/issues/comments/{cid:int}", self.edit, methods=["PATCH", "DELETE"]),
                Route(base + "/commits/{sha}/pulls", self.commit_pulls),
            ]
        )


@contextmanager
def running_fake_github() -> Iterator[FakeGitHub]:
    """Serve a FakeGitHub on a free 127.0.0.1 port until the block ends. The socket listens
    before the server thread starts, so requests queue until it accepts: no start-up wait."""
    fake = FakeGitHub()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        fake.app(), log_config=None, log_level="warning", lifespan="off", http="h11", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
