"""`ragtune tune-retriever`: teach retrieval the workspace's own documents from a synth dataset.

    report = tune_retriever(RetrieverTuneConfig(workspace=Path("ws")))

1. Questions: the dataset's (question, source chunk) pairs (tune/retriever_data.py); validation questions come
   from the documents synth held out. Users' feedback in the app adds their questions with the chunks a liked
   answer cited, the passage they picked or the section they pointed at in the viewer (tune/ratings.py). Hard
   negatives from today's hybrid search.
2. Embedder (optional part): a fine-tuned copy of the index's embedder, scored on validation with its own fusion
   weight against the embedder the index has now.
3. Fusion: adaptive score fusion by default (retrieve/fusion.adaptive_fuse, no constant), a given dense weight of
   reciprocal-rank fusion, or (`auto`) chosen on validation among adaptive and the RRF weights 0, 0.1, ..., 1 (0
   and 1 are BM25 and dense alone, so fusion never ranks below the better of its inputs on these questions).
4. Reranker: a cross-encoder from the packaged MiniLM weights, scored on validation reordering the fused top-N.
Each trained part gets a folder WS/retrievers/<kind>-<stamp> with a card (data hash, steps, validation recall
before/after) and is used only if it beat what search had without it on validation (recall@3, then MRR); then
settings.json is written, and a newly chosen (or dropped) embedder re-embeds the index, recorded in its manifest.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ingest.files import write_text_atomic
from retrieve.fusion import ADAPTIVE
from retrieve.rerank import RERANK_TOKENS
from retrieve.retrievers import (RetrieverSettings, part_path, read_settings, remove_unused, retrievers_dir,
                                 write_settings)
from tune.ratings import liked_pairs, read_ratings
from tune.retriever_train import RERANK_LAYERS
from tune.retriever_data import (Candidates, better, collect_candidates, first_relevant, load_questions,
                                 mine_negatives, recall_table)

PARTS = ("embedder", "reranker")
WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # dense weights of RRF tried for fusion
FUSIONS = (ADAPTIVE,) + WEIGHTS  # every fusion the validation tables score: adaptive, then each RRF weight
RERANK_WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # blends of the reranker's order with the fused one


@dataclass
class RetrieverTuneConfig:
    workspace: Path
    dataset: Path | None = None  # a synth dataset folder (train.jsonl, val.jsonl); default WS/datasets/default
    parts: tuple[str, ...] = PARTS  # what to train
    # hybrid search's fusion: ADAPTIVE ("adaptive", adaptive score fusion), or a dense weight of reciprocal-rank
    # fusion (0 = BM25 alone, 0.5 = plain RRF, 1 = dense alone), or None to choose among those on the synth
    # validation questions (choose_weight). Adaptive by default: on the development suite's real questions it never
    # fell below the better single retriever (plain RRF fell 0.04 below BM25 on narrativeqa) and its rag and hybrid
    # answers were as good; synth questions copy their chunk's words, so they favour BM25: weights chosen on them
    # fell below plain RRF on data/eval (0.918 vs 0.941 recall@3) and pubmedqa (0.75 vs 0.83) (docs/RESULTS.md).
    fusion_weight: float | str | None = ADAPTIVE
    negatives: int = 3  # hard negatives per question for the reranker (the embedder uses the hardest one)
    max_train_questions: int = 2000  # a seeded sample of the training questions
    max_val_questions: int = 300
    reranker_batch: int = 8  # questions per step (each with its source, its negatives and one in-batch passage)
    reranker_lr: float = 3e-4  # its head starts fresh; 1e-3 stayed near chance on emanualqa's synth questions
    embedder_batch: int = 32  # triplets per step (each also meets the batch's other passages as negatives)
    embedder_lr: float = 2e-5
    max_steps: int | None = None  # per part; default one pass over the training questions
    time_budget_s: float | None = 300.0  # per part: training stops after this many seconds
    rerank_top: int = RetrieverSettings.rerank_top  # fused candidates the reranker reorders at search time
    rerank_tokens: int = RERANK_TOKENS  # question + passage tokens the reranker reads (latency: evals/bench_index)
    # transformer layers of the reranker: the first N of reranker_base's (fewer = faster searches; None = all). Two
    # of MiniLM's six rerank 20 candidates within ~140 ms on 2 cores and ranked as well as six on emanualqa
    rerank_layers: int | None = RERANK_LAYERS
    reranker_base: str = "all-minilm-l6-v2"  # the packaged MiniLM weights (alias), a folder or a hub id
    include_groups: tuple[str, ...] = ()  # restricted chunks of these groups may be questions (as synth's option)
    # users' feedback in the app (WS/ratings.jsonl, tune/ratings.py): each liked question with the chunks it names
    # joins the synth questions, trained on `rated_weight` times (a fifth held out for validation from 10 on)
    ratings: bool = True
    rated_weight: int = 4
    seed: int = 0

    def check(self) -> "RetrieverTuneConfig":
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise ValueError(f"--parts takes {', '.join(PARTS)} (comma-separated), not {', '.join(unknown)}")
        if self.negatives < 1 or self.rerank_top < 2 or self.rerank_tokens < 32:
            raise ValueError("--negatives must be >= 1, --rerank-top >= 2 and --rerank-tokens >= 32")
        if self.rerank_layers is not None and self.rerank_layers < 1:
            raise ValueError("--rerank-layers must be >= 1")
        w = self.fusion_weight
        if w is not None and w != ADAPTIVE and (isinstance(w, (str, bool)) or not 0.0 <= w <= 1.0):
            raise ValueError(f"--fusion-weight must be 'adaptive', 'auto' or a number from 0 to 1, not {w}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("--max-steps must be >= 1")
        if self.rated_weight < 1:
            raise ValueError("--rated-weight must be >= 1")
        if self.max_train_questions < 10 or self.max_val_questions < 10:
            raise ValueError("at least 10 training and 10 validation questions are needed")
        return self


@dataclass
class PartReport:
    name: str
    active: bool
    why: str
    before: dict
    after: dict
    steps: int = 0
    wall_s: float = 0.0


@dataclass
class RetrieverReport:
    dataset: str
    data_hash: str
    questions: dict
    dense_weight: float | str  # the fusion chosen: ADAPTIVE ("adaptive") or a dense weight of RRF
    fusion: dict  # fusion (ADAPTIVE or an RRF weight) -> validation table of the chosen embedder
    parts: dict[str, PartReport] = field(default_factory=dict)
    reindexed: bool = False
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["fusion"] = {str(w): t for w, t in self.fusion.items()}
        return d


def fusion_tables(cands: list[Candidates]) -> dict[float | str, dict]:
    """Validation tables per fusion (FUSIONS: adaptive, then each RRF weight)."""
    return {f: recall_table([first_relevant(x.fused(f), x.relevant) for x in cands]) for f in FUSIONS}


def choose_weight(tables: dict[float | str, dict]) -> float | str:
    """The one-standard-error rule: of the fusions whose validation recall@3 is within one standard error of the
    best, adaptive fusion if it is one of them, else the RRF weight nearest plain RRF (0.5), then the best MRR.
    Synth questions copy their chunk's words, so on them BM25 alone nearly always wins by a little; real questions
    reword, and the rule keeps the default (and the dense side) unless the synth questions show a clear gain
    without it."""
    top = max(t["recall@3"] for t in tables.values())
    n = max(next(iter(tables.values()))["n"], 1)
    se = max(math.sqrt(top * (1 - top) / n), 1 / n)
    close = [f for f in tables if tables[f]["recall@3"] >= top - se]
    return min(close, key=lambda f: (f != ADAPTIVE, 0.0 if f == ADAPTIVE else abs(f - 0.5), -tables[f]["mrr"]))


def _weight(config: RetrieverTuneConfig, tables: dict[float | str, dict]) -> float | str:
    if config.fusion_weight is None:
        return choose_weight(tables)
    if config.fusion_weight == ADAPTIVE:
        return ADAPTIVE
    return min(WEIGHTS, key=lambda w: abs(w - config.fusion_weight))  # the tables hold tenths


def reranked_tables(reranker, questions, cands: list[Candidates], texts: dict[str, str], weight: float | str,
                    top: int) -> dict[float, dict]:
    """Validation tables of the fused top-N (fused as search will: `weight` is ADAPTIVE or an RRF weight) reordered
    by `reranker`, per blend weight (retrieve.rerank.blend)."""
    from tqdm import tqdm

    from retrieve.rerank import blend

    ranks: dict[float, list] = {w: [] for w in RERANK_WEIGHTS}
    for q, x in tqdm(list(zip(questions, cands)), desc="validation (reranker)", unit="q"):
        fused = x.fused(weight)
        head = fused[:top]
        scores = reranker.score(q.query, [texts[c] for c in head])
        for w in RERANK_WEIGHTS:
            ranks[w].append(first_relevant(blend(head, scores, w) + fused[top:], x.relevant))
    return {w: recall_table(r) for w, r in ranks.items()}


def choose_rerank_weight(tables: dict[float, dict]) -> float:
    """The blend with the best validation recall@3 (then MRR); ties go to the reranker's order alone."""
    best = 1.0
    for w in sorted(RERANK_WEIGHTS, reverse=True):
        if better(tables[w], tables[best]):
            best = w
    return best


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def _write_card(folder: Path, card: dict) -> None:
    write_text_atomic(folder / "card.json", json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    v = card.get("validation") or {}
    rows = [f"| {label} | " + " | ".join(f"{v.get(key, {}).get(m, '-')}" for m in ("recall@1", "recall@3",
                                                                                   "recall@5", "mrr"))
            + " |" for key, label in (("before", "without it"), ("after", "with it"))]
    (folder / "README.md").write_text(
        f"# Retriever part `{card['name']}` ({card['kind']})\n\nMade by `ragtune tune-retriever` on "
        f"{card['created']} from `{card['dataset']}` (data hash `{card['data_hash'][:16]}`), base "
        f"`{card['base_model']}`: {card['steps']} steps, {card['wall_s']} s on {card['device']} {card['precision']}."
        f"\nUsed by search: {'yes' if card.get('active') else 'no'} ({card.get('why', 'not validated yet')}).\n\n"
        "Validation (synth questions of held-out documents, answer chunk in the top k):\n\n"
        "| | R@1 | R@3 | R@5 | MRR |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def _publish_part(workspace: Path, kind: str, train, card: dict) -> str:
    """Train into a staging folder, write its card, rename it into WS/retrievers/<kind>-<stamp>; returns the name."""
    root = retrievers_dir(workspace)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{kind}-{_stamp()}"
    tmp = root / f".tmp-{name}"
    try:
        stats = train(tmp)
        card.update(name=name, kind=kind, created=time.strftime("%Y-%m-%d %H:%M:%S"), **asdict(stats))
        _write_card(tmp, card)
        tmp.rename(part_path(workspace, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return name


def _validated(folder: Path, before: dict, after: dict, what: str) -> PartReport:
    """Record the part's validation in its card and whether search uses it (only if it ranks better)."""
    won = better(after, before)
    why = f"validation recall@3 {after['recall@3']} vs {before['recall@3']}"
    if after["recall@3"] == before["recall@3"]:  # the tie is broken by MRR (tune.retriever_data.better): say so
        why += f" (MRR {after['mrr']} vs {before['mrr']})"
    why += f" {what}" + ("" if won else ": not better, not used")
    card = json.loads((folder / "card.json").read_text())
    card.update(active=won, why=why, validation={"before": before, "after": after})
    _write_card(folder, card)
    return PartReport(folder.name, won, why, before, after, card["steps"], card["wall_s"])


def _index_embedder(searcher) -> tuple[str | None, str]:
    """(tuned part name or None, the base model it was trained from or the index's own model)."""
    from retrieve.retrievers import read_part_card

    model = searcher.generation.manifest.settings["embed_model"]
    name = Path(model).name
    if Path(model).is_absolute() and name.startswith("embedder-"):
        card = read_part_card(part_path(searcher.workspace, name))
        return name, card.get("base_model") or "all-minilm-l6-v2"
    return None, model


def _tune_embedder(config: RetrieverTuneConfig, searcher, sets, texts: dict, base_model: str, card: dict,
                   before: dict, groups: frozenset, progress: bool) -> tuple[PartReport, list, dict]:
    from retrieve import EmbedConfig, Embedder
    from retrieve.embed import resolve_embedder
    from tune.retriever_train import train_embedder

    triplets = [(q.query, texts[q.chunk_id], texts[q.negatives[0]]) for q in sets.train
                for _ in range(q.weight) if q.negatives]
    name = _publish_part(config.workspace, "embedder", lambda out: train_embedder(
        resolve_embedder(base_model), triplets, out, batch_size=config.embedder_batch, lr=config.embedder_lr,
        max_steps=config.max_steps, time_budget_s=config.time_budget_s, seed=config.seed, progress=progress),
        {**card, "base_model": base_model, "triplets": len(triplets)})
    tuned = Embedder(EmbedConfig(model=str(part_path(config.workspace, name).resolve())))
    view = searcher.with_embedder(tuned, progress=progress)
    cands = collect_candidates(view, sets.val, groups, progress, desc="validation (tuned embedder)")
    tables = fusion_tables(cands)
    after = tables[_weight(config, tables)]
    part = _validated(part_path(config.workspace, name), before, after, "with the index's embedder")
    return part, cands, tables


def _tune_reranker(config: RetrieverTuneConfig, sets, texts: dict, cands: list, weight: float | str, card: dict,
                   before: dict, progress: bool) -> tuple[PartReport, float]:
    from retrieve.embed import resolve_embedder
    from retrieve.rerank import Reranker
    from tune.retriever_train import train_reranker

    groups = [(q.query, texts[q.chunk_id], [texts[n] for n in q.negatives]) for q in sets.train
              for _ in range(q.weight) if len(q.negatives) == config.negatives]
    if not groups:
        raise ValueError(f"no training question has {config.negatives} hard negatives: lower --negatives")
    name = _publish_part(config.workspace, "reranker", lambda out: train_reranker(
        resolve_embedder(config.reranker_base), groups, out, max_tokens=config.rerank_tokens,
        layers=config.rerank_layers,
        batch_size=config.reranker_batch, lr=config.reranker_lr, max_steps=config.max_steps,
        time_budget_s=config.time_budget_s, seed=config.seed, progress=progress),
        {**card, "base_model": config.reranker_base, "training_questions": len(groups),
         "max_tokens": config.rerank_tokens, "rerank_top": config.rerank_top, "layers": config.rerank_layers})
    reranker = Reranker(str(part_path(config.workspace, name)), config.rerank_tokens)
    tables = reranked_tables(reranker, sets.val, cands, texts, weight, config.rerank_top)
    blend_weight = choose_rerank_weight(tables)
    part = _validated(part_path(config.workspace, name), before, tables[blend_weight],
                      f"from fusion alone (blend {blend_weight})")
    return part, blend_weight


def reindex(workspace: Path, progress: bool = False):
    """Re-embed the live index's documents with the workspace's embedder (after settings.json changed it)."""
    from ingest import ChunkConfig
    from retrieve import IndexConfig, build_index
    from retrieve.store import indexed_docs_dir, load_current

    manifest = load_current(workspace).manifest
    docs = indexed_docs_dir(workspace)
    if docs is None:
        raise FileNotFoundError(f"cannot re-embed the index of {workspace}: its documents folder "
                                f"{manifest.docs_dir or '(unknown)'} is gone; run `ragtune index DOCS` again")
    config = IndexConfig(chunk=ChunkConfig(**manifest.settings.get("chunk", {})), dense_kind=manifest.dense_kind)
    return build_index(docs, workspace, config, progress=progress)


def tune_retriever(config: RetrieverTuneConfig, progress: bool = False,
                   on_phase: Callable[[str, float], None] | None = None) -> RetrieverReport:
    """Train the parts `config` names, score each on validation, and switch search to what won (module doc).
    `on_phase(what, fraction done)` hears each stage (the app's job shows it); `progress`: tqdm bars."""
    from retrieve import Searcher

    phase = on_phase or (lambda what, fraction: None)
    config.check()
    if "reranker" in config.parts:  # before minutes of mining: a layer count the base model lacks fails now
        from retrieve.embed import resolve_embedder
        from tune.retriever_train import check_layers

        check_layers(resolve_embedder(config.reranker_base), config.rerank_layers)
    started = time.perf_counter()
    ws = Path(config.workspace)
    searcher = Searcher(ws, rerank=False).with_reranker(None)
    gen = searcher.generation
    rated = liked_pairs(read_ratings(ws)) if config.ratings else []
    sets = load_questions(ws, config.dataset, gen.chunks, config.include_groups, config.max_train_questions,
                          config.max_val_questions, config.seed, rated, config.rated_weight)
    groups = frozenset(config.include_groups)
    texts = {c.id: c.embed_text for c in gen.chunks}
    phase("finding hard negatives and scoring the fusions", 0.05)
    mine_negatives(searcher, sets.train, config.negatives, groups, progress)
    cands = collect_candidates(searcher, sets.val, groups, progress)
    tables = fusion_tables(cands)
    weight = _weight(config, tables)
    card = {"dataset": str(sets.dataset), "data_hash": sets.data_hash, "negatives": config.negatives,
            "questions": {"train": len(sets.train), "val": len(sets.val), "skipped": sets.skipped,
                          "rated": sets.rated},
            "hyperparameters": {k: v for k, v in asdict(config).items() if k not in ("workspace", "dataset")}}
    previous = read_settings(ws)
    index_part, base_model = _index_embedder(searcher)
    embedder = index_part
    report = RetrieverReport(str(sets.dataset), sets.data_hash, card["questions"], weight, tables)
    if "embedder" in config.parts:
        phase("training the embedder", 0.15)
        part, cands_t, tables_t = _tune_embedder(config, searcher, sets, texts, base_model, card, tables[weight],
                                                 groups, progress)
        report.parts["embedder"] = part
        if part.active:
            embedder, cands, tables, weight = part.name, cands_t, tables_t, _weight(config, tables_t)
    reranker, blend_weight = previous.reranker, previous.rerank_weight
    if "reranker" in config.parts:
        phase("training the reranker", 0.55 if "embedder" in config.parts else 0.15)
        part, blend_weight = _tune_reranker(config, sets, texts, cands, weight, card, tables[weight], progress)
        report.parts["reranker"] = part
        reranker = part.name if part.active else None
    report.dense_weight, report.fusion = weight, tables
    write_settings(ws, RetrieverSettings(None if weight == ADAPTIVE else weight, reranker, embedder,
                                         config.rerank_top, config.rerank_tokens, blend_weight))
    if embedder != index_part:
        phase("re-embedding the index with the chosen embedder", 0.9)
        reindex(ws, progress)
        report.reindexed = True
    report.removed = remove_unused(ws, keep={p.name for p in report.parts.values()} | {embedder})
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def reset_retriever(workspace: Path, progress: bool = False) -> dict:
    """Back to the default search: adaptive score fusion, the packaged embedder (re-embedding if needed), no
    reranker."""
    from retrieve import Searcher

    ws = Path(workspace)
    index_part, _ = _index_embedder(Searcher(ws, rerank=False))
    write_settings(ws, RetrieverSettings())
    reindexed = False
    if index_part is not None:
        reindex(ws, progress)
        reindexed = True
    return {"reindexed": reindexed, "removed": remove_unused(ws, keep=set())}
