"""Continuous batching for the local model: one scheduler thread owns the decode loop, and a request that arrives
while others decode joins the running batch instead of waiting for them to finish.

    batched = BatchingGenerator(local_generator(ws), max_batch=16)   # ragtune serve does this
    text = "".join(batched.stream(messages, adapter="hr"))            # from any number of threads at once

Each turn of the scheduler (`BatchScheduler._loop`): newcomers are prefilled one by one, alone, with their own
adapter, into a one-row KV cache; each one's first token is streamed at once and its cache joins the batch's, both
right-aligned at the longer length (left padding, which a [rows, length] attention mask hides). Then one decode
step feeds every row its last token at its own position id (its count of real tokens, so RoPE sees what a lone
run sees) and samples a token per row. A row leaves when it ends (end of turn, its token limit, or its reader
closed the stream); its cache row goes, and so do the columns that were padding in every row left. Prefilling
newcomers before the next step keeps time to first token short while others stream.

Rows may name different LoRA adapters or none: one adapter shared by every row is merged into the base weights as
in the lone path; a mix runs peft's unmerged LoRA layers with a per-row `adapter_names` list
(`LocalGenerator.forward_rows`). A batch of one computes what the lone path does (the same forward, no mask, the
adapter merged: the same logits to the bit); only the hand-over of tokens to the reading thread is added. The cache
writes into a preallocated buffer in place, where transformers' `DynamicLayer` copies all of it at every step.

Why not transformers' own `ContinuousBatchingManager` (`model.init_continuous_batching`): it packs all requests of
a step into one ragged row over a paged cache, while peft picks adapters per batch row (`adapter_names` indexes dim
0), so its requests could not each have their own LoRA adapter; and it switches the shared model to a paged
attention that the lone path and training on the same weights do not use. A padded batch leaves the model as is.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from generate.base import BackendError, GenerationStream, make_stats, pick_tokens
from generate.batch_cache import Batch, rows_layer_class
from generate.local import KEEP_ADAPTER, LocalGenerator

log = logging.getLogger(__name__)
_END = object()  # put in a row's queue after its last token
_RUNNING: weakref.WeakSet = weakref.WeakSet()  # schedulers to stop at exit, so none is mid-step when Python ends


@dataclass(eq=False)
class _Row:
    """One request in the batch. The scheduler thread writes it; the reading thread sets `cancelled` only."""

    prompt: list[int]
    adapter: str | None
    max_new: int
    temperature: float
    t0: float
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # token ids, then _END or an exception
    token: int = 0  # the last sampled token, fed at the next step
    pos: int = 0  # its position id: the row's real tokens in the cache
    n_new: int = 0
    t_first: float | None = None
    t_end: float | None = None
    finish: str = "aborted"
    done: bool = False
    cancelled: bool = False


# ---- the scheduler --------------------------------------------------------------------------------------------

def _pick(logits: Any, temperatures: list[float]) -> list[int]:
    """One token per row (`pick_tokens`), brought to the host: the one sync per step."""
    return pick_tokens(logits, temperatures).tolist()


class BatchScheduler:
    """The thread that owns the batch: `submit(row)` from any thread; rows stream out through their queues."""

    def __init__(self, generator: LocalGenerator, max_batch: int) -> None:
        self._gen = generator
        self.max_batch = max_batch
        self._stop_ids = frozenset(generator.loaded.stop_token_ids)
        self._device = generator.loaded.device
        self._batch = Batch(rows_layer_class())
        self._cond = threading.Condition()
        self._pending: deque[_Row] = deque()
        self._closed = False
        self.steps = self.row_steps = 0  # decode steps run, and rows summed over them (row_steps / steps: mean batch)
        self.prefills = self.prefill_tokens = 0  # newcomers prefilled, and their prompt tokens
        # seconds in the model's forward passes, by kind, model-lock waits included (evals.bench_load; on a CPU: on an
        # accelerator a pass returns before its kernels end)
        self.prefill_s = self.decode_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="ragtune-batch", daemon=True)
        self._thread.start()
        _RUNNING.add(self)

    @property
    def waiting(self) -> int:
        """Rows submitted and not yet admitted to the batch."""
        return len(self._pending)

    @property
    def active(self) -> int:
        """Rows in the running batch."""
        return len(self._batch.rows)

    def submit(self, row: _Row) -> None:
        with self._cond:
            if self._closed:
                raise BackendError("the local model's batch scheduler was closed")
            self._pending.append(row)
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread after its current step; rows still running end with an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while (newcomers := self._wait_for_work()) is not None:
                try:
                    for row in newcomers:
                        self._admit(row)
                    if self._batch.rows:
                        self._decode_step()
                except Exception as exc:  # noqa: BLE001 - a bug here must not leave readers waiting forever
                    log.exception("batch step failed")
                    self._fail(self._batch.rows + newcomers, exc)
                    self._batch.keep([False] * len(self._batch.rows))

    def _wait_for_work(self) -> list[_Row] | None:
        """The rows to admit now (waits while there is nothing to do); None once closed."""
        with self._cond:
            while not self._pending and not self._batch.rows and not self._closed:
                self._cond.wait()
            if self._closed:
                self._fail(self._batch.rows + list(self._pending), BackendError("the batch scheduler was closed"))
                self._batch.keep([False] * len(self._batch.rows))
                self._pending.clear()
                return None
            room = self.max_batch - len(self._batch.rows)
            return [self._pending.popleft() for _ in range(min(room, len(self._pending)))]

    def _admit(self, row: _Row) -> None:
        """Prefill a newcomer alone, stream its first token and join it to the batch (unless it ended)."""
        import torch

        if row.cancelled:
            self._finish(row, "aborted")
            return
        cache = self._batch.new_cache()
        ids = torch.tensor([row.prompt], dtype=torch.long, device=self._device)
        positions = torch.arange(len(row.prompt), dtype=torch.long, device=self._device).unsqueeze(0)
        t0 = time.perf_counter()
        try:
            logits = self._gen.forward_rows(ids, positions, cache, [row.adapter],
                                            others=tuple(r.adapter for r in self._batch.rows))
        except Exception as exc:  # noqa: BLE001 - the request fails, the scheduler goes on
            self._fail([row], exc)
            return
        finally:
            self.prefill_s += time.perf_counter() - t0
        self.prefills += 1
        self.prefill_tokens += len(row.prompt)
        row.pos = len(row.prompt)
        if self._emit(row, _pick(logits, [row.temperature])[0]):
            self._batch.add(row, cache)

    def _decode_step(self) -> None:
        batch = self._batch
        batch.keep([self._still_wanted(r) for r in batch.rows])
        if not batch.rows:
            return
        ids, positions, mask = batch.step_inputs(self._device)
        t0 = time.perf_counter()
        try:
            logits = self._gen.forward_rows(ids, positions, batch.cache, [r.adapter for r in batch.rows], mask)
        except Exception as exc:  # noqa: BLE001 - a failed step fails its rows; newcomers start a fresh batch
            self._fail(batch.rows, exc)
            batch.keep([False] * len(batch.rows))
            return
        finally:
            self.decode_s += time.perf_counter() - t0
        self.steps += 1
        self.row_steps += len(batch.rows)
        alive = []
        for row, token in zip(batch.rows, _pick(logits, [r.temperature for r in batch.rows])):
            row.pos += 1
            alive.append(self._emit(row, token))
        batch.keep(alive)

    def _still_wanted(self, row: _Row) -> bool:
        if row.cancelled:
            self._finish(row, "aborted")
        return not row.done

    def _emit(self, row: _Row, token: int) -> bool:
        """Hand a sampled token to the row's reader; False when the row ended with it."""
        row.n_new += 1
        if row.t_first is None:
            row.t_first = time.perf_counter()
        if token in self._stop_ids:
            self._finish(row, "stop")
            return False
        row.out.put(token)
        if row.n_new >= row.max_new:
            self._finish(row, "length")
            return False
        row.token = token
        return self._still_wanted(row)

    @staticmethod
    def _finish(row: _Row, reason: str) -> None:
        if not row.done:
            row.finish, row.t_end, row.done = reason, time.perf_counter(), True
            row.out.put(_END)

    @staticmethod
    def _fail(rows: list[_Row], exc: BaseException) -> None:
        for row in rows:
            if not row.done:
                row.t_end, row.done = time.perf_counter(), True
                row.out.put(exc)


