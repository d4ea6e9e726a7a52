"""The OpenAI-compatible backend of the `Generator` protocol (generate/base.py): streams from any
chat-completions server (vLLM, llama.cpp server, Ollama, a company GPU server) with the official `openai`
client, imported lazily. Used for `--backend-url` (`ragtune ask`, `eval`, `serve`) and as the synth teacher
(`--teacher URL`).

Adapters the way vLLM serves them: a server started with `--enable-lora --lora-modules NAME=WS/adapters/NAME`
answers a request whose `model` is NAME with that LoRA adapter, and one whose `model` is the base model's served
name without one. So a tuned or hybrid request names its adapter as the request's model, a rag or base request
names `model` (ragtune's `--model`):

    gen = OpenAIGenerator("http://gpu:8000/v1", model="smollm2")
    gen.load_adapter("demo", "ws/adapters/demo")   # checks that the server lists "demo"; loads nothing itself
    gen.stream(messages, adapter="demo")           # POST /v1/chat/completions {"model": "demo", ...}
    gen.stream(messages)                            # {"model": "smollm2", ...}
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from generate.base import BackendError, BackendUnavailableError, GenerationStream, check_messages, make_stats


class OpenAIGenerator:
    """Streams from an OpenAI-compatible chat-completions endpoint with the official `openai` client."""

    supports_adapters = True  # an adapter is the server's model of the same name (vLLM --lora-modules NAME=PATH)

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
        self._adapters: list[str] = []

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    def load_adapter(self, name: str, path: str) -> None:
        """Answer `stream(..., adapter=name)` with the server's model `name`. The server loads the files itself
        (`path` is where ragtune keeps them, for the message), so this only checks that the server lists the name,
        when it lists its models at all."""
        served = self.served_models()
        if served is not None and name not in served:
            raise BackendError(
                f"the server at {self.base_url} does not serve the adapter {name!r} (it serves: "
                f"{', '.join(served) or 'nothing'}); start vLLM with --enable-lora --lora-modules {name}={path}")
        if name not in self._adapters:
            self._adapters.append(name)

    def served_models(self, timeout: float = 10.0) -> list[str] | None:
        """The model ids the server lists (GET /models; vLLM lists each --lora-modules NAME beside the base model),
        or None when it has no such list. BackendUnavailableError when it cannot be reached, BackendError when it
        refuses the key."""
        import openai

        try:
            page = self._client.with_options(timeout=timeout, max_retries=0).models.list()
            return [m.id for m in page.data]
        except openai.APIConnectionError as exc:
            raise BackendUnavailableError(f"cannot reach the OpenAI-compatible server at {self.base_url} "
                                          f"({type(exc).__name__}: {exc})") from exc
        except openai.AuthenticationError as exc:
            raise BackendError(f"the server at {self.base_url} refused the API key (HTTP 401)") from exc
        except (openai.APIStatusError, openai.APIResponseValidationError, AttributeError, TypeError):
            return None  # reachable, but no model list in OpenAI's shape

    def count_tokens(self, text: str) -> int | None:
        return None  # the server's tokenizer is not ours to call: the engine estimates

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
               adapter: str | None = None) -> GenerationStream:
        """The server's answer, piece by piece, from the model `adapter` (a name given to `load_adapter`) or, with
        None, the base model; the stream's `stats` use the server's token counts when it sends them."""
        if adapter is not None and adapter not in self._adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {self._adapters}")
        model = adapter if adapter is not None else self.model
        return GenerationStream(lambda out: self._pieces(out, messages, max_new_tokens, temperature, model))

    def _pieces(self, out: GenerationStream, messages: list[dict], max_new_tokens: int,
                temperature: float, model: str) -> Iterator[str]:
        import openai

        messages = check_messages(messages)
        t0 = time.perf_counter()
        t_first: float | None = None
        deltas, usage, finish = 0, None, "aborted"
        try:
            events = self._client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_new_tokens, temperature=temperature,
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
                f"server at {self.base_url} answered HTTP {exc.status_code} for model {model!r}: {exc.message}"
            ) from exc
        except openai.APIError as exc:  # e.g. an error event in the middle of the stream
            raise BackendError(f"server at {self.base_url} failed for model {model!r}: {exc.message}") from exc
        finally:
            new_tokens = int(usage.completion_tokens) if usage is not None else deltas
            prompt_tokens = int(usage.prompt_tokens or 0) if usage is not None else 0
            out.stats = make_stats(t0, t_first, time.perf_counter(), new_tokens, prompt_tokens, finish)
