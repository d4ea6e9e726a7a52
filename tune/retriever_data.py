"""Training and validation questions for the retriever, from a synth dataset, and how retrieval is scored on them.

Each distinct (question, source chunk) of WS/datasets/NAME/train.jsonl becomes a training question, of val.jsonl
(documents held out by synth) a validation question. A cloze item is searched by its sentence start, as synth's
round trip does. Users' feedback (tune/ratings.py) adds their question, in their own words, with each chunk a
liked answer cited, the passage they picked or the section they pointed at. Hard negatives are the top hybrid hits (adaptive score fusion, no reranker) that are neither
the source chunk nor hold the answer: what the retriever confuses today, like the RAFT distractors. Restricted chunks never take
part, as positives or negatives, unless their groups are named (`include_groups`).

A retrieved chunk counts as relevant when it is the source chunk or holds the answer's text, the rule
`ragtune eval` applies to real questions.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from generate.prompts import cloze_prefix
from ingest.types import Chunk, can_read
from ingest.workspace import Workspace
from retrieve.fusion import ADAPTIVE, adaptive_fuse, fuse
from tune.data import DataError, json_lines
from tune.filters import supported

RECALL_KS = (1, 3, 5)
CANDIDATES = 50  # hits taken from each of dense and BM25 per question, as hybrid search does for k <= 12


@dataclass
class RetrievalQuestion:
    query: str
    answer: str
    chunk_id: str
    doc: str
    negatives: list[str] = field(default_factory=list)  # chunk ids
    weight: int = 1  # times it is trained on (a user's liked question counts more than one of synth's)


@dataclass
class QuestionSets:
    train: list[RetrievalQuestion]
    val: list[RetrievalQuestion]
    dataset: Path
    data_hash: str
    skipped: dict[str, int]  # why rows were not used: stale (chunk no longer indexed), restricted; "rated ..." alike
    rated: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})  # users' liked questions used


def dataset_folder(workspace: Path, dataset: Path | None) -> Path:
    folder = Path(dataset) if dataset is not None else Workspace(workspace).dataset("default")
    if folder.is_file():
        folder = folder.parent
    if not (folder / "train.jsonl").is_file():
        raise FileNotFoundError(f"no synth dataset at {folder} (train.jsonl missing): run `ragtune synth "
                                f"--workspace {workspace}` first, or pass --dataset")
    return folder


def _rows(path: Path) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    for n, row in json_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row.get("chunk_id"):
            raise DataError(f"{path}:{n}: a synth row needs 'question' and 'chunk_id'")
        rows.append(row)
    return rows


def _questions(rows: list[dict], chunks: dict[str, Chunk], groups: frozenset[str],
               skipped: dict[str, int], label: str = "") -> list[RetrievalQuestion]:
    out, seen = [], set()
    for row in rows:
        query = cloze_prefix(row["question"]).strip()
        key = (query.lower(), row["chunk_id"])
        if not query or key in seen:
            continue
        seen.add(key)
        chunk = chunks.get(row["chunk_id"])
        if chunk is None:
            skipped[label + "stale"] = skipped.get(label + "stale", 0) + 1
        elif chunk.groups and not can_read(chunk.groups, groups):
            skipped[label + "restricted"] = skipped.get(label + "restricted", 0) + 1
        else:
            out.append(RetrievalQuestion(query, str(row.get("answer") or ""), chunk.id, chunk.doc))
    return out


def _rated(pairs: list[tuple[str, str]], chunks: dict[str, Chunk], groups: frozenset[str], skipped: dict[str, int],
           weight: int, seed: int) -> tuple[list[RetrievalQuestion], list[RetrievalQuestion]]:
    """Users' liked (question, cited chunk) pairs (tune/ratings.py) as training and validation questions: with 10
    or more distinct questions, every 5th (seeded) is held out for validation, the rest are trained on `weight`
    times. Restricted and stale chunks are skipped as synth's are ("rated restricted", "rated stale")."""
    rated = _questions([{"question": q, "chunk_id": c} for q, c in pairs], chunks, groups, skipped, "rated ")
    distinct = sorted({q.query.lower() for q in rated})
    random.Random(seed).shuffle(distinct)
    held = set(distinct[::5]) if len(distinct) >= 10 else set()
    for q in rated:
        q.weight = 1 if q.query.lower() in held else weight
    return [q for q in rated if q.query.lower() not in held], [q for q in rated if q.query.lower() in held]