# ---- the generator ----------------------------------------------------------------------------------------------

class BatchingGenerator:
    """A LocalGenerator whose `stream` calls share one continuously batched decode loop (the Generator
    protocol). Adapters, token counts and the context window are the wrapped generator's (attribute access
    passes through); its own `stream` still runs the lone path, taking turns with the batch's steps."""

    supports_adapters = True

    def __init__(self, generator: LocalGenerator, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        config = generator.loaded.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        kinds = set(getattr(text_config, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"}:
            raise ValueError(f"continuous batching needs full-attention layers, and {generator.name} has {kinds}; "
                             "serve it with --max-batch 1")
        self.local = generator
        self.name = generator.name
        self.max_batch = max_batch
        self.scheduler = BatchScheduler(generator, max_batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    @property
    def compute_lock(self) -> threading.Lock | None:
        """On a CPU, the lock the scheduler holds for each forward pass, for other model work in this process (the
        embedder's searches) to run between two steps: two thread teams on the same cores stall each other at
        every barrier. None on an accelerator."""
        return self.local.lock if self.local.loaded.device.type == "cpu" else None

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
               adapter: str | None = KEEP_ADAPTER) -> GenerationStream:
        """As LocalGenerator.stream, in the shared batch: text pieces as they become stable; `stats` once it ends.
        Closing the stream takes the row out of the batch at the next step."""
        return GenerationStream(lambda out: self._pieces(out, messages, max_new_tokens, temperature, adapter))

    def _pieces(self, out: GenerationStream, messages: list[dict], max_new_tokens: int, temperature: float,
                adapter: str | None) -> Any:
        t0 = time.perf_counter()
        prompt, max_new = self.local.prompt_ids(messages, max_new_tokens)
        if adapter is KEEP_ADAPTER:
            adapter = self.local.active_adapter
        elif adapter is not None and adapter not in self.local.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {self.local.adapters}")
        row = _Row(prompt, adapter, max_new, temperature, t0)
        self.scheduler.submit(row)
        detok = self.local.detokenizer()
        try:
            while (item := row.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                piece = detok.push(item)
                if piece:
                    yield piece
            tail = detok.flush()
            if tail:
                yield tail
        finally:
            row.cancelled = True  # read by the scheduler at its next step; no-op once the row ended
            finish = row.finish if row.done else "aborted"
            out.stats = make_stats(t0, row.t_first, row.t_end or time.perf_counter(), row.n_new, len(prompt), finish)

    def warmup(self) -> None:
        """One tiny generation through the batch, so the first request does not pay one-time costs."""
        for _ in self.stream([{"role": "user", "content": "Hello"}], max_new_tokens=4):
            pass

    def close(self) -> None:
        self.scheduler.close()


@atexit.register
def _stop_all() -> None:
    for scheduler in list(_RUNNING):
        scheduler.close()
