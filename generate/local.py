"""`LocalGenerator`: the local model behind the `Generator` protocol (generate/base.py), with its own decode loop
and LoRA adapters switched per request. `OpenAIGenerator` (generate/remote.py) is the other backend.

torch / transformers / peft / openai are imported lazily: importing this module must stay instant.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generate.base import BackendError, GenerationStream, check_messages, make_stats, pick_tokens
from ingest.workspace import Workspace

if TYPE_CHECKING:
    from generate.models import LoadedModel

log = logging.getLogger(__name__)

KEEP_ADAPTER: Any = object()
"""Default of LocalGenerator.stream(adapter=...): generate with whatever adapter is currently selected."""


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text pieces that never change afterwards.

    Decoding token by token breaks characters that span several byte-level tokens (emoji, CJK, accents) and
    loses SentencePiece's leading spaces. So we decode a short window (the previous piece's tokens plus the new
    ones) and emit only the part after the previous piece, and only once it no longer ends in U+FFFD
    (an incomplete UTF-8 sequence). The same idea as vLLM's / TGI's detokenizers.
    """

    def __init__(self, tokenizer: Any, lock: Any = None) -> None:
        self._tok = tokenizer
        self._lock = lock if lock is not None else threading.Lock()
        self._ids: list[int] = []
        self._prefix = 0  # start of the window that is decoded as context
        self._read = 0  # end of what has been emitted

    def _decode(self, ids: list[int]) -> str:
        with self._lock:
            return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the newly stable text (often "", never text that could still change)."""
        self._ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """Return whatever is left (even an incomplete character) at the end of generation."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text):]
        if final:
            self._prefix = self._read = len(self._ids)
        return ""


