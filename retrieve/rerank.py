"""The reranker: a cross-encoder that reads the question and each candidate passage together and reorders the fused
top-N (the Searcher calls it in hybrid mode when the workspace has one; `ragtune tune-retriever` trains it).

A pair's score comes from the CrossEncoder's own modules: for `tune-retriever`'s rerankers, the mean of the pair's
token states through a linear head (tune/retriever_train.py says why not [CLS]); a classification-head
cross-encoder folder loads too. Fast enough for every search on a CPU: each (question, passage) pair is cut to
`max_tokens` tokens (the passage is cut, never the question), the N pairs run as one padded batch (no per-call
dataset or sorting machinery), and on CPUs with native bf16 the weights are bfloat16, like the Embedder's.
`evals/bench_index.py` times it against a plain `CrossEncoder.predict` on the same pairs.

    reranker = Reranker(path, max_tokens=128)
    scores = reranker.score("question", ["passage one", "passage two"])   # higher = more relevant
"""

from __future__ import annotations

import numpy as np

from retrieve.embed import auto_dtype, for_inference
from retrieve.fusion import fuse


# question + passage tokens per pair: with 2 layers, 20 pairs are reranked in ~100 ms (p99 ~140 ms) on a 2-core CPU
RERANK_TOKENS = 128


class RerankerError(RuntimeError):
    pass


class Reranker:
    def __init__(self, path: str, max_tokens: int = RERANK_TOKENS, device: str = "auto", dtype: str = "auto") -> None:
        self.path = str(path)
        self.max_tokens = int(max_tokens)
        self.device = device
        self.dtype = dtype
        self._model = None

    @property
    def model(self):
        """The sentence-transformers CrossEncoder (loaded on first use)."""
        if self._model is None:
            import torch
            from sentence_transformers import CrossEncoder

            device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                model = CrossEncoder(self.path, device=device)
            except OSError as e:
                raise RerankerError(f"cannot load reranker {self.path}: {e}") from e
            self._model = for_inference(model, self.dtype_name(device))
        return self._model

    def dtype_name(self, device: str = "cpu") -> str:
        return auto_dtype(device) if self.dtype == "auto" else self.dtype

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        """One relevance score (a logit) per text, in the order given."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        import torch

        model = self.model
        features = model.tokenizer([query] * len(texts), list(texts), truncation="longest_first",
                                   max_length=self.max_tokens, padding=True, return_tensors="pt")
        features = {k: v.to(model.device) for k, v in features.items()}
        with torch.inference_mode():
            scores = model(features)["scores"]  # its modules in order: a classification head or pooling + head
        return scores.float().view(len(texts), -1)[:, 0].cpu().numpy()


def blend(head: list, scores: np.ndarray, weight: float = 1.0) -> list:
    """`head` (in fused order) reordered by the reranker's `scores` of its items, blended with the fused order by
    weighted RRF: `weight` 1 is the reranker's order alone, 0 the fused order."""
    order = [head[j] for j in np.argsort(-np.asarray(scores), kind="stable")]
    if weight < 1.0:
        order = [item for item, _ in fuse(order, head, weight)]
    return order


def rerank_head(reranker: Reranker, query: str, ranked: list, texts: list[str],
                weight: float = 1.0) -> tuple[list, dict]:
    """`ranked` with its first len(texts) items reordered by the reranker's scores of `texts` (their passages, in
    order) and `blend`ed with their fused order; the rest keep their place after them. Returns (new order,
    {item: reranker score})."""
    scores = reranker.score(query, texts)
    head = list(ranked[:len(texts)])
    return blend(head, scores, weight) + list(ranked[len(texts):]), {item: float(s) for item, s in zip(head, scores)}
