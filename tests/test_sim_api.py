"""Contract tests of the simulator's endpoints over real loopback TCP: auth, validation, lists."""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import ValidationError

from launcher.api.models import CreateSessionRequest, api_error_details
from launcher.sim import Profile, SimServer, load_profile
from launcher.sim.profiles import LIMITED_TOKEN


def api(sim: SimServer) -> str:
    return f"/v3/organizations/{sim.org_id}"


def create(c: httpx.Client, sim: SimServer, **body: Any) -> dict[str, Any]:
    body.setdefault("prompt", "fix the flaky test")
    r = c.post(f"{api(sim)}/sessions", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


# --------------------------------------------------------------------------- validation

_BIG_SCHEMA = {
    "type": "object",
    "properties": {f"field_{i:05d}": {"type": "string", "description": "x" * 40} for i in range(1200)},
}
VALIDATION_CASES: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {"prompt": "do it"}),
    ("missing prompt", {"title": "t"}),
    ("empty prompt", {"prompt": ""}),
    ("blank prompt", {"prompt": "   "}),
    ("prompt not a string", {"prompt": 5}),
    ("unknown field", {"prompt": "p", "idempotent": True}),
    ("50 tags", {"prompt": "p", "tags": [f"t{i}" for i in range(50)]}),
    ("51 tags", {"prompt": "p", "tags": [f"t{i}" for i in range(51)]}),
    ("empty tag", {"prompt": "p", "tags": ["ok", " "]}),
    ("good url", {"prompt": "p", "attachment_urls": ["https://example.com/a.txt"]}),
    ("bad url", {"prompt": "p", "attachment_urls": ["example.com/a.txt"]}),
    ("url too long", {"prompt": "p", "attachment_urls": ["https://e.com/" + "a" * 2083]}),
    ("devin_mode fast", {"prompt": "p", "devin_mode": "fast"}),
    ("bad devin_mode", {"prompt": "p", "devin_mode": "turbo"}),
    ("max_acu_limit 0", {"prompt": "p", "max_acu_limit": 0}),
    ("max_acu_limit 5", {"prompt": "p", "max_acu_limit": 5}),
    ("secret ok", {"prompt": "p", "session_secrets": [{"key": "K", "value": "v"}]}),
    ("secret no key", {"prompt": "p", "session_secrets": [{"value": "v"}]}),
    (
        "secret value too long",
        {"prompt": "p", "session_secrets": [{"key": "K", "value": "v" * 65537}]},
    ),
    (
        "schema local ref",
        {
            "prompt": "p",
            "structured_output_schema": {
                "type": "object",
                "definitions": {"n": {"type": "integer"}},
                "properties": {"n": {"$ref": "#/definitions/n"}},
            },
        },
    ),
    (
        "schema external ref",
        {
            "prompt": "p",
            "structured_output_schema": {
                "type": "object",
                "properties": {"n": {"$ref": "https://example.com/n.json"}},
            },
        },
    ),
    ("schema not draft 7", {"prompt": "p", "structured_output_schema": {"type": "integer-ish"}}),
    ("schema over 64KB", {"prompt": "p", "structured_output_schema": _BIG_SCHEMA}),
    ("body is a list", ["prompt"]),  # type: ignore[list-item]
]


def test_create_validation_matches_the_shared_model_case_by_case(
    sim_server: SimServer, sim_client: Any
) -> None:
    assert len(json.dumps(_BIG_SCHEMA)) > 64 * 1024
    c = sim_client(sim_server)
    accepted = 0
    for name, body in VALIDATION_CASES:
        try:
            CreateSessionRequest.model_validate(body)
            expected: tuple[int, Any] = (200, None)
            accepted += 1
        except ValidationError as exc:
            expected = (422, api_error_details(exc))
        r = c.post(f"{api(sim_server)}/sessions", json=body)
        assert r.status_code == expected[0], f"{name}: {r.status_code} {r.text[:300]}"
        if expected[0] == 422:
            assert r.json() == {"detail": expected[1]}, name
            for item in r.json()["detail"]:
                assert set(item) == {"loc", "msg", "type"} and item["loc"][0] == "body", name
    assert 6 <= accepted < len(VALIDATION_CASES) - 10  # both kinds are well represented
    assert len(sim_server.sessions()) == accepted  # rejected bodies created nothing


