"""httpx exceptions are translated in one place (client.TRANSPORT_OUTCOMES): every httpx error
type has an outcome, creates and reads agree on it, and an unreachable API names its URL."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx
import pytest

from launcher.api.client import TRANSPORT_OUTCOMES, ApiConfig, CreateOutcome, CreateResult, DevinClient
from launcher.errors import APIError, ExitCode

TOKEN = "cog_secret_token_value"
BASE = "https://api.example.test"


def every_httpx_error() -> list[type[httpx.HTTPError]]:
    found: list[type[httpx.HTTPError]] = []

    def walk(cls: type[httpx.HTTPError]) -> None:
        found.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(httpx.HTTPError)
    return list(dict.fromkeys(c for c in found if c.__module__.startswith("httpx")))


# Where in a request's life each one is raised: before anything could leave, or after.
NOT_SENT = {
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
}


def make(cls: type[httpx.HTTPError], request: httpx.Request) -> httpx.HTTPError:
    text = "boom " + TOKEN
    if issubclass(cls, httpx.HTTPStatusError):
        return cls(text, request=request, response=httpx.Response(500, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls(text, request=request)
    return cls(text)


def raising(cls: type[httpx.HTTPError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise make(cls, request)

    return handler


def test_the_walk_finds_the_httpx_tree() -> None:
    found = every_httpx_error()
    assert {httpx.ConnectError, httpx.ReadTimeout, httpx.HTTPStatusError} <= set(found)
    assert len(found) >= 20


@pytest.mark.parametrize("cls", every_httpx_error(), ids=lambda c: c.__name__)
def test_every_httpx_error_has_its_own_outcome(cls: type[httpx.HTTPError]) -> None:
    # A new httpx type must be placed deliberately, not inherit an outcome by accident.
    assert cls in TRANSPORT_OUTCOMES, f"httpx.{cls.__name__} is not translated"
    expected = CreateOutcome.not_sent if cls in NOT_SENT else CreateOutcome.ambiguous
    assert TRANSPORT_OUTCOMES[cls] is expected


@pytest.mark.parametrize("cls", every_httpx_error(), ids=lambda c: c.__name__)
def test_creates_and_reads_translate_every_httpx_error_the_same_way(
    cls: type[httpx.HTTPError],
) -> None:
    async def go() -> tuple[CreateResult, APIError]:
        cfg = ApiConfig(BASE, "org-1", TOKEN)
        async with DevinClient(cfg, transport=httpx.MockTransport(raising(cls))) as c:
            result = await c.create_session({"prompt": "x"})
            with pytest.raises(APIError) as info:
                await c.whoami()
            return result, info.value

    result, error = anyio.run(go)
    assert result.outcome is TRANSPORT_OUTCOMES[cls]
    assert TOKEN not in result.message and TOKEN not in error.message  # redacted
    assert error.exit_code == ExitCode.error and BASE in error.message and error.hint
    if cls in NOT_SENT:
        assert error.message.startswith(f"cannot reach the API at {BASE}")
        assert "DEVIN_API_BASE_URL" in error.hint
    else:
        assert error.message.startswith(f"no answer from the API at {BASE}")
