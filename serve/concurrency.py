"""Sharing one model and one embedder among many users: a FIFO gate in front of the generator, and an embedder
whose encode calls are serialised and sliced so a background re-index delays a search by one slice at most.
Used by serve/server.py."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

from serve.answer import AnswerError
from serve.openai_api import BusyError


class NoIndexError(AnswerError):
    """The workspace has no index yet (the app still runs; an admin uploads documents)."""

# ---- the model gate --------------------------------------------------------------------------------------------

class Gate:
    """FIFO admission to the model: `reserve()` takes a place in line (or raises BusyError when `max_waiting`
    are already waiting for a slot), `Ticket.wait()` blocks until it is at the front and a slot is free.
    `max_active` slots: 1 for the lone local loop, the batch size for the batched one (generate/batching.py),
    `backend_parallel` for a backend server."""

    def __init__(self, max_active: int = 1, max_waiting: int = 32) -> None:
        self.max_active = max_active
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._line: deque[Ticket] = deque()
        self._active = 0
        self.served = 0
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def active(self) -> int:
        return self._active

    def reserve(self, force: bool = False) -> "Ticket":
        """A place in line; BusyError when `max_waiting` are queued (background jobs pass force=True: they wait
        instead of failing)."""
        with self._cond:
            # tickets in line that a free slot will take at once are not waiting: a burst that fits the slots
            # is never refused, however small max_waiting is
            queued = len(self._line) - max(0, self.max_active - self._active)
            if queued >= self.max_waiting and not force:
                self.refused += 1
                raise BusyError(f"the server is busy: {queued} answers are already waiting for the model; "
                                "try again in a moment")
            ticket = Ticket(self)
            self._line.append(ticket)
            return ticket


class Ticket:
    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self.state = "waiting"  # waiting -> active -> done
        self.waited_s = 0.0

    def wait(self, cancel: threading.Event | None = None, timeout: float = 600.0) -> None:
        g = self._gate
        t0 = time.monotonic()
        with g._cond:
            while not (g._line and g._line[0] is self and g._active < g.max_active):
                if cancel is not None and cancel.is_set():
                    self._leave_line()
                    raise BusyError("the request was cancelled while waiting")
                if time.monotonic() - t0 > timeout:
                    self._leave_line()
                    raise BusyError(f"waited {timeout:.0f} s for the model; try again later")
                g._cond.wait(0.25)
            g._line.popleft()
            g._active += 1
            self.state = "active"
            g._cond.notify_all()
        self.waited_s = time.monotonic() - t0

    def _leave_line(self) -> None:  # caller holds the condition
        if self in self._gate._line:
            self._gate._line.remove(self)
        self.state = "done"
        self._gate._cond.notify_all()

    def release(self) -> None:
        g = self._gate
        with g._cond:
            if self.state == "active":
                g._active -= 1
                g.served += 1
            elif self.state == "waiting":
                self._leave_line()
            self.state = "done"
            g._cond.notify_all()


# ---- the shared embedder ----------------------------------------------------------------------------------------

class SharedEmbedder:
    """One embedding model for searches and background jobs. Encode calls are serialised and cut into slices of
    `slice_size` texts. Indexing jobs get `for_job()`: the same model, but a tokenizer of their own for chunking.
    `lock`: the lock that serialises them, by default its own; the batched local model's `compute_lock`, so that a
    search runs between two decode steps instead of competing with one for the CPU cores."""

    def __init__(self, base, slice_size: int = 32, lock=None) -> None:
        self._base = base
        self._lock = lock if lock is not None else threading.Lock()
        self._slice = slice_size
        self._job_tokenizer = None

    @property
    def base(self):
        return self._base

    def encode(self, texts, progress: bool = False, desc: str = "embedding"):
        import numpy as np

        texts = list(texts)
        if len(texts) <= self._slice:
            with self._lock:
                return self._base.encode(texts)
        parts = []
        for start in range(0, len(texts), self._slice):
            with self._lock:
                parts.append(self._base.encode(texts[start:start + self._slice]))
        return np.concatenate(parts, axis=0)

    def for_job(self) -> "SharedEmbedder":
        job = SharedEmbedder.__new__(SharedEmbedder)
        job._base, job._lock, job._slice = self._base, self._lock, self._slice
        if self._job_tokenizer is None:
            from transformers import AutoTokenizer

            self._job_tokenizer = AutoTokenizer.from_pretrained(self._base.path)
        job._job_tokenizer = self._job_tokenizer
        return job

    @property
    def tokenizer(self):
        return self._job_tokenizer if self._job_tokenizer is not None else self._base.tokenizer

    def __getattr__(self, name):
        return getattr(self._base, name)


class LazySearcher:
    """A Searcher created on first use, so the server starts without an index; raises NoIndexError until one
    exists. Swaps to new generations by itself (retrieve.Searcher does that)."""

    def __init__(self, workspace: Path, shared: "_EmbedderSlot") -> None:
        self.workspace = Path(workspace)
        self._slot = shared
        self._searcher = None
        self._lock = threading.Lock()

    def get(self):
        if self._searcher is None:
            from retrieve import Searcher
            from retrieve.store import IndexMissingError

            with self._lock:
                if self._searcher is None:
                    try:
                        self._searcher = Searcher(self.workspace, embedder=self._slot.get())
                    except IndexMissingError:
                        raise NoIndexError("no documents are indexed yet: an admin can upload documents in the "
                                           "Documents tab (or run `ragtune index DOCS --workspace WS`)") from None
        return self._searcher

    def search(self, *args, **kwargs):
        return self.get().search(*args, **kwargs)

    @property
    def generation(self):
        return self.get().generation

    @property
    def embedder(self):
        return self.get().embedder


class _EmbedderSlot:
    """Holds the SharedEmbedder; made on first need from the index's embedder setting."""

    def __init__(self, workspace: Path, embedder=None, lock=None) -> None:
        self.workspace = Path(workspace)
        self._encode_lock = lock  # SharedEmbedder's `lock`
        self._shared = SharedEmbedder(embedder, lock=lock) if embedder is not None else None
        self._lock = threading.Lock()

    def get(self) -> SharedEmbedder:
        if self._shared is None:
            with self._lock:
                if self._shared is None:
                    from retrieve import EmbedConfig, Embedder
                    from retrieve.store import IndexMissingError, load_current

                    try:
                        model = load_current(self.workspace).manifest.settings.get("embed_model")
                    except IndexMissingError:
                        model = None
                    self._shared = SharedEmbedder(Embedder(EmbedConfig(model=model) if model else EmbedConfig()),
                                                  lock=self._encode_lock)
        return self._shared
