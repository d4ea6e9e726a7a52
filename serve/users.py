"""The users file: who may log in to `ragtune serve`, which access groups they read, who is an admin, and their
API keys.

    users:
      alice:
        password: scrypt$16384$8$1$<salt b64>$<hash b64>   # hashlib.scrypt, a fresh 16-byte salt per user
        groups: [hr]
        admin: true
        keys:
          - {id: "rt-AbCd", sha256: "<hex>", created: "2026-11-26T10:00:00+0000"}

YAML (`.yaml`/`.yml`) or JSON (`.json`, or any other name), chosen by the file name. Passwords are stored as
scrypt hashes and compared in constant time; API keys are 256-bit random tokens stored only as their SHA-256
(a slow hash adds nothing for a key that cannot be guessed), looked up in constant time. The file is written
atomically with mode 0600 under an exclusive lock, so `ragtune users add/remove/rotate-key/revoke-key` (or the
app's Users tab) can run while the server is up: the server re-reads the file when it changes, so a removed user
or a revoked key is refused from the next request on.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ingest.files import write_text_atomic

KEY_PREFIX = "rt-"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")
_GROUP = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # the same rule as document groups (ingest/scan.py)
# scrypt cost: n=2**14, r=8 -> 16 MiB and ~50 ms per check; enough to make offline guessing expensive
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2 ** 14, 8, 1
MIN_PASSWORD = 8


class UsersFileError(ValueError):
    """The users file is missing, malformed, or a name/group/password is not acceptable; the message says which."""


@dataclass(frozen=True)
class User:
    name: str
    groups: frozenset[str] = frozenset()
    admin: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "groups": sorted(self.groups), "admin": self.admin}


def check_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise UsersFileError(f"user name {name!r} must be 1-64 characters: lowercase letters, digits, '_', '.', '@' "
                             "or '-', starting with a letter or digit")
    return name


def parse_groups(value) -> frozenset[str]:
    """'hr, finance' or ['hr', 'finance'] -> frozenset; names follow the document groups' rule."""
    if value is None or value == "":
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise UsersFileError(f"groups must be a list like [hr, finance], not {value!r}")
    out = set()
    for g in items:
        g = str(g).strip().lower()
        if not g:
            continue
        if not _GROUP.match(g):
            raise UsersFileError(f"invalid group name {g!r}: use lowercase letters, digits, '_', '.', '-'")
        out.add(g)
    return frozenset(out)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=256 * 2 ** 20)
    except (ValueError, TypeError, AttributeError):
        return False
    return hmac.compare_digest(got, want)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# A hash to spend the same time on when the user does not exist (no timing oracle for user names).
