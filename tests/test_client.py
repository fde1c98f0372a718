"""The API client: configuration rules, and the classification of every create outcome
(scripted with httpx.MockTransport; real sockets are covered against the simulator)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anyio
import httpx
import pytest

from launcher.api.client import (
    ApiConfig,
    CreateOutcome,
    DevinClient,
    error_message,
    parse_retry_after,
)
from launcher.errors import APIError, AuthError, ConfigError

TOKEN = "cog_secret_token_value"
SESSION = {
    "session_id": "devin-abc",
    "url": "https://app.devin.ai/sessions/abc",
    "status": "new",
    "tags": [],
    "org_id": "org-1",
    "created_at": 1,
    "updated_at": 1,
    "acus_consumed": 0,
    "pull_requests": [],
}


def cfg() -> ApiConfig:
    return ApiConfig("https://api.example.test", "org-1", TOKEN)


def create_with(handler: Callable[[httpx.Request], httpx.Response]) -> object:
    async def go() -> object:
        async with DevinClient(cfg(), transport=httpx.MockTransport(handler)) as c:
            return await c.create_session({"prompt": "x"})

    return anyio.run(go)


def raiser(exc: type[Exception]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("boom " + TOKEN, request=request)  # type: ignore[call-arg]

    return handler


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectError, CreateOutcome.not_sent),
        (httpx.ConnectTimeout, CreateOutcome.not_sent),
        (httpx.PoolTimeout, CreateOutcome.not_sent),
        (httpx.ReadTimeout, CreateOutcome.ambiguous),
        (httpx.WriteTimeout, CreateOutcome.ambiguous),
        (httpx.RemoteProtocolError, CreateOutcome.ambiguous),
        (httpx.ReadError, CreateOutcome.ambiguous),
    ],
)
def test_transport_failures_are_classified_by_whether_the_request_may_have_arrived(
    exc: type[Exception], outcome: CreateOutcome
) -> None:
    result = create_with(raiser(exc))
    assert result.outcome == outcome  # type: ignore[attr-defined]
    assert TOKEN not in result.message  # type: ignore[attr-defined]  # redacted


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, SESSION, CreateOutcome.created),
        (201, SESSION, CreateOutcome.created),
        (429, {"detail": "slow down"}, CreateOutcome.rate_limited),
        (401, {"detail": "bad token"}, CreateOutcome.auth),
        (403, {"detail": "no permission"}, CreateOutcome.auth),
        (500, {"detail": "oops"}, CreateOutcome.ambiguous),
        (502, "bad gateway", CreateOutcome.ambiguous),
        (
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]},
            CreateOutcome.rejected,
        ),
        (400, {"detail": "unknown platform 'mac'; available: linux, windows"}, CreateOutcome.rejected),
        (404, {"detail": "org not found"}, CreateOutcome.rejected),
    ],
)
def test_http_statuses_are_classified(status: int, body: object, outcome: CreateOutcome) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert json.loads(request.content) == {"prompt": "x"}
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    result = create_with(handler)
    assert result.outcome == outcome  # type: ignore[attr-defined]
    if outcome == CreateOutcome.created:
        assert result.session.session_id == "devin-abc"  # type: ignore[attr-defined]


def test_unreadable_2xx_is_ambiguous_not_created() -> None:
    result = create_with(lambda _: httpx.Response(200, text="<html>proxy</html>"))
    assert result.outcome == CreateOutcome.ambiguous  # type: ignore[attr-defined]


def test_422_message_names_the_field() -> None:
    result = create_with(
        lambda _: httpx.Response(
            422, json={"detail": [{"loc": ["body", "tags"], "msg": "too many", "type": "value_error"}]}
        )
    )
    assert result.message == "tags: too many"  # type: ignore[attr-defined]


def test_retry_after_is_returned_with_429() -> None:
    result = create_with(lambda _: httpx.Response(429, headers={"Retry-After": "7"}))
    assert result.retry_after == 7.0  # type: ignore[attr-defined]


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"detail": "plain"}, "plain"),
        ({"detail": [{"loc": ["body", "a"], "msg": "m1"}, {"loc": ["body"], "msg": "m2"}]}, "a: m1; m2"),
        ({"type": "about:blank", "title": "Conflict", "status": 409}, "Conflict"),
    ],
)
def test_error_message_parses_fastapi_and_rfc7807(body: object, expected: str) -> None:
    assert error_message(httpx.Response(400, json=body)) == expected


def test_reads_raise_auth_error_on_401_without_leaking_the_token() -> None:
    async def go() -> None:
        t = httpx.MockTransport(lambda _: httpx.Response(401, json={"detail": f"bad {TOKEN}"}))
        async with DevinClient(cfg(), transport=t) as c:
            await c.whoami()

    with pytest.raises(AuthError) as info:
        anyio.run(go)
    assert TOKEN not in info.value.render()


def test_list_sessions_follows_cursors_and_rechecks_tags() -> None:
    pages = {
        None: {
            "items": [
                dict(SESSION, session_id="devin-1", tags=["a"]),
                dict(SESSION, session_id="devin-x", tags=["b"]),
            ],
            "end_cursor": "c1",
            "has_next_page": True,
        },
        "c1": {
            "items": [dict(SESSION, session_id="devin-2", tags=["a", "b"])],
            "end_cursor": None,
            "has_next_page": False,
        },
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[request.url.params.get("after")])

    async def go() -> list[str]:
        async with DevinClient(cfg(), transport=httpx.MockTransport(handler)) as c:
            return [s.session_id async for s in c.list_sessions(tags=["a"])]

    assert anyio.run(go) == ["devin-1", "devin-2"]
    assert seen[0].url.params.get_list("tags") == ["a"]
    assert seen[0].url.params["first"] == "200"


def test_list_errors_raise_api_error() -> None:
    async def go() -> None:
        t = httpx.MockTransport(lambda _: httpx.Response(503, text="down"))
        async with DevinClient(cfg(), transport=t) as c:
            [s async for s in c.list_sessions()]

    with pytest.raises(APIError):
        anyio.run(go)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "DEVIN_API_KEY is not set"),
        ({"DEVIN_API_KEY": "k"}, "no organization id"),
        ({"DEVIN_API_KEY": "k", "DEVIN_ORG_ID": "o", "DEVIN_API_BASE_URL": "ftp://x"}, "not an http"),
        (
            {"DEVIN_API_KEY": "k", "DEVIN_ORG_ID": "o", "DEVIN_API_BASE_URL": "https://x/v3"},
            "scheme and host only",
        ),
        (
            {"DEVIN_API_KEY": "k", "DEVIN_ORG_ID": "o", "DEVIN_API_BASE_URL": "http://api.devin.ai"},
            "plain http",
        ),
    ],
)
def test_config_refuses_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ApiConfig.from_env(env)


def test_config_flags_beat_environment_and_loopback_http_is_allowed() -> None:
    c = ApiConfig.from_env(
        {
            "DEVIN_API_KEY": "cog_unique_42",
            "DEVIN_ORG_ID": "org-env",
            "DEVIN_API_BASE_URL": "https://env.example",
        },
        org_id="org-flag",
        base_url="http://127.0.0.1:9000",
    )
    assert (c.org_id, c.base_url) == ("org-flag", "http://127.0.0.1:9000")
    assert "cog_unique_42" not in repr(c)
    assert (
        ApiConfig.from_env({"DEVIN_API_KEY": "k", "DEVIN_ORG_ID": "o"}).base_url
        == "https://api.devin.ai"
    )


def test_a_malformed_session_in_a_list_is_an_api_error_not_a_crash() -> None:
    page = {"items": [{"url": "no id here"}], "end_cursor": None, "has_next_page": False}

    async def go() -> None:
        t = httpx.MockTransport(lambda _: httpx.Response(200, json=page))
        async with DevinClient(cfg(), transport=t) as c:
            [s async for s in c.list_sessions()]

    with pytest.raises(APIError, match="unreadable session object"):
        anyio.run(go)


def test_list_ids_reads_the_endpoints_own_id_field_first() -> None:
    page = {
        "items": [{"playbook_id": "playbook-x", "secret_id": "secret-y"}],
        "end_cursor": None,
        "has_next_page": False,
    }

    async def go(path: str) -> set[str] | None:
        t = httpx.MockTransport(lambda _: httpx.Response(200, json=page))
        async with DevinClient(cfg(), transport=t) as c:
            return await c.list_ids(path)

    assert anyio.run(go, "/secrets") == {"secret-y"}
    assert anyio.run(go, "/playbooks") == {"playbook-x"}