def load_questions(workspace: Path, dataset: Path | None, chunks: list[Chunk], include_groups: tuple[str, ...] = (),
                   max_train: int = 2000, max_val: int = 300, seed: int = 0,
                   rated: list[tuple[str, str]] = (), rated_weight: int = 4) -> QuestionSets:
    """The dataset's questions whose source chunk is in the live index, sampled (seeded) to the caps, then users'
    liked questions (`rated`, see _rated) added to both. With too few validation questions (under 30), a tenth of
    the training documents is held out for validation instead."""
    folder = dataset_folder(workspace, dataset)
    by_id = {c.id: c for c in chunks}
    skipped: dict[str, int] = {}
    groups = frozenset(include_groups)
    train = _questions(_rows(folder / "train.jsonl"), by_id, groups, skipped)
    val = _questions(_rows(folder / "val.jsonl"), by_id, groups, skipped)
    if len(val) < 30:
        docs = sorted({q.doc for q in train})
        random.Random(seed).shuffle(docs)
        held = set(docs[:max(1, len(docs) // 10)]) if len(docs) > 1 else set()
        val = val + [q for q in train if q.doc in held]
        train = [q for q in train if q.doc not in held]
    if not train or not val:
        raise ValueError(f"{folder}: too few usable questions ({len(train)} train, {len(val)} validation; "
                         f"skipped {skipped or 'none'}): re-run `ragtune synth` on the current index")
    rng = random.Random(seed)
    train = rng.sample(train, min(max_train, len(train)))
    val = rng.sample(val, min(max_val, len(val)))
    user_train, user_val = _rated(list(rated), by_id, groups, skipped, rated_weight, seed)
    digest = hashlib.sha256()
    for name in ("train.jsonl", "val.jsonl"):
        if (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    digest.update(repr(sorted(rated)).encode("utf-8") if rated else b"")
    return QuestionSets(train + user_train, val + user_val, folder, digest.hexdigest(), skipped,
                        {"train": len(user_train), "val": len(user_val)})


def relevant(q: RetrievalQuestion, chunk: Chunk) -> bool:
    return chunk.id == q.chunk_id or (bool(q.answer) and supported(q.answer, chunk.text))


def mine_negatives(searcher, questions: list[RetrievalQuestion], n: int, groups: frozenset[str] = frozenset(),
                   progress: bool = False) -> None:
    """Fill each question's `negatives` with up to n hard negatives from hybrid search by adaptive score fusion
    (whatever settings.json says: the fusion that ranks the answer's chunk highest on real questions, so its
    wrong hits are the hardest; no reranker)."""
    from tqdm import tqdm

    for q in tqdm(questions, desc="hard negatives", unit="q", disable=not progress):
        hits = searcher.search(q.query, k=n + 10, mode="hybrid", groups=groups, rerank=False, dense_weight=ADAPTIVE)
        q.negatives = [h.chunk.id for h in hits if not relevant(q, h.chunk)][:n]


@dataclass
class Candidates:
    """One validation question's dense and BM25 candidate lists (chunk ids, best first), which of them are relevant,
    and the lists' scores (cosine, BM25), which adaptive fusion reads; `adaptive`: hybrid search's own adaptive
    order (collect_candidates; it also weighs the chunks' documents), used as it is when given."""

    dense: list[str]
    lexical: list[str]
    relevant: set[str]
    dense_scores: list[float] = field(default_factory=list)
    lexical_scores: list[float] = field(default_factory=list)
    adaptive: list[str] | None = None

    def fused(self, fusion: float | str) -> list[str]:
        """The ids in the order hybrid search gives them: `fusion` is ADAPTIVE or a dense weight of RRF."""
        if fusion == ADAPTIVE and self.adaptive is not None:
            return list(self.adaptive)
        if fusion == ADAPTIVE:
            if len(self.dense_scores) != len(self.dense) or len(self.lexical_scores) != len(self.lexical):
                raise ValueError("adaptive fusion needs a score for every candidate")
            return [c for c, _ in adaptive_fuse(list(zip(self.dense, self.dense_scores)),
                                                list(zip(self.lexical, self.lexical_scores)))]
        return [c for c, _ in fuse(self.dense, self.lexical, fusion)]


def collect_candidates(searcher, questions: list[RetrievalQuestion], groups: frozenset[str] = frozenset(),
                       progress: bool = False, desc: str = "validation") -> list[Candidates]:
    from tqdm import tqdm

    out = []
    for q in tqdm(questions, desc=desc, unit="q", disable=not progress):
        dense = searcher.search(q.query, k=CANDIDATES, mode="dense", groups=groups)
        lexical = searcher.search(q.query, k=CANDIDATES, mode="bm25", groups=groups)
        fused = searcher.search(q.query, k=CANDIDATES, mode="hybrid", groups=groups, rerank=False,
                                dense_weight=ADAPTIVE)
        rel = {h.chunk.id for h in dense + lexical + fused if relevant(q, h.chunk)}
        out.append(Candidates([h.chunk.id for h in dense], [h.chunk.id for h in lexical], rel,
                              [float(h.score) for h in dense], [float(h.score) for h in lexical],
                              [h.chunk.id for h in fused]))
    return out


def first_relevant(ranked: list[str], rel: set[str], depth: int = 10) -> int | None:
    for r, cid in enumerate(ranked[:depth], start=1):
        if cid in rel:
            return r
    return None


def recall_table(ranks: list[int | None]) -> dict:
    """recall@1/3/5 and MRR@10 of 1-based ranks (None = not in the top 10), rounded for cards."""
    n = max(len(ranks), 1)
    table = {f"recall@{k}": round(sum(r is not None and r <= k for r in ranks) / n, 4) for k in RECALL_KS}
    table["mrr"] = round(sum(1 / r for r in ranks if r) / n, 4)
    table["n"] = len(ranks)
    return table


def better(a: dict, b: dict) -> bool:
    """a ranks better than b: higher recall@3, then higher MRR."""
    return (a["recall@3"], a["mrr"]) > (b["recall@3"], b["mrr"])
