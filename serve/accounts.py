"""Auth and users of `ragtune serve`: who a request or a Gradio session is, and which groups they read.

    accounts = Accounts(UserStore(path), index_groups=docs.index_groups)    # or UserStore None: single-user
    user = accounts.user_for_request(request)        # a bearer key, the Gradio session, or the local admin
    accounts.groups_of(user)

Without a users file the server is single-user: it binds to loopback only, and every request acts as the local
admin, who reads every group the index has.
"""

from __future__ import annotations

import ipaddress
from typing import Callable

from serve.openai_api import AuthError
from serve.users import User, UserStore

LOCAL_USER_NAME = "local"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Accounts:
    def __init__(self, users: UserStore | None, index_groups: Callable[[], frozenset[str]]) -> None:
        self.users = users
        self.index_groups = index_groups  # the groups of the indexed documents (the local admin reads them all)

    @property
    def single_user(self) -> bool:
        return self.users is None

    def local_user(self) -> User:
        return User(LOCAL_USER_NAME, self.index_groups(), True)

    def user_named(self, name: str | None) -> User | None:
        """The user behind a Gradio session (None: not logged in / unknown)."""
        if self.users is None:
            return self.local_user()
        return self.users.get(name)

    def authenticate(self, name: str, password: str) -> bool:
        return self.users is not None and self.users.authenticate(name, password) is not None

    def user_for_request(self, request, *, gradio_user: str | None = None) -> User:
        """The caller of an HTTP request: a bearer key, else the Gradio session, else (single-user mode only) a
        loopback client. Raises AuthError / PermissionError."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            key = header[7:].strip()
            if self.users is None:
                if is_loopback(request.client.host if request.client else None):
                    return self.local_user()
                raise PermissionError("single-user mode accepts requests from this machine only")
            user = self.users.user_for_key(key)
            if user is None:
                raise AuthError("invalid API key: use `Authorization: Bearer KEY` with a key printed by "
                                "`ragtune users add`")
            return user
        if gradio_user and self.users is not None:
            user = self.users.get(gradio_user)
            if user is not None:
                return user
        if self.users is None:
            if is_loopback(request.client.host if request.client else None):
                return self.local_user()
            raise PermissionError("single-user mode accepts requests from this machine only")
        raise AuthError("missing API key: send `Authorization: Bearer KEY` (keys come from `ragtune users add`)")

    def groups_of(self, user: User) -> frozenset[str]:
        return self.index_groups() if (self.single_user and user.name == LOCAL_USER_NAME) else user.groups
