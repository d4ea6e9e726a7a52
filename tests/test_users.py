"""The users file (hashed passwords, groups, admin flag, API keys), `ragtune users add`, the serve command's
host rule and the model gate. No model and no server: these run in a second or two."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serve.openai_api import BusyError
from serve.server import Gate, check_host, is_loopback
from serve.users import (KEY_PREFIX, UserStore, UsersFileError, add_user, hash_password, key_digest,
                         verify_password)
from serve.web_cli import users_app

REPO = Path(__file__).resolve().parents[1]


def test_password_hash_is_salted_scrypt_and_verifies() -> None:
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a.startswith("scrypt$") and a != b  # a fresh salt each time
    assert verify_password("correct horse", a) and verify_password("correct horse", b)
    assert not verify_password("correct hors", a) and not verify_password("", a)
    assert not verify_password("x", "not-a-hash") and not verify_password("x", "pbkdf2$1$2$3$4$5")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_add_user_stores_only_hashes_and_the_key_carries_groups(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"users{suffix}"
    key_a = add_user(path, "Alice", "alice-secret-1", "hr, finance", admin=True)
    key_b = add_user(path, "bob", "bob-secret-12")
    assert key_a.startswith(KEY_PREFIX) and len(key_a) > 40 and key_a != key_b
    text = path.read_text()
    assert "alice-secret-1" not in text and key_a not in text and key_digest(key_a) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if suffix == ".json":
        assert json.loads(text)["users"]["alice"]["groups"] == ["finance", "hr"]

    store = UserStore(path)
    alice = store.authenticate("alice", "alice-secret-1")
    assert alice is not None and alice.admin and alice.groups == {"hr", "finance"}
    assert store.authenticate("ALICE ", "alice-secret-1") == alice  # names are case-insensitive
    assert store.authenticate("alice", "wrong-password") is None
    assert store.authenticate("nobody", "alice-secret-1") is None
    assert store.user_for_key(key_a) == alice
    bob = store.user_for_key(key_b)
    assert bob is not None and bob.name == "bob" and not bob.admin and bob.groups == frozenset()
    assert store.user_for_key(key_a + "x") is None and store.user_for_key("sk-whatever") is None
    assert store.user_for_key("") is None and store.user_for_key(None) is None


def test_store_sees_users_added_while_running_and_refuses_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    add_user(path, "alice", "alice-secret-1", ["hr"])
    store = UserStore(path)
    assert store.get("carol") is None
    time.sleep(0.01)
    key = add_user(path, "carol", "carol-secret-1", "security")
    assert store.user_for_key(key).groups == {"security"}  # re-read after the file changed
    assert store.all_groups() == {"hr", "security"}
    with pytest.raises(UsersFileError, match="already exists"):
        add_user(path, "alice", "another-pass-1")
    with pytest.raises(UsersFileError, match="user name"):
        add_user(path, "../evil", "long-enough-1")
    with pytest.raises(UsersFileError, match="group"):
        add_user(path, "dave", "long-enough-1", "hr, Bad Group!")
    with pytest.raises(UsersFileError, match="at least"):
        add_user(path, "erin", "short")
    with pytest.raises(FileNotFoundError, match="users add"):
        UserStore(tmp_path / "missing.yaml")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UsersFileError, match="not valid JSON"):
        UserStore(tmp_path / "broken.json")


def test_concurrent_adds_lose_nobody(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    threads = [threading.Thread(target=add_user, args=(path, f"user{i}", "password-123")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(json.loads(path.read_text())["users"]) == [f"user{i}" for i in range(6)]


def test_users_add_command_prints_the_key_last_and_prompts_for_the_password(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    runner = CliRunner()
    out = runner.invoke(users_app, ["add", "alice", "--users", str(path), "--groups", "hr,finance", "--admin",
                                    "--password", "alice-secret-1"])
    assert out.exit_code == 0, out.output
    key = out.stdout.strip().splitlines()[-1]
    user = UserStore(path).user_for_key(key)
    assert user is not None and user.admin and user.groups == {"hr", "finance"}

    out = runner.invoke(users_app, ["add", "bob", "--users", str(path)], input="bob-secret-12\nbob-secret-12\n")
    assert out.exit_code == 0, out.output
    bob_key = out.stdout.strip().splitlines()[-1]
    assert "bob-secret-12" not in out.stdout  # the prompt hides the password
    store = UserStore(path)
    assert store.user_for_key(bob_key).name == "bob" and store.authenticate("bob", "bob-secret-12")


def test_cli_contract_through_ragtune_main(tmp_path: Path) -> None:
    """The real entry point: the key is the last stdout line; serve refuses a public host without --users."""
    env = {**os.environ, "RAGTUNE_DEBUG": ""}
    users = tmp_path / "u.json"
    done = subprocess.run([sys.executable, "-m", "ragtune_cli", "users", "add", "zed", "--users", str(users),
                           "--groups", "ops", "--password", "zed-secret-12"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert UserStore(users).user_for_key(done.stdout.strip().splitlines()[-1]).groups == {"ops"}
    done = subprocess.run([sys.executable, "-m", "ragtune_cli", "serve", "--workspace", str(tmp_path / "ws"),
                           "--host", "0.0.0.0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "without --users" in done.stderr and "127.0.0.1" in done.stderr


def test_host_rule() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        check_host(host, None)
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match="without --users"):
            check_host(host, None)
    check_host("0.0.0.0", Path("users.yaml"))  # fine with a users file


def test_gate_serves_in_arrival_order_and_bounds_the_line() -> None:
    gate = Gate(max_active=1, max_waiting=3)
    first = gate.reserve()
    first.wait()
    order: list[int] = []
    tickets = [gate.reserve() for _ in range(3)]
    with pytest.raises(BusyError, match="busy"):
        gate.reserve()  # three already waiting: the fourth is refused at once

    def run(i: int) -> None:
        tickets[i].wait()
        order.append(i)
        time.sleep(0.02)
        tickets[i].release()

    threads = [threading.Thread(target=run, args=(i,)) for i in (2, 0, 1)]  # started out of order
    for t in threads:
        t.start()
    time.sleep(0.1)
    assert order == []  # nobody passes the active ticket
    first.release()
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2] and gate.waiting == 0 and gate.active == 0
    assert gate.served == 4 and gate.refused == 1

    cancel = threading.Event()
    blocker = gate.reserve()
    blocker.wait()
    late = gate.reserve()
    cancel.set()
    with pytest.raises(BusyError, match="cancelled"):
        late.wait(cancel)
    blocker.release()
    assert gate.waiting == 0 and gate.active == 0
