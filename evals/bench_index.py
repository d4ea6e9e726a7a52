"""Index benchmark: embedding throughput against a plain `SentenceTransformer.encode` loop, full vs incremental
indexing of a 1,000-document corpus, search latency at 10k and 100k chunks, retrieval recall on data/eval, and
the latency of reranking 20 candidates against a plain `CrossEncoder.predict` call.

    python -m evals.bench_index [--docs 1000] [--sizes 10000,100000] [--parts search,rerank] [--reranker DIR]
                                [--rerank-tokens 128] [--rerank-layers 2] [--out FILE.json]

Everything runs in one process on this machine, so the figures compare like with like.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from retrieve.rerank import RERANK_TOKENS
from retrieve.retrievers import RetrieverSettings
from tune.retriever_train import RERANK_LAYERS

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "corpus"
QUESTIONS = REPO / "data" / "eval" / "questions.jsonl"


def sample_chunks(tokenizer):
    """The sample corpus's chunks, cut with `tokenizer` (the embedder's)."""
    from ingest import Chunker, find_documents, read_document

    chunker = Chunker(tokenizer)
    return [c for s in find_documents(CORPUS) for c in chunker.chunk(read_document(s))]


def bench_embedding(chunks, repeats: int = 2) -> dict:
    """Same texts, same model: plain ST encode (fp32, batch 32) against ragtune's Embedder (auto dtype)."""
    from retrieve import EmbedConfig, Embedder

    texts = [c.embed_text for c in chunks]
    ours = Embedder()
    plain = Embedder(EmbedConfig(dtype="float32")).model
    n_tokens = sum(len(x) for x in ours.tokenizer(texts, truncation=True, max_length=256)["input_ids"])
    ours.encode(texts[:64])
    plain.encode(texts[:64])
    t_plain, t_ours = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        t = time.perf_counter()
        v_plain = plain.encode(texts, batch_size=32, normalize_embeddings=True)
        t_plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        v_ours = ours.encode(texts)
        t_ours.append(time.perf_counter() - t)
    p, o = min(t_plain), min(t_ours)
    return {"chunks": len(texts), "tokens": n_tokens, "dtype": ours.dtype_name(),
            "plain_chunks_s": len(texts) / p, "ours_chunks_s": len(texts) / o,
            "plain_tokens_s": n_tokens / p, "ours_tokens_s": n_tokens / o, "speedup": p / o,
            "min_cosine_vs_fp32": float((v_plain * v_ours).sum(1).min())}, v_plain, v_ours


def _questions():
    return [json.loads(x) for x in QUESTIONS.read_text().splitlines() if x.strip()]


def ranking_agreement(chunks, v_plain, v_ours) -> dict:
    """Does the bf16 index rank like the fp32 one? Gold-doc recall@5 and top-5 overlap on the eval questions."""
    from ingest.types import can_read
    from retrieve import EmbedConfig, Embedder

    qs = [q for q in _questions() if q["answers"]]
    q_ours = Embedder().encode([q["question"] for q in qs])
    q_plain = Embedder(EmbedConfig(dtype="float32")).encode([q["question"] for q in qs])
    overlap, hit_plain, hit_ours = [], 0, 0
    for i, q in enumerate(qs):
        mask = np.array([can_read(c.groups, set(q.get("groups", []))) for c in chunks])
        top_p = [j for j in np.argsort(-(v_plain @ q_plain[i])) if mask[j]][:5]
        top_o = [j for j in np.argsort(-(v_ours @ q_ours[i])) if mask[j]][:5]
        overlap.append(len(set(top_p) & set(top_o)) / 5)
        hit_plain += any(chunks[j].doc == q["doc"] for j in top_p)
        hit_ours += any(chunks[j].doc == q["doc"] for j in top_o)
    return {"top5_overlap": float(np.mean(overlap)), "recall@5_fp32": hit_plain / len(qs),
            "recall@5_ours": hit_ours / len(qs)}


WORDS = ("sensor gateway battery firmware policy expense travel leave laptop backup restore incident alert "
         "dashboard customer calibration salinity moisture field depot rotation escalation approval budget "
         "invoice receipt password token rollout release outage latency cluster standby retention").split()


def generated_doc(rng: random.Random, i: int) -> str:
    paras = []
    for s in range(3):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
                     for _ in range(rng.randint(4, 7))]
        paras.append(f"## Part {s + 1}\n\n" + " ".join(sentences) + f" Reference code GEN-{i:05d}-{s}.")
    return f"# Generated document {i}\n\n" + "\n\n".join(paras) + "\n"


