"""Continuous batching of the local model (generate/batching.py) and `ragtune serve` over it: rows with different
adapters, a request joining mid-decode and a row cancelled mid-batch each give the greedy tokens of a lone run.

A tiny random Llama (SmolLM2's tokenizer, weights drawn wide enough that greedy text varies token by token, so a
wrong cache, mask or position shows) and two random LoRA adapters; no real model."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from generate.batching import BatchingGenerator
from generate.local import LocalGenerator
from generate.models import ModelConfig, load_model

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

    def recording(ids, positions, cache, adapters, attention_mask=None):
        bg.calls.append(list(adapters))
        return forward(ids, positions, cache, adapters, attention_mask)

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
    together = _run_together(batched, jobs)
    assert [text for text, _ in together] == alone
    assert any(len(c) == len(jobs) and set(c) == {None, "a", "b"} for c in batched.calls), batched.calls
    for (_, _, n), (_, stats) in zip(jobs, together):
        assert stats.finish_reason == "length" and stats.new_tokens == n and stats.prompt_tokens > 5
        assert 0 < stats.first_token_ms <= stats.total_ms
    _wait(lambda: batched.scheduler.active == 0)


def test_one_adapter_for_every_row_runs_merged(batched) -> None:
    g = batched.local
    jobs = [(CAPITAL, "a", 16), (STORY, "a", 16), (SHORT, "a", 16)]
    alone = [_lone(g, m, a, n) for m, a, n in jobs]
    assert [text for text, _ in _run_together(batched, jobs)] == alone
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
