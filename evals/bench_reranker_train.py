"""Reranker training speed: `tune-retriever`'s recipe (tune.retriever_train.train_reranker: the MiniLM's first
layers, a mean-pooling head, listwise loss over the source, hard negatives and an in-batch passage) for a few
steps, and the time that gives for one pass over the sample corpus's 2,000 synth questions (issue 21's goal: 10
minutes on a 2-core CPU; measured on a GPU by evals/gpu_session.sh).

    python -m evals.bench_reranker_train [--device cuda] [--assets DIR --random-weights] [--groups FILE.jsonl]
                                         [--steps 30] [--layers 2] [--tokens 128] [--json]

`--assets` is a MiniLM config + tokenizer folder (evals/gpu_prepare.sh writes one); with `--random-weights` the
encoder is built from it with random weights (the same speed, nothing to carry). `--groups`: JSON lines of
{"query", "positive", "negatives"}; default: made here from the sample corpus (each section's heading against
its text, the next sections' texts as negatives).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from retrieve.rerank import RERANK_TOKENS
from tune.retriever_train import RERANK_LAYERS

SAMPLE_QUESTIONS = 2000  # tune-retriever's default --questions: one pass over them is the goal's unit


def corpus_groups(negatives: int = 3) -> list[dict]:
    """Heading -> section text groups from the sample corpus, with the following sections as negatives."""
    from transformers import AutoTokenizer

    from evals.bench_index import sample_chunks
    from retrieve.embed import resolve_embedder

    sections: dict[str, str] = {}
    for chunk in sample_chunks(AutoTokenizer.from_pretrained(resolve_embedder("all-minilm-l6-v2"))):
        if chunk.section and len(chunk.text) > 200:
            sections.setdefault(chunk.section.split(" > ")[-1], chunk.text)
    items = list(sections.items())
    return [{"query": q, "positive": t, "negatives": [items[(i + k) % len(items)][1] for k in range(1, negatives + 1)]}
            for i, (q, t) in enumerate(items)]


def _base_model(assets: str | None, random_weights: bool, folder: Path) -> str:
    from retrieve.embed import resolve_embedder

    source = assets or resolve_embedder("all-minilm-l6-v2")
    if not random_weights:
        return source
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    ap.add_argument("--assets", help="a MiniLM folder (config + tokenizer; weights unless --random-weights)")
    ap.add_argument("--random-weights", action="store_true", help="random encoder weights of the same shape")
    ap.add_argument("--groups", type=Path, help="JSON lines of {query, positive, negatives}")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps to time (after one warm-up step)")
    ap.add_argument("--batch", type=int, default=8, help="questions per step (tune-retriever's default)")
    ap.add_argument("--layers", type=int, default=RERANK_LAYERS)
    ap.add_argument("--tokens", type=int, default=RERANK_TOKENS)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.device == "cpu":  # hide the GPU before torch starts: the trainer then runs on the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from tune import retriever_train
    rows = [json.loads(line) for line in args.groups.open()] if args.groups else corpus_groups()
    rows = (rows * (args.batch * (args.steps + 1) // max(len(rows), 1) + 1))[: args.batch * (args.steps + 1)]
    groups = [(r["query"], r["positive"], list(r["negatives"])) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        base = _base_model(args.assets, args.random_weights, Path(tmp) / "base")
        retriever_train.train_reranker(base, groups[: args.batch], Path(tmp) / "warm", max_tokens=args.tokens,
                                       layers=args.layers, batch_size=args.batch, lr=3e-4, max_steps=1,
                                       time_budget_s=None, progress=False)
        stats = retriever_train.train_reranker(base, groups, Path(tmp) / "out", max_tokens=args.tokens,
                                               layers=args.layers, batch_size=args.batch, lr=3e-4,
                                               max_steps=args.steps, time_budget_s=None, progress=False)
    per_step = stats.wall_s / max(stats.steps, 1)  # the Trainer's own run, model loading left out
    result = {"device": stats.device, "precision": stats.precision, "layers": args.layers, "tokens": args.tokens,
              "batch": args.batch, "steps": stats.steps, "s_per_step": round(per_step, 3),
              "questions_per_s": round(args.batch / per_step, 1),
              "one_pass_2000_questions_s": round(per_step * SAMPLE_QUESTIONS / args.batch, 1)}
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
