"""Shared fixtures: the real packaged embedder, a copy of the sample corpus, and one index of it built per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "corpus"
QUESTIONS = REPO / "data" / "eval" / "questions.jsonl"


@pytest.fixture(scope="session")
def embedder():
    from retrieve import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, embedder):
    """(docs_dir, workspace, report) for the whole sample corpus; treat as read-only, copy before changing."""
    from retrieve import build_index

    root = tmp_path_factory.mktemp("built")
    docs = root / "docs"
    shutil.copytree(CORPUS, docs)
    ws = root / "ws"
    report = build_index(docs, ws, embedder=embedder)
    return docs, ws, report


@pytest.fixture
def index_copy(tmp_path, built_index):
    """A private, writable copy of the built index and its documents folder."""
    docs, ws, _ = built_index
    shutil.copytree(docs, tmp_path / "docs")
    shutil.copytree(ws, tmp_path / "ws")
    return tmp_path / "docs", tmp_path / "ws"


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory) -> Path:
    """One dequantized copy of the default generator for the whole run (or $RAGTUNE_TEST_CACHE across runs)."""
    env = os.environ.get("RAGTUNE_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.getbasetemp().parent / "ragtune-model-cache"


@pytest.fixture(scope="session")
def local_generator(model_cache_dir):
    """The real packaged SmolLM2-135M-Instruct behind ragtune's LocalGenerator."""
    from generate.local import LocalGenerator
    from generate.models import ModelConfig, load_model

    return LocalGenerator(load_model(ModelConfig(cache_dir=model_cache_dir)))


# ---- the default generator's folder and tokenizer, and a tiny random Llama with that tokenizer (tune tests) -----

@pytest.fixture(scope="session")
def smol_dir(model_cache_dir) -> Path:
    from generate.models import ModelConfig, resolve_model_dir

    return Path(resolve_model_dir(ModelConfig(cache_dir=model_cache_dir)))


@pytest.fixture(scope="session")
def tokenizer(smol_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_dir)


@pytest.fixture(scope="session")
def im_end(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def link_model_cache(workspace: Path, model_cache_dir: Path) -> None:
    """Point WS/models at the shared cache so a CLI run in a fresh workspace does not dequantize again."""
    workspace.mkdir(parents=True, exist_ok=True)
    if not (workspace / "models").exists():
        (workspace / "models").symlink_to(model_cache_dir, target_is_directory=True)


BACKEND_MODEL = "smollm2"  # the served name of the default model on the loopback backend


@contextmanager
def loopback_backend(generator, adapters: dict[str, Path] | None = None, model: str = BACKEND_MODEL) -> Iterator[str]:
    """A real OpenAI-compatible server on loopback, as `vllm serve BASE --enable-lora --lora-modules NAME=PATH`
    would be: ragtune's own `create_app` over `generator` (loaded with `adapters`), which serves the model as
    `model` and each adapter under its name. Yields the /v1 URL; the server stops on exit."""
    from serve.openai_api import create_app, serve_in_thread

    for name, folder in (adapters or {}).items():
        generator.load_adapter(name, str(folder))
    url, stop = serve_in_thread(create_app({model: generator}))
    try:
        yield f"{url}/v1"
    finally:
        stop()


@contextmanager
def served_copy(root: Path, built_index, *, generator, through_backend: bool = False, embedder,
                users: dict[str, tuple[str, tuple[str, ...], bool]], adapters: dict[str, Path] | None = None,
                prepare: Callable[[Path], None] | None = None) -> Iterator[SimpleNamespace]:
    """The real server (API + app) over a private copy of the built index, in a thread. It answers with
    `generator`, or with `through_backend` through a loopback backend serving it (`loopback_backend`), as
    `ragtune serve --backend-url URL --model BACKEND_MODEL` does (the generator built from the options); either way
    it must name the model that answers. `adapters` (name -> folder) go into WS/adapters, and into the backend.
    `users` maps a name to (password, groups, admin); `prepare(root)` runs on the copy before the server starts.
    Yields url, keys (each user's API key), service and root; the server stops on exit."""
    from serve.answer import generator_label
    from serve.openai_api import serve_in_thread
    from evals.app_job import JOB_RUNNERS
    from serve.server import ServeConfig
    from serve.web import build
    from serve.users import add_user

    docs, ws, _ = built_index
    shutil.copytree(docs, root / "docs")
    shutil.copytree(ws, root / "ws")
    for name, folder in (adapters or {}).items():
        shutil.copytree(folder, root / "ws" / "adapters" / name)
    if prepare is not None:
        prepare(root)
    users_file = root / "users.yaml"
    keys = {name: add_user(users_file, name, password, groups, admin=admin)
            for name, (password, groups, admin) in users.items()}
    with loopback_backend(generator, adapters) if through_backend else nullcontext() as backend_url:
        config = ServeConfig(workspace=root / "ws", docs_dir=root / "docs", users_file=users_file, max_new_tokens=24,
                             backend_url=backend_url, model=BACKEND_MODEL if backend_url else None)
        service, app = build(config, generator=None if backend_url else generator, embedder=embedder,
                             job_runners=JOB_RUNNERS)
        assert service.model_label == (f"{BACKEND_MODEL} at {backend_url}" if backend_url
                                       else generator_label(generator))  # the app and the API name it
        url, stop = serve_in_thread(app)
        try:
            yield SimpleNamespace(url=url, keys=keys, service=service, root=root)
        finally:
            stop()
