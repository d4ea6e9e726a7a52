"""The answer engine: one question in, an answer with citations out, in one of four modes.

    base    the model alone (closed book)              — the baseline for evaluation
    rag     base model + retrieved chunks
    tuned   base model + LoRA adapter, no retrieval
    hybrid  base model + LoRA adapter + retrieved chunks

The CLI, the app, the API and the evaluation all call `AnswerEngine.start(...)` (streaming) or `.answer(...)`.
Retrieved chunks are numbered in the prompt; `[n]` markers in the answer become citations (doc, section,
quoted passage). Each chunk is first cut to the sentences around the one most like the question (retrieve/focus.py);
when the answer from those focused passages is a refusal or is withheld as unsupported, the model gets a second
look at the whole chunks. Refusals: when retrieval finds nothing close enough (by dense cosine or by the share of
the question's terms a passage holds), the engine says so without generating; when the model says the documents
do not hold the answer, the result is marked `refused`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from generate.base import BackendError, BackendUnavailableError
from generate.citations import Citation
from generate.modes import ADAPTER_MODES, DEFAULT_MODE, FOCUS_WINDOW, MODES, RETRIEVAL_MODES
from generate.prompts import (REFUSAL, build_messages, cloze_prefix, is_refusal, looks_like_followup, neutralize,
                              support_score)
from generate.question_kind import coarse_kind
from generate.requests import plain_question
from ingest.types import can_read
from ingest.workspace import Workspace
from retrieve.focus import TERM_WEIGHT, focus_passages
from retrieve.lexical import term_cover
from serve.adapter_choice import pick_adapter
from serve.citing import VALUE_LEAD, cite, last_look
from serve.drafts import DraftGate

READ_AS = "read as "  # the warning that says which question a request was read as (generate/requests.py)
# a fact question reads the mode's focus window (generate/modes.py), but a why / how / yes-no question's answer spans
# sentences (the steps of a procedure), so it reads whole chunks
WHOLE_CHUNKS_FOR = ("explain",)  # generate.question_kind.coarse_kind: these read whole chunks in every mode


def focus_window_for(mode: str, question: str) -> int:
    """Sentences kept either side of the best one in each chunk (-1 = whole chunks) for this mode and question."""
    return -1 if coarse_kind(question) in WHOLE_CHUNKS_FOR else FOCUS_WINDOW[mode]


class AnswerError(ValueError):
    """A request that cannot be answered as asked (unknown mode, missing adapter, ...); the message says why."""


@dataclass
class AnswerConfig:
    k: int = 3  # chunks put in the prompt
    search_mode: str = "hybrid"  # how chunks are found: dense, bm25 or hybrid
    min_relevance: float = 0.30  # best dense cosine below this and min_term_cover unmet: refuse without generating
    min_term_cover: float = 0.5  # or a passage holds this share of the query's terms (names the embedder misses)
    context_tokens: int = 900  # token budget for retrieved text (keeps CPU prefill short and the window safe)
    max_new_tokens: int = 128
    temperature: float = 0.0
    history_turns: int = 4  # earlier messages of a conversation kept in the prompt
    min_support: float = 0.34  # share of the answer's content words that must appear in the passages it was given;
    # below it the answer is treated as a guess and replaced by the refusal (rag/hybrid only; 0 disables)
    focus_window: int | None = None  # each chunk cut to this many sentences either side of the one most like the
    # question (retrieve/focus.py); -1 = whole chunks; None = focus_window_for(mode, question)
    second_look: bool = True  # a refused or withheld answer from focused passages is asked again with whole chunks
    term_weight: float = TERM_WEIGHT  # focus: weight of the question's rare words beside the embedder's cosine
    value_lead: float = VALUE_LEAD  # serve/citing.better_value: lead another sentence needs to give its value


@dataclass
class Answer:
    question: str
    answer: str
    mode: str
    adapter: str | None
    citations: list[Citation]
    refused: bool
    timings: dict
    sources: list[Citation] = field(default_factory=list)  # every chunk given to the model, numbered
    search_query: str = ""
    warnings: list[str] = field(default_factory=list)
    degenerate: list[str] = field(default_factory=list)  # drafts withheld as degenerate: why (empty, question, echo)
    model: str = ""  # which model answered (generator_label); empty when no model was asked

    def to_json(self) -> dict:
        return {"question": self.question, "answer": self.answer, "mode": self.mode, "adapter": self.adapter,
                "model": self.model, "citations": [asdict(c) for c in self.citations], "refused": self.refused,
                "timings": self.timings, "search_query": self.search_query, "warnings": self.warnings,
                "degenerate": self.degenerate, "sources": [asdict(s) for s in self.sources]}


class AnswerStream:
    """Iterate for text pieces as they are generated; `result` holds the full Answer once iteration ends.
    `close()` stops early (and frees the model for the next request)."""

    def __init__(self, make: Callable[[AnswerStream], Iterator[str]]) -> None:
        self.result: Answer | None = None
        self._pieces = make(self)

    def __iter__(self) -> Iterator[str]:
        yield from self._pieces

    def close(self) -> None:
        """Safe to call at any time; ValueError while another thread is still iterating (it finishes itself)."""
        self._pieces.close()


def create_engine(workspace: Path, model: str | None = None, backend_url: str | None = None, api_key: str | None = None,
                  config: AnswerConfig | None = None, dtype: str = "auto") -> "AnswerEngine":
    """An engine on the generator `open_generator` gives for these options (`ragtune ask` and `eval`)."""
    return AnswerEngine(Path(workspace), open_generator(workspace, model, backend_url, api_key, dtype),
                        config=config)


def open_generator(workspace: Path, model: str | None = None, backend_url: str | None = None,
                   api_key: str | None = None, dtype: str = "auto"):
    """The generator of `--model`, `--backend-url` and `--api-key` (`ask`, `eval` and `serve` mean the same by
    them): the local model (default: the packaged SmolLM2, cached under WS/models; else a folder or hub id) or,
    with `backend_url`, any OpenAI-compatible chat-completions server, `model` then being the served model name
    (tuned and hybrid answers ask for the adapter's name instead: generate/remote.py). Options that cannot work
    raise ValueError naming the option: a server that cannot be reached or refuses the key, a model that does
    not load, a `dtype` (--dtype, the local model's weights) that is not one."""
    from generate.models import DTYPES, ModelLoadError

    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if backend_url:
        from generate.remote import OpenAIGenerator

        generator = OpenAIGenerator(backend_url, api_key, model or "default")
        try:
            generator.served_models()
        except BackendUnavailableError as exc:
            raise ValueError(f"--backend-url: {exc}; is the server running and does the URL end in /v1?") from None
        except BackendError as exc:
            raise ValueError(f"--api-key: {exc} (give the key with --api-key or $RAGTUNE_BACKEND_KEY)") from None
        return generator
    from generate.local import local_generator

    try:
        return local_generator(workspace, model, dtype)
    except ModelLoadError as exc:
        raise ValueError(f"--model: {exc}" if model else str(exc)) from None


def serving_generator(generator, max_batch: int):
    """The generator `ragtune serve` answers with: a local model shares one continuously batched decode loop among
    up to `max_batch` requests (generate/batching.py; rows may use different adapters); 1, or a backend server,
    is left as it is."""
    from generate.local import LocalGenerator

    if max_batch > 1 and isinstance(generator, LocalGenerator):
        from generate.batching import BatchingGenerator

        return BatchingGenerator(generator, max_batch)
    return generator


def generator_label(generator) -> str:
    """Which model answers, in words: 'SmolLM2-... (local)' or 'smollm2 at http://gpu:8000/v1'."""
    name = getattr(generator, "name", "") or type(generator).__name__
    url = getattr(generator, "base_url", None)
    return f"{name} at {url}" if isinstance(url, str) and url else f"{name} (local)"


def list_adapters(workspace: Path) -> list[str]:
    root = Workspace(workspace).adapters
    return sorted(p.name for p in root.iterdir() if (p / "adapter_config.json").is_file()) if root.is_dir() else []


def _add_stats(timings: dict, stats, attempts: int, t_gen: float, t0: float) -> None:
    """The generation's own figures (when the backend gave them), the tries and the wall times, into `timings`."""
    if stats is not None:
        timings.update(tokens_per_s=stats.tokens_per_s, prompt_tokens=stats.prompt_tokens,
                       new_tokens=stats.new_tokens, prefill_ms=round(stats.first_token_ms, 2),
                       finish_reason=stats.finish_reason)
    timings.update(attempts=attempts, generate_ms=round((time.perf_counter() - t_gen) * 1000, 2),
                   total_ms=round((time.perf_counter() - t0) * 1000, 2))


class AnswerEngine:
    """Ties a Searcher and a Generator together. `generator` is any object obeying the Generator protocol: the
    LocalGenerator (loads the adapter files itself) or an OpenAIGenerator (asks its server for the adapter's name,
    e.g. a vLLM LoRA module); one whose `supports_adapters` is False answers the modes without an adapter."""

    def __init__(self, workspace: Path, generator, searcher=None, config: AnswerConfig | None = None) -> None:
        self.workspace = Path(workspace)
        self.generator = generator
        self._searcher = searcher
        self.config = config or AnswerConfig()

    @property
    def searcher(self):
        if self._searcher is None:
            from retrieve import Searcher

            self._searcher = Searcher(self.workspace)
        return self._searcher

    def answer(self, question: str, **kwargs) -> Answer:
        stream = self.start(question, **kwargs)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def start(self, question: str, *, mode: str = DEFAULT_MODE, adapter: str | None = None,
              groups: frozenset[str] | set[str] = frozenset(), history: list[dict] | None = None,
              k: int | None = None) -> AnswerStream:
        """Check the request now (so errors surface before streaming starts) and return the stream."""
        question = (question or "").strip()
        if not question:
            raise AnswerError("the question is empty")
        if mode not in MODES:
            raise AnswerError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode in ADAPTER_MODES:
            adapter = self._prepare_adapter(adapter, mode)
        else:
            adapter = None
        return AnswerStream(lambda stream: self._run(stream, question, mode, adapter, frozenset(groups),
                                                     history or [], k))

    def _prepare_adapter(self, adapter: str | None, mode: str) -> str:
        available = list_adapters(self.workspace)
        if adapter is None:
            if not available:
                raise AnswerError(f"mode {mode!r} needs a tuned adapter, and none exists yet in "
                                  f"{Workspace(self.workspace).adapters}: run `ragtune synth` and `ragtune tune` first")
            adapter = pick_adapter(self.workspace, mode)  # 'default', else the newest one suited to the mode
        if adapter not in available:
            raise AnswerError(f"no adapter named {adapter!r} in {Workspace(self.workspace).adapters}"
                              + (f" (available: {', '.join(available)})" if available else ""))
        if not self.generator.supports_adapters:
            raise AnswerError(f"the {self.generator.name} backend cannot load LoRA adapters; "
                              "serve the adapter on that server and use its model name instead")
        if adapter not in self.generator.adapters:
            try:
                self.generator.load_adapter(adapter, str(Workspace(self.workspace).adapters / adapter))
            except BackendUnavailableError:
                raise
            except BackendError as exc:  # a broken adapter, or a server that does not serve it: say so, as for a name
                raise AnswerError(str(exc)) from exc
            except ValueError:  # "already loaded": a request asked at the same moment loaded it first
                if adapter not in self.generator.adapters:
                    raise
        return adapter

    def _retrieve(self, question: str, history: list[dict], groups: frozenset[str], k: int):
        """(query searched, readable hits, relevant: dense cosine >= min_relevance or term cover >= min_term_cover)."""
        query = question
        previous = [m["content"] for m in history if m.get("role") == "user" and m.get("content")]
        if previous and looks_like_followup(question):
            query = f"{previous[-1]} {question}"  # a follow-up is searched together with the question it follows
        hits = self.searcher.search(query, k=k, mode=self.config.search_mode, groups=groups)
        hits = [h for h in hits if can_read(h.chunk.groups, groups)]
        if self.config.search_mode != "dense" and hits:
            # fused scores are ranks, not similarities: ask the dense side how close the best chunk really is
            dense_best = self.searcher.search(query, k=1, mode="dense", groups=groups)
            best = dense_best[0].dense_score if dense_best else 0.0
        else:
            best = hits[0].dense_score if hits else 0.0
        cfg = self.config
        relevant = bool(hits) and (float(best or 0.0) >= cfg.min_relevance or
                                   term_cover(query, [h.chunk.text for h in hits]) >= cfg.min_term_cover)
        return query, hits, relevant

    def _run(self, stream: AnswerStream, question: str, mode: str, adapter: str | None,
             groups: frozenset[str], history: list[dict], k: int | None) -> Iterator[str]:
        cfg = self.config
        t0 = time.perf_counter()
        timings = {"retrieve_ms": 0.0, "first_token_ms": None, "tokens_per_s": 0.0, "total_ms": 0.0,
                   "prompt_tokens": 0, "new_tokens": 0}
        warnings: list[str] = []
        asked = plain_question(question)  # generate/requests: a request put the way the reader reads questions
        if asked != question:
            warnings.append(f"{READ_AS}{asked!r}")
        query = asked
        attempts: list[list[Citation]] = [[]]  # the passages of each try: focused first, then whole chunks
        if mode in RETRIEVAL_MODES:
            query, hits, relevant = self._retrieve(asked, history, groups, k or cfg.k)
            timings["retriever"] = getattr(hits[0], "retriever", "") if hits else ""  # Searcher.describe
            if not relevant:
                timings["retrieve_ms"] = timings["total_ms"] = round((time.perf_counter() - t0) * 1000, 2)
                stream.result = Answer(question, REFUSAL, mode, adapter, [], True, timings, [], query,
                                       ["no indexed passage is relevant enough to answer from"])
                yield REFUSAL
                return
            attempts = self._passages(hits, query, asked, mode, warnings)
            timings["retrieve_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        turns = history[-cfg.history_turns:] if cfg.history_turns else []
        options = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}
        if self.generator.supports_adapters:
            options["adapter"] = adapter  # chosen inside the generator's lock: concurrent requests cannot mix them
        t_gen = time.perf_counter()

        def shown(pieces):  # what reaches the reader; the first visible piece sets the time to first token
            for piece in pieces:
                if piece:
                    if timings["first_token_ms"] is None:
                        timings["first_token_ms"] = round((time.perf_counter() - t0) * 1000, 2)
                    yield piece

        degenerate: list[str] = []  # why each rejected draft was rejected
        for n_try, sources in enumerate(attempts, start=1):
            last = n_try == len(attempts)
            messages = build_messages(asked, sources, turns, with_context=mode in RETRIEVAL_MODES)
            gate = DraftGate(asked, hold_all=not last)  # a try that may be replaced is held back whole
            generation = self.generator.stream(messages, **options)
            try:
                for piece in generation:
                    yield from shown([gate.feed(piece)])
            finally:  # a reader gone mid-answer (close) stops the model now, not when the garbage collector runs
                generation.close()
            text, bad = gate.finish()
            if bad:
                degenerate.append(bad)
                refused, support = True, None
                warning = f"the model's draft was degenerate ({bad}: {text!r}) and was withheld"
            else:
                refused, warning, support = self._judge(text, sources, mode)
            timings.pop("support", None)
            if support is not None:
                timings["support"] = round(support, 3)
            if not refused or last:
                if not warning:
                    text = last_look(asked, text, sources, warnings, cfg.value_lead)
                    yield from shown([gate.rest() if gate.shown else text])  # nothing shown yet: the final text
                elif not gate.shown:
                    yield from shown([REFUSAL])  # withheld before any of it showed: the stream says what replaced it
                break
            why = "was degenerate" if bad else "was not supported by them" if warning else "was a refusal"
            warnings.append(f"the answer from the focused passages ({text!r}) {why}; answered again from the "
                            "whole passages")
        if warning:
            warnings.append(warning)
        _add_stats(timings, generation.stats, n_try, t_gen, t0)  # the last try's
        citations: list[Citation] = []
        if warning:  # withheld: the refusal replaces the unsupported answer
            text = REFUSAL
        elif not refused:
            text, citations = cite(text, sources, warnings)
        stream.result = Answer(question, text, mode, adapter, citations, refused, timings, sources, query, warnings,
                               degenerate, generator_label(self.generator))

    def _passages(self, hits, query: str, question: str, mode: str, warnings: list[str]) -> list[list[Citation]]:
        """The numbered passages to answer from, within the token budget: the focused ones first (when focusing
        is on and changes anything, and `second_look` is set, the whole chunks follow as a second try)."""
        cfg = self.config
        whole: list[Citation] = []
        budget = cfg.context_tokens
        for n, h in enumerate(hits, start=1):
            text, flagged = neutralize(h.chunk.text)
            if flagged:
                warnings.append(f"instruction-like text in {h.chunk.doc} was neutralised")
            cost = self._count(text)
            if cost > budget:
                if n > 1:
                    break
                text = self._truncate(text, budget)
            budget -= cost
            whole.append(Citation(n, h.chunk.doc, h.chunk.section, h.chunk.page, h.chunk.id, text))
        window = focus_window_for(mode, question) if cfg.focus_window is None else cfg.focus_window
        if window < 0:
            return [whole]
        focused_texts = focus_passages(self.searcher.embedder, cloze_prefix(query), [c.text for c in whole], window,
                                       cfg.term_weight)
        if focused_texts == [c.text for c in whole]:
            return [whole]
        focused = [replace(c, text=t) for c, t in zip(whole, focused_texts)]
        return [focused, whole] if cfg.second_look else [focused]

    def _judge(self, text: str, sources: list[Citation], mode: str) -> tuple[bool, str, float | None]:
        """(refused, why it was withheld, support): a refusal, or an answer whose words the passages lack."""
        refused = is_refusal(text)
        if refused or mode not in RETRIEVAL_MODES:
            return refused, "", None
        support = support_score(text, [s.text for s in sources])
        if support < self.config.min_support:
            return True, f"the model's answer was not supported by the documents and was withheld: {text!r}", support
        return False, "", support

    def _count(self, text: str) -> int:
        n = self.generator.count_tokens(text)
        return n if n is not None else len(text) // 4 + 1

    def _truncate(self, text: str, budget: int) -> str:
        words = text.split()
        while words and self._count(" ".join(words)) > budget:
            words = words[: int(len(words) * 0.8)]
        return " ".join(words)
