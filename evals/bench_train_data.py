"""The data and the model evals/bench_train.py trains on: RAFT-like chat examples built from the sample corpus, and
the default model's folder (or its architecture with random weights, for a GPU box without the weights).

    records = corpus_examples(tokenizer, 200)
    folder = model_folder(random_weights=True, work=Path("/tmp/w"), cache_dir=None)
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "corpus"

# SmolLM2-135M-Instruct's architecture, for --random-weights when no cached model folder exists
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
                    eos_token_id=2, pad_token_id=2, hidden_act="silu")

# ---- data ------------------------------------------------------------------------------------------------------

def corpus_examples(tokenizer, n: int, seed: int = 0, lo: int = 400, hi: int = 700) -> list[dict]:
    """RAFT-like examples from the sample corpus's unrestricted documents, each ~lo..hi tokens long."""
    from ingest import find_documents, read_document
    from ingest.chunking import ChunkConfig, Chunker
    from generate.prompts import SYSTEM_WITH_CONTEXT, answer_with_citation, build_messages, cloze_question

    chunker = Chunker(tokenizer, ChunkConfig(chunk_tokens=160, overlap_tokens=0))
    chunks = []
    for src in find_documents(CORPUS):
        try:
            doc = read_document(src)
        except Exception:  # noqa: BLE001 - a bad sample file just contributes nothing
            continue
        if doc.groups:
            continue  # restricted documents never go into training data
        chunks += [c for c in chunker.chunk(doc) if len(c.text) > 200]
    rng = random.Random(seed)

    class Src:
        def __init__(self, n, c):
            self.n, self.doc, self.section, self.text = n, c.doc, c.section, c.text

    out = []
    while len(out) < n:
        oracle = rng.choice(chunks)
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", oracle.text) if 8 <= len(s.split()) <= 40]
        if not sentences:
            continue
        words = rng.choice(sentences).split()
        cut = rng.randint(len(words) // 3, 2 * len(words) // 3)
        question = cloze_question(" ".join(words[:cut]))
        target = rng.randint(lo, hi)
        picked = [oracle]
        while True:
            d = rng.choice(chunks)
            if d in picked:
                continue
            trial = picked + [d]
            rng.shuffle(trial)
            srcs = [Src(i + 1, c) for i, c in enumerate(trial)]
            msgs = build_messages(question, srcs)
            if len(tokenizer.apply_chat_template(msgs, tokenize=True)["input_ids"]) > target - 16:
                break
            picked = trial
        srcs = [Src(i + 1, c) for i, c in enumerate(picked)]
        n_oracle = next(s.n for s in srcs if s.text == oracle.text)
        msgs = build_messages(question, srcs)
        answer = answer_with_citation(" ".join(words[cut:cut + 10]), n_oracle)
        msgs.append({"role": "assistant", "content": answer})
        assert msgs[0]["content"] == SYSTEM_WITH_CONTEXT
        out.append({"messages": msgs, "kind": "raft", "style": "cloze", "doc": oracle.doc, "chunk_id": oracle.id,
                    "question": question, "answer": answer})
    return out


# ---- model -----------------------------------------------------------------------------------------------------

def model_folder(random_weights: bool, work: Path, cache_dir: Path | None, assets: Path | None = None) -> Path:
    """A model folder for both paths: the cached default model, or random weights of its architecture (config
    and tokenizer from `assets`, else the cached model, else the packaged GGUF)."""
    from generate.models import ModelConfig, resolve_model_dir

    if not random_weights:
        return Path(resolve_model_dir(ModelConfig(cache_dir=cache_dir)))
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cached = (cache_dir or Path.home() / ".cache" / "ragtune" / "models") / "SmolLM2-135M-Instruct-Q4_1-dequantized-v1"
    if assets is not None:
        if not (assets / "config.json").is_file():
            sys.exit(f"--assets {assets}: no config.json there (make it with evals.bench_generate --assets)")
        cached = assets
    if (cached / "config.json").is_file():
        config = LlamaConfig.from_pretrained(cached)
        tokenizer = AutoTokenizer.from_pretrained(cached)
    else:
        from generate.models import DEFAULT_GGUF, default_package_dir

        config = LlamaConfig(**SMOLLM2_135M)
        tokenizer = AutoTokenizer.from_pretrained(default_package_dir(), gguf_file=DEFAULT_GGUF)
    torch.manual_seed(0)
    folder = work / "random-smollm2-135m"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


