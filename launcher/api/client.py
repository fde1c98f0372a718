"""The Devin v3 API client: the one home of httpx, and the one place its exceptions are translated.

`create_session` never raises for a per-session problem: it classifies each attempt (created,
not sent, rate limited, rejected, ambiguous) so the executor can decide what is safe to do.
Run-level problems (bad credentials) raise AuthError; failed reads raise APIError.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from launcher.api.models import REQUEST_TIMEOUT, Page, Session, session_path_id
from launcher.errors import (
    APIError,
    AuthError,
    ConfigError,
    redact,
    shorten,
    validation_lines,
)

DEFAULT_BASE_URL = "https://api.devin.ai"
USER_AGENT = "devin-fleet/0.1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ApiConfig:
    """Where and as whom to talk to the API. The token never appears in repr or messages."""

    base_url: str
    org_id: str
    token: str = field(repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = REQUEST_TIMEOUT

    def __post_init__(self) -> None:
        # A header cannot carry these: httpx would refuse it later with the token in its words.
        bad = next((i for i, c in enumerate(self.token) if not "!" <= c <= "~"), None)
        if bad is not None:
            what = "whitespace" if self.token[bad].isspace() else "a character HTTP headers cannot carry"
            raise ConfigError(
                f"DEVIN_API_KEY holds {what} at position {bad + 1} of {len(self.token)}",
                hint="copy the token again (a service-user token is printable ASCII, cog_...); "
                "its value is never shown",
            )
        if not 0 < self.read_timeout < float("inf") or not 0 < self.connect_timeout < float("inf"):
            raise ConfigError("the request timeout must be a positive number of seconds")

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        base_url: str | None = None,
        org_id: str | None = None,
        token: str | None = None,
    ) -> ApiConfig:
        """Build from flags (first) and DEVIN_API_KEY / DEVIN_ORG_ID / DEVIN_API_BASE_URL."""
        # A trailing newline (`$(cat token.txt)`) or spaces around it are not part of a token.
        token = (token or environ.get("DEVIN_API_KEY") or "").strip()
        org_id = (org_id or environ.get("DEVIN_ORG_ID") or "").strip()
        base = (base_url or environ.get("DEVIN_API_BASE_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
        if not token:
            raise ConfigError(
                "DEVIN_API_KEY is not set",
                hint="export DEVIN_API_KEY=cog_... (a service-user token)",
            )
        if not org_id:
            raise ConfigError("no organization id", hint="export DEVIN_ORG_ID=org-... or pass --org")
        try:
            parts = urlsplit(base)
            parts.port  # noqa: B018  (raises ValueError for a port out of range)
        except ValueError as exc:
            raise ConfigError(
                f"DEVIN_API_BASE_URL {public_url(base)!r} is not a valid URL ({exc})",
                hint="scheme and host only, e.g. https://api.devin.ai (a port is 1-65535)",
            ) from None
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"DEVIN_API_BASE_URL {public_url(base)!r} carries a user name or password",
                hint="drop `user:password@`: the API takes the token from DEVIN_API_KEY only",
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"DEVIN_API_BASE_URL {base!r} is not an http(s) URL",
                hint="scheme and host only, e.g. https://api.devin.ai",
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(
                f"DEVIN_API_BASE_URL {base!r} must be scheme and host only",
                hint="drop the path; devin-fleet adds /v3/...",
            )
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ConfigError(
                f"refusing plain http to {parts.hostname}: the token would travel unencrypted",
                hint="use https (http is allowed for loopback only)",
            )
        return cls(base_url=base, org_id=org_id, token=token)

    def redact(self, text: str) -> str:
        """`text` without the token in any of its forms (raw, escaped, repr)."""
        return redact(text, [self.token])


def public_url(url: str) -> str:
    """`url` with any `user:password@` replaced by `***@` (shown in messages)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{tail}" if sep else url