class LocalGenerator:
    """Runs a loaded transformers model in-process with its own decode loop.

    `ragtune serve` shares it among concurrent requests through generate/batching.py (continuous batching over
    `forward_rows`); `stream` here is the lone path. Why not `model.generate`: we need text pieces as soon as they
    are stable, exact timing, adapter selection per request and a CUDA-graph path. A bare loop (KV cache + argmax,
    nothing else per step) costs the same per token as `generate` on CPU (measured: equal CPU ms per token; the
    model forward dominates), and gives the same greedy tokens (tested).

    On CUDA the decode step is compiled with torch.compile(mode="reduce-overhead") (CUDA graphs) on a static
    KV cache when no adapter is loaded (with `compile_adapters`, also while the active one is merged); any failure
    there falls back to the plain loop for good. On CPU the plain loop with a dynamic cache is used: compiling
    took 50-65 s on the 2-core dev box and saved 7-15% per token, and a static cache was no faster there.
    """

    supports_adapters = True

    def __init__(self, loaded: LoadedModel, *, static_cache: bool | None = None,
                 compile_decode: bool | None = None, merge_adapters: bool = True,
                 compile_adapters: bool = False) -> None:
        """`static_cache` / `compile_decode`: None = the measured default for the device (see class doc).
        `merge_adapters`: merge the active LoRA adapter into the base weights (faster decoding; see _apply_active).
        `compile_adapters`: the compiled step also while the active adapter is merged (a merge rewrites weights in
        place, which a captured graph reads); off until a GPU measures it (evals/gpu_session.sh); an attribute that
        may be switched between calls."""
        self.name: str = loaded.name
        self._loaded = loaded
        self._base = loaded.model
        self._tok = loaded.tokenizer
        self._device = loaded.device
        self._stop_ids = frozenset(loaded.stop_token_ids)
        is_cuda = loaded.device.type == "cuda"
        self._static = is_cuda if static_cache is None else static_cache
        self._compile = is_cuda if compile_decode is None else compile_decode
        self._compiled_step: Any = None
        self._static_caches: dict[int, Any] = {}
        params = inspect.signature(type(self._base).forward).parameters
        # transformers 5.x renamed past_key_values -> cache (the old name warns); use whichever this version has.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_logits = "logits_to_keep" in params
        self._lock = threading.Lock()  # one generation (and adapter change) at a time
        # A Hugging Face fast tokenizer must not be used by two threads at once ("Already borrowed"), and callers
        # count tokens for their next prompt while another request is decoding: a separate, short-held lock.
        self._tok_lock = threading.Lock()
        self._peft: Any = None
        self._adapters: list[str] = []
        self._active: str | None = None
        self._mixed = False  # a batch of rows with different adapters: all unmerged, chosen per row (forward_rows)
        self._merged: str | None = None  # the adapter whose weights are merged into the base right now
        self._merge = merge_adapters
        self.compile_adapters = compile_adapters

    # ---- budgeting helpers -------------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        """Maximum tokens (prompt + answer) the model supports."""
        return self._loaded.context_window

    def count_tokens(self, text: str) -> int:
        with self._tok_lock:
            return len(self._tok.encode(text, add_special_tokens=False))

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the chat-templated prompt, as `stream` will feed it."""
        return len(self._encode_chat(check_messages(messages)))

    # ---- adapters ------------------------------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    @property
    def active_adapter(self) -> str | None:
        return self._active

    def load_adapter(self, name: str, path: str) -> None:
        """Load a peft LoRA adapter onto the shared base model (it stays inactive until `use_adapter(name)`)."""
        from peft import PeftModel

        with self._lock:
            if name in self._adapters:
                raise ValueError(f"adapter {name!r} is already loaded")
            try:
                if self._peft is None:  # wraps the base model in place: LoRA layers are injected into it
                    self._peft = PeftModel.from_pretrained(self._base, path, adapter_name=name, is_trainable=False)
                else:
                    self._unmerge()  # peft would unmerge anyway, warning per layer; _apply_active merges back
                    self._peft.load_adapter(path, adapter_name=name, is_trainable=False)
            except (OSError, ValueError) as exc:
                raise BackendError(f"could not load LoRA adapter {name!r} from {path}: {exc}") from exc
            self._peft.eval()
            self._adapters.append(name)
            self._compiled_step = None  # the module graph changed
            self._apply_active()

    def use_adapter(self, name: str | None) -> None:
        """Switch to a loaded adapter, or None for the plain base model; no weights are reloaded.
        With concurrent requests prefer `stream(..., adapter=name)`, which selects it inside the same lock."""
        with self._lock:
            self._select(name)

    def _select(self, name: str | None) -> None:
        if name is not None and name not in self._adapters:
            raise ValueError(f"unknown adapter {name!r}; loaded: {self._adapters}")
        if name != self._active or self._mixed:
            self._active, self._mixed = name, False
            self._apply_active()

    def _apply_active(self) -> None:
        """Make the model compute with `self._active`. The active adapter is merged into the base weights (peft
        merge_adapter), so a tuned answer decodes as fast as a base one: unmerged LoRA layers run two extra
        matmuls per projection per token (measured 16.6 vs 23.1 tok/s). Switching unmerges first; peft
        subtracts the same delta it added, so the base weights come back to within float rounding."""
        if self._peft is None:
            return
        tuner = self._peft.base_model
        if self._mixed:  # peft's per-row adapter_names need every LoRA layer unmerged and enabled
            self._unmerge()
            tuner.enable_adapter_layers()
            return
        if self._merged != self._active:
            self._unmerge()
        if self._active is None:
            tuner.disable_adapter_layers()  # LoRA layers then return the base layer's output
            return
        self._peft.set_adapter(self._active)
        tuner.enable_adapter_layers()
        if self._merge and self._merged is None:
            tuner.merge_adapter([self._active])
            self._merged = self._active

    def _unmerge(self) -> None:
        """Take the merged adapter's delta back out of the base weights (no-op when none is merged)."""
        if self._merged is not None:
            self._peft.base_model.unmerge_adapter()
            self._merged = None

    # ---- generation ----------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """Run one tiny generation so one-time costs (allocator, kernel choice and, on CUDA, compiling and graph
        capture of the decode step for the smallest cache bucket) are not paid by the first real request."""
        for _ in self.stream([{"role": "user", "content": "Hello"}], max_new_tokens=4):
            pass

    def _encode_chat(self, messages: list[dict]) -> list[int]:
        with self._tok_lock:
            out = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        return list(ids)

    def _forward(self, ids: Any, positions: Any, cache: Any, attention_mask: Any = None,
                 adapter_names: list[str] | None = None) -> Any:
        """One forward pass; returns logits of the last position only (the full [seq, vocab] is never built).
        `adapter_names` (one per row) goes through the peft model, which routes each row to its LoRA."""
        kwargs = {self._cache_kw: cache, "use_cache": True, "position_ids": positions}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        if adapter_names is not None:
            return self._peft(input_ids=ids, adapter_names=adapter_names, **kwargs).logits[:, -1, :]
        return self._base(input_ids=ids, **kwargs).logits[:, -1, :]

    def forward_rows(self, ids: Any, positions: Any, cache: Any, adapters: list[str | None],
                     attention_mask: Any = None, others: tuple = ()) -> Any:
        """One forward pass over a batch whose rows each name an adapter (or None); returns each row's last
        logits. Rows that all share one adapter run it merged, exactly as `stream` does; a mix runs the unmerged
        LoRA layers with peft's per-row `adapter_names` ("__base__" for a row without one). `others`: the adapters
        of rows running beside these (a newcomer's prefill) count as part of the mix, and a mix stays one while
        more than one row runs: merging or unmerging rewrites every adapted weight. Takes the model lock for this
        one pass, so adapters load between two steps."""
        with self._lock:
            stay_mixed = self._mixed and len(adapters) + len(others) > 1
            if len(set(adapters) | set(others)) == 1 and not stay_mixed:
                self._select(adapters[0])
                return self._forward(ids, positions, cache, attention_mask)
            if unknown := [name for name in adapters if name is not None and name not in self._adapters]:
                raise ValueError(f"unknown adapter {unknown[0]!r}; loaded: {self._adapters}")
            if not self._mixed:
                self._mixed = True
                self._apply_active()
            names = [name if name is not None else "__base__" for name in adapters]
            return self._forward(ids, positions, cache, attention_mask, adapter_names=names)

    def prompt_ids(self, messages: list[dict], max_new_tokens: int) -> tuple[list[int], int]:
        """(the chat-templated prompt's token ids, the new tokens that fit after it in the context window)."""
        messages = check_messages(messages)
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        prompt = self._encode_chat(messages)
        if len(prompt) >= self.context_window:
            raise BackendError(f"prompt has {len(prompt)} tokens; the model's context window is {self.context_window}")
        return prompt, min(max_new_tokens, self.context_window - len(prompt))

    def detokenizer(self) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self._tok, self._tok_lock)

    @property
    def lock(self) -> threading.Lock:
        """The model lock: held for a whole lone generation, or for one forward pass of a batch (forward_rows)."""
        return self._lock

    @property
    def loaded(self) -> LoadedModel:
        """The model, tokenizer, device and end-of-turn ids this generator runs."""
        return self._loaded

    def _new_cache(self, needed: int) -> Any:
        from transformers import DynamicCache, StaticCache

        if not self._static:
            return DynamicCache(config=self._base.config)
        # Power-of-two buckets: few distinct shapes, so a compiled/graphed step is rebuilt rarely, and the same
        # cache tensors (stable addresses, which CUDA graphs need) are reused across requests.
        size = min(max(256, 1 << (needed - 1).bit_length()), self.context_window)
        cache = self._static_caches.get(size)
        if cache is None:
            cache = StaticCache(config=self._base.config, max_cache_len=size)
            self._static_caches = {size: cache}  # keep one: memory stays bounded
        else:
            cache.reset()
        return cache

    def _step_fn(self) -> Any:
        """The decode-step callable: compiled (CUDA graphs) when enabled and possible, else plain eager."""
        merged_only = self.compile_adapters and self._merge and not self._mixed and self._merged == self._active
        if not (self._compile and self._static and (self._peft is None or merged_only)):
            return self._forward
        import torch

        if self._compiled_step is None:
            self._compiled_step = torch.compile(self._forward, mode="reduce-overhead", dynamic=False)
        compiled = self._compiled_step

        def step(ids: Any, positions: Any, cache: Any) -> Any:
            if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
                torch.compiler.cudagraph_mark_step_begin()
            # positions is a view into a per-request tensor; a fresh [1, 1] copy keeps its strides constant
            # (else every request would recompile), and graph outputs are overwritten by the next replay.
            fresh = positions.clone(memory_format=torch.contiguous_format)
            return compiled(ids, fresh, cache).clone()

        return step

    def _recover(self, exc: Exception, tokens: list[int], total: int) -> tuple[Any, Any]:
        """The compiled step failed: disable it for good and rebuild the KV cache eagerly from all tokens so far
        (a failed call may have half-updated the cache). Returns (logits of the last token, new cache)."""
        import torch

        log.warning("compiled decode step failed (%s: %s); using the plain loop", type(exc).__name__, exc)
        self._compile, self._compiled_step = False, None
        cache = self._new_cache(total)
        ids = torch.tensor([tokens], dtype=torch.long, device=self._device)
        positions = torch.arange(len(tokens), dtype=torch.long, device=self._device).unsqueeze(0)
        return self._forward(ids, positions, cache), cache

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
               adapter: str | None = KEEP_ADAPTER) -> GenerationStream:
        """Answer text pieces as they become stable; greedy when temperature <= 0. The stream's `stats` describe
        this call once it ends.

        `adapter` (a loaded adapter name, or None for the base model) is selected under the same lock as the
        generation, so concurrent requests with different adapters cannot switch each other's model midway.
        Holds the model lock until the iterator is exhausted or closed, so concurrent callers take turns (do not
        call use_adapter/load_adapter from inside a loop over this iterator: that would wait for itself)."""
        return GenerationStream(lambda out: self._decode(out, messages, max_new_tokens, temperature, adapter))

    def _decode(self, out: GenerationStream, messages: list[dict], max_new_tokens: int, temperature: float,
                adapter: str | None) -> Iterator[str]:
        import torch

        prompt, max_new = self.prompt_ids(messages, max_new_tokens)  # a bad request fails without waiting
        n_prompt = len(prompt)
        with self._lock:
            t0 = time.perf_counter()
            if adapter is not KEEP_ADAPTER:
                self._select(adapter)
            t_first: float | None = None
            n_new, finish = 0, "aborted"
            generated: list[int] = []
            detok = self.detokenizer()
            try:
                with torch.inference_mode():
                    dev = self._device
                    ids = torch.tensor([prompt], dtype=torch.long, device=dev)
                    positions = torch.arange(n_prompt + max_new, dtype=torch.long, device=dev)
                    cache = self._new_cache(n_prompt + max_new)
                    logits = self._forward(ids, positions[:n_prompt].unsqueeze(0), cache)
                    step = self._step_fn()
                    while True:
                        next_id = pick_tokens(logits, [temperature]).view(1, 1)
                        token = int(next_id)  # the only host sync per step
                        n_new += 1
                        if t_first is None:
                            t_first = time.perf_counter()
                        if token in self._stop_ids:
                            finish = "stop"
                            break
                        piece = detok.push(token)
                        if piece:
                            yield piece
                        if n_new >= max_new:
                            finish = "length"
                            break
                        generated.append(token)
                        pos = n_prompt + n_new - 1
                        try:
                            logits = step(next_id.view(1, 1), positions[pos:pos + 1].unsqueeze(0), cache)
                        except Exception as exc:  # noqa: BLE001 - only the compiled step is retried
                            if step is self._forward:
                                raise
                            logits, cache = self._recover(exc, prompt + generated, n_prompt + max_new)
                            step = self._forward
                tail = detok.flush()
                if tail:
                    yield tail
            finally:
                out.stats = make_stats(t0, t_first, time.perf_counter(), n_new, n_prompt, finish)


def local_generator(workspace: Path, model: str | None = None, dtype: str = "auto") -> LocalGenerator:
    """The local model of a workspace: `model` (a folder or hub id) or the packaged SmolLM2, dequantized once into
    WS/models. The one place the app, `ragtune ask` / `eval` and the local synth teacher build it:
    `generator = local_generator(Path("ws"))`."""
    from generate.models import ModelConfig, load_model

    cfg = ModelConfig(cache_dir=Workspace(workspace).models, dtype=dtype)
    if model:
        cfg.model = model
    return LocalGenerator(load_model(cfg))