def bench_incremental(n_docs: int, embedder) -> dict:
    from retrieve import build_index

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        docs, ws = Path(tmp) / "docs", Path(tmp) / "ws"
        for i in range(n_docs):
            (docs / f"d{i // 100:02d}").mkdir(parents=True, exist_ok=True)
            (docs / f"d{i // 100:02d}" / f"doc-{i:05d}.md").write_text(generated_doc(rng, i))
        t = time.perf_counter()
        full = build_index(docs, ws, embedder=embedder, progress=True)
        t_full = time.perf_counter() - t
        mid = n_docs // 2
        target = docs / f"d{mid // 100:02d}" / f"doc-{mid:05d}.md"
        target.write_text(target.read_text() + "\nOne more sentence about the calibration depot.\n")
        t = time.perf_counter()
        inc = build_index(docs, ws, embedder=embedder)
        t_inc = time.perf_counter() - t
        assert inc.updated == [target.relative_to(docs).as_posix()]
        return {"docs": n_docs, "chunks": full.chunks, "full_s": t_full, "incremental_s": t_inc,
                "incremental_embedded": inc.embedded, "incremental_share": t_inc / t_full}


def write_synthetic_index(ws: Path, n: int, dim: int, rng: np.random.Generator, vocabulary: list[str]) -> None:
    """A generation of n chunks with random unit vectors and generated text: search speed does not depend on
    what the vectors mean, and embedding 100k real chunks here would take an hour. The text is drawn from the
    sample corpus's own word stream, so BM25 sees realistic term frequencies and the eval questions match."""
    from ingest.types import Chunk, sha256_hex
    from retrieve import dense
    from retrieve.lexical import CHUNKS_DIR, DOCUMENTS_DIR, DocumentIndex, LexicalIndex
    from retrieve.store import Manifest, new_staging_dir, publish, write_chunks, write_manifest, writer_lock

    pyrng = random.Random(1)
    chunks = []
    for i in range(n):
        text = " ".join(pyrng.choices(vocabulary, k=60)) + f" code GEN-{i:06d}"
        groups = ("hr",) if i % 10 == 0 else ()
        chunks.append(Chunk(f"c{i}", f"gen/doc-{i // 4}.md", "Generated", "Part", None, i % 4, text,
                            sha256_hex(text), groups, ""))
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with writer_lock(ws):
        staging = new_staging_dir(ws)
        write_chunks(staging, chunks)
        np.save(staging / "vectors.npy", vectors)
        kind = dense.choose_kind("auto", n)
        dense.save(dense.build(vectors, kind), staging / "dense.faiss")
        LexicalIndex.build([c.text for c in chunks]).save(staging / CHUNKS_DIR)
        DocumentIndex.build(chunks).save(staging / DOCUMENTS_DIR)  # 4 chunks per document
        write_manifest(staging, Manifest({"embed_model": "all-minilm-l6-v2"}, "synthetic", {}, [], kind, n))
        publish(ws, staging)


