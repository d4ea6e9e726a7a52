"""Continuous batching of the local model (generate/batching.py) and `ragtune serve` over it: rows with different
adapters, a request joining mid-decode and a row cancelled mid-batch each give the greedy tokens of a lone run, and
the HTTP API still streams, times each answer and answers 429 with Retry-After when the queue is full.

A tiny random Llama (SmolLM2's tokenizer, weights drawn wide enough that greedy text varies token by token, so a
wrong cache, mask or position shows) and two random LoRA adapters; no real model."""

from __future__ import annotations

import shutil
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import torch
from openai import OpenAI

from generate.batching import BatchingGenerator
from generate.local import LocalGenerator
from generate.models import ModelConfig, load_model
from serve.openai_api import serve_in_thread
from serve.server import ServeConfig
from serve.web import build

SHORT = [{"role": "user", "content": "Hi"}]
CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
LONG = [{"role": "system", "content": "You answer from the passages below. " * 12},
        {"role": "user", "content": "Explain in three sentences why the sky is blue, and why sunsets are red."}]
STORY = [{"role": "user", "content": "Tell me a story about the sea and the ships that sail on it. " * 4}]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The dev box is shared: one thread keeps this file quick and out of others' way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> SimpleNamespace:
    """(base folder, adapter folders a and b)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    root = tmp_path_factory.mktemp("tiny-batch")
    LlamaForCausalLM(cfg).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        lora = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"),
                              LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))
        with torch.no_grad():  # peft starts B at zero (a no-op adapter); make it matter
            for pname, p in lora.named_parameters():
                if "lora_B" in pname:
                    p.normal_(0.0, 0.5)
        lora.save_pretrained(root / name)
    return SimpleNamespace(base=root / "base", a=root / "a", b=root / "b")


def _generator(tiny) -> LocalGenerator:
    g = LocalGenerator(load_model(ModelConfig(model=str(tiny.base))))
    g.load_adapter("a", str(tiny.a))
    g.load_adapter("b", str(tiny.b))
    return g


@pytest.fixture()
def batched(tiny, monkeypatch):
    """A BatchingGenerator on a fresh tiny model; `.calls` records the adapters of every forward pass."""
    g = _generator(tiny)
    bg = BatchingGenerator(g, max_batch=8)
    bg.calls = []
    forward = g.forward_rows

    def recording(ids, positions, cache, adapters, attention_mask=None, others=()):
        bg.calls.append(list(adapters))
        return forward(ids, positions, cache, adapters, attention_mask, others)

    monkeypatch.setattr(g, "forward_rows", recording)
    yield bg
    bg.close()


def _lone(g: LocalGenerator, messages, adapter, n: int) -> str:
    return "".join(g.stream(messages, max_new_tokens=n, adapter=adapter))


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _submissions(bg: BatchingGenerator) -> list:
    """The rows handed to the scheduler from now on."""
    submitted: list = []
    submit = bg.scheduler.submit
    bg.scheduler.submit = lambda row: (submitted.append(row), submit(row))
    return submitted


def _run_together(bg: BatchingGenerator, jobs: list[tuple]) -> list:
    """Stream every (messages, adapter, max_new[, temperature]) job in its own thread, all rows in the batch at
    once: the model lock is held until each is submitted. Returns [(text, stats)] in job order."""
    submitted = _submissions(bg)
    out: list = [None] * len(jobs)

    def run(i: int) -> None:
        messages, adapter, n, *temperature = jobs[i]
        stream = bg.stream(messages, max_new_tokens=n, adapter=adapter, temperature=(temperature or [0.0])[0])
        out[i] = ("".join(stream), stream.stats)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    with bg.local._lock:  # the scheduler waits at its first prefill until every row is in line
        for t in threads:
            t.start()
        _wait(lambda: len(submitted) == len(jobs))
    for t in threads:
        t.join(timeout=120)
    return out


def test_rows_with_different_adapters_give_their_lone_tokens(batched) -> None:
    g = batched.local
    # prompts of very different lengths (left padding), token limits that end rows at different steps (the longest
    # prompt leaves first, so padding columns are cut), and the base model next to two adapters
    jobs = [(LONG, "a", 6), (SHORT, None, 30), (CAPITAL, "b", 18), (STORY, "a", 24), (CAPITAL, None, 12),
            (SHORT, "b", 30)]
    alone = [_lone(g, m, a, n) for m, a, n in jobs]
    assert len(set(alone)) == len(jobs)  # every prompt and adapter answers differently: a mix-up would show
    merges: list = []
    merge = g._peft.base_model.merge_adapter
    g._peft.base_model.merge_adapter = lambda *a, **k: (merges.append(a), merge(*a, **k))
    together = _run_together(batched, jobs)
    assert [text for text, _ in together] == alone
    assert any(len(c) == len(jobs) and set(c) == {None, "a", "b"} for c in batched.calls), batched.calls
    assert len(merges) <= 2  # not once per newcomer: a mixed batch prefills its newcomers unmerged too
    for (_, _, n), (_, stats) in zip(jobs, together):
        assert stats.finish_reason == "length" and stats.new_tokens == n and stats.prompt_tokens > 5
        assert 0 < stats.first_token_ms <= stats.total_ms
    _wait(lambda: batched.scheduler.active == 0)


def test_one_adapter_for_every_row_runs_merged(batched) -> None:
    g = batched.local
    jobs = [(CAPITAL, "a", 16), (STORY, "a", 16), (SHORT, "a", 16)]
    alone = [_lone(g, m, a, n) for m, a, n in jobs]
    together = _run_together(batched, jobs)
    assert [text for text, _ in together] == alone
    s = batched.scheduler  # what evals.bench_load reports: each row prefilled once, then 15 decode steps of it
    assert s.prefills == 3 and s.prefill_tokens == sum(stats.prompt_tokens for _, stats in together)
    assert s.row_steps == 3 * 15 and s.steps >= 15 and s.prefill_s > 0 and s.decode_s > 0
    lora_layers = [m for m in g._base.modules() if hasattr(m, "merged_adapters")]
    assert lora_layers and all(m.merged_adapters == ["a"] for m in lora_layers)


def test_a_request_joining_mid_decode_is_answered_correctly(batched) -> None:
    g = batched.local
    expected_first, expected_second = _lone(g, STORY, "a", 300), _lone(g, CAPITAL, None, 20)
    first = batched.stream(STORY, max_new_tokens=300, adapter="a")
    head = [next(first) for _ in range(3)]
    assert batched.scheduler.active == 1  # still decoding when the second request arrives
    second = batched.stream(CAPITAL, max_new_tokens=20, adapter=None)
    assert "".join(second) == expected_second
    assert "".join(head) + "".join(first) == expected_first
    assert ["a", None] in batched.calls  # the newcomer joined the running row
    assert first.stats.new_tokens == 300 and second.stats.new_tokens == 20


def test_cancelling_one_row_leaves_the_others_intact(batched) -> None:
    g = batched.local
    expected = _lone(g, CAPITAL, "b", 60)
    doomed = batched.stream(STORY, max_new_tokens=300, adapter="a")
    survivor = batched.stream(CAPITAL, max_new_tokens=60, adapter="b")
    next(doomed)
    head = next(survivor)  # both rows are in the batch now
    _wait(lambda: batched.scheduler.active == 2 or not batched.scheduler.active)
    doomed.close()  # what the API does when the client goes away
    assert head + "".join(survivor) == expected
    assert doomed.stats.finish_reason == "aborted" and doomed.stats.new_tokens < 300
    assert survivor.stats.finish_reason == "length" and survivor.stats.new_tokens == 60
    assert batched.calls[-1] == ["b"]  # the cancelled row left; the other finished alone
    _wait(lambda: batched.scheduler.active == 0)


def test_sampling_and_bad_requests_stay_per_request(batched) -> None:
    with pytest.raises(ValueError, match="unknown adapter"):
        list(batched.stream(CAPITAL, adapter="nope"))
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(batched.stream(CAPITAL, max_new_tokens=0))
    greedy = _lone(batched.local, CAPITAL, "a", 12)
    (sampled, sampled_stats), (text, _) = _run_together(batched, [(CAPITAL, None, 12, 1.5), (CAPITAL, "a", 12)])
    assert text == greedy  # a sampling neighbour does not change a greedy row
    assert sampled and sampled_stats.new_tokens == 12 and [None, "a"] in batched.calls


def test_requests_loading_the_same_adapter_at_once_both_get_it(tiny, tmp_path, monkeypatch) -> None:
    from serve.answer import AnswerEngine

    shutil.copytree(tiny.a, tmp_path / "ws" / "adapters" / "a")
    g = LocalGenerator(load_model(ModelConfig(model=str(tiny.base))))
    engine = AnswerEngine(tmp_path / "ws", BatchingGenerator(g, max_batch=2))
    entered: list[str] = []
    load = g.load_adapter
    monkeypatch.setattr(g, "load_adapter", lambda name, path: (entered.append(name), load(name, path)))
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(engine.answer("Who signs?", mode="tuned", adapter="a")))
               for _ in range(2)]
    with g._lock:  # both requests find the adapter missing before either has loaded it
        for t in threads:
            t.start()
        _wait(lambda: len(entered) == 2)
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 2 and answers[0].answer == answers[1].answer and g.adapters == ["a"]
    engine.generator.close()


# ---- through the real server ------------------------------------------------------------------------------------

def test_the_gate_admits_a_burst_that_fits_the_batch() -> None:
    from serve.concurrency import Gate
    from serve.openai_api import BusyError

    gate = Gate(max_active=3, max_waiting=1)
    burst = [gate.reserve() for _ in range(4)]  # 3 slots free: only the fourth will wait, which max_waiting allows
    with pytest.raises(BusyError, match="1 answers are already waiting"):
        gate.reserve()
    for ticket in burst[:3]:
        ticket.wait(timeout=1)
    assert gate.active == 3 and gate.waiting == 1 and gate.refused == 1
    for ticket in burst:
        ticket.release()
    assert gate.active == 0 and gate.waiting == 0 and gate.served == 3


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    """`ragtune serve` (API + app) on an empty workspace holding adapters a and b: base and tuned answer without an
    index. The local model is batched 3 rows at a time, with 1 more request allowed to wait."""
    ws = tmp_path_factory.mktemp("batch-serve") / "ws"
    for name in ("a", "b"):
        shutil.copytree(getattr(tiny, name), ws / "adapters" / name)
    config = ServeConfig(workspace=ws, users_file=None, max_new_tokens=24, max_batch=3, max_waiting=1)
    service, app = build(config, generator=LocalGenerator(load_model(ModelConfig(model=str(tiny.base)))))
    assert isinstance(service.generator, BatchingGenerator) and service.gate.max_active == 3
    for name in ("a", "b"):  # loaded now, so a test holding the model lock does not wait for a load
        service.generator.load_adapter(name, str(ws / "adapters" / name))
    url, stop = serve_in_thread(app)
    yield SimpleNamespace(url=url, service=service)
    stop()
    service.generator.close()


def test_max_batch_1_keeps_the_lone_loop(tiny, tmp_path) -> None:
    import subprocess
    import sys

    from serve.server import Ragtune

    lone = LocalGenerator(load_model(ModelConfig(model=str(tiny.base))))
    service = Ragtune(ServeConfig(workspace=tmp_path / "ws", max_batch=1), generator=lone)
    assert service.generator is lone and service.gate.max_active == 1
    out = subprocess.run([sys.executable, "-m", "ragtune_cli", "serve", "--workspace", tmp_path / "ws",
                          "--max-batch", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--max-batch must be at least 1" in out.stderr and "Traceback" not in out.stderr


def test_serve_dtype_loads_the_local_model_in_it_and_a_bad_one_is_named(tiny, tmp_path) -> None:
    import subprocess
    import sys

    from serve.server import Ragtune

    service = Ragtune(ServeConfig(workspace=tmp_path / "ws", model=str(tiny.base), dtype="bfloat16", max_batch=1))
    assert service.generator.loaded.dtype == torch.bfloat16
    out = subprocess.run([sys.executable, "-m", "ragtune_cli", "serve", "--workspace", tmp_path / "ws",
                          "--model", str(tiny.base), "--dtype", "float64"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--dtype must be one of auto, float32, bfloat16, float16, not 'float64'" in \
        out.stderr and "Traceback" not in out.stderr


def test_the_load_benchmark_compares_every_gate_with_the_serial_one() -> None:
    from evals.bench_load import Level, Result, ratios, time_split

    def level(gate: str, ttft: float, tokens: int) -> Level:
        return Level(16, gate, [Result(0, "q", ttft_s=ttft, tokens=tokens)], wall_s=10.0)

    lines = ratios([level("serial", 30.0, 50), level("batched", 20.0, 100), level("batched-bf16", 12.0, 150)])
    assert lines == ["16 users: batched/serial aggregate tokens/s 2.00x, TTFT p50 30.00 s -> 20.00 s",
                     "16 users: batched-bf16/serial aggregate tokens/s 3.00x, TTFT p50 30.00 s -> 12.00 s"]
    # where the time went: the server's timings per answer, and the batch scheduler's counters over the level
    lv = level("batched", 20.0, 100)
    lv.results[0].timings = {"attempts": 2, "retrieve_ms": 40.0, "prompt_tokens": 450}
    lv.model = {"steps": 20, "row_steps": 80, "prefills": 4, "prefill_tokens": 1800, "prefill_s": 2.5, "decode_s": 1.5}
    assert time_split([lv, level("serial", 30.0, 50)])[1:] == [
        "  batched, 16 users: 2.00 tries per answer, search p50 40 ms, prompt 450 tokens (mean); model busy 4.0 s of "
        "10.0 s wall: 4 prefills (1800 tokens) 2.5 s, 20 decode steps (4.0 rows each) 1.5 s"]


def test_searches_run_between_decode_steps(tiny, tmp_path) -> None:
    """On a CPU the batched server's embedder takes the model lock that each forward pass holds, so a search and a
    decode step never compete for the cores."""
    from serve.server import Ragtune

    class Embedder:
        def encode(self, texts):
            assert service.generator.local.lock.locked()  # held by this encode call
            return [[0.0]] * len(texts)

    service = Ragtune(ServeConfig(workspace=tmp_path / "ws", max_batch=2), embedder=Embedder(),
                      generator=LocalGenerator(load_model(ModelConfig(model=str(tiny.base)))))
    assert service.generator.compute_lock is service.generator.local.lock
    assert service.embedders.get().encode(["a query"]) == [[0.0]] and not service.generator.local.lock.locked()
    service.generator.close()


def _client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def _ask_streaming(server, model: str, question: str, max_tokens: int = 24) -> dict:
    chunks = list(_client(server).chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True, max_tokens=max_tokens))
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    return {"pieces": [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content],
            "finish": final[-1].choices[0].finish_reason if final else None,
            "ragtune": final[-1].model_extra.get("ragtune") if final else None}


def test_the_api_streams_answers_decoded_in_one_batch(server) -> None:
    service = server.service
    asks = [("ragtune-base", "Where is the canteen?"), ("ragtune-tuned:a", "Who signs expense claims?"),
            ("ragtune-tuned:b", "How many days of leave do I get?")]
    results: dict[int, dict] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _ask_streaming(server, *asks[i])))
               for i in range(len(asks))]
    submitted = _submissions(service.generator)
    with service.generator.local._lock:  # all three reach the batch before the first prefill runs
        for t in threads:
            t.start()
        _wait(lambda: len(submitted) == 3)
    for t in threads:
        t.join(timeout=120)
    assert service.generator.scheduler.row_steps > service.generator.scheduler.steps  # steps with several rows
    for i, (model, question) in enumerate(asks):
        got = results[i]
        assert len(got["pieces"]) > 1 and got["finish"] in ("stop", "length"), got
        assert got["ragtune"]["adapter"] == (None if model == "ragtune-base" else model[-1])
        timings = got["ragtune"]["timings"]
        assert timings["new_tokens"] > 0 and 0 < timings["first_token_ms"] <= timings["total_ms"]
        alone = _client(server).chat.completions.create(model=model, max_tokens=24,
                                                        messages=[{"role": "user", "content": question}])
        assert "".join(got["pieces"]).strip() == alone.choices[0].message.content.strip()
    assert service.gate.active == 0 and service.gate.waiting == 0


def test_a_full_queue_answers_429_with_retry_after(server) -> None:
    service = server.service
    gate = service.gate
    results: list[dict] = []
    threads = [threading.Thread(target=lambda i=i: results.append(_ask_streaming(server, "ragtune-base", f"Q{i}?")))
               for i in range(4)]
    with service.generator.local._lock:  # the batch cannot move: 3 requests decode, 1 waits, the next is refused
        for t in threads[:3]:
            t.start()
        _wait(lambda: gate.active == 3)
        threads[3].start()
        _wait(lambda: gate.waiting == 1)
        refused = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
            "model": "ragtune-base", "stream": True, "messages": [{"role": "user", "content": "one too many"}]})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["code"] == "busy"
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 4 and all(r["finish"] in ("stop", "length") and r["pieces"] for r in results), results
    assert gate.active == 0 and gate.waiting == 0


def test_a_client_gone_mid_stream_leaves_the_batch(server, monkeypatch) -> None:
    bg = server.service.generator
    streams: list = []
    stream = bg.stream

    def recording(*args, **kwargs):
        streams.append(stream(*args, **kwargs))
        return streams[-1]

    monkeypatch.setattr(bg, "stream", recording)
    body = {"model": "ragtune-base", "stream": True, "max_tokens": 500,
            "messages": [{"role": "user", "content": "Tell me everything."}]}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        other = _ask_streaming(server, "ragtune-tuned:a", "Who signs expense claims?")  # shares the batch meanwhile
    assert other["finish"] in ("stop", "length") and other["pieces"]
    _wait(lambda: streams[0].stats is not None)
    assert streams[0].stats.finish_reason == "aborted" and streams[0].stats.new_tokens < 500
    _wait(lambda: bg.scheduler.active == 0 and server.service.gate.active == 0)
