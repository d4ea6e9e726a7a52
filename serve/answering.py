"""Answering in `ragtune serve`: the app's chats and the API's completions over one engine, admitted at the gate
in front of the model (as many at once as it decodes together: serve/concurrency.py); the API's model names
(ragtune, ragtune-MODE, ragtune-MODE:ADAPTER).

    ticket, stream = answers.open_answer(user, "How many days of leave?", "rag")
    for piece in Answering.run_answer(ticket, stream): ...
"""

from __future__ import annotations

import threading

from generate.modes import ADAPTER_MODES, DEFAULT_MODE, MODES, RETRIEVAL_MODES
from serve.accounts import Accounts
from serve.adapter_settings import AdapterSettings
from serve.answer import AnswerConfig, AnswerEngine, AnswerError
from serve.concurrency import Gate, NoIndexError, Ticket
from serve.openai_api import Completion, ModelNotFoundError
from serve.users import User

MODEL_PREFIX = "ragtune-"
PLAIN_MODEL = "ragtune"  # answers in AdapterSettings.default_mode()


class Answering:
    def __init__(self, engine: AnswerEngine, gate: Gate, accounts: Accounts, settings: AdapterSettings,
                 docs) -> None:
        self.engine = engine
        self.answer_config = engine.config
        self.workspace, self.generator, self.searcher = engine.workspace, engine.generator, engine.searcher
        self.gate = gate
        self.accounts = accounts
        self.settings = settings
        self.docs = docs  # serve/docs_admin.DocsAdmin: whether an index exists yet

    def open_answer(self, user: User, question: str, mode: str, adapter: str | None = None,
                    history: list[dict] | None = None):
        """Check the request, take a place at the gate and return (ticket, stream). The caller must
        `ticket.wait()` before iterating and `ticket.release()` after (use `run_answer`)."""
        if mode in RETRIEVAL_MODES and not self.docs.has_index():
            raise NoIndexError("no documents are indexed yet: an admin can upload documents in the Documents tab "
                               "(or run `ragtune index DOCS --workspace WS`)")
        if mode in ADAPTER_MODES:
            adapter = adapter or self.settings.default_adapter(mode)
            if adapter is None:
                raise AnswerError(f"mode {mode!r} needs a tuned adapter and none exists yet: an admin can train one "
                                  "in the Tune tab (or run `ragtune synth` and `ragtune tune`); use mode rag meanwhile")
        stream = self.engine.start(question, mode=mode, adapter=adapter, groups=self.accounts.groups_of(user),
                                   history=history or [])
        ticket = self.gate.reserve()
        return ticket, stream

    @staticmethod
    def run_answer(ticket: Ticket, stream, cancel: threading.Event | None = None):
        """Iterate a stream from `open_answer` once the gate admits it; always releases the ticket."""
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
        adapters = self.settings.adapters()
        if adapters:
            ids += [f"{MODEL_PREFIX}{m}" for m in ADAPTER_MODES]
            for a in adapters:
                ids += [f"{MODEL_PREFIX}{m}:{a}" for m in ADAPTER_MODES]
        return ids

    def parse_model(self, model: str) -> tuple[str, str | None]:
        name = (model or "").strip()
        if name == PLAIN_MODEL:  # the better mode this workspace has shown, with its default adapter
            return self.settings.default_mode(), None
        if not name.startswith(MODEL_PREFIX):
            raise ModelNotFoundError(f"The model '{model}' does not exist; available: {self.model_ids()}")
        mode, _, adapter = name[len(MODEL_PREFIX):].partition(":")
        if mode not in MODES or (adapter and mode not in ADAPTER_MODES):
            raise ModelNotFoundError(f"The model '{model}' does not exist; available: {self.model_ids()}")
        if mode in ADAPTER_MODES:
            if adapter and adapter not in self.settings.adapters():
                raise ModelNotFoundError(f"The model '{model}' does not exist: no adapter {adapter!r}; "
                                         f"available: {self.model_ids()}")
            if not adapter and self.settings.default_adapter(mode) is None:
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
        if mode in RETRIEVAL_MODES and not self.docs.has_index():
            raise NoIndexError("no documents are indexed yet")
        if mode in ADAPTER_MODES:
            adapter = adapter or self.settings.default_adapter(mode)
        stream = engine.start(question, mode=mode, adapter=adapter, groups=self.accounts.groups_of(user), history=history)
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
                           "ragtune": {"mode": res.mode, "adapter": res.adapter, "model": res.model,
                                       "answer": res.answer,
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
