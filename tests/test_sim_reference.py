"""The simulator against the published v3 reference: read permissions, message items, /v3/self,
send-message fields, the tag allow-list, org members, and the undocumented behaviours as knobs."""

from __future__ import annotations

from typing import Any

from launcher.sim import Profile, SimServer, load_profile


def api(sim: SimServer) -> str:
    return f"/v3/organizations/{sim.org_id}"


def profile(**changes: Any) -> Profile:
    data = load_profile("clean").model_dump()
    data.update(changes)
    return Profile.model_validate(data)


VIEWER = {"token": "cog_viewer", "name": "viewer", "permissions": ["ViewOrgSessions"]}


def test_reads_need_only_view_org_sessions(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(profile(tokens=[VIEWER]))
    made = sim_client(sim).post(f"{api(sim)}/sessions", json={"prompt": "p", "tags": ["t"]}).json()
    one = f"{api(sim)}/sessions/{made['session_id']}"
    viewer = sim_client(sim, token="cog_viewer")
    for path in (f"{api(sim)}/sessions", one, f"{one}/messages", f"{one}/tags"):
        assert viewer.get(path).status_code == 200, path
    r = viewer.post(f"{api(sim)}/sessions", json={"prompt": "p"})
    assert r.status_code == 403 and "ManageOrgSessions" in r.json()["detail"]
    assert viewer.delete(one).status_code == 403


def test_self_messages_and_send_fields_follow_the_reference(
    sim_server: SimServer, sim_client: Any
) -> None:
    sim, c = sim_server, sim_client(sim_server)
    me = c.get("/v3/self").json()
    assert set(me) == {"principal_type", "service_user_id", "service_user_name", "org_id"}
    assert me["org_id"] == sim.org_id
    made = c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()
    path = f"{api(sim)}/sessions/{made['session_id']}/messages"
    body = {
        "message": "also this",
        "message_as_user_id": "user-sim-alice",
        "attachment_urls": ["https://example.com/a.txt"],
    }
    assert c.post(path, json=body).status_code == 200
    items = c.get(path).json()["items"]
    assert all("event_id" in m and "message_id" not in m for m in items)
    assert [m["message"] for m in items][-1] == "also this"
    r = c.post(path, json={"message": "x", "message_as_user_id": "user-nobody"})
    assert r.status_code == 400 and "user-nobody" in r.json()["detail"]


def test_tag_allow_list_refuses_unlisted_tags_and_lists_them(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(profile(allowed_tags=["fleet:demo", "team-a"]))
    c = sim_client(sim)
    ok = c.post(f"{api(sim)}/sessions", json={"prompt": "p", "tags": ["fleet:demo", "team-a"]})
    assert ok.status_code == 200
    r = c.post(f"{api(sim)}/sessions", json={"prompt": "p", "tags": ["fleet:demo", "fleet-key:ab"]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "tags", 1]
    assert "fleet-key:ab" in r.json()["detail"][0]["msg"]
    for prefix in ("/v3", "/v3beta1"):
        listed = c.get(f"{prefix}/enterprise/organizations/{sim.org_id}/tags")
        assert listed.json() == {"tags": ["fleet:demo", "team-a"]}
    off = make_sim("clean")
    r = sim_client(off).get(f"/v3/enterprise/organizations/{off.org_id}/tags")
    assert r.status_code == 403 and "not enabled" in r.json()["detail"]


def test_members_endpoint_lists_the_org_members(sim_server: SimServer, sim_client: Any) -> None:
    page = sim_client(sim_server).get(f"{api(sim_server)}/members/users").json()
    assert [u["user_id"] for u in page["items"]] == ["user-sim-alice", "user-sim-bob"]


def test_undocumented_behaviours_are_knobs(make_sim: Any, sim_client: Any) -> None:
    guesses = {
        "list_order": "oldest_first",
        "max_body_bytes": 2048,
        "unknown_body_fields": True,
        "manage_implies_view": False,
        "ended_session_message_status": None,
        "unknown_member_status": 422,
    }
    sim = make_sim(profile(guesses=guesses, tokens=[{**VIEWER, "permissions": ["ManageOrgSessions"]}]))
    c = sim_client(sim)
    ids = [
        c.post(f"{api(sim)}/sessions", json={"prompt": f"p{i}", "future_field": 1}).json()["session_id"]
        for i in range(3)
    ]
    url = f"{api(sim)}/sessions"
    pages = [c.get(url, params={"first": 2}).json()]
    pages.append(c.get(url, params={"first": 2, "after": pages[0]["end_cursor"]}).json())
    assert [s["session_id"] for p in pages for s in p["items"]] == ids
    assert c.post(f"{api(sim)}/sessions", json={"prompt": "x" * 4096}).status_code == 413
    r = c.post(f"{api(sim)}/sessions", json={"prompt": "p", "create_as_user_id": "user-nobody"})
    assert r.status_code == 422
    manager = sim_client(sim, token="cog_viewer")
    assert manager.get(f"{api(sim)}/sessions").status_code == 403
    one = f"{api(sim)}/sessions/{ids[0]}"
    c.delete(one)
    assert c.post(f"{one}/messages", json={"message": "late"}).status_code == 200