_DUMMY_HASH = hash_password("not-a-real-password", salt=b"\0" * 16)


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def _load_raw(path: Path, text: str | None = None) -> dict:
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"users": {}}
    if not text.strip():
        return {"users": {}}
    try:
        if _is_yaml(path):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse failure is the same user-fixable problem
        raise UsersFileError(f"users file {path} is not valid {'YAML' if _is_yaml(path) else 'JSON'}: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict) or not isinstance(data.get("users", {}), dict):
        raise UsersFileError(f"users file {path} must be a mapping with a 'users' mapping")
    data.setdefault("users", {})
    return data


def _dump(path: Path, data: dict) -> str:
    if _is_yaml(path):
        import yaml

        return yaml.safe_dump(data, sort_keys=True, allow_unicode=True)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@contextmanager
def _locked(path: Path):
    """Exclusive lock on a sibling lock file, so two `users add` never lose each other's change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: Path, data: dict) -> None:
    write_text_atomic(path, _dump(path, data), mode=0o600)  # it holds password hashes and key hashes


def add_user(path: Path, name: str, password: str, groups=(), admin: bool = False, *, replace: bool = False) -> str:
    """Add NAME to the users file (created if missing) and return the user's new API key (shown once; only its
    hash is stored). An existing user is refused unless `replace`, which keeps their other keys."""
    path = Path(path)
    name = check_name(name)
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UsersFileError(f"the password must have at least {MIN_PASSWORD} characters")
    group_set = parse_groups(groups)
    key = new_api_key()
    with _locked(path):
        data = _load_raw(path)
        old = data["users"].get(name)
        if old is not None and not replace:
            raise UsersFileError(f"user {name!r} already exists in {path}")
        keys = list((old or {}).get("keys") or [])
        keys.append(_new_key_entry(key))
        data["users"][name] = {"password": hash_password(password), "groups": sorted(group_set),
                               "admin": bool(admin), "keys": keys}
        _write(path, data)
    return key


def _change(path: Path, change) -> object:
    """Apply change(data) to the users file under its lock and write it back; returns what change returned."""
    path = Path(path)
    if not path.is_file():
        raise UsersFileError(f"users file not found: {path}")
    with _locked(path):
        data = _load_raw(path)
        result = change(data)
        _write(path, data)
    return result


def _record(data: dict, name: str) -> dict:
    rec = data["users"].get(check_name(name))
    if not isinstance(rec, dict):
        raise UsersFileError(f"no user {check_name(name)!r} in the users file")
    return rec


def _new_key_entry(key: str) -> dict:
    return {"id": key[:len(KEY_PREFIX) + 4], "sha256": key_digest(key), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def list_users(path: Path) -> list[dict]:
    """[{name, admin, groups, keys: [{id, created}]}] sorted by name; no hashes."""
    data = _load_raw(Path(path))
    return [{"name": name, "admin": bool(rec.get("admin")), "groups": sorted(parse_groups(rec.get("groups"))),
             "keys": [{"id": k.get("id", "?"), "created": k.get("created", "")} for k in rec.get("keys") or []]}
            for name, rec in sorted(data["users"].items()) if isinstance(rec, dict)]


def remove_user(path: Path, name: str) -> None:
    """Remove NAME (their logins and keys stop working at their next request); the last admin stays."""
    def change(data: dict) -> None:
        rec = _record(data, name)
        admins = [n for n, r in data["users"].items() if isinstance(r, dict) and r.get("admin")]
        if rec.get("admin") and len(admins) == 1:
            raise UsersFileError(f"{check_name(name)!r} is the only admin: make another admin first")
        del data["users"][check_name(name)]

    _change(path, change)


def rotate_key(path: Path, name: str) -> str:
    """A new API key for NAME (returned, shown once); every older key of theirs is revoked."""
    key = new_api_key()

    def change(data: dict) -> None:
        _record(data, name)["keys"] = [_new_key_entry(key)]

    _change(path, change)
    return key


def revoke_keys(path: Path, name: str, key_id: str | None = None) -> int:
    """Revoke NAME's key with this id (as `users list` shows it), or all their keys when key_id is None; returns
    how many were revoked."""
    def change(data: dict) -> int:
        rec = _record(data, name)
        keys = list(rec.get("keys") or [])
        kept = [k for k in keys if key_id is not None and k.get("id") != key_id]
        if len(kept) == len(keys):
            raise UsersFileError(f"user {check_name(name)!r} has no API key {key_id!r}" if key_id else
                                 f"user {check_name(name)!r} has no API keys")
        rec["keys"] = kept
        return len(keys) - len(kept)

    return _change(path, change)


class UserStore:
    """Reads the users file (again whenever it changes on disk) and answers who a login or a key is."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"users file not found: {self.path} (create it with `ragtune users add NAME "
                                    f"--users {self.path}`)")
        self._lock = threading.Lock()
        self._stamp: bytes | None = None
        self._users: dict[str, dict] = {}
        self._reload()
        if not self._users:
            raise UsersFileError(f"users file {self.path} has no users; add one with `ragtune users add`")

    def _reload(self) -> None:
        """Re-read the file if its bytes changed. Compared by content, not by mtime: two changes within one tick
        of the file system's clock (a key rotated twice, say) must not look like one."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        stamp = hashlib.sha256(raw).digest()
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            data = _load_raw(self.path, raw.decode("utf-8"))
            users = {}
            for name, rec in data["users"].items():
                if not isinstance(rec, dict):
                    raise UsersFileError(f"users file {self.path}: entry {name!r} is not a mapping")
                users[check_name(str(name))] = rec
            self._users, self._stamp = users, stamp

    def _user(self, name: str, rec: dict) -> User:
        return User(name, parse_groups(rec.get("groups") or []), bool(rec.get("admin", False)))

    def get(self, name: str | None) -> User | None:
        if not name:
            return None
        self._reload()
        rec = self._users.get(str(name).strip().lower())
        return self._user(str(name).strip().lower(), rec) if rec is not None else None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user, if NAME exists and PASSWORD matches; the check costs the same time either way."""
        self._reload()
        key = (name or "").strip().lower()
        rec = self._users.get(key)
        stored = rec.get("password", "") if rec else _DUMMY_HASH
        ok = verify_password(password or "", stored)
        return self._user(key, rec) if (ok and rec is not None) else None

    def user_for_key(self, key: str | None) -> User | None:
        """The user owning this API key (compared by hash, in constant time over all keys)."""
        if not key or not key.startswith(KEY_PREFIX):
            return None
        self._reload()
        digest = key_digest(key)
        found = None
        for name, rec in self._users.items():
            for k in rec.get("keys") or []:
                if hmac.compare_digest(str(k.get("sha256", "")), digest) and found is None:
                    found = self._user(name, rec)
        return found

    def all_groups(self) -> frozenset[str]:
        self._reload()
        out: set[str] = set()
        for rec in self._users.values():
            out |= parse_groups(rec.get("groups") or [])
        return frozenset(out)
