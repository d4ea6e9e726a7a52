"""`ragtune serve`: one FastAPI server with the OpenAI-compatible API, the document viewer and the Gradio app.
This file holds the service they share (`Ragtune`); serve/routes.py puts the routes over it and serve/web.py
builds and starts the server.

    /v1/models, /v1/chat/completions   OpenAI-compatible, bearer keys from the users file (serve/openai_api.py)
    /ragtune/doc/<path>                a cited document as escaped HTML (or ?raw=1 the file), after a group check
    /ragtune/evals/<report>/report.md  the evaluation report (admins)
    /                                  the Gradio app (serve/app.py), Gradio's login checking the users file

Users: with a users file, the browser logs in through Gradio and the API takes `Authorization: Bearer KEY`;
each user reads only documents of their groups, everywhere (search, citations, viewer, documents list). Without
a users file the server is single-user: it binds to loopback only, and every request (which can only come from
this machine) acts as the local admin who may read every group.

Concurrency: the local model answers one request at a time (LocalGenerator's lock). In front of it a FIFO gate
admits requests in arrival order and refuses new ones (HTTP 429 / a message in the app) once `max_waiting` are
queued, so a burst is bounded and nobody waits forever behind later arrivals. Generation runs in worker threads
(API) or Gradio's worker threads (app), never on the event loop, so pages and other requests stay responsive.
Searches share one embedder whose encode calls are serialised (a Hugging Face fast tokenizer must not be used by
two threads at once) and cut into slices, so a background re-index delays a search by one slice at most.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path


from generate.modes import ADAPTER_MODES, DEFAULT_MODE, MODES, RETRIEVAL_MODES
from ingest.files import write_text_atomic
from ingest.workspace import Workspace
from serve.adapter_choice import pick_adapter, preferred_mode
from serve.answer import AnswerConfig, AnswerEngine, AnswerError, list_adapters
from serve.concurrency import Gate, LazySearcher, NoIndexError, Ticket, _EmbedderSlot
from serve.jobs import Jobs
from serve.openai_api import AuthError, Completion, ModelNotFoundError
from serve.users import User, UserStore

LOCAL_USER_NAME = "local"
MODEL_PREFIX = "ragtune-"
PLAIN_MODEL = "ragtune"  # answers in Ragtune.default_mode()


@dataclass
class ServeConfig:
    workspace: Path
    docs_dir: Path | None = None  # default: the folder the index was built from, else WS/docs
    users_file: Path | None = None  # None: single-user, loopback only
    host: str = "127.0.0.1"
    port: int = 7860
    max_new_tokens: int = 128
    k: int = 3
    ui_concurrency: int = 4  # Gradio workers per event (chat, compare, ...); they wait at the gate for the model
    max_waiting: int = 32  # generations queued at the gate (UI + API together) before new ones are refused
    queue_size: int = 64  # Gradio's own queue bound
    max_upload_mb: int = 20


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- the service the API and the app share ------------------------------------------------------------------------

class Ragtune:
    """Everything `ragtune serve` does, as methods; the API routes and the Gradio handlers are thin layers."""

    def __init__(self, config: ServeConfig, generator=None, embedder=None, job_runners=None) -> None:
        from serve.docs_admin import DocsAdmin

        self.config = config
        self.workspace = Path(config.workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.users: UserStore | None = UserStore(config.users_file) if config.users_file else None
        if generator is None:
            from generate.local import local_generator

            generator = local_generator(self.workspace)
        self.generator = generator
        self.embedders = _EmbedderSlot(self.workspace, embedder)
        self.searcher = LazySearcher(self.workspace, self.embedders)
        self.answer_config = AnswerConfig(k=config.k, max_new_tokens=config.max_new_tokens)
        self.engine = AnswerEngine(self.workspace, generator, searcher=self.searcher, config=self.answer_config)
        self.gate = Gate(max_active=1, max_waiting=config.max_waiting)
        docs_dir = config.docs_dir or self._indexed_docs_dir() or Workspace(self.workspace).docs
        self.docs = DocsAdmin(self.workspace, Path(docs_dir), embedder_for_job=lambda: self.embedders.get().for_job(),
                              max_upload_bytes=config.max_upload_mb * 2 ** 20)
        self.jobs = Jobs(self, job_runners)
        self.started = time.time()
        self.demo = None  # the Gradio Blocks, set by create_server

    # ---- users -------------------------------------------------------------------------------------------------
    @property
    def single_user(self) -> bool:
        return self.users is None

    def index_groups(self) -> frozenset[str]:
        out: set[str] = set()
        for meta in self.docs.indexed_docs().values():
            out.update(meta.get("groups") or ())
        return frozenset(out)

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

    # ---- adapters ----------------------------------------------------------------------------------------------
    def _settings_path(self) -> Path:
        return Workspace(self.workspace).serve_settings

    def adapters(self) -> list[str]:
        return list_adapters(self.workspace)

    def _chosen_adapters(self) -> dict[str, str]:
        """What an admin picked with "Use this adapter" (WS/serve.json), per mode; older files hold one name."""
        try:
            saved = json.loads(self._settings_path().read_text())
        except (OSError, ValueError):
            return {}
        if isinstance(saved.get("adapters"), dict):
            return {m: n for m, n in saved["adapters"].items() if m in ADAPTER_MODES and isinstance(n, str)}
        return {m: saved["adapter"] for m in ADAPTER_MODES} if isinstance(saved.get("adapter"), str) else {}

    def default_adapter(self, mode: str = "hybrid") -> str | None:
        """The adapter `mode` answers with when a request names none: the admin's pick for that mode if it still
        exists, else serve.adapter_choice.pick_adapter ('default', else the newest adapter suited to the mode)."""
        chosen = self._chosen_adapters().get(mode)
        if chosen in self.adapters():
            return chosen
        return pick_adapter(self.workspace, mode)

    def default_mode(self) -> str:
        """The mode a chat opens in and the plain model name `ragtune` answers with: hybrid once its adapter's card
        records an evaluation on this workspace where hybrid was not below rag, else rag
        (serve.adapter_choice.preferred_mode)."""
        return preferred_mode(self.workspace, self.default_adapter("hybrid"))

    def default_adapters(self) -> dict[str, str | None]:
        return {m: self.default_adapter(m) for m in ADAPTER_MODES}

    def set_default_adapter(self, name: str, modes: tuple[str, ...] = ADAPTER_MODES) -> None:
        if name not in self.adapters():
            raise AnswerError(f"no adapter named {name!r}")
        if not modes or any(m not in ADAPTER_MODES for m in modes):
            raise AnswerError(f"an adapter is chosen for modes {' and '.join(ADAPTER_MODES)}, not {modes!r}")
        chosen = {**self._chosen_adapters(), **{m: name for m in modes}}  # other modes keep their own pick
        write_text_atomic(self._settings_path(), json.dumps({"adapters": chosen}))

    # ---- answering ---------------------------------------------------------------------------------------------
    def has_index(self) -> bool:
        from retrieve.store import current_generation_path

        path = current_generation_path(self.workspace)
        return path is not None and path.is_dir()

    def open_answer(self, user: User, question: str, mode: str, adapter: str | None = None,
                    history: list[dict] | None = None):
        """Check the request, take a place at the gate and return (ticket, stream). The caller must
        `ticket.wait()` before iterating and `ticket.release()` after (use `run_answer`)."""
        if mode in RETRIEVAL_MODES and not self.has_index():
            raise NoIndexError("no documents are indexed yet: an admin can upload documents in the Documents tab "
                               "(or run `ragtune index DOCS --workspace WS`)")
        if mode in ADAPTER_MODES:
            adapter = adapter or self.default_adapter(mode)
            if adapter is None:
                raise AnswerError(f"mode {mode!r} needs a tuned adapter and none exists yet: an admin can train one "
                                  "in the Tune tab (or run `ragtune synth` and `ragtune tune`); use mode rag meanwhile")
        stream = self.engine.start(question, mode=mode, adapter=adapter, groups=self.groups_of(user),
                                   history=history or [])
        ticket = self.gate.reserve()
        return ticket, stream

    @staticmethod
    def run_answer(ticket: Ticket, stream, cancel: threading.Event | None = None):
        """Iterate a stream from `open_answer` in turn at the gate; always releases the ticket."""
        try:
            ticket.wait(cancel)
            for piece in stream:
                if cancel is not None and cancel.is_set():
                    break
                yield piece
        finally:
            stream.close()  # frees the model lock if we stopped early
            ticket.release()

    @staticmethod
    def abandon(ticket: Ticket, stream) -> None:
        """Give back a ticket (and the model) whatever state the answer is in; a no-op after `run_answer`
        finished. Callers put it in a `finally`, so a page closed mid-answer never keeps its place in line."""
        try:
            stream.close()
        except ValueError:  # "generator already executing": it is being finished by its own thread
            pass
        ticket.release()

    # ---- the API -------------------------------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        plain = [DEFAULT_MODE] + [m for m in MODES if m not in ADAPTER_MODES and m != DEFAULT_MODE]
        ids = [PLAIN_MODEL] + [f"{MODEL_PREFIX}{m}" for m in plain]
        adapters = self.adapters()
        if adapters:
            ids += [f"{MODEL_PREFIX}{m}" for m in ADAPTER_MODES]
            for a in adapters:
                ids += [f"{MODEL_PREFIX}{m}:{a}" for m in ADAPTER_MODES]
        return ids

    def parse_model(self, model: str) -> tuple[str, str | None]:
        name = (model or "").strip()
        if name == PLAIN_MODEL:  # the better mode this workspace has shown, with its default adapter
            return self.default_mode(), None
        if not name.startswith(MODEL_PREFIX):
            raise ModelNotFoundError(f"The model '{model}' does not exist; available: {self.model_ids()}")
        mode, _, adapter = name[len(MODEL_PREFIX):].partition(":")
        if mode not in MODES or (adapter and mode not in ADAPTER_MODES):
            raise ModelNotFoundError(f"The model '{model}' does not exist; available: {self.model_ids()}")
        if mode in ADAPTER_MODES:
            if adapter and adapter not in self.adapters():
                raise ModelNotFoundError(f"The model '{model}' does not exist: no adapter {adapter!r}; "
                                         f"available: {self.model_ids()}")
            if not adapter and self.default_adapter(mode) is None:
                raise ModelNotFoundError(f"The model '{model}' is not available: no tuned adapter exists yet")
        return mode, adapter or None

    def api_completion(self, user: User, model: str, messages: list[dict], max_tokens: int, temperature: float,
                       base_url: str = "") -> Completion:
        from generate.base import GenerationStats

        mode, adapter = self.parse_model(model)
        turns = [m for m in messages if m.get("role") in ("user", "assistant")]
        if not turns or turns[-1]["role"] != "user" or not str(turns[-1]["content"]).strip():
            raise ValueError("the last message must be a non-empty user message (the question)")
        question, history = turns[-1]["content"], turns[:-1]
        engine = self.engine
        if max_tokens != self.answer_config.max_new_tokens or temperature:
            cfg = AnswerConfig(**{**self.answer_config.__dict__, "max_new_tokens": max_tokens,
                                  "temperature": temperature})
            engine = AnswerEngine(self.workspace, self.generator, searcher=self.searcher, config=cfg)
        if mode in RETRIEVAL_MODES and not self.has_index():
            raise NoIndexError("no documents are indexed yet")
        if mode in ADAPTER_MODES:
            adapter = adapter or self.default_adapter(mode)
        stream = engine.start(question, mode=mode, adapter=adapter, groups=self.groups_of(user), history=history)
        ticket = self.gate.reserve()
        completion = Completion(lambda: iter(()), lambda: (None, {}))
        completion.pieces = lambda: self.run_answer(ticket, stream, completion.cancel)

        def finish():
            res = stream.result
            if res is None:  # stopped early (client gone)
                return None, {}
            t = res.timings
            stats = GenerationStats(first_token_ms=float(t.get("first_token_ms") or 0.0),
                                    total_ms=float(t.get("total_ms") or 0.0), new_tokens=int(t.get("new_tokens") or 0),
                                    tokens_per_s=float(t.get("tokens_per_s") or 0.0),
                                    prompt_tokens=int(t.get("prompt_tokens") or 0),
                                    finish_reason=str(t.get("finish_reason") or "stop"))
            return stats, {"content": res.answer, "citations": [self.citation_json(c, base_url)
                                                                 for c in res.citations],
                           "ragtune": {"mode": res.mode, "adapter": res.adapter, "answer": res.answer,
                                       "refused": res.refused, "timings": res.timings,
                                       "sources": [{"n": c.n, "doc": c.doc, "section": c.section, "page": c.page}
                                                   for c in res.sources],
                                       "warnings": res.warnings, "user": user.name}}

        completion.finish = finish
        return completion

    @staticmethod
    def citation_json(c, base_url: str = "") -> dict:
        from serve.docs_admin import doc_link

        return {"n": c.n, "doc": c.doc, "section": c.section, "page": c.page, "text": c.text,
                "inferred": c.inferred, "url": doc_link(c.doc, c.section, c.page, base=base_url)}

    # ---- documents --------------------------------------------------------------------------------------------
    def _indexed_docs_dir(self) -> Path | None:
        from retrieve.store import indexed_docs_dir

        return indexed_docs_dir(self.workspace)  # a copied workspace's own, never the original's

    def may_open(self, user: User, rel: str) -> bool:
        """Whether the index lets this user open the document: its indexed groups are ones they may read (a file
        not indexed yet is judged by its own groups, which the viewer also checks). Admins are no exception:
        groups decide reading, the admin role decides managing (SECURITY.md)."""
        from ingest.types import can_read

        groups = self.docs.document_groups(rel)
        return groups is None or can_read(groups, self.groups_of(user))


def check_host(host: str, users_file: Path | None) -> None:
    if users_file is None and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host} without --users: single-user mode has no login and serves "
                         "this machine only (127.0.0.1). Create users with `ragtune users add NAME --users FILE` "
                         "and pass --users FILE to serve other machines.")
