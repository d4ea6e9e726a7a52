"""Calling the app's Gradio event handlers over HTTP the way an attacker would (no browser, no gradio_client): log in
with POST /login, join the queue with a handler's fn_index and raw data, read the result from the session's
server-sent events. The app's events are api_visibility="private", which hides them from the client libraries,
not from HTTP."""

from __future__ import annotations

import json
import secrets

import httpx


def fn_index(demo, handler) -> int:
    """The fn_index of the (first) event bound to `handler` (a function or a bound method)."""
    return next(i for i, f in demo.fns.items() if f.fn == handler)


def fn_named(demo, name: str) -> int:
    """The fn_index of the (first) event whose handler is called `name` ("refresh_docs", "UsersHandlers.pick")."""
    return next(i for i, f in demo.fns.items() if name in (getattr(f.fn, "__name__", None),
                                                          getattr(f.fn, "__qualname__", None)))


class GradioSession:
    def __init__(self, url: str, name: str | None = None, password: str | None = None, **client) -> None:
        self.http = httpx.Client(base_url=url, timeout=300, **client)
        self.session_hash = secrets.token_hex(8)
        if name is not None:
            resp = self.login(name, password)
            assert resp.status_code == 200, resp.text

    def login(self, name: str, password: str | None, **kw) -> httpx.Response:
        return self.http.post("/login", data={"username": name, "password": password or ""}, **kw)

    def join(self, fn: int, data: list, route: str = "/gradio_api/queue/join", **extra) -> httpx.Response:
        body = {"data": data, "fn_index": fn, "session_hash": self.session_hash, "trigger_id": None, **extra}
        return self.http.post(route, json=body)

    def result(self, event_id: str) -> dict:
        """The process_completed message of an event: {"success": bool, "output": {"data": [...]} or {"error"}}."""
        with self.http.stream("GET", f"/gradio_api/queue/data?session_hash={self.session_hash}") as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    return msg
        raise AssertionError(f"the event stream ended without a result for {event_id}")

    def call(self, fn: int, data: list) -> dict:
        """Join and wait: the completed message (asserts the join itself was accepted)."""
        joined = self.join(fn, data)
        assert joined.status_code == 200, joined.text
        return self.result(joined.json()["event_id"])

    def upload(self, name: str, content: bytes) -> httpx.Response:
        return self.http.post("/gradio_api/upload", files={"files": (name, content)})
