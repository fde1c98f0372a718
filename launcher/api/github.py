"""A GitHub issue-comments client (what `pr-comment` needs): who the token is, every comment of
a pull request (all pages), and one comment per identity marker created or edited in place.
httpx lives here too (a second API, same seam); its errors become GitHubError in one place."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

from launcher.errors import ConfigError, GitHubError

DEFAULT_API_URL = "https://api.github.com"
COMMENT_LIMIT = 65_536  # GitHub refuses a longer body with 422 ("Body is too long")
MAX_PAGES = 200  # 20,000 comments at 100 a page: a bound on a runaway Link chain
READ_ONLY = "Resource not accessible by integration"  # what a read-only token is told
ACTIONS_BOT = "github-actions[bot]"  # the author of GITHUB_TOKEN's comments
_MARKER_RE = re.compile(r"^<!-- devin-fleet:comment id=(\S+) -->$")
_ID_RE = re.compile(r"[A-Za-z0-9._:/-]{1,100}")


def marker(ident: str) -> str:
    """The hidden first line that names a comment of this tool (one per identity)."""
    if not _ID_RE.fullmatch(ident):
        raise ConfigError(
            f"comment id {ident[:40]!r}: letters, digits and . _ : / - only (1-100)",
            hint="e.g. --id plan-py312-upgrade",
        )
    return f"<!-- devin-fleet:comment id={ident} -->"


def comment_length(text: str) -> int:
    """Characters as GitHub counts them, never fewer (UTF-16 code units: an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class GitHubConfig:
    """Where and as whom: `$GITHUB_API_URL`, `$GITHUB_REPOSITORY`, `$GITHUB_TOKEN` (never shown)."""

    api_url: str
    repo: str
    token: str = field(repr=False)
    timeout: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, repo: str | None = None) -> GitHubConfig:
        token = environ.get("GITHUB_TOKEN", "")
        repo = repo or environ.get("GITHUB_REPOSITORY", "")
        api_url = (environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        if not token:
            raise ConfigError(
                "GITHUB_TOKEN is not set",
                hint="in a workflow: env: {GITHUB_TOKEN: ${{ github.token }}} and "
                "permissions: {pull-requests: write}",
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
            raise ConfigError(
                f"GITHUB_REPOSITORY {repo!r} is not owner/name", hint="set it, or pass --repo"
            )
        parts = urlsplit(api_url)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ConfigError(
                f"GITHUB_API_URL {api_url!r}: https only (plain http only for loopback hosts)"
            )
        return cls(api_url, repo, token)


class Outcome(StrEnum):
    created = "created"
    updated = "updated"


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    login: str
    url: str  # html_url: what a person opens


@dataclass(frozen=True)
class Posted:
    """What `upsert` did: created or updated this comment, and deleted duplicates of it."""

    outcome: Outcome
    comment: Comment
    removed: int = 0


class GitHubClient:
    """Issue comments of one repository. Use as a context manager."""

    def __init__(self, config: GitHubConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._origin = urlsplit(config.api_url)[:2]
        self._http = httpx.Client(
            base_url=config.api_url,
            transport=transport,
            timeout=httpx.Timeout(config.timeout, connect=10.0),
            headers={
                "Authorization": f"Bearer {config.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "devin-fleet",
            },
        )

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    # ------------------------------------------------------------------ requests

    def _request(self, method: str, url: str, what: str, **kw: Any) -> httpx.Response:
        """One request; every httpx error and refusal becomes a GitHubError here."""
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise GitHubError(
                f"{what}: cannot reach GitHub at {self.config.api_url} ({type(exc).__name__})",
                hint="check GITHUB_API_URL and the network",
            ) from None
        if resp.is_success:
            return resp
        message = _message(resp)
        status = resp.status_code
        if status == 403 and READ_ONLY in message:
            raise GitHubError(
                f"{what}: the token may not write here ({message}; a read-only token, as on "
                "a pull request from a fork)",
                status=status,
                read_only=True,
                hint="grant `permissions: pull-requests: write`; forks' pull requests never get it",
            )
        hints = {
            401: "GITHUB_TOKEN is wrong or expired",
            403: "the token lacks a permission, or the rate limit is spent",
            404: f"check the pull request number and GITHUB_REPOSITORY ({self.config.repo})",
            422: "GitHub refused the body (a comment holds at most 65,536 characters)",
        }
        raise GitHubError(
            f"{what}: GitHub answered {status}: {message}", status=status, hint=hints.get(status)
        )

    def _pages(self, path: str, what: str) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list, following `Link: <...>; rel="next"` on the same host only."""
        url: str | None = path
        params: dict[str, Any] | None = {"per_page": 100}
        for _ in range(MAX_PAGES):
            if url is None:
                return
            resp = self._request("GET", url, what, params=params)
            data = _json(resp, what)
            if not isinstance(data, list):
                raise GitHubError(f"{what}: expected a list, got {type(data).__name__}")
            yield data
            url = resp.links.get("next", {}).get("url")
            params = None  # the next link carries its own query
            if url is not None and urlsplit(url)[:2] != self._origin:
                raise GitHubError(f"{what}: the next page is on another host; not following it")
        raise GitHubError(f"{what}: more than {MAX_PAGES} pages; stopped")

    # ------------------------------------------------------------------ the API

    def whoami(self) -> str | None:
        """The token's login, or None when the token may not read /user (an installation
        token, such as a workflow's GITHUB_TOKEN, is told 403)."""
        try:
            data = _json(self._request("GET", "/user", "who the token is"), "who the token is")
        except GitHubError as exc:
            if exc.status == 403:
                return None
            raise
        login = data.get("login") if isinstance(data, dict) else None
        if not isinstance(login, str):
            raise GitHubError("who the token is: GitHub's answer has no login")
        return login

    def comments(self, pr: int) -> list[Comment]:
        """Every comment of pull request `pr`, oldest first, all pages."""
        what = f"reading the comments of pull request #{pr}"
        out = []
        for page in self._pages(f"/repos/{self.config.repo}/issues/{pr}/comments", what):
            out += [_comment(c, what) for c in page]
        return out

    def create(self, pr: int, body: str) -> Comment:
        what = f"commenting on pull request #{pr}"
        path = f"/repos/{self.config.repo}/issues/{pr}/comments"
        return _comment(_json(self._request("POST", path, what, json={"body": body}), what), what)

    def update(self, comment_id: int, body: str) -> Comment:
        what = f"editing comment {comment_id}"
        path = f"/repos/{self.config.repo}/issues/comments/{comment_id}"
        return _comment(_json(self._request("PATCH", path, what, json={"body": body}), what), what)

    def delete(self, comment_id: int) -> None:
        path = f"/repos/{self.config.repo}/issues/comments/{comment_id}"
        self._request("DELETE", path, f"deleting comment {comment_id}")

    def upsert(self, pr: int, ident: str, body: str, *, author: str | None = None) -> Posted:
        """Post `body` under the hidden marker of `ident`: edit this tool's comment with that
        marker if there is one (deleting duplicates a race left), else create it. Only
        comments written by `author` (default: the token's own user) are ever touched."""
        text = f"{marker(ident)}\n{body}"
        if comment_length(text) > COMMENT_LIMIT:
            raise GitHubError(
                f"the comment has {comment_length(text):,} characters; GitHub takes {COMMENT_LIMIT:,}",
                hint="fit it first (launcher.views.markdown.fit_markdown)",
            )
        me = author or self.whoami() or ACTIONS_BOT
        ours = [c for c in self.comments(pr) if c.login == me and _ident(c.body) == ident]
        if not ours:
            return Posted(Outcome.created, self.create(pr, text))
        for extra in ours[1:]:
            self.delete(extra.id)
        return Posted(Outcome.updated, self.update(ours[0].id, text), len(ours) - 1)

    def pulls_of_commit(self, sha: str) -> list[int]:
        """The pull requests a commit belongs to (a merge commit: the merged one)."""
        if not re.fullmatch(r"[0-9a-f]{7,40}", sha):
            raise ConfigError(f"not a commit sha: {sha[:50]!r}", hint="GITHUB_SHA, or pass --pr")
        what = f"finding the pull request of commit {sha[:12]}"
        resp = self._request("GET", f"/repos/{self.config.repo}/commits/{sha}/pulls", what)
        data = _json(resp, what)
        return [int(p["number"]) for p in data if isinstance(p, dict) and "number" in p]

    def find(self, pr: int, ident: str, *, author: str | None = None) -> Comment | None:
        """This tool's comment with marker `ident` on `pr`, written by `author` (default: the
        token's user), or None."""
        me = author or self.whoami() or ACTIONS_BOT
        ours = [c for c in self.comments(pr) if c.login == me and _ident(c.body) == ident]
        return ours[0] if ours else None


def _ident(body: str) -> str | None:
    m = _MARKER_RE.match(body.split("\n", 1)[0].rstrip("\r"))
    return m.group(1) if m else None


def _json(resp: httpx.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise GitHubError(f"{what}: GitHub's answer is not JSON ({resp.status_code})") from None


def _comment(data: Any, what: str) -> Comment:
    try:
        return Comment(
            int(data["id"]),
            str(data.get("body") or ""),
            str(data["user"]["login"]),
            str(data["html_url"]),
        )
    except (KeyError, TypeError, ValueError):
        raise GitHubError(f"{what}: a comment in GitHub's answer lacks id, user or html_url") from None


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason_phrase
    if isinstance(data, dict):
        msg = str(data.get("message") or resp.reason_phrase)
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = [
                str(e.get("message") or e.get("code")) if isinstance(e, dict) else str(e) for e in errors
            ]
            msg += f" ({'; '.join(details[:3])})"
        return msg[:300]
    return resp.reason_phrase