def test_unknown_platform_is_400_listing_the_labels(sim_server: SimServer, sim_client: Any) -> None:
    c = sim_client(sim_server)
    r = c.post(f"{api(sim_server)}/sessions", json={"prompt": "p", "platform": "solaris"})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "solaris" in detail
    for label in ("default", *sim_server.profile.platforms):
        assert label in detail
    for ok in ("WINDOWS", "linux", "default", "Default"):
        assert create(c, sim_server, platform=ok)["status"] == "new"
    assert [s["platform"] for s in sim_server.sessions()] == [
        "WINDOWS",
        "linux",
        "default",
        "Default",
    ]


def test_create_as_user_needs_membership_and_impersonation(
    sim_server: SimServer, sim_client: Any
) -> None:
    c = sim_client(sim_server)
    member = sim_server.profile.members[0]
    assert create(c, sim_server, create_as_user_id=member)["user_id"] == member
    r = c.post(f"{api(sim_server)}/sessions", json={"prompt": "p", "create_as_user_id": "user-x"})
    assert r.status_code == 400 and "user-x" in r.json()["detail"]
    limited = sim_client(sim_server, token=LIMITED_TOKEN)
    r = limited.post(f"{api(sim_server)}/sessions", json={"prompt": "p", "create_as_user_id": member})
    assert r.status_code == 403 and "ImpersonateOrgSessions" in r.json()["detail"]


# --------------------------------------------------------------------------- auth and errors


def test_auth_401_403_and_unknown_org_404(sim_server: SimServer, sim_client: Any) -> None:
    sim = sim_server
    for client in (sim_client(sim, token=""), sim_client(sim, token="cog_wrong")):
        for path in (f"{api(sim)}/sessions", "/v3/self", f"{api(sim)}/secrets"):
            r = client.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
            assert isinstance(r.json()["detail"], str)
    basic = sim_client(sim, token="", headers={"Authorization": f"Basic {sim.token}"})
    assert basic.get("/v3/self").status_code == 401
    limited = sim_client(sim, token=LIMITED_TOKEN)
    assert limited.get(f"{api(sim)}/sessions").status_code == 200
    assert limited.get("/v3/self").json()["service_user_name"] == "sessions-only"
    for path in ("secrets", "playbooks", "playbooks/playbook-sim-fix-tests", "knowledge/notes"):
        r = limited.get(f"{api(sim)}/{path}")
        assert r.status_code == 403, path
        assert "permission" in r.json()["detail"]
    c = sim_client(sim)
    assert c.get("/v3/organizations/org-someone-else/sessions").status_code == 404
    assert c.post("/v3/organizations/org-nope/sessions", json={"prompt": "p"}).status_code == 404
    assert sim.sessions() == []


def test_token_without_read_account_meta_gets_403_on_self(make_sim: Any, sim_client: Any) -> None:
    profile = Profile.model_validate(
        {
            **load_profile("clean").model_dump(),
            "tokens": [{"token": "cog_sessions", "permissions": ["ManageOrgSessions"]}],
        }
    )
    sim = make_sim(profile)
    c = sim_client(sim, token="cog_sessions")
    assert c.get("/v3/self").status_code == 403
    assert c.get(f"{api(sim)}/sessions").status_code == 200
    me = sim_client(sim).get("/v3/self").json()
    assert me["org_id"] == sim.org_id and me["principal_type"] == "service_user"


