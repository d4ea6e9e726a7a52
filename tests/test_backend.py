"""`ragtune serve --backend-url` and `--model` (issue 23, items 2 and 3): the app and /v1 answer through another
OpenAI-compatible server while retrieval, citations and refusals stay ragtune's; tuned and hybrid requests name
their adapter the way vLLM serves LoRA modules (the request's `model` is the adapter's name, rag and base use the
base model's served name); bad options stop `ragtune serve` with one line naming the option; and the adapter files
`ragtune tune` writes have the shape vLLM loads.

The backend is a real server on loopback: ragtune's own `create_app` over a LocalGenerator on a tiny random Llama
with one LoRA adapter loaded, which serves the base model under its name and the adapter under the adapter's name,
as `vllm serve BASE --enable-lora --lora-modules demo=PATH` does. Its generator is watched (each request's adapter,
messages and answer are recorded), never replaced."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from openai import OpenAI

from generate.base import BackendError, GenerationStream
from generate.local import LocalGenerator
from generate.models import ModelConfig, load_model
from generate.prompts import SYSTEM_WITH_CONTEXT
from generate.remote import OpenAIGenerator
from serve.openai_api import serve_in_thread
from tests.conftest import REPO, loopback_backend

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PUBLIC_Q = "How long is the probation period for new hires?"


def _tune_shaped_adapter(base_dir: Path, out: Path) -> Path:
    """A LoRA adapter made by `ragtune tune`'s own LoRA setup (tune.train.random_adapter: the default TuneConfig,
    r=16, the seven linear projections) on the tiny model, its B matrices drawn at random so that it changes the
    answers (training starts them at zero)."""
    from transformers import AutoModelForCausalLM

    from tune.train import random_adapter

    return random_adapter(AutoModelForCausalLM.from_pretrained(base_dir), out, std=0.2)


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_dir: Path):
    """The vLLM-like server: base model 'tiny', adapter 'demo'. `calls` records every request it generated for."""
    folder = _tune_shaped_adapter(tiny_dir, tmp_path_factory.mktemp("lora") / "demo")
    gen = LocalGenerator(load_model(ModelConfig(model=str(tiny_dir))))
    gen.load_adapter("demo", str(folder))
    calls: list[dict] = []

    class Watched:  # the real generator; only records what each request asked for and what it answered
        def __getattr__(self, name):
            return getattr(gen, name)

        def stream(self, messages, **options):
            inner = gen.stream(messages, **options)
            call = {"adapter": options.get("adapter"), "messages": messages, "options": options, "text": ""}
            calls.append(call)

            def pieces(out):
                try:
                    for piece in inner:
                        call["text"] += piece
                        yield piece
                finally:
                    inner.close()  # frees the model's lock if the client went away mid-answer
                    out.stats = inner.stats

            return GenerationStream(pieces)

    with loopback_backend(Watched(), model="tiny") as url:
        yield SimpleNamespace(url=url, gen=gen, calls=calls, adapter_dir=folder)


def _local(gen: LocalGenerator, messages: list[dict], adapter: str | None, **options) -> str:
    return "".join(gen.stream(messages, adapter=adapter, **options))


def test_the_adapter_is_the_request_s_model_as_vllm_names_lora_modules(backend) -> None:
    listed = [m.id for m in OpenAI(base_url=backend.url, api_key="x").models.list().data]
    assert listed == ["tiny", "demo"]  # vLLM lists each --lora-modules NAME beside the base model
    remote = OpenAIGenerator(backend.url, model="tiny", max_retries=0)
    assert remote.supports_adapters and remote.adapters == []
    remote.load_adapter("demo", str(backend.adapter_dir))
    with pytest.raises(BackendError, match=r"does not serve the adapter 'nope'.*--lora-modules nope=/x/nope"):
        remote.load_adapter("nope", "/x/nope")
    assert remote.adapters == ["demo"]
    with pytest.raises(ValueError, match="unknown adapter"):
        remote.stream(QUESTION, adapter="nope")

    n = len(backend.calls)
    tuned = "".join(remote.stream(QUESTION, max_new_tokens=12, adapter="demo"))
    base = "".join(remote.stream(QUESTION, max_new_tokens=12))
    assert [c["adapter"] for c in backend.calls[n:]] == ["demo", None]
    # answered by the adapter: the same text the local model gives with it, and not the base model's
    assert tuned == _local(backend.gen, QUESTION, "demo", max_new_tokens=12)
    assert base == _local(backend.gen, QUESTION, None, max_new_tokens=12)
    assert tuned != base


@pytest.fixture(scope="module")
def front(tmp_path_factory, built_index, embedder, backend):
    """`ragtune serve --backend-url BACKEND --model tiny` over a copy of the sample index, with the adapter's files
    in WS/adapters/demo (the folder vLLM's --lora-modules would name)."""
    from serve.server import ServeConfig
    from serve.web import build

    docs, ws, _ = built_index
    root = tmp_path_factory.mktemp("front")
    shutil.copytree(docs, root / "docs")
    shutil.copytree(ws, root / "ws")
    shutil.copytree(backend.adapter_dir, root / "ws" / "adapters" / "demo")
    config = ServeConfig(workspace=root / "ws", docs_dir=root / "docs", max_new_tokens=16, k=1,
                         model="tiny", backend_url=backend.url)
    service, app = build(config, embedder=embedder)  # no generator handed in: built from the options
    url, stop = serve_in_thread(app)
    try:
        yield SimpleNamespace(url=url, service=service)
    finally:
        stop()


def test_serve_answers_hybrid_through_the_backend_with_the_adapter(front, backend) -> None:
    from serve.app_views import format_timings

    assert isinstance(front.service.generator, OpenAIGenerator)
    assert front.service.gate.max_active == 16  # the server batches: answers are not queued one at a time
    label = f"tiny at {backend.url}"
    assert front.service.model_label == label
    client = OpenAI(base_url=f"{front.url}/v1", api_key="single-user", max_retries=0, timeout=300)
    assert {"ragtune-hybrid:demo", "ragtune-tuned:demo"} <= {m.id for m in client.models.list().data}

    n = len(backend.calls)
    reply = client.chat.completions.create(model="ragtune-hybrid:demo", max_tokens=16,
                                           messages=[{"role": "user", "content": PUBLIC_Q}])
    info = reply.model_extra["ragtune"]
    assert (info["mode"], info["adapter"], info["model"]) == ("hybrid", "demo", label)
    assert info["sources"] and info["sources"][0]["doc"]  # ragtune retrieved the passages
    calls = backend.calls[n:]
    assert calls and [c["adapter"] for c in calls] == ["demo"] * len(calls)  # one or two tries, all with it
    for call in calls:  # ragtune's prompt (rules + retrieved documents), answered by the adapter
        assert call["messages"][0]["content"] == SYSTEM_WITH_CONTEXT
        last = call["messages"][-1]["content"]
        assert last.startswith("Documents:\n") and last.endswith(f"Question: {PUBLIC_Q}")
        options = {k: v for k, v in call["options"].items() if k != "adapter"}
        assert call["text"] == _local(backend.gen, call["messages"], "demo", **options)
        assert call["text"] != _local(backend.gen, call["messages"], None, **options)

    n = len(backend.calls)
    reply = client.chat.completions.create(model="ragtune-rag", max_tokens=16,
                                           messages=[{"role": "user", "content": PUBLIC_Q}])
    assert reply.model_extra["ragtune"]["adapter"] is None
    rag_calls = backend.calls[n:]
    assert rag_calls and all(c["adapter"] is None for c in rag_calls)  # the base model's name, no adapter

    answer = front.service.answers.engine.answer(PUBLIC_Q, mode="tuned", adapter="demo")
    assert answer.model == label and format_timings(answer).startswith(f"tuned (demo) · {label} · ")
    assert backend.calls[-1]["adapter"] == "demo" and backend.calls[-1]["messages"][-1]["content"] == PUBLIC_Q


def _ragtune(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragtune_cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_serve_refuses_bad_backend_options_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _ragtune("serve", "--workspace", tmp_path / "ws", "--port", 0, "--backend-url",
                   f"http://127.0.0.1:{port}/v1")
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: --backend-url: cannot reach") and f":{port}/v1" in lines[0]

    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("no config.json here")
    out = _ragtune("serve", "--workspace", tmp_path / "ws", "--port", 0, "--model", tmp_path / "not-a-model")
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: --model: ") and "config.json" in lines[0]


# vLLM's LoRA loader (vllm/lora/peft_helper.py, models.py): PEFT LoRA, rank <= --max-lora-rank (default 16),
# modules_to_save None, no DoRA, bias "none", weights only on the model's LoRA-capable linear layers
VLLM_LLAMA_LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_tune_writes_the_adapter_files_vllm_loads(backend) -> None:
    from safetensors import safe_open

    folder = backend.adapter_dir
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 32
    assert set(config["target_modules"]) == VLLM_LLAMA_LORA_MODULES
    assert config["modules_to_save"] is None and not config["use_dora"] and config["bias"] == "none"
    assert not config.get("layers_to_transform") and not config.get("rank_pattern")
    weight = re.compile(r"base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.lora_[AB]\.weight")
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert keys and all(weight.fullmatch(k) for k in keys), [k for k in keys if not weight.fullmatch(k)]
        assert {weight.fullmatch(k).group(2) for k in keys} == VLLM_LLAMA_LORA_MODULES  # no embed/lm_head weights
        assert all(min(f.get_slice(k).get_shape()) == 16 for k in keys)  # rank 16 everywhere
