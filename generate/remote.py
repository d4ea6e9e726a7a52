"""The OpenAI-compatible backend of the `Generator` protocol (generate/base.py): streams from any
chat-completions server (vLLM, llama.cpp server, Ollama, a company GPU server) with the official `openai`
client, imported lazily. Used for `ragtune ask --backend-url` and as the synth teacher (`--teacher URL`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from generate.base import BackendError, BackendUnavailableError, GenerationStream, check_messages, make_stats


class OpenAIGenerator:
    """Streams from an OpenAI-compatible chat-completions endpoint with the official `openai` client."""

    supports_adapters = False  # an adapter is served by that server under its own model name

    def __init__(self, base_url: str, api_key: str | None = None, model: str = "default", *,
                 timeout: float = 120.0, max_retries: int = 1) -> None:
        from openai import OpenAI

        self.name: str = model
        self.base_url = base_url
        self.model = model
        # Local servers usually ignore the key, but the client insists on one; a placeholder keeps it from
        # looking at the environment.
        self._client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout,
                              max_retries=max_retries)

    def count_tokens(self, text: str) -> int | None:
        return None  # the server's tokenizer is not ours to call: the engine estimates

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0) -> GenerationStream:
        """The server's answer, piece by piece; the stream's `stats` use the server's token counts when it sends
        them."""
        return GenerationStream(lambda out: self._pieces(out, messages, max_new_tokens, temperature))

    def _pieces(self, out: GenerationStream, messages: list[dict], max_new_tokens: int,
                temperature: float) -> Iterator[str]:
        import openai

        messages = check_messages(messages)
        t0 = time.perf_counter()
        t_first: float | None = None
        deltas, usage, finish = 0, None, "aborted"
        try:
            events = self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_new_tokens, temperature=temperature,
                stream=True, stream_options={"include_usage": True},
            )
            with events:
                for chunk in events:
                    if getattr(chunk, "usage", None):
                        usage = chunk.usage
                    for choice in chunk.choices or []:
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        piece = choice.delta.content if choice.delta is not None else None
                        if piece:
                            if t_first is None:
                                t_first = time.perf_counter()
                            deltas += 1
                            yield piece
        except openai.APIConnectionError as exc:
            raise BackendUnavailableError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is it running and is the URL right (usually ending in /v1)?"
            ) from exc
        except openai.APIStatusError as exc:
            raise BackendError(
                f"server at {self.base_url} answered HTTP {exc.status_code} for model {self.model!r}: {exc.message}"
            ) from exc
        except openai.APIError as exc:  # e.g. an error event in the middle of the stream
            raise BackendError(f"server at {self.base_url} failed for model {self.model!r}: {exc.message}") from exc
        finally:
            new_tokens = int(usage.completion_tokens) if usage is not None else deltas
            prompt_tokens = int(usage.prompt_tokens or 0) if usage is not None else 0
            out.stats = make_stats(t0, t_first, time.perf_counter(), new_tokens, prompt_tokens, finish)
