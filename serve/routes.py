"""The FastAPI app of `ragtune serve` (see serve/server.py for the service it wraps): the OpenAI-compatible routes,
the document viewer, the evaluation reports, a health check, and the Gradio app mounted at /.

Every route finds its caller first (`Accounts.user_for_request`, serve/accounts.py: a bearer key, the Gradio session cookie, or the
local admin in single-user mode; invalid keys are throttled per client address) and checks groups before it reads
a file. serve/http_guard.py sits in front of all of it (malformed paths, login throttling, Gradio's API).
"""

from __future__ import annotations

import hmac
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request

from ingest.workspace import Workspace
from serve.openai_api import AuthError, RateLimited
from serve.server import Ragtune
from serve.users import User


def create_server(service: Ragtune):
    """The FastAPI app: API routes first, then the Gradio app mounted at / (it catches every later path)."""
    from fastapi import FastAPI

    from serve.http_guard import HttpGuard
    from serve.openai_api import add_chat_routes
    from serve.throttle import Throttle

    app = FastAPI(title="ragtune", docs_url=None, redoc_url=None, openapi_url=None)
    gradio_ref: dict[str, Any] = {}
    throttle = Throttle()
    service.throttle = throttle  # like service.demo below: tests reach the server's parts through the service

    caller = _caller(service, lambda: gradio_ref.get("app"), throttle)

    def open_completion(user: User, model: str, messages: list[dict], max_tokens: int, temperature: float):
        return service.answers.api_completion(user, model, messages, max_tokens, temperature, base_url="/")

    add_chat_routes(app, list_models=lambda _user: service.answers.model_ids(), open_completion=open_completion,
                    authenticate=caller, default_max_tokens=service.config.max_new_tokens,
                    max_tokens_limit=max(512, service.config.max_new_tokens))
    _add_ragtune_routes(app, service, caller)
    _add_source_route(app, service, caller)
    gradio_ref["app"] = _mount_app(app, service)
    app.add_middleware(HttpGuard, service=service, gradio=lambda: gradio_ref.get("app"), throttle=throttle)
    return app


def _add_ragtune_routes(app, service: Ragtune, caller) -> None:
    """The document viewer, the evaluation reports and the health check; `caller(request)` finds the user."""
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse

    from serve.viewer import render_html

    @app.get("/ragtune/doc/{rel:path}", response_model=None)
    async def open_document(rel: str, request: Request, section: str | None = None, page: int | None = None,
                            raw: int = 0):
        try:
            user = caller(request)
        except (AuthError, PermissionError) as e:
            return _deny(e)
        path, doc, refused = await _readable_document(service, user, rel)
        if refused is not None:
            return refused
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store",
                   "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
        if raw:
            return FileResponse(path, filename=path.name, headers=headers,
                                content_disposition_type="attachment", media_type="application/octet-stream")
        return HTMLResponse(render_html(doc, section, page, token=service.form_token(user, rel),
                                        thanks=request.query_params.get("thanks") == "1"), headers=headers)

    @app.get("/ragtune/evals/{name}/{file}", response_model=None)
    async def eval_file(name: str, file: str, request: Request):
        try:
            user = caller(request)
        except (AuthError, PermissionError) as e:
            return _deny(e)
        if not user.admin:
            return PlainTextResponse("403: evaluation reports are for admins", status_code=403)
        if file not in ("report.md", "results.json", "answers.png", "retrieval.png", "cost.png") or "/" in name \
                or name.startswith("."):
            return PlainTextResponse("404", status_code=404)
        path = Workspace(service.workspace).evals / name / file
        try:
            found = path.is_file()
        except (OSError, ValueError):  # a name the file system refuses (too long, NUL)
            found = False
        if not found:
            return PlainTextResponse("404", status_code=404)
        media = "text/plain; charset=utf-8" if file.endswith(".md") else None
        return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/ragtune/health")
    async def health(request: Request):
        """Liveness for anyone (a load balancer's probe); the counters for logged-in callers only."""
        try:
            caller(request)
        except (AuthError, PermissionError):
            return JSONResponse({"ok": True})
        g = service.gate
        return JSONResponse({"ok": True, "index": service.docs.has_index(), "waiting": g.waiting, "active": g.active,
                             "served": g.served, "refused": g.refused})


async def _readable_document(service: Ragtune, user: User, rel: str):
    """(path, Document, None) when the user may read the document, else (None, None, the refusal to send): 404 for
    no such file, 403 when its groups (in the index, or on disk since it was indexed) are not the user's, 422 for a
    file that cannot be read. The viewer and its form both check through here."""
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import PlainTextResponse

    from ingest.types import can_read
    from serve.docs_admin import DocsError

    try:
        path = service.docs.resolve(rel)
    except DocsError:
        return None, None, PlainTextResponse("404: no such document", status_code=404)
    denied = PlainTextResponse("403: this document is restricted to groups you are not in", status_code=403)
    if not service.may_open(user, rel):
        return None, None, denied
    try:
        doc = await run_in_threadpool(service.docs.read, rel)
    except Exception as e:  # noqa: BLE001 - unreadable file: say why
        return None, None, PlainTextResponse(f"cannot show {rel}: {e}", status_code=422)
    if not can_read(doc.groups, service.accounts.groups_of(user)):
        return None, None, denied  # restricted on disk since it was indexed
    return path, doc, None


