"""Issue 20, items 4 and 8: login and key throttling (serve/throttle.py, serve/http_guard.py) and managing users
(list, remove, key rotation and revocation) from the CLI and from the app's Users tab, each change effective at the
next request. The server tests go through HTTP; client addresses are set with X-Forwarded-For, which uvicorn
trusts from 127.0.0.1 (as it would from a reverse proxy on the same machine)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serve.throttle import Policy, Throttle
from serve.users import UserStore, UsersFileError, add_user, list_users, remove_user, revoke_keys, rotate_key
from serve.web_cli import users_app
from tests.conftest import served_copy
from tests.gradio_http import GradioSession, fn_named

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-12", "dave": "dave-secret-12", "erin": "erin-secret-12"}
USERS = {"alice": (PASSWORDS["alice"], ("hr",), True), "bob": (PASSWORDS["bob"], (), False),
         "dave": (PASSWORDS["dave"], (), False), "erin": (PASSWORDS["erin"], ("hr",), False)}
FAST = Policy(free=3, base_s=3.0, max_s=3.0)  # short waits a test can sit out


@pytest.fixture(scope="module")
def srv(tmp_path_factory, built_index, embedder, local_generator):
    with served_copy(tmp_path_factory.mktemp("users"), built_index, generator=local_generator, embedder=embedder,
                     users=USERS) as server:
        throttle = server.service.throttle
        for table in (throttle.users, throttle.addresses, throttle.keys):
            table.policy = FAST
        yield server


def from_address(address: str) -> dict:
    return {"headers": {"X-Forwarded-For": address}}


def login(srv, name: str, password: str, address: str) -> httpx.Response:
    return httpx.post(srv.url + "/login", data={"username": name, "password": password}, **from_address(address))


def models(srv, key: str, address: str = "10.0.0.1") -> int:
    return httpx.get(srv.url + "/v1/models", headers={"Authorization": f"Bearer {key}",
                                                      "X-Forwarded-For": address}).status_code


# ---- 4. throttling -----------------------------------------------------------------------------------------------

def test_backoff_doubles_per_failure_forgets_and_stays_bounded() -> None:
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0], user=Policy(free=2, base_s=1, max_s=4, forget_s=100), max_keys=3)
    for expected in (0, 0, 1, 2, 4, 4):  # two free failures, then 1 s, 2 s, 4 s, capped at 4 s
        throttle.login_failed("alice", "10.0.0.9")
        assert throttle.login_wait("alice", "10.0.0.8") == expected
    now[0] += 4.5
    assert throttle.login_wait("alice", "10.0.0.8") == 0  # waited out, but the next failure still costs 4 s
    throttle.login_failed("alice", "10.0.0.9")
    assert throttle.login_wait("ALICE ", "10.0.0.8") == 4
    now[0] += 200
    throttle.login_failed("alice", "10.0.0.9")
    assert throttle.login_wait("alice", "10.0.0.8") == 0  # forgotten after forget_s without failures
    for i in range(10):
        throttle.login_failed(f"name{i}", f"10.1.0.{i}")
    assert len(throttle.users._state) == 3 and len(throttle.addresses._state) == 3


def test_logins_are_throttled_per_user_and_address_but_the_real_user_gets_in(srv) -> None:
    assert login(srv, "bob", PASSWORDS["bob"], "10.7.0.2").status_code == 200  # bob's usual desk
    for _ in range(4):  # an attacker elsewhere guesses bob's password
        assert login(srv, "bob", "guess-guess", "10.7.0.1").status_code == 400
    locked = login(srv, "bob", PASSWORDS["bob"], "10.7.0.1")  # even the right password waits now
    assert locked.status_code == 429 and 1 <= int(locked.headers["retry-after"]) <= 3, locked.text
    assert login(srv, "bob", PASSWORDS["bob"], "10.7.0.3").status_code == 429  # from a new address too ...
    assert login(srv, "bob", PASSWORDS["bob"], "10.7.0.2").status_code == 200  # ... but not from his own
    time.sleep(int(locked.headers["retry-after"]) + 0.1)
    assert login(srv, "bob", PASSWORDS["bob"], "10.7.0.3").status_code == 200  # and not for long

    for name in ("carl", "dora", "emil", "fred"):  # one address spraying many names is slowed as well
        assert login(srv, name, "guess-guess", "10.7.0.9").status_code == 400
    assert login(srv, "erin", PASSWORDS["erin"], "10.7.0.9").status_code == 429


def test_invalid_api_keys_are_throttled_per_address(srv) -> None:
    for _ in range(4):
        assert models(srv, "rt-guessed-key", "10.8.0.1") == 401
    resp = httpx.get(srv.url + "/v1/models", headers={"Authorization": f"Bearer {srv.keys['bob']}",
                                                      "X-Forwarded-For": "10.8.0.1"})
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "too_many_failures"
    assert resp.headers["retry-after"] in ("1", "2", "3")
    assert models(srv, srv.keys["bob"], "10.8.0.2") == 200  # other addresses are not affected
    time.sleep(int(resp.headers["retry-after"]) + 0.1)
    assert models(srv, srv.keys["bob"], "10.8.0.1") == 200


# ---- 8. managing users -------------------------------------------------------------------------------------------

def test_users_list_remove_rotate_and_revoke_apply_to_a_running_store(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    admin_key = add_user(path, "alice", "alice-secret-1", "hr", admin=True)
    bob_key = add_user(path, "bob", "bob-secret-12")
    store = UserStore(path)
    assert [(u["name"], u["admin"], u["groups"], len(u["keys"])) for u in list_users(path)] == [
        ("alice", True, ["hr"], 1), ("bob", False, [], 1)]
    assert list_users(path)[1]["keys"][0]["id"] == bob_key[:7] and "sha256" not in str(list_users(path))
    new = rotate_key(path, "bob")
    assert store.user_for_key(bob_key) is None and store.user_for_key(new).name == "bob"
    newer = rotate_key(path, "bob")  # a second rotation in the same clock tick must be seen as well
    assert store.user_for_key(new) is None and store.user_for_key(newer).name == "bob"
    assert revoke_keys(path, "bob", newer[:7]) == 1 and store.user_for_key(newer) is None
    with pytest.raises(UsersFileError, match="no API keys"):
        revoke_keys(path, "bob")
    with pytest.raises(UsersFileError, match="only admin"):
        remove_user(path, "alice")
    remove_user(path, "bob")
    assert store.get("bob") is None and store.authenticate("bob", "bob-secret-12") is None
    assert store.user_for_key(admin_key).name == "alice"
    with pytest.raises(UsersFileError, match="no user 'bob'"):
        rotate_key(path, "bob")


def test_users_commands_list_rotate_revoke_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    add_user(path, "alice", "alice-secret-1", "hr", admin=True)
    old = add_user(path, "bob", "bob-secret-12", "ops")
    runner = CliRunner()
    listed = runner.invoke(users_app, ["list", "--users", str(path)])
    assert listed.exit_code == 0 and "alice (admin)  groups: hr" in listed.stdout and old[:7] in listed.stdout
    assert old not in listed.stdout
    rotated = runner.invoke(users_app, ["rotate-key", "bob", "--users", str(path)])
    new = rotated.stdout.strip().splitlines()[-1]
    assert rotated.exit_code == 0 and UserStore(path).user_for_key(new).name == "bob"
    assert UserStore(path).user_for_key(old) is None
    revoked = runner.invoke(users_app, ["revoke-key", "bob", new[:7] + "…", "--users", str(path)])
    assert revoked.exit_code == 0 and "revoked 1 API key of bob" in revoked.stdout
    assert runner.invoke(users_app, ["revoke-key", "bob", "--users", str(path)]).exit_code != 0  # id or --all
    removed = runner.invoke(users_app, ["remove", "bob", "--users", str(path)])
    assert removed.exit_code == 0 and [u["name"] for u in list_users(path)] == ["alice"]


def test_admins_manage_users_in_the_app_and_each_change_applies_at_the_next_request(srv) -> None:
    demo = srv.service.demo
    rotate, revoke, remove = (fn_named(demo, n) for n in ("rotate", "revoke", "remove"))
    alice = GradioSession(srv.url, "alice", PASSWORDS["alice"])
    bob = GradioSession(srv.url, "bob", PASSWORDS["bob"])
    assert models(srv, srv.keys["erin"]) == 200
    for fn, data in ((rotate, ["erin"]), (revoke, ["erin", srv.keys["erin"][:7]]), (remove, ["erin"])):
        assert bob.join(fn, data).status_code == 403  # the tab is for admins, and so are its handlers

    assert alice.call(fn_named(demo, "UsersHandlers.on_load"), [])["success"]  # as the page does: fills the lists
    assert alice.call(fn_named(demo, "UsersHandlers.pick"), ["erin"])["success"]  # picking erin lists her keys
    rotated = alice.call(rotate, ["erin"])
    new_key = rotated["output"]["data"][1]["value"]
    assert rotated["success"] and new_key.startswith("rt-") and "erin" in rotated["output"]["data"][0]
    assert models(srv, srv.keys["erin"]) == 401 and models(srv, new_key) == 200  # no restart needed
    revoked = alice.call(revoke, ["erin", new_key[:7]])
    assert revoked["success"] and models(srv, new_key) == 401

    dave = GradioSession(srv.url, "dave", PASSWORDS["dave"])
    refresh = fn_named(demo, "refresh_docs")
    assert dave.call(refresh, [])["success"]
    assert alice.call(remove, ["dave"])["success"]
    assert dave.join(refresh, []).status_code == 401  # his open session ends at its next call
    assert dave.http.get("/ragtune/doc/hr/employee-handbook.md").status_code == 401
    assert models(srv, srv.keys["dave"]) == 401
    assert dave.login("dave", PASSWORDS["dave"]).status_code == 400
    myself = alice.call(remove, ["alice"])
    assert not myself["success"] and "cannot remove yourself" in myself["output"]["error"]