def test_bad_input_never_crashes_or_hangs(sim_server: SimServer, sim_client: Any) -> None:
    sim, c = sim_server, sim_client(sim_server)
    url = f"{api(sim)}/sessions"
    r = c.post(url, content=b'{"prompt": "p",', headers={"content-type": "application/json"})
    assert r.status_code == 422
    [item] = r.json()["detail"]
    assert item["type"] == "json_invalid" and item["loc"][0] == "body"
    r = c.post(url, content=b"\xff\xfe garbage", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = c.post(url, content=b'{"prompt": "p"}', headers={"content-type": "text/plain"})
    assert r.status_code == 422  # FastAPI validates a non-JSON body as raw bytes
    assert r.json()["detail"][0]["loc"] == ["body"]
    r = c.post(url, content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "missing"
    huge = json.dumps({"prompt": "x" * (1024 * 1024 + 10)}).encode()
    r = c.post(url, content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "detail" in r.json()

    def chunks() -> Any:
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}'

    r = c.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413  # no Content-Length: counted while streaming
    r = c.get("/v3/organizations/x/nothing/here")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = c.patch(url, json={})
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    r = c.get(f"{url}/devin-{'0' * 32}")
    assert r.status_code == 404 and r.json() == {"detail": "Session not found"}
    # the same keep-alive client still works after every bad request
    assert create(c, sim)["status"] == "new"
    assert sim.stats()["responses"]["422"] == 4


def test_introspection_is_404_unless_enabled(make_sim: Any, sim_client: Any) -> None:
    off = make_sim("clean", introspection=False)
    c = sim_client(off)
    create(c, off)
    assert c.get("/_sim/sessions").status_code == 404
    assert c.get("/_sim/stats").status_code == 404
    on = make_sim("clean")
    c2 = sim_client(on, token="")  # introspection needs no token
    created = create(sim_client(on), on, tags=["t1"], title="T")
    body = c2.get("/_sim/sessions").json()
    assert body["count"] == 1
    [s] = body["sessions"]
    assert s["session_id"] == created["session_id"] and s["tags"] == ["t1"] and s["seq"] == 0
    assert s["title"] == "T" and s["create_fault"] == "none"
    stats = c2.get("/_sim/stats").json()
    assert stats["requests"] == {"POST /sessions": 1}
    assert stats["responses"] == {"200": 1} and stats["sessions"] == 1


def test_session_secret_values_are_never_echoed(sim_server: SimServer, sim_client: Any) -> None:
    sim, c = sim_server, sim_client(sim_server)
    secret = "s3cr3t-value-that-must-not-leak"
    created = create(c, sim, session_secrets=[{"key": "API_KEY", "value": secret}])
    sid = created["session_id"]
    texts = [
        json.dumps(created),
        c.get(f"{api(sim)}/sessions/{sid}").text,
        c.get(f"{api(sim)}/sessions").text,
        c.get(f"{api(sim)}/sessions/{sid}/messages").text,
        c.get("/_sim/sessions").text,
        c.get("/_sim/stats").text,
    ]
    assert all(secret not in t for t in texts)
    assert sim.sessions()[0]["session_secret_keys"] == ["API_KEY"]


# --------------------------------------------------------------------------- sessions


def test_create_response_has_no_detail_or_output_but_get_does(
    sim_server: SimServer, sim_client: Any
) -> None:
    sim, c = sim_server, sim_client(sim_server)
    created = create(c, sim, tags=["x"], structured_output_schema={"type": "object"})
    for key in ("status_detail", "structured_output", "category", "subcategory"):
        assert key not in created
    assert created["session_id"].startswith("devin-") and len(created["session_id"]) == 38
    int(created["session_id"][6:], 16)
    assert created["origin"] == "api" and created["org_id"] == sim.org_id
    assert isinstance(created["created_at"], int) and isinstance(created["updated_at"], int)
    assert created["status"] == "new" and created["pull_requests"] == []
    assert created["acus_consumed"] == 0 and created["is_archived"] is False
    bare = created["session_id"].removeprefix("devin-")
    for path_id in (created["session_id"], bare):
        got = c.get(f"{api(sim)}/sessions/{path_id}").json()
        assert "status_detail" in got and "structured_output" in got
        assert got["session_id"] == created["session_id"]
    listed = c.get(f"{api(sim)}/sessions").json()["items"][0]
    assert "status_detail" in listed and "structured_output" in listed


def test_pagination_returns_every_session_exactly_once(sim_server: SimServer, sim_client: Any) -> None:
    sim, c = sim_server, sim_client(sim_server)
    ids = [create(c, sim, prompt=f"task {i}")["session_id"] for i in range(250)]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"first": 37}
        if after:
            params["after"] = after
        page = c.get(f"{api(sim)}/sessions", params=params).json()
        pages += 1
        assert page["total"] == 250 + (pages > 2)
        seen += [s["session_id"] for s in page["items"]]
        if not page["has_next_page"]:
            assert page["end_cursor"] is None
            break
        assert len(page["items"]) == 37
        after = page["end_cursor"]
        if pages == 2:
            create(c, sim, prompt="created while paging")  # newer: must not shift the pages
    assert pages == 7
    assert seen == list(reversed(ids))  # newest first, each exactly once
    default = c.get(f"{api(sim)}/sessions").json()
    assert len(default["items"]) == 100 and default["has_next_page"]
    for bad in ({"first": 0}, {"first": 201}, {"first": "ten"}):
        r = c.get(f"{api(sim)}/sessions", params=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "first"]
    assert c.get(f"{api(sim)}/sessions", params={"after": "bogus!"}).status_code == 400


def test_list_filters_tags_ids_and_times(sim_server: SimServer, sim_client: Any) -> None:
    sim, c = sim_server, sim_client(sim_server)
    a = create(c, sim, tags=["a"], repos=["acme/one"])["session_id"]
    ab = create(c, sim, tags=["a", "b"], playbook_id="playbook-sim-fix-tests")["session_id"]
    b = create(c, sim, tags=["b"])["session_id"]

    def ids(**params: Any) -> list[str]:
        page = c.get(f"{api(sim)}/sessions", params=params).json()
        assert page["total"] == len(page["items"])
        return [s["session_id"] for s in page["items"]]

    assert ids(tags="a") == [ab, a]
    assert ids(tags=["a", "b"]) == [ab]  # a session must carry ALL given tags
    assert ids(tags=["a", "nope"]) == []
    assert ids(session_ids=[a, b.removeprefix("devin-")]) == [b, a]
    assert ids(session_ids=[a], tags="b") == []
    assert ids(playbook_id="playbook-sim-fix-tests") == [ab]
    assert ids(repo_names="acme/one") == [a]
    assert ids(origins="api") == [b, ab, a]
    assert ids(origins="webapp") == []
    created = c.get(f"{api(sim)}/sessions/{a}").json()["created_at"]
    assert ids(created_after=created + 3600) == []
    assert set(ids(created_before=created + 3600, created_after=created - 5)) == {a, ab, b}
    assert ids(updated_before=created - 3600) == []
    assert c.delete(f"{api(sim)}/sessions/{b}", params={"archive": "true"}).status_code == 200
    assert ids(is_archived="true") == [b]
    assert ids(is_archived="false") == [ab, a]
    assert c.get(f"{api(sim)}/sessions", params={"created_after": "x"}).status_code == 422


def test_tags_endpoints_get_append_replace_and_cap(sim_server: SimServer, sim_client: Any) -> None:
    sim, c = sim_server, sim_client(sim_server)
    sid = create(c, sim, tags=["one"])["session_id"]
    url = f"{api(sim)}/sessions/{sid}/tags"
    assert c.get(url).json() == {"tags": ["one"]}
    assert c.post(url, json={"tags": ["two", "one"]}).json() == {"tags": ["one", "two"]}
    assert c.put(url, json={"tags": ["three"]}).json() == {"tags": ["three"]}
    listed = c.get(f"{api(sim)}/sessions", params={"tags": "one"}).json()
    assert listed["items"] == [] and listed["total"] == 0  # the index follows replacements
    assert c.get(f"{api(sim)}/sessions", params={"tags": "three"}).json()["total"] == 1
    r = c.put(url, json={"tags": [f"t{i}" for i in range(51)]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tags"]
    assert c.put(url, json={"tags": [f"t{i}" for i in range(50)]}).status_code == 200
    r = c.post(url, json={"tags": ["one-too-many"]})
    assert r.status_code == 400 and "50" in r.json()["detail"]
    assert c.post(url, json={"tag": "x"}).status_code == 422
    assert len(c.get(url).json()["tags"]) == 50
    assert c.get(f"{api(sim)}/sessions/devin-{'f' * 32}/tags").status_code == 404


def test_terminate_archive_and_messages(sim_server: SimServer, sim_client: Any) -> None:
    sim, c = sim_server, sim_client(sim_server)
    s1 = create(c, sim, prompt="first task")["session_id"]
    s2 = create(c, sim)["session_id"]
    msgs = c.get(f"{api(sim)}/sessions/{s1}/messages").json()
    assert [(m["source"], m["message"]) for m in msgs["items"]] == [("user", "first task")]
    r = c.post(f"{api(sim)}/sessions/{s1}/messages", json={"message": "also update docs"})
    assert r.status_code == 200
    assert c.post(f"{api(sim)}/sessions/{s1}/messages", json={}).status_code == 422
    page = c.get(f"{api(sim)}/sessions/{s1}/messages", params={"first": 1}).json()
    assert page["has_next_page"] and page["total"] == 2
    rest = c.get(f"{api(sim)}/sessions/{s1}/messages", params={"after": page["end_cursor"]})
    assert rest.json()["items"][0]["message"] == "also update docs"
    ended = c.delete(f"{api(sim)}/sessions/{s1}").json()
    assert ended["status"] == "exit" and ended["is_archived"] is False
    assert c.get(f"{api(sim)}/sessions/{s1}").json()["status"] == "exit"
    r = c.post(f"{api(sim)}/sessions/{s1}/messages", json={"message": "hello?"})
    assert r.status_code == 400
    archived = c.post(f"{api(sim)}/sessions/{s2}/archive").json()
    assert archived["is_archived"] is True and archived["status"] != "exit"
    both = c.delete(f"{api(sim)}/sessions/{s2.removeprefix('devin-')}", params={"archive": True})
    assert both.json()["status"] == "exit" and both.json()["is_archived"] is True
    assert [s["terminated"] for s in sim.sessions()] == [True, True]
    assert c.delete(f"{api(sim)}/sessions/devin-{'a' * 32}").status_code == 404


def test_seeded_secrets_playbooks_and_notes_paginate(sim_server: SimServer, sim_client: Any) -> None:
    sim, c = sim_server, sim_client(sim_server)
    profile = sim.profile
    for path, key, expected in (
        ("secrets", "secret_id", [s.secret_id for s in profile.secrets]),
        ("playbooks", "playbook_id", [p.playbook_id for p in profile.playbooks]),
        ("knowledge/notes", "note_id", [n.note_id for n in profile.knowledge_notes]),
    ):
        assert len(expected) >= 2
        got: list[str] = []
        after = None
        while True:
            params: dict[str, Any] = {"first": 1} | ({"after": after} if after else {})
            page = c.get(f"{api(sim)}/{path}", params=params).json()
            assert page["total"] == len(expected)
            got += [item[key] for item in page["items"]]
            if not page["has_next_page"]:
                break
            after = page["end_cursor"]
        assert got == expected, path
    secret_items = c.get(f"{api(sim)}/secrets").json()["items"]
    assert all(set(s) == {"secret_id", "key"} for s in secret_items)
    one = c.get(f"{api(sim)}/playbooks/playbook-sim-fix-tests").json()
    assert one["title"] == "Fix failing tests"
    assert c.get(f"{api(sim)}/playbooks/playbook-nope").status_code == 404