class CreateOutcome(StrEnum):
    """What one create attempt tells us about whether a session exists."""

    created = "created"  # 2xx with a session
    not_sent = "not_sent"  # nothing reached the server: safe to retry
    rate_limited = "rate_limited"  # 429: nothing created; pause and retry
    rejected = "rejected"  # other 4xx: nothing created; do not retry
    ambiguous = "ambiguous"  # timeout after sending, dropped connection, 5xx, unreadable 2xx
    auth = "auth"  # 401/403: every request would fail


# Every httpx exception by where the request was when it failed: the one translation table,
# used by create_session (an outcome) and by every other request (an APIError). Before the
# request could leave (connecting, waiting for a pooled connection, an unusable URL or proxy):
# not_sent, safe to retry. Once it may have been written: ambiguous (a create is looked up).
# A type missing here falls back to its nearest listed base; tests require every httpx type.
TRANSPORT_OUTCOMES: dict[type[httpx.HTTPError], CreateOutcome] = {
    httpx.ConnectError: CreateOutcome.not_sent,
    httpx.ConnectTimeout: CreateOutcome.not_sent,
    httpx.PoolTimeout: CreateOutcome.not_sent,
    httpx.ProxyError: CreateOutcome.not_sent,
    httpx.UnsupportedProtocol: CreateOutcome.not_sent,
    httpx.WriteTimeout: CreateOutcome.ambiguous,
    httpx.WriteError: CreateOutcome.ambiguous,
    httpx.LocalProtocolError: CreateOutcome.ambiguous,  # may fail half-way through sending
    httpx.ReadTimeout: CreateOutcome.ambiguous,
    httpx.ReadError: CreateOutcome.ambiguous,
    httpx.CloseError: CreateOutcome.ambiguous,
    httpx.RemoteProtocolError: CreateOutcome.ambiguous,
    httpx.DecodingError: CreateOutcome.ambiguous,
    httpx.TooManyRedirects: CreateOutcome.ambiguous,
    httpx.HTTPStatusError: CreateOutcome.ambiguous,
    httpx.ProtocolError: CreateOutcome.ambiguous,
    httpx.NetworkError: CreateOutcome.ambiguous,
    httpx.TimeoutException: CreateOutcome.ambiguous,
    httpx.TransportError: CreateOutcome.ambiguous,
    httpx.RequestError: CreateOutcome.ambiguous,
    httpx.HTTPError: CreateOutcome.ambiguous,
}


def transport_outcome(exc: httpx.HTTPError) -> CreateOutcome:
    """What an httpx exception says about whether the request reached the server."""
    for kind in type(exc).__mro__:
        if kind in TRANSPORT_OUTCOMES:
            return TRANSPORT_OUTCOMES[kind]
    return CreateOutcome.ambiguous  # unreachable: httpx.HTTPError is in the table


@dataclass(frozen=True)
class RateLimitInfo:
    """What an answer's rate-limit headers say: the sustained rate they announce (quota over
    window, the strictest policy), the creates allowed right now, and seconds until reset."""

    rate: float | None = None
    remaining: int | None = None
    reset: float | None = None


@dataclass(frozen=True)
class CreateResult:
    outcome: CreateOutcome
    session: Session | None = None
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    rate_limit: RateLimitInfo | None = None  # from the answer's headers, when it had any


