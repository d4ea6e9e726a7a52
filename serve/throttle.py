"""Slowing down password and key guessing, without locking the real user out for long.

Failures are counted per key (a user name, a client address). The first `free` failures within `forget_s` cost
nothing; after that each failure makes the key wait `base_s`, then twice as long, up to `max_s`, before its next
attempt is even checked (HTTP 429 with Retry-After). Waiting out a lock does not reset the count: only `forget_s`
without failures does, or, for a user name, a successful login.

Logins are throttled per user name and per client address; API keys per client address (a key is 256 random bits,
so this only keeps floods out of the logs and the CPU). A client address that logged in successfully as a user is
remembered for `KNOWN_S`, and the per-name lock does not apply to it: someone guessing alice's password from
elsewhere slows themselves, not alice at her usual desk. Her own mistakes still count against her own address.

State lives in memory (a restart forgets it) and is bounded: at most `max_keys` entries per table, the oldest
dropped first. Behind a reverse proxy the client address is the proxy's unless uvicorn trusts its
X-Forwarded-For (`FORWARDED_ALLOW_IPS`, 127.0.0.1 by default).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

KNOWN_S = 30 * 24 * 3600.0


@dataclass(frozen=True)
class Policy:
    free: int  # failures before the first wait
    base_s: float  # the first wait
    max_s: float  # the longest wait
    forget_s: float = 900.0  # a key with no failure for this long starts again from zero


USER_POLICY = Policy(free=5, base_s=1.0, max_s=60.0)
ADDRESS_POLICY = Policy(free=20, base_s=1.0, max_s=300.0)


class Backoff:
    """Failures and locks per key, for one policy."""

    def __init__(self, policy: Policy, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.policy = policy
        self.clock = clock
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # key -> (failures, last, until)
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        with self._lock:
            state = self._state.get(key)
        return max(0.0, state[2] - self.clock()) if state else 0.0

    def failed(self, key: str) -> None:
        p, now = self.policy, self.clock()
        with self._lock:
            count, last, until = self._state.pop(key, (0, now, 0.0))
            if now - last > p.forget_s:
                count, until = 0, 0.0
            count += 1
            if count > p.free:
                until = now + min(p.max_s, p.base_s * 2 ** min(count - p.free - 1, 30))
            self._state[key] = (count, now, until)
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)

    def reset(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)


class Throttle:
    """The server's three tables: login failures per user name and per address, bad API keys per address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, user: Policy = USER_POLICY,
                 address: Policy = ADDRESS_POLICY, keys: Policy = ADDRESS_POLICY, max_keys: int = 10_000) -> None:
        self.clock = clock
        self.users = Backoff(user, clock, max_keys)
        self.addresses = Backoff(address, clock, max_keys)
        self.keys = Backoff(keys, clock, max_keys)
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()  # (name, address) -> remembered until
        self._max_keys = max_keys
        self._lock = threading.Lock()

    @staticmethod
    def _name(name: str | None) -> str:
        return (name or "").strip().lower()[:64]

    def _is_known(self, name: str, address: str) -> bool:
        with self._lock:
            until = self._known.get((name, address))
        return until is not None and until > self.clock()

    def login_wait(self, name: str | None, address: str) -> int:
        """Whole seconds this login attempt must wait (0: check the password now)."""
        name = self._name(name)
        wait = self.addresses.wait(address)
        if not self._is_known(name, address):
            wait = max(wait, self.users.wait(name))
        return math.ceil(wait)

    def login_failed(self, name: str | None, address: str) -> None:
        name = self._name(name)
        self.addresses.failed(address)
        if not self._is_known(name, address):
            self.users.failed(name)

    def login_ok(self, name: str | None, address: str) -> None:
        name = self._name(name)
        self.users.reset(name)
        with self._lock:
            self._known.pop((name, address), None)
            self._known[(name, address)] = self.clock() + KNOWN_S
            while len(self._known) > self._max_keys:
                self._known.popitem(last=False)

    def key_wait(self, address: str) -> int:
        return math.ceil(self.keys.wait(address))

    def key_failed(self, address: str) -> None:
        self.keys.failed(address)
