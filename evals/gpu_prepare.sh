#!/bin/bash
# Here, before a lent GPU session: write .gpu-kit/ (git-ignored, ~6 MB) with what evals/gpu_session.sh needs on a
# machine that cannot download: the default model's and the MiniLM's config + tokenizer (no weights: the benchmarks
# build random ones), RAFT-like training examples and reranker training groups from the sample corpus, and wheels
# of the packages the reranker's training needs that the GPU image lacks (datasets, dill, multiprocess; Python
# 3.12 there). Then, with the device tool:
#   run(command="bash evals/gpu_session.sh", carry=[".gpu-kit"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .gpu-kit
"$PY" - <<'PY'
import json
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from evals.bench_generate import DEFAULT_CACHE
from evals.bench_train_data import corpus_examples
from generate.models import ModelConfig, resolve_model_dir

kit = Path(".gpu-kit")
assets = kit / "assets"
if not (assets / "config.json").is_file():  # the cached default model (built from the packaged GGUF once)
    src = resolve_model_dir(ModelConfig(cache_dir=DEFAULT_CACHE))
    AutoConfig.from_pretrained(src).save_pretrained(assets)
    AutoTokenizer.from_pretrained(src).save_pretrained(assets)
tok = AutoTokenizer.from_pretrained(assets)
records = corpus_examples(tok, 1500)
data = kit / "benchdata"
data.mkdir(exist_ok=True)
(data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:-16]))
(data / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[-16:]))
print(f"{kit}: assets + {len(records) - 16} training examples")

from evals.bench_reranker_train import corpus_groups
from retrieve.embed import resolve_embedder

minilm = kit / "minilm"
if not (minilm / "config.json").is_file():
    AutoConfig.from_pretrained(resolve_embedder("all-minilm-l6-v2")).save_pretrained(minilm)
    AutoTokenizer.from_pretrained(resolve_embedder("all-minilm-l6-v2")).save_pretrained(minilm)
groups = corpus_groups()
(kit / "reranker_groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
print(f"{kit}: MiniLM config + tokenizer, {len(groups)} reranker groups")
PY
# datasets (sentence-transformers' trainers need it; the version this venv has) and its two needs the image lacks
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu-kit/wheels \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 || echo "warning: no wheels; the reranker step needs datasets there"
du -sh .gpu-kit
