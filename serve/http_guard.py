"""Checks in front of every route of `ragtune serve` (an ASGI middleware that serve/routes.py installs), for what
neither FastAPI nor Gradio checks when Gradio is mounted instead of launched:

- a path with a NUL or another control character, or bytes that are not UTF-8, is a 400 for every route;
- POST /login is throttled per user name and per client address (serve/throttle.py): 429 with Retry-After;
- Gradio's API (/gradio_api/...): a session whose user was removed from the users file is ended (401); uploads
  into Gradio's cache are for admins only (403); a call of an admin-only event handler (marked by `admin_only`)
  is refused for other users (403) before Gradio reads its inputs, and every file reference in a call (a JSON
  object with a "path") must lie in Gradio's upload folder (400). Gradio makes the same folder check only after
  `launch()` (`processing_utils._check_allowed` returns early otherwise) and copies the file into its cache
  before the handler runs, so both checks must come before Gradio sees the request;
- /openapi.json (the mounted Gradio app's route list) needs a logged-in user.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from starlette.requests import Request

MAX_EVENT_BODY = 8 * 2 ** 20  # an event call is JSON (files travel through /gradio_api/upload)
_EVENT_CALL = re.compile(r"^/gradio_api/(?P<kind>queue/join|run/|api/|call/(?:v2/)?)(?P<name>[^/]*)/?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def admin_only(handler: Callable) -> Callable:
    """Mark an app event handler as admin-only; the guard refuses other users' calls of it over HTTP."""
    handler.ragtune_admin = True
    return handler


def session_user(gradio_app, request: Request) -> str | None:
    """The user name of the Gradio session cookie sent with this request, if any."""
    if gradio_app is None:
        return None
    cid = getattr(gradio_app, "cookie_id", None)
    token = request.cookies.get(f"access-token-{cid}") or request.cookies.get(f"access-token-unsecure-{cid}")
    return getattr(gradio_app, "tokens", {}).get(token) if token else None


def upload_folder() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def in_upload_folder(path: str) -> bool:
    """True for a file Gradio received as an upload: inside its upload folder once links are resolved."""
    if not isinstance(path, str) or not path or _CONTROL.search(path):
        return False
    try:
        return Path(os.path.realpath(path)).is_relative_to(upload_folder())
    except (OSError, ValueError):
        return False