def bench_search(sizes: list[int], embedder, queries: list[str], vocabulary: list[str]) -> list[dict]:
    from retrieve import Searcher

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_synthetic_index(Path(tmp), n, embedder.dim, np.random.default_rng(n), vocabulary)
            searcher = Searcher(Path(tmp), embedder)
            # hybrid: the default (adaptive score fusion); "hybrid rrf": plain reciprocal-rank fusion beside it
            for label, mode, weight in (("dense", "dense", None), ("bm25", "bm25", None), ("hybrid", "hybrid", None),
                                        ("hybrid rrf", "hybrid", 0.5)):
                for groups in (frozenset(), frozenset({"hr"})):
                    searcher.search(queries[0], k=10, mode=mode, groups=groups, dense_weight=weight)
                    lat = []
                    for q in queries:
                        t = time.perf_counter()
                        searcher.search(q, k=10, mode=mode, groups=groups, dense_weight=weight)
                        lat.append((time.perf_counter() - t) * 1000)
                    lat.sort()
                    rows.append({"chunks": n, "mode": label, "groups": ",".join(groups) or "-",
                                 "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))]})
    return rows


def recall_table(ws: Path, embedder) -> list[dict]:
    from retrieve import Searcher

    searcher = Searcher(ws, embedder)
    qs = [q for q in _questions() if q["answers"]]
    rows = []
    for mode in ("dense", "bm25", "hybrid"):
        ranks = []
        for q in qs:
            hits = searcher.search(q["question"], k=10, mode=mode, groups=frozenset(q.get("groups", [])))
            docs = [h.chunk.doc for h in hits]
            ranks.append(docs.index(q["doc"]) + 1 if q["doc"] in docs else None)
        row = {"mode": mode, "questions": len(qs)}
        for k in (1, 5, 10):
            row[f"recall@{k}"] = sum(r is not None and r <= k for r in ranks) / len(qs)
        row["mrr@10"] = sum(1 / r for r in ranks if r) / len(qs)
        rows.append(row)
    return rows


def bench_rerank(chunks, questions: list[str], reranker_dir: str | None, top: int = RetrieverSettings.rerank_top,
                 max_tokens: int = RERANK_TOKENS, layers: int | None = RERANK_LAYERS) -> list[dict]:
    """Latency of reranking `top` candidates per question: ragtune's Reranker (pairs cut to `max_tokens`, bf16 on
    CPUs with native bf16) against a plain `CrossEncoder.predict` of the same pairs (fp32, its 512-token limit).
    Without a trained reranker an untrained one of the same shape stands in (the packaged MiniLM's first `layers`
    layers and a fresh head, as `tune-retriever --rerank-layers` builds it): the cost is the same."""
    with tempfile.TemporaryDirectory() as tmp:
        if not reranker_dir:
            from retrieve.embed import resolve_embedder
            from tune.retriever_train import mean_pooling_cross_encoder

            mean_pooling_cross_encoder(resolve_embedder("all-minilm-l6-v2"), max_tokens, layers).save_pretrained(tmp)
        return _time_rerank(reranker_dir or tmp, chunks, questions, top, max_tokens)


def _time_rerank(path: str, chunks, questions: list[str], top: int, max_tokens: int) -> list[dict]:
    from sentence_transformers import CrossEncoder

    from retrieve.rerank import Reranker

    ours = Reranker(path, max_tokens=max_tokens)
    plain = CrossEncoder(path)
    plain.max_seq_length = 512
    rng = random.Random(0)
    texts = [c.embed_text for c in chunks]
    cases = [(q, rng.sample(texts, top)) for q in questions]
    ours.score(*cases[0])
    plain.predict([(cases[0][0], t) for t in cases[0][1]])
    lat: dict[str, list[float]] = {"ragtune Reranker.score": [], "plain CrossEncoder.predict": []}
    for q, cands in cases:  # interleaved, so drift in machine load hits both alike
        t = time.perf_counter()
        ours.score(q, cands)
        lat["ragtune Reranker.score"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        plain.predict([(q, c) for c in cands], show_progress_bar=False)
        lat["plain CrossEncoder.predict"].append((time.perf_counter() - t) * 1000)
    rows = []
    for name, values in lat.items():
        values.sort()
        rows.append({"call": name, "pairs": top, "layers": plain.config.num_hidden_layers,
                     "tokens": max_tokens if name.startswith("ragtune") else 512,
                     "dtype": ours.dtype_name() if name.startswith("ragtune") else "float32",
                     "p50_ms": statistics.median(values), "p99_ms": values[int(0.99 * (len(values) - 1))]})
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    if len(rows) == 1:  # one result: print it as metric | value, which stays readable in a narrow terminal
        rows = [{"metric": k, "value": v} for k, v in rows[0].items()]
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()])
    Console().print(table)


PARTS = ("embedding", "incremental", "recall", "search", "rerank")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1000, help="documents in the generated incremental-index corpus")
    ap.add_argument("--sizes", default="10000,100000", help="chunk counts for the search-latency test")
    ap.add_argument("--queries", type=int, default=200, help="queries per latency measurement")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"which benchmarks to run: {', '.join(PARTS)}")
    ap.add_argument("--reranker", help="a trained reranker folder (WS/retrievers/reranker-*) for the rerank timing; "
                    "default the packaged MiniLM with a fresh head (same cost)")
    ap.add_argument("--rerank-tokens", type=int, default=RERANK_TOKENS, help="tokens per pair for ragtune's reranker")
    ap.add_argument("--rerank-layers", type=int, default=RERANK_LAYERS, help="transformer layers of the stand-in "
                    "reranker (tune-retriever's default; a trained --reranker has its own)")
    ap.add_argument("--out", type=Path, help="also write all figures to this JSON file")
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - set(PARTS):
        ap.error(f"--parts takes {', '.join(PARTS)}, not {', '.join(sorted(parts - set(PARTS)))}")

    import torch

    from retrieve import Embedder, build_index

    results: dict = {"threads": torch.get_num_threads()}
    embedder = Embedder()
    chunks = sample_chunks(embedder.tokenizer)
    if "embedding" in parts:
        emb, v_plain, v_ours = bench_embedding(chunks)
        results["embedding"] = emb
        print_table("Embedding throughput (sample corpus chunks, same texts)", [emb])
        results["ranking"] = ranking_agreement(chunks, v_plain, v_ours)
        print_table("Ranking with ragtune's dtype vs fp32 plain encode (data/eval, dense)", [results["ranking"]])
    if "incremental" in parts:
        results["incremental"] = bench_incremental(args.docs, embedder)
        print_table(f"Full vs incremental index ({args.docs} generated docs, one edited)", [results["incremental"]])
    if "recall" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(CORPUS, Path(tmp) / "docs")
            build_index(Path(tmp) / "docs", Path(tmp) / "ws", embedder=embedder)
            results["recall"] = recall_table(Path(tmp) / "ws", embedder)
        print_table("Gold-document recall on data/eval (answerable questions, reader's groups)", results["recall"])
    qs = [q["question"] for q in _questions()]
    queries = (qs * (args.queries // len(qs) + 1))[: args.queries]
    if "search" in parts:
        vocabulary = [w for c in chunks for w in c.text.split()]
        results["search"] = bench_search([int(s) for s in args.sizes.split(",")], embedder, queries, vocabulary)
        print_table("Search latency, k=10 (query embedding included for dense and hybrid)", results["search"])
    if "rerank" in parts:
        results["rerank"] = bench_rerank(chunks, queries, args.reranker, max_tokens=args.rerank_tokens,
                                         layers=args.rerank_layers)
        print_table("Reranking 20 candidates per question (sample corpus chunks)", results["rerank"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