def _sf_items(value: str) -> list[tuple[str, dict[str, str]]]:
    """A structured-field list, loosely: `"a";q=10;w=1, 20;w=60` -> [("a", {q, w}), ("20",
    {w})]. Enough for the rate-limit fields; anything unreadable is skipped by the caller."""
    items = []
    for part in value.split(","):
        head, *params = (p.strip() for p in part.split(";"))
        kv = {}
        for p in params:
            k, _, v = p.partition("=")
            kv[k.strip().lower()] = v.strip().strip('"')
        items.append((head.strip('"'), kv))
    return items


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def parse_rate_limit(headers: Mapping[str, str], *, now: float | None = None) -> RateLimitInfo | None:
    """Rate-limit headers, in any of three families; None when there are none.

    - IETF structured fields: `RateLimit-Policy: "p";q=20;w=1` and `RateLimit: "p";r=3;t=1`.
    - The earlier drafts: `RateLimit-Limit`, `-Remaining`, `-Reset` (delta seconds), with the
      window in `RateLimit-Policy: 20;w=1` or in `RateLimit-Limit: 20, 20;w=1`.
    - `X-RateLimit-Limit`, `-Remaining`, `-Reset` (Unix seconds when large, else delta).

    The rate is quota / window; without a window the quota is read as per second (the unit
    create limits are quoted in), and a wrong guess only costs the 429s that correct it.
    """
    h = {k.lower(): v for k, v in headers.items()}
    rates: list[float] = []
    remaining: float | None = None
    reset: float | None = None
    policy = h.get("ratelimit-policy")
    if policy is not None:
        for head, kv in _sf_items(policy):
            q = _num(kv.get("q")) if "q" in kv else _num(head)
            w = _num(kv.get("w")) or 1.0
            if q is not None and q > 0 and w > 0:
                rates.append(q / w)
    if "ratelimit" in h:
        for _, kv in _sf_items(h["ratelimit"]):
            r, t = _num(kv.get("r")), _num(kv.get("t"))
            if r is not None:
                remaining = r if remaining is None else min(remaining, r)
            if t is not None:
                reset = t if reset is None else max(reset, t)
    for prefix in ("ratelimit-", "x-ratelimit-"):
        limit = h.get(prefix + "limit")
        if limit is not None and not rates:
            for head, kv in _sf_items(limit):
                q, w = _num(head), _num(kv.get("w")) or 1.0
                if q is not None and q > 0 and w > 0:
                    rates.append(q / w)
        if remaining is None:
            remaining = _num(h.get(prefix + "remaining"))
        if reset is None and (r := _num(h.get(prefix + "reset"))) is not None:
            wall = time.time() if now is None else now
            reset = max(0.0, r - wall) if r > 1e9 else r  # Unix seconds vs delta seconds
    if not rates and remaining is None and reset is None:
        return None
    return RateLimitInfo(
        rate=min(rates) if rates else None,
        remaining=None if remaining is None else max(0, int(remaining)),
        reset=reset,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP-date; None when absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


MESSAGE_CHARS = 500  # an API error text is cut to this, after redaction


def error_message(response: httpx.Response) -> str:
    """The API's own words from an error body: FastAPI `detail` (string or list), RFC 7807;
    whole (the caller redacts, then cuts it short)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip()
        return f"HTTP {response.status_code}" + (f": {text}" if text else "")
    detail: Any = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(body, dict) and "title" in body and "detail" not in body:
        detail = body["title"]
    if isinstance(detail, list):
        parts = []
        for d in detail:
            if isinstance(d, dict):
                loc = ".".join(str(x) for x in d.get("loc", []) if x != "body")
                parts.append(f"{loc}: {d.get('msg', d)}" if loc else str(d.get("msg", d)))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("msg") or json.dumps(detail))
    return str(detail)


class DevinClient:
    """Async client of the org-scoped v3 endpoints. Use as `async with DevinClient(cfg) as c:`."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 32,
    ) -> None:
        self.config = config
        self.requests = 0
        self.secrets: set[str] = set()  # values to redact besides the token (session secrets)
        self._http = httpx.AsyncClient(
            base_url=f"{config.base_url}/v3",
            headers={"Authorization": f"Bearer {config.token}", "User-Agent": USER_AGENT},
            timeout=httpx.Timeout(
                config.read_timeout, connect=config.connect_timeout, pool=config.read_timeout
            ),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> DevinClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def _org(self) -> str:
        return f"/organizations/{self.config.org_id}"

    # ------------------------------------------------------------------ create

    async def create_session(self, body: Mapping[str, Any]) -> CreateResult:
        """POST one create; classify the outcome (never raises for per-session problems)."""
        return await self._post_classified(f"{self._org}/sessions", body, Session)

    async def _post_classified(
        self, path: str, body: Mapping[str, Any], model: type[Session] | None
    ) -> CreateResult:
        """POST a request that must not be repeated blindly (a create, a message) and say what
        its outcome tells about whether it took effect: the one classification of answers."""
        self.requests += 1
        try:
            resp = await self._http.post(path, json=body)
        except httpx.HTTPError as exc:  # TRANSPORT_OUTCOMES: not sent, or ambiguous
            return CreateResult(transport_outcome(exc), message=self._describe(exc))
        code = resp.status_code
        limits = parse_rate_limit(resp.headers)
        if code == 429:
            return CreateResult(
                CreateOutcome.rate_limited,
                status=code,
                retry_after=parse_retry_after(resp.headers.get("retry-after")),
                message="rate limited",
                rate_limit=limits,
            )
        if code in (401, 403):
            return CreateResult(CreateOutcome.auth, status=code, message=self._msg(resp))
        if code >= 500:
            return CreateResult(CreateOutcome.ambiguous, status=code, message=self._msg(resp))
        if not 200 <= code < 300:
            return CreateResult(CreateOutcome.rejected, status=code, message=self._msg(resp))
        if model is None:
            return CreateResult(CreateOutcome.created, status=code, rate_limit=limits)
        try:
            session = model.model_validate(resp.json())
        except Exception as exc:  # an unreadable 2xx is as ambiguous as a dropped one
            return CreateResult(
                CreateOutcome.ambiguous,
                status=code,
                message=f"unreadable {code} response: {type(exc).__name__}",
            )
        return CreateResult(CreateOutcome.created, session=session, status=code, rate_limit=limits)

    # ------------------------------------------------------------------ reads and actions

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self.requests += 1
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc) from None
        if resp.status_code in (401, 403):
            raise AuthError(
                f"{method} {path}: HTTP {resp.status_code}: {self._msg(resp)}",
                status=resp.status_code,
                hint="check DEVIN_API_KEY and the token's permissions"
                if resp.status_code == 401
                else "the token lacks a permission",
            )
        return resp

    def _checked(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise APIError(
                f"{resp.request.method} {resp.request.url.path}: HTTP "
                f"{resp.status_code}: {self._msg(resp)}",
                status=resp.status_code,
            )
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(
                f"{resp.request.url.path}: unreadable response", status=resp.status_code
            ) from None

    async def whoami(self) -> dict[str, Any]:
        """GET /v3/self: proves the token works (AuthError on 401/403)."""
        data = self._checked(await self._request("GET", "/self"))
        return data if isinstance(data, dict) else {}

    async def get_session(self, session_id: str) -> Session | None:
        resp = await self._request("GET", f"{self._org}/sessions/{session_path_id(session_id)}")
        if resp.status_code == 404:
            return None
        return self._session(self._checked(resp))

    async def list_pages(
        self, path: str, params: Mapping[str, Any] | None = None, *, first: int = 200
    ) -> AsyncIterator[Page]:
        """Every page of a paginated list endpoint."""
        after: str | None = None
        while True:
            q: dict[str, Any] = {**(params or {}), "first": first}
            if after:
                q["after"] = after
            try:
                page = Page.model_validate(
                    self._checked(await self._request("GET", f"{self._org}{path}", params=q))
                )
            except ValidationError:
                raise APIError(
                    f"GET {path}: not a list page (items, end_cursor, has_next_page)"
                ) from None
            yield page
            if not page.has_next_page or not page.end_cursor:
                return
            after = page.end_cursor

    async def list_sessions(
        self, *, tags: list[str] | None = None, session_ids: list[str] | None = None, first: int = 200
    ) -> AsyncIterator[Session]:
        """Sessions matching the filters (tags are re-checked here: AND semantics)."""
        params: dict[str, Any] = {}
        if tags:
            params["tags"] = tags
        if session_ids:
            params["session_ids"] = session_ids
        async for page in self.list_pages("/sessions", params, first=first):
            for item in page.items:
                s = self._session(item)
                if not tags or set(tags) <= set(s.tags):
                    yield s

    async def terminate(self, session_id: str, *, archive: bool = False) -> bool:
        """DELETE a session; False when it does not exist (already gone)."""
        params = {"archive": "true"} if archive else None
        resp = await self._request(
            "DELETE", f"{self._org}/sessions/{session_path_id(session_id)}", params=params
        )
        if resp.status_code == 404:
            return False
        self._checked(resp)
        return True

    async def send_message(self, session_id: str, text: str) -> CreateResult:
        """POST a message to a session, classified like a create: `created` means delivered,
        `ambiguous` that it may have been (look it up with `list_messages` before resending)."""
        path = f"{self._org}/sessions/{session_path_id(session_id)}/messages"
        return await self._post_classified(path, {"message": text}, None)

    async def list_messages(self, session_id: str) -> list[dict[str, Any]]:
        """Every message of a session (user and Devin), oldest first."""
        out: list[dict[str, Any]] = []
        path = f"/sessions/{session_path_id(session_id)}/messages"
        async for page in self.list_pages(path):
            out.extend(item for item in page.items if isinstance(item, dict))
        return out

    async def list_ids(self, path: str) -> set[str] | None:
        """Ids from a list endpoint (secrets, playbooks, knowledge); None when forbidden (403).

        The endpoint's own id field is read first (`secret_id` for /secrets, ...), then `id`.
        """
        own = {
            "/secrets": "secret_id",
            "/playbooks": "playbook_id",
            "/knowledge/notes": "note_id",
            "/members/users": "user_id",
        }.get(path)
        fields = [f for f in (own, "id", "knowledge_id") if f]
        ids: set[str] = set()
        try:
            async for page in self.list_pages(path):
                for item in page.items:
                    for k in fields:
                        if isinstance(item.get(k), str):
                            ids.add(item[k])
                            break
        except AuthError as exc:
            if exc.status == 403:
                return None
            raise
        return ids

    async def allowed_tags(self) -> list[str] | None:
        """The org's allowed session tags (GET /v3/enterprise/organizations/{org_id}/tags,
        ManageEnterpriseSettings); None when it cannot be read: 403 (no permission, or tag
        validation is off) or no such endpoint (404/405)."""
        try:
            resp = await self._request("GET", f"/enterprise{self._org}/tags")
        except AuthError as exc:
            if exc.status == 403:
                return None
            raise
        if resp.status_code in (404, 405):
            return None
        data = self._checked(resp)
        tags = data.get("tags") if isinstance(data, dict) else None
        if not isinstance(tags, list):
            raise APIError(f"GET /enterprise{self._org}/tags: no `tags` list in the answer")
        return [str(t) for t in tags]

    # ------------------------------------------------------------------ helpers

    def _session(self, data: Any) -> Session:
        try:
            return Session.model_validate(data)
        except ValidationError as exc:
            raise APIError(
                f"unreadable session object from the API: {'; '.join(validation_lines(exc))}",
                hint="the API answered with a shape this version does not know; "
                "re-run with --debug and report it",
            ) from None

    def _transport_error(self, method: str, path: str, exc: httpx.HTTPError) -> APIError:
        base = public_url(self.config.base_url)
        if transport_outcome(exc) is CreateOutcome.not_sent:
            return APIError(
                f"cannot reach the API at {base} ({method} {path}): {self._describe(exc)}",
                hint="check DEVIN_API_BASE_URL (or --base-url) and the network",
            )
        return APIError(
            f"no answer from the API at {base} ({method} {path}): {self._describe(exc)}",
            hint="the connection failed after the request was sent; check the network and "
            "re-run (devin-fleet resumes where it stopped)",
        )

    def redact(self, text: str) -> str:
        """`text` without the token or any secret the client was told about (every form)."""
        return redact(text, [self.config.token, *self.secrets])

    def _msg(self, resp: httpx.Response) -> str:
        return shorten(self.redact(error_message(resp)), MESSAGE_CHARS)

    def _describe(self, exc: Exception) -> str:
        text = str(exc) or type(exc).__name__
        return shorten(self.redact(f"{type(exc).__name__}: {text}"), MESSAGE_CHARS)