def file_paths(value: Any) -> list:
    """Every "path" value of a JSON object anywhere in `value` (Gradio's FileData, with or without its meta)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item:
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def malformed(scope: dict) -> bool:
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return bool(_CONTROL.search(decoded) or _CONTROL.search(scope.get("path", "")))


async def respond(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body (None if the client went away); _TooLarge past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise _TooLarge
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive):
    """A `receive` that hands the already-read body on once, then defers to the real one (disconnects)."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class HttpGuard:
    """The middleware. `service` is the Ragtune service (its users, and in `service.demo` the Blocks whose event
    handlers calls name); `gradio` returns the mounted Gradio app (its sessions); `throttle` is a
    serve.throttle.Throttle."""

    def __init__(self, app, *, service, gradio: Callable[[], Any], throttle) -> None:
        self.app = app
        self.service = service
        self.gradio = gradio
        self.throttle = throttle

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if malformed(scope):
            return await respond(send, 400, "malformed path")
        root = scope.get("root_path") or ""
        path = scope["path"][len(root):] if root and scope["path"].startswith(root) else scope["path"]
        if scope["method"] == "POST" and path.rstrip("/") == "/login":
            return await self._login(scope, receive, send)
        request = Request(scope)
        if path == "/openapi.json" and self._user(request) is None:
            return await respond(send, 401, "log in first")
        if path.startswith("/gradio_api/"):
            refusal, receive = await self._gradio_call(path, scope, receive, request)
            if refusal is not None:
                return await respond(send, *refusal)
        return await self.app(scope, receive, send)

    # ---- who is asking -------------------------------------------------------------------------------------------
    def _user(self, request: Request):
        """The session's user (or the local admin in single-user mode); None if not logged in or removed."""
        return self.service.accounts.user_named(session_user(self.gradio(), request))

    def _end_stale_session(self, request: Request) -> bool:
        """Forget a session whose user is no longer in the users file; True if there was one."""
        gapp = self.gradio()
        name = session_user(gapp, request)
        if name is None or self.service.accounts.users is None or self.service.accounts.users.get(name) is not None:
            return False
        for token in [t for t, n in getattr(gapp, "tokens", {}).items() if n == name]:
            gapp.tokens.pop(token, None)
        return True

    # ---- login ---------------------------------------------------------------------------------------------------
    async def _login(self, scope, receive, send) -> None:
        try:
            body = await read_body(receive, 64 * 1024)
        except _TooLarge:
            return await respond(send, 413, "login form too large")
        if body is None:
            return None
        try:
            form = await Request(scope, replay(body, receive)).form()
        except Exception:  # noqa: BLE001 - not a form: Gradio refuses it itself (422)
            form = {}
        name, address = str(form.get("username") or ""), (scope.get("client") or ("?", 0))[0]
        wait = self.throttle.login_wait(name, address)
        if wait > 0:
            return await respond(send, 429, f"Too many failed logins: try again in {wait} s.",
                                 {"Retry-After": str(wait)})
        status = {}

        async def watch(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, replay(body, receive), watch)
        if status.get("code") == 200:
            self.throttle.login_ok(name, address)
        elif status.get("code") in (400, 401):
            self.throttle.login_failed(name, address)

    # ---- Gradio's API --------------------------------------------------------------------------------------------
    async def _gradio_call(self, path: str, scope, receive, request: Request):
        """(refusal or None, the receive to go on with) for a request to Gradio's API."""
        if self._end_stale_session(request):
            return (401, "your account was removed; log in again"), receive
        if scope["method"] != "POST":
            return None, receive
        if path.rstrip("/") == "/gradio_api/upload":
            user = self._user(request)
            if user is not None and not user.admin:
                return (403, "only admins upload files"), receive
            return None, receive
        call = _EVENT_CALL.match(path)
        if call is None:
            return None, receive
        try:
            body = await read_body(receive, MAX_EVENT_BODY)
        except _TooLarge:
            return (413, f"event call over {MAX_EVENT_BODY // 2 ** 20} MiB"), receive
        if body is None:
            return None, replay(b"", receive)
        return self._check_event(body, call.group("kind"), call.group("name"), request), replay(body, receive)

    def _check_event(self, body: bytes, kind: str, api_name: str, request: Request):
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return None  # Gradio answers malformed JSON itself
        fn = self._event(payload, kind, api_name)
        if getattr(getattr(fn, "fn", None), "ragtune_admin", False):
            user = self._user(request)
            if user is None:
                return 401, "log in first"
            if not user.admin:
                return 403, "only admins can do this"
        outside = [p for p in file_paths(payload) if not in_upload_folder(p)]
        if outside:
            return 400, "files must be uploaded through /gradio_api/upload first; refused: " + ", ".join(
                repr(p)[:200] for p in outside[:3])
        return None

    def _event(self, payload, kind: str, api_name: str):
        """The BlockFunction a call names, found as Gradio finds it (gradio/routes.py, route_utils.get_fn):
        /call/NAME by NAME alone; /run/NAME and /api/NAME by the body's fn_index if it has one, else NAME;
        /queue/join by fn_index. The fn_index is read with Gradio's own model, which takes "10", 10.0 or true as
        numbers."""
        from gradio.data_classes import PredictBody
        from pydantic import ValidationError

        demo = getattr(self.service, "demo", None)
        if demo is None or not isinstance(payload, dict):
            return None
        if kind.startswith("call/"):
            return next((f for f in demo.fns.values() if f.api_name == api_name), None)
        try:
            index = PredictBody.model_validate({"data": [], **payload}).fn_index
        except ValidationError:
            index = None  # Gradio refuses this body itself
        if index is not None:
            return demo.fns.get(index)
        return next((f for f in demo.fns.values() if api_name and f.api_name == api_name), None)
