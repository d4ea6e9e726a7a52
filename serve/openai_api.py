"""A minimal OpenAI-compatible HTTP API over ragtune's generators, so any OpenAI client (or another ragtune
instance through `OpenAIGenerator`) can talk to them. Implements GET /v1/models and POST /v1/chat/completions
(JSON and server-sent events).

`create_app(generators)` serves plain generators without auth. `add_chat_routes(app, ...)` is the general form
that `serve/routes.py` uses: the caller supplies the model list, a function that opens a `Completion` (which may
add extra fields, such as citations, to the response) and an authentication hook (bearer keys).

Deliberate difference from OpenAI: `temperature` defaults to 0 (greedy), because answers over company
documents should be reproducible.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from generate.base import BackendError, BackendUnavailableError, GenerationStats, Generator


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    stream_options: dict[str, Any] | None = None


class AuthError(Exception):
    """Missing or unknown API key (HTTP 401)."""


class ModelNotFoundError(LookupError):
    """The requested model id is not served (HTTP 404, code model_not_found)."""


class BusyError(RuntimeError):
    """Too many requests are already waiting for the model (HTTP 429); retry later."""


class RateLimited(PermissionError):
    """Too many failed attempts from this client (HTTP 429 with Retry-After: `retry_after` seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Completion:
    """One opened chat completion. `pieces()` runs in a worker thread and yields text; `finish()` is called in
    that thread right after the pieces end and returns (stats, extra): `extra` is merged into the final JSON body
    (and into the last streamed chunk), e.g. citations; stats may be None. `cancel` is set when the client goes
    away, so a `pieces()` still waiting for its turn can give up early."""

    pieces: Callable[[], Iterator[str]]
    finish: Callable[[], tuple[GenerationStats | None, dict]]
    cancel: threading.Event = field(default_factory=threading.Event)


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _error_for(exc: BaseException) -> JSONResponse:
    if isinstance(exc, BackendUnavailableError):
        return _error(502, str(exc), "api_error", code="backend_unavailable")
    if isinstance(exc, AuthError):
        return _error(401, str(exc) or "invalid API key", "authentication_error", code="invalid_api_key",
                      headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, RateLimited):
        return _error(429, str(exc), "rate_limit_error", code="too_many_failures",
                      headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, PermissionError):
        return _error(403, str(exc), "permission_error", code="forbidden")
    if isinstance(exc, ModelNotFoundError):
        return _error(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, BusyError):
        return _error(429, str(exc), "rate_limit_error", code="busy", headers={"Retry-After": "5"})
    if isinstance(exc, (ValueError, BackendError)):
        return _error(400, str(exc))
    return _error(500, f"{type(exc).__name__}: {exc}", "api_error")


def _text_content(content: str | list[dict[str, Any]] | None) -> str:
    """OpenAI allows content as a list of parts; our generators take plain strings (text parts only)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise ValueError(f"unsupported content part type {part.get('type')!r}; only 'text' is supported")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


async def _pieces_in_thread(make_iter: Callable[[], Iterator[str]], stats_of: Callable[[], Any],
                            cancelled: threading.Event | None = None) -> AsyncIterator[tuple[str, Any]]:
    """Run a blocking generator in its own thread and hand its pieces to the event loop.

    Yields ("piece", text) ..., then ("done", stats) or ("error", exception); `stats_of()` is asked once the
    iterator has ended. If the client goes away,
    the worker stops at the next piece and closes the iterator (which frees the model lock)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = cancelled if cancelled is not None else threading.Event()

    def put(item: tuple[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # event loop already closed (server shutting down)
            pass

    def worker() -> None:
        it = None
        try:
            it = make_iter()
            for piece in it:
                if cancelled.is_set():
                    break
                put(("piece", piece))
            it.close()
            put(("done", stats_of()))
        except BaseException as exc:  # noqa: BLE001 - report everything to the request
            put(("error", exc))
        finally:
            if it is not None and hasattr(it, "close"):
                it.close()

    threading.Thread(target=worker, name="ragtune-generate", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            yield kind, value
            if kind != "piece":
                return
    finally:
        cancelled.set()


def served_models(generators: dict[str, Generator]) -> dict[str, tuple[Generator, str | None]]:
    """{model id: (generator, adapter)}: each generator under its dict key with no adapter, and, as vLLM serves
    `--lora-modules NAME=PATH`, each adapter a generator has loaded under the adapter's own name."""
    models: dict[str, tuple[Generator, str | None]] = {name: (gen, None) for name, gen in generators.items()}
    for gen in generators.values():
        if gen.supports_adapters:
            for adapter in gen.adapters:
                models.setdefault(adapter, (gen, adapter))
    return models


def create_app(generators: dict[str, Generator], *, default_max_tokens: int = 512) -> FastAPI:
    """Build the FastAPI app serving `generators` under their dict keys as OpenAI model ids, and their loaded
    adapters under their names (`served_models`): the way vLLM names LoRA modules, so ragtune's `--backend-url`
    can be tried against ragtune itself."""
    app = FastAPI(title="ragtune OpenAI-compatible API")

    def open_completion(_principal: Any, model: str, messages: list[dict], max_tokens: int,
                        temperature: float) -> Completion:
        models = served_models(generators)
        if model not in models:
            raise ModelNotFoundError(f"The model '{model}' does not exist; available: {sorted(models)}")
        gen, adapter = models[model]
        options = {"adapter": adapter} if gen.supports_adapters else {}  # the base model's name: no adapter
        stream = []  # the call's GenerationStream, made when the worker starts iterating

        def pieces() -> Iterator[str]:
            stream.append(gen.stream(messages, max_new_tokens=max_tokens, temperature=temperature, **options))
            return stream[0]

        return Completion(pieces, lambda: (stream[0].stats if stream else None, {}))

    add_chat_routes(app, list_models=lambda _principal: list(served_models(generators)),
                    open_completion=open_completion, default_max_tokens=default_max_tokens)
    return app


def add_chat_routes(app: FastAPI, *, list_models: Callable[[Any], list[str]],
                    open_completion: Callable[[Any, str, list[dict], int, float], Completion],
                    authenticate: Callable[[Request], Any] | None = None, default_max_tokens: int = 512,
                    max_tokens_limit: int | None = None) -> None:
    """Add GET /v1/models and POST /v1/chat/completions to `app`.

    `authenticate(request)` returns the caller (any object, passed on) or raises AuthError (401) /
    PermissionError (403). `open_completion(caller, model, messages, max_tokens, temperature)` may raise
    ModelNotFoundError (404), BusyError (429) or ValueError (400); it runs in a worker thread, so it may block
    briefly (loading an adapter, say)."""
    created_at = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"invalid request: {exc.errors()}")

    async def _caller(request: Request) -> Any:
        return authenticate(request) if authenticate is not None else None

    @app.get("/v1/models", response_model=None)
    async def list_models_route(request: Request) -> JSONResponse | dict[str, Any]:
        try:
            caller = await _caller(request)
            names = await run_in_threadpool(list_models, caller)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-style error
            return _error_for(exc)
        data = [{"id": name, "object": "model", "created": created_at, "owned_by": "ragtune"} for name in names]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(req: ChatRequest, request: Request) -> JSONResponse | StreamingResponse:
        try:
            caller = await _caller(request)
        except Exception as exc:  # noqa: BLE001
            return _error_for(exc)
        try:
            messages = [{"role": m.role, "content": _text_content(m.content)} for m in req.messages]
        except ValueError as exc:
            return _error(400, str(exc), param="messages")
        invalid = _out_of_range(req)
        if invalid is not None:
            return invalid
        max_tokens = req.max_completion_tokens or req.max_tokens or default_max_tokens
        if max_tokens_limit is not None:
            max_tokens = min(max_tokens, max_tokens_limit)
        temperature = req.temperature if req.temperature is not None else 0.0
        try:
            completion = await run_in_threadpool(open_completion, caller, req.model, messages, max_tokens,
                                                 temperature)
        except Exception as exc:  # noqa: BLE001
            return _error_for(exc)

        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        events = _pieces_in_thread(completion.pieces, completion.finish, completion.cancel)
        # Wait for the first event before answering, so an early failure (e.g. prompt too long) is a proper
        # HTTP error instead of a 200 stream that breaks off.
        first = await anext(events)
        if first[0] == "error":
            await events.aclose()
            return _error_for(first[1])
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            body = _sse(events, first, cid, created, req.model, include_usage)
            return StreamingResponse(body, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        parts, event = [], first
        while event[0] == "piece":
            parts.append(event[1])
            event = await anext(events)
        if event[0] == "error":
            return _error_for(event[1])
        stats, extra = event[1]
        content = extra.pop("content", None)
        message = {"role": "assistant", "content": "".join(parts) if content is None else content}
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(stats)}],
            "usage": _usage(stats), **extra,
        })


