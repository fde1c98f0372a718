"""The API model: every create-session rule of the contract, on both sides, and a tolerant
session object."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from launcher.api.models import (
    MAX_SCHEMA_BYTES,
    CreateSessionRequest,
    DevinMode,
    Session,
    SessionStatus,
    StatusDetail,
    api_error_details,
    check_output_schema,
    is_absolute_uri,
    output_errors,
    session_path_id,
)


def request(**fields: Any) -> CreateSessionRequest:
    return CreateSessionRequest.model_validate({"prompt": "Do the thing.", **fields})


def refused(**fields: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        request(**fields)
    return info.value.errors(include_url=False)


def test_a_minimal_request_sends_only_what_was_set() -> None:
    assert request().body() == {"prompt": "Do the thing."}
    body = request(title="T", repos=["acme/a"], max_acu_limit=3, devin_mode="fast").body()
    assert body == {
        "prompt": "Do the thing.",
        "title": "T",
        "repos": ["acme/a"],
        "max_acu_limit": 3,
        "devin_mode": "fast",
    }


def test_every_contract_field_is_accepted() -> None:
    fields = {
        "title": "t",
        "repos": ["a/b"],
        "tags": ["x"],
        "attachment_urls": ["https://h/x"],
        "knowledge_ids": [],
        "secret_ids": ["secret-1"],
        "session_secrets": [{"key": "K", "value": "v", "sensitive": False}],
        "playbook_id": "playbook-1",
        "child_playbook_id": "playbook-2",
        "session_links": ["devin-1"],
        "max_acu_limit": 1,
        "bypass_approval": True,
        "create_as_user_id": "user-1",
        "devin_mode": "normal",
        "platform": "windows",
        "structured_output_schema": {"type": "object"},
        "structured_output_required": False,
        "resumable": True,
    }
    body = request(**fields).body()
    assert set(body) == {"prompt", *fields}
    assert body["knowledge_ids"] == []  # [] means "none", distinct from absent ("all")


def test_unknown_fields_are_refused() -> None:
    errors = refused(idempotent=True)
    assert errors[0]["type"] == "extra_forbidden" and errors[0]["loc"] == ("idempotent",)
    errors = refused(session_secrets=[{"key": "K", "value": "v", "extra": 1}])
    assert errors[0]["loc"] == ("session_secrets", 0, "extra")


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_prompt_must_not_be_empty(prompt: str) -> None:
    errors = refused(prompt=prompt)
    assert errors[0]["loc"] == ("prompt",) and "must not be empty" in errors[0]["msg"]


def test_prompt_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        CreateSessionRequest.model_validate({"title": "x"})
    assert info.value.errors()[0]["type"] == "missing"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a?b=c#d",
        "http://h",
        "s3://bucket/key",
        "urn:isbn:0451450523",
        "https://h/" + "a" * 2064,
    ],
)
def test_attachment_urls_accepted(url: str) -> None:
    assert len(url) <= 2083
    assert request(attachment_urls=[url]).attachment_urls == [url]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "1..2,083"),
        ("https://h/" + "a" * 2074, "1..2,083"),
        ("example.com/x", "not an absolute URI"),
        ("/relative/path", "not an absolute URI"),
        ("https://exa mple.com", "not an absolute URI"),
        ("https:///nohost", "not an absolute URI"),
        ("1http://h", "not an absolute URI"),
    ],
)
def test_attachment_urls_refused(url: str, fragment: str) -> None:
    errors = refused(attachment_urls=["https://fine.example", url])
    assert errors[0]["loc"] == ("attachment_urls",) and fragment in errors[0]["msg"]


def test_is_absolute_uri() -> None:
    assert is_absolute_uri("mailto:a@b.example")
    assert not is_absolute_uri("mailto:")
    assert not is_absolute_uri("no-scheme")


def test_session_secret_limits() -> None:
    ok = request(session_secrets=[{"key": "k" * 256, "value": "v" * 65_536}])
    assert ok.session_secrets is not None and ok.session_secrets[0].sensitive is True
    assert refused(session_secrets=[{"key": "", "value": "v"}])[0]["type"] == "string_too_short"
    assert refused(session_secrets=[{"key": "k" * 257, "value": "v"}])[0]["type"] == "string_too_long"
    assert refused(session_secrets=[{"key": "k", "value": "v" * 65_537}])[0]["type"] == "string_too_long"
    assert refused(session_secrets=[{"key": "k"}])[0]["type"] == "missing"


def test_at_most_fifty_tags() -> None:
    assert len(request(tags=[f"t{i}" for i in range(50)]).tags or []) == 50
    errors = refused(tags=[f"t{i}" for i in range(51)])
    assert "51 tags" in errors[0]["msg"] and "at most 50" in errors[0]["msg"]
    assert "empty" in refused(tags=["ok", " "])[0]["msg"]


@pytest.mark.parametrize("mode", [m.value for m in DevinMode])
def test_devin_modes_accepted(mode: str) -> None:
    assert request(devin_mode=mode).body()["devin_mode"] == mode


@pytest.mark.parametrize("mode", ["turbo", "Normal", "", "auto"])
def test_other_devin_modes_refused(mode: str) -> None:
    assert refused(devin_mode=mode)[0]["loc"] == ("devin_mode",)


@pytest.mark.parametrize("acu", [1, 8, "12", 10_000])
def test_max_acu_limit_accepted(acu: int | str) -> None:
    assert request(max_acu_limit=acu).body()["max_acu_limit"] == int(acu)


@pytest.mark.parametrize("acu", [0, -1, 2.5, "2.5", "eight", True, [3]])
def test_max_acu_limit_must_be_a_positive_integer(acu: Any) -> None:
    assert refused(max_acu_limit=acu)[0]["loc"] == ("max_acu_limit",)


def test_structured_output_schema_accepted_and_kept_as_is() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/definitions/a"}},
        "definitions": {"a": {"type": "string"}},
    }
    req = request(structured_output_schema=schema)
    assert req.body()["structured_output_schema"] == schema


def test_schema_at_the_size_limit() -> None:
    def schema_of(size: int) -> dict[str, Any]:
        base = {"type": "object", "description": ""}
        overhead = len(json.dumps(base, separators=(",", ":")))
        return {**base, "description": "x" * (size - overhead)}

    assert check_output_schema(schema_of(MAX_SCHEMA_BYTES)) is None
    problem = check_output_schema(schema_of(MAX_SCHEMA_BYTES + 1))
    assert problem is not None and "65,537 bytes" in problem
    assert "at most 65,536" in refused(structured_output_schema=schema_of(70_000))[0]["msg"]


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "https://x.example/s.json"}}}, "external $ref"),
        ({"allOf": [{"$ref": "other.json#/a"}]}, "external $ref"),
        ({"type": "objekt"}, "not a valid Draft 7 schema"),
        ({"properties": {"a": {"minLength": -1}}}, "not a valid Draft 7 schema at properties/a"),
        ({"required": "a"}, "not a valid Draft 7 schema"),
    ],
)
def test_structured_output_schema_refused(schema: dict[str, Any], fragment: str) -> None:
    errors = refused(structured_output_schema=schema)
    assert errors[0]["loc"] == ("structured_output_schema",) and fragment in errors[0]["msg"]


@pytest.mark.parametrize("schema", [[{"type": "object"}], "object", 7])
def test_structured_output_schema_must_be_an_object(schema: Any) -> None:
    assert refused(structured_output_schema=schema)[0]["loc"][0] == "structured_output_schema"


def test_schema_that_is_not_plain_json_is_refused() -> None:
    problem = check_output_schema({"type": "object", "default": float("nan")})
    assert problem is not None and "not plain JSON" in problem
    assert check_output_schema({"properties": {"a": {1: 2, "b": 3}}}) is not None


def test_a_checked_schema_is_checked_again_by_content() -> None:
    bad = {"type": "nope"}
    assert check_output_schema(bad) is not None
    assert check_output_schema(dict(bad)) is not None  # a copy: same answer from the cache
    assert check_output_schema({"type": "string"}) is None


def test_api_error_details_have_fastapi_shape() -> None:
    with pytest.raises(ValidationError) as info:
        CreateSessionRequest.model_validate({"prompt": "", "bogus": 1})
    details = api_error_details(info.value)
    assert {tuple(d["loc"]) for d in details} == {("body", "prompt"), ("body", "bogus")}
    assert all(set(d) == {"loc", "msg", "type"} for d in details)


def test_output_errors() -> None:
    schema = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["done"]}}}
    assert output_errors(schema, {"status": "done"}) == []
    assert output_errors(schema, {}) == ["(root): 'status' is a required property"]
    assert output_errors(schema, {"status": "x"})[0].startswith("status: ")


# ------------------------------------------------------------------------------ session object


def test_session_tolerates_unknown_fields_and_values() -> None:
    s = Session.model_validate(
        {
            "session_id": "devin-1",
            "url": "https://app/x",
            "status": "hibernating",
            "status_detail": "pondering",
            "tags": ["a"],
            "org_id": "org-1",
            "created_at": 1,
            "updated_at": 2,
            "acus_consumed": 0.5,
            "pull_requests": [{"pr_url": "https://gh/pr/1", "pr_state": "merged", "draft": False}],
            "brand_new_field": {"x": 1},
        }
    )
    assert s.status == "hibernating" and s.status_enum is None
    assert s.status_detail == "pondering" and s.detail_enum is None
    assert s.model_extra == {"brand_new_field": {"x": 1}}
    assert s.pull_requests[0].pr_url == "https://gh/pr/1"


def test_session_known_values_map_to_enums() -> None:
    s = Session.model_validate(
        {"session_id": "devin-1", "status": "running", "status_detail": "waiting_for_user"}
    )
    assert s.status_enum is SessionStatus.running
    assert s.detail_enum is StatusDetail.waiting_for_user


def test_session_nulls_take_defaults() -> None:
    s = Session.model_validate(
        {
            "session_id": "abc",
            "tags": None,
            "pull_requests": None,
            "acus_consumed": None,
            "url": None,
            "created_at": 1.5,
        }
    )
    assert (s.tags, s.pull_requests, s.acus_consumed, s.url) == ([], [], 0.0, "")
    assert s.created_at == 1.5


def test_session_path_id() -> None:
    assert session_path_id("devin-abc") == "devin-abc"
    assert session_path_id("0" * 32) == "devin-" + "0" * 32
