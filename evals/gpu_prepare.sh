#!/bin/bash
# Here, before a lent GPU session: write .gpu-kit/ (git-ignored, ~4 MB) with what evals/gpu_session.sh needs on a
# machine that cannot download: the default model's config + tokenizer (no weights: the benchmarks build random
# ones) and RAFT-like training examples from the sample corpus. Then, with the device tool:
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
PY
du -sh .gpu-kit