def _out_of_range(req: ChatRequest) -> JSONResponse | None:
    """OpenAI's own 400 for a sampling value outside its range (temperature 0-2, token limits >= 1)."""
    checks = [("temperature", req.temperature, 0, 2, "decimal"), ("max_tokens", req.max_tokens, 1, None, "integer"),
              ("max_completion_tokens", req.max_completion_tokens, 1, None, "integer")]
    for name, value, low, high, kind in checks:
        if value is None:
            continue
        if not value >= low:  # also NaN
            return _error(400, f"Invalid '{name}': {kind} below minimum value. Expected a value >= {low}, but got "
                               f"{value} instead.", param=name, code=f"{kind}_below_min_value")
        if high is not None and value > high:
            return _error(400, f"Invalid '{name}': {kind} above maximum value. Expected a value <= {high}, but got "
                               f"{value} instead.", param=name, code=f"{kind}_above_max_value")
    return None


def _finish(stats: GenerationStats | None) -> str:
    return "length" if stats is not None and stats.finish_reason == "length" else "stop"


def _usage(stats: GenerationStats | None) -> dict[str, int]:
    prompt = stats.prompt_tokens if stats else 0
    completion = stats.new_tokens if stats else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _sse(events: AsyncIterator[tuple[str, Any]], first: tuple[str, Any], cid: str, created: int,
               model: str, include_usage: bool) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    event = first
    try:
        while event[0] == "piece":
            yield chunk({"content": event[1]})
            event = await anext(events)
    finally:
        await events.aclose()
    if event[0] == "error":  # headers are already sent: report in-band, as vLLM does
        err = _error_for(event[1])
        yield f"data: {err.body.decode()}\n\n"
    else:
        stats, extra = event[1]
        extra = {k: v for k, v in extra.items() if k != "content"}
        yield chunk({}, _finish(stats), **extra)
        if include_usage:
            yield chunk(None, usage=_usage(stats))
    yield "data: [DONE]\n\n"


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, start_timeout: float = 30.0
                    ) -> tuple[str, Callable[[], None]]:
    """Run uvicorn in a daemon thread; return (base url, stop function). port=0 picks a free port."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ragtune-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port} (port in use or bad host?)")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://{url_host}:{bound_port}", stop
