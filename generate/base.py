"""The `Generator` protocol every text backend implements, so the engine streams answers from the local model
(generate/local.py) or any OpenAI-compatible server (generate/remote.py: vLLM, llama.cpp server, Ollama, ...)
without caring which; plus the stats and errors they share, and `pick_tokens`, how both local decode loops pick.

torch / transformers / peft / openai are imported lazily by the backends: importing this module stays instant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class BackendError(RuntimeError):
    """A generation backend failed (bad request, server error, prompt too long, ...)."""


class BackendUnavailableError(BackendError):
    """The backend server could not be reached; the message names its URL."""


@dataclass
class GenerationStats:
    """Timing of one `stream` call. tokens_per_s is the decode rate after the first token, so it does not
    mix in the prompt processing that first_token_ms already measures."""

    first_token_ms: float
    total_ms: float
    new_tokens: int  # generated tokens, including the end-of-turn token when the model emitted one
    tokens_per_s: float
    prompt_tokens: int  # 0 when a remote server does not report usage
    finish_reason: str = "stop"  # "stop" (end of turn), "length" (hit max_new_tokens) or "aborted"


class GenerationStream:
    """One `stream` call: iterate for the text pieces; `stats` describes this call once the pieces are exhausted
    or the stream is closed (None before). Each call has its own, so concurrent requests never read each other's.

        s = generator.stream(messages)
        text = "".join(s)
        s.stats.tokens_per_s
    """

    def __init__(self, make: Callable[[GenerationStream], Iterator[str]]) -> None:
        self.stats: GenerationStats | None = None
        self._pieces = make(self)  # a generator that sets self.stats in its `finally`

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early: ends the backend's generation (and frees the local model's lock); stats say "aborted"."""
        self._pieces.close()


class Generator(Protocol):
    """What the engine needs from a backend: a per-call stream of text, and what the backend can do."""

    name: str
    supports_adapters: bool
    """True: `adapters`, `load_adapter(name, path)` exist and `stream(..., adapter=NAME)` answers with one."""

    def stream(
        self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0, **options
    ) -> GenerationStream: ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` in this model's tokenizer; None when the backend cannot tell (callers estimate)."""


def make_stats(t0: float, t_first: float | None, t_end: float, new_tokens: int, prompt_tokens: int,
           finish_reason: str) -> GenerationStats:
    first_ms = ((t_first if t_first is not None else t_end) - t0) * 1000.0
    decode_s = t_end - t_first if t_first is not None else 0.0
    rate = (new_tokens - 1) / decode_s if new_tokens > 1 and decode_s > 0 else 0.0
    return GenerationStats(round(first_ms, 2), round((t_end - t0) * 1000.0, 2), new_tokens, round(rate, 2),
                           prompt_tokens, finish_reason)


def check_messages(messages: list[dict]) -> list[dict]:
    if not messages:
        raise ValueError("messages must not be empty")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"each message needs a string 'role' and string 'content', got {m!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def pick_tokens(logits: Any, temperatures: list[float]) -> Any:
    """The next token of each row, on the logits' device (no host sync): the argmax, or a sample at the row's
    temperature where it is > 0. The lone decode loop and the batch scheduler both pick with it."""
    import torch

    tokens = logits.argmax(dim=-1)
    for i, t in enumerate(temperatures):
        if t and t > 0:
            tokens[i] = torch.multinomial(torch.softmax(logits[i].float() / t, dim=-1), 1)[0]
    return tokens