def _add_source_route(app, service: Ragtune, caller) -> None:
    """POST of the viewer's "this section answers it" form (serve/viewer.py)."""
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import PlainTextResponse, RedirectResponse

    from serve.docs_admin import doc_link
    from serve.viewer import MAX_QUESTION, SOURCE_ROUTE, to_app_root
    from tune.ratings import record_rating

    @app.post(SOURCE_ROUTE + "{rel:path}", response_model=None)
    async def point_at_section(rel: str, request: Request):
        """The viewer's "this section answers it": the reader's question with the chunks of the section they
        picked, recorded as a liked rating (tune/ratings.py), then back to the section."""
        try:
            user = caller(request)
        except (AuthError, PermissionError) as e:
            return _deny(e)
        form = await request.form()
        if not hmac.compare_digest(str(form.get("token") or ""), service.form_token(user, rel)):
            return PlainTextResponse("403: this form is stale or not from this server: reload the document",
                                     status_code=403)
        _, doc, refused = await _readable_document(service, user, rel)
        if refused is not None:
            return refused
        question, index = str(form.get("question") or "").strip(), str(form.get("section") or "")
        if not index.isdigit() or int(index) >= len(doc.sections):
            return PlainTextResponse(f"400: section must be a section number of {rel}", status_code=400)
        if not question or len(question) > MAX_QUESTION:
            return PlainTextResponse(f"400: question must be 1 to {MAX_QUESTION} characters", status_code=400)
        heading = doc.sections[int(index)].heading
        if str(form.get("heading") or "") != heading:
            return PlainTextResponse("409: the document changed since this page was shown: reload it", status_code=409)
        chunks = (await run_in_threadpool(service.section_chunks, rel, heading, question))[:5]
        if not chunks:
            return PlainTextResponse("409: this section is not in the index yet: ask an admin to re-index",
                                     status_code=409)
        record_rating(service.workspace, user.name, uuid.uuid4().hex, question, True, mode="viewer", adapter=None,
                      answer="", cited=chunks, docs=[rel] * len(chunks))
        back, _, fragment = doc_link(rel, heading, base=to_app_root(rel)).partition("#")
        return RedirectResponse(f"{back}{'&' if '?' in back else '?'}thanks=1" + (f"#{fragment}" if fragment else ""),
                                status_code=303)


def _mount_app(app, service: Ragtune):
    """Mount the Gradio app at / (with its login when there is a users file); returns its ASGI app."""
    import gradio as gr
    from starlette.routing import Mount

    from serve.app import build_app

    demo = build_app(service)
    service.demo = demo  # tests call its handlers directly (demo.ragtune_handlers)
    demo.queue(default_concurrency_limit=service.config.ui_concurrency, max_size=service.config.queue_size)
    auth = None
    if service.accounts.users is not None:
        auth = service.accounts.authenticate
    blocked = [str(service.workspace.resolve()), str(service.docs.docs_dir.resolve())]
    if service.config.users_file is not None:
        blocked.append(str(Path(service.config.users_file).resolve()))
    gr.mount_gradio_app(app, demo, path="/", auth=auth, run_history=False, footer_links=["gradio"],
                        blocked_paths=blocked,
                        auth_message="ragtune: log in with the name and password from `ragtune users add`.",
                        max_file_size=service.config.max_upload_mb * 2 ** 20, show_error=True,
                        theme=gr.themes.Soft(), css=APP_CSS)
    mounted = [r.app for r in app.routes if isinstance(r, Mount) and r.path in ("", "/")]
    return mounted[-1] if mounted else None


def _caller(service: Ragtune, gradio_app, throttle):
    """request -> the User making it (serve.accounts.Accounts.user_for_request), with invalid bearer keys throttled per
    client address: RateLimited (429) while the address waits, AuthError (401) / PermissionError (403) otherwise."""
    from serve.http_guard import session_user

    def caller(request) -> User:
        address = request.client.host if request.client else ""
        bearer = request.headers.get("authorization", "").lower().startswith("bearer ")
        wait = throttle.key_wait(address) if bearer else 0
        if wait:
            raise RateLimited(f"too many invalid API keys from {address}: try again in {wait} s", wait)
        try:
            return service.accounts.user_for_request(request, gradio_user=session_user(gradio_app(), request))
        except AuthError:
            if bearer:
                throttle.key_failed(address)
            raise

    return caller


def _deny(exc: Exception):
    from fastapi.responses import PlainTextResponse

    if isinstance(exc, RateLimited):
        return PlainTextResponse(f"429: {exc}", status_code=429, headers={"Retry-After": str(exc.retry_after)})
    status = 401 if isinstance(exc, AuthError) else 403
    return PlainTextResponse(f"{status}: {exc}", status_code=status)


APP_CSS = """
.citations {font-size: 0.9em}
#status-line {font-size: 0.85em; color: #666}
"""
