"""`ragtune synth`: RAFT-style training data made from the indexed chunks.

    chunks of the live index (restricted ones left out unless their groups are named)
      └─ teacher (tune.qgen: extract | local | URL) ─▶ (question, answer span, source chunk) items
           └─ filters (tune.filters): malformed, answer length, answer in question, answer type (model-written
              questions), unsupported, duplicate, round trip (the question retrieves its chunk in the top k)
                └─ examples (chat messages built with generate.prompts, exactly as the answer engine prompts):
                     raft            question + source chunk + k hard-negative distractors, shuffled and numbered;
                                     target "span [n]" with n the source's number
                     raft_no_oracle  the source dropped (a fraction of items): target the refusal (or, with
                                     no_oracle_target="answer", the bare span: RAFT's memorisation variant)
                     closed_book     the question alone (no documents); target the bare span (the `tuned` mode)
                     recite          (opt-in, train only) a passage asked for by title and section; target the
                                     passage itself: every token a label, facts for `tuned` mode (tune/recite.py)
                       └─ split by document (val ~10% of documents) ─▶ WS/datasets/<name>/
                                                                         train.jsonl val.jsonl card.json card.md
    recipe "facts": only the question-style closed_book examples, all of them trained, validation a recall
    sample of them (tune/splits.py): an adapter that answers without documents (`tuned` mode)

The dataset folder (tune/dataset_files.py) is written in a temporary folder and renamed into place, so a killed
run never leaves half a dataset. Everything is seeded: the same index, config and seed give byte-identical
train/val files.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from pathlib import Path

from generate.prompts import neutralize
from tune.dataset_files import write_dataset
from tune.filters import FILTERS, Deduper, FilterStats, answer_in_question, answer_length_ok, answer_type_ok, \
    normalize, round_trip_rank, supported
from tune.qgen import ExtractTeacher, QAItem, find_spans
from tune.raft import raft_examples
from tune.recite import recite_examples
from tune.splits import FACTS_VALIDATION, facts_split, split_by_document
from tune.synth_config import SynthConfig, SynthReport
from tune.teachers import LocalTeacher, OpenAITeacher

class _DocFreq:
    """How many chunks of the index contain a text (normalised), cached; `frequent(text)` is True above the
    threshold share (at least 3 chunks)."""

    def __init__(self, chunks, max_share: float) -> None:
        self._texts = [normalize(c.text) for c in chunks]
        self._limit = max(3, int(max_share * len(chunks)))
        self._cache: dict[str, bool] = {}

    def __call__(self, text: str) -> bool:
        key = normalize(text)
        if key not in self._cache:
            count = 0
            for t in self._texts:
                if key in t:
                    count += 1
                    if count > self._limit:
                        break
            self._cache[key] = count > self._limit
        return self._cache[key]


def make_teacher(config: SynthConfig, frequent, generator=None):
    """The question generator for `config.teacher`; `generator` overrides the model behind local/URL teachers
    (tests use a stub)."""
    extract = ExtractTeacher(frequent=frequent, max_spans_per_chunk=config.max_spans_per_chunk,
                             styles=tuple(config.styles), max_forms_per_chunk=config.max_forms_per_chunk,
                             max_endings_per_chunk=config.max_endings_per_chunk, seed=config.seed)
    if config.teacher == "extract":
        return extract
    if config.teacher == "local":
        if generator is None:
            from generate.local import local_generator

            generator = local_generator(config.workspace, config.teacher_model)
        return LocalTeacher(generator, extract, spans_per_chunk=min(2, config.max_spans_per_chunk))
    if generator is None:
        from generate.remote import OpenAIGenerator

        generator = OpenAIGenerator(config.teacher, config.api_key, config.teacher_model or "default")
    teacher = OpenAITeacher(generator, questions_per_chunk=config.questions_per_chunk)
    teacher.name = config.teacher
    return teacher


def restricted_warning(groups) -> str:
    return (f"restricted documents of groups {', '.join(sorted(groups))} are included in the training data: "
            "anyone who can use the tuned adapter may get their content out of it; weights cannot enforce access "
            "rules")


def synthesize(config: SynthConfig, searcher=None, progress: bool = True, generator=None) -> SynthReport:
    """Build the dataset WS/datasets/<name>/ from the live index; see the module docstring."""
    config.check()
    t0 = time.perf_counter()
    ws = Path(config.workspace)
    if searcher is None:
        from retrieve import Searcher

        searcher = Searcher(ws)
    gen = searcher.generation  # one generation throughout: the chunks and the searches agree
    access = _Access(frozenset(g.strip().lower() for g in config.include_groups if g.strip()))
    warnings: list[str] = [restricted_warning(access.include)] if access.include else []
    pool, restricted_excluded = _pool(gen.chunks, config, access)
    teacher = make_teacher(config, _DocFreq(gen.chunks, config.max_span_df), generator)
    teacher_name = teacher.name if config.teacher != "local" else f"local:{config.teacher_model or 'default'}"
    tally = _Tally()
    view_text = {}  # chunk id -> the text as the model sees it in a prompt

    def seen_text(chunk) -> str:
        if chunk.id not in view_text:
            view_text[chunk.id] = neutralize(chunk.text)[0]
        return view_text[chunk.id]

    pending = _cheap_filters(_propose(pool, teacher, progress), config, seen_text, tally)
    examples, kept_items = _round_trip(pending, searcher, config, access, pool, seen_text, progress)
    examples, train, val, val_docs, docs = _split(examples, config, pool, seen_text, warnings)
    card = {
        "name": config.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "teacher": teacher_name,
        "counts": _counts(train, val, examples, tally, pool, docs, val_docs),
        "filtered": dict(tally.total.removed),
        "filter_stats": tally.to_json(),
        "filters": {"order": list(FILTERS), "round_trip_k": config.round_trip_k, "round_trip_mode": "hybrid",
                    "dedup_jaccard": config.dedup_jaccard,
                    "answer_length": [config.min_answer_chars, config.max_answer_chars, config.max_answer_words]},
        "restricted": {"included_groups": sorted(access.include), "restricted_chunks_excluded": restricted_excluded,
                       "note": "chunks with access groups are left out unless their groups are named with "
                               "--include-groups: a tuned model cannot enforce access rules"},
        "no_oracle_target": config.no_oracle_target,
        "recipe": config.recipe,
        "validation": FACTS_VALIDATION if config.recipe == "facts" else "held-out documents (unseen by training)",
        "config": config.to_json(),
        "source_index": {"generation": gen.path.name, "n_chunks": len(gen.chunks),
                         "embedder": gen.manifest.embedder, "docs_dir": gen.manifest.docs_dir},
        "warnings": warnings,
    }
    out, content_hash = write_dataset(ws, config.name, train, val, card)
    return SynthReport(
        dataset=out, train=len(train), val=len(val), filtered=dict(tally.total.removed),
        candidates=tally.total.candidates, kept=tally.total.kept, by_kind=card["counts"]["by_kind"],
        by_style=dict(kept_items), stats=card["filter_stats"], teacher=teacher_name, chunks_used=len(pool),
        restricted_excluded=restricted_excluded, val_docs=sorted(val_docs), content_hash=content_hash,
        seconds=round(time.perf_counter() - t0, 2), warnings=warnings)


class _Access:
    """Which chunks a dataset may use: unrestricted ones, and restricted ones of the groups named (--include-groups);
    its searches see those groups only."""

    def __init__(self, include: frozenset[str]) -> None:
        self.include = include

    def allowed(self, chunk) -> bool:
        return not chunk.groups or bool(set(chunk.groups) & self.include)

    def groups(self, chunk) -> frozenset[str]:
        return frozenset(chunk.groups) & self.include


class _Tally:
    """FilterStats in total and per item style, question rule and span kind."""

    def __init__(self) -> None:
        self.total = FilterStats()
        self.per_style: dict[str, FilterStats] = {}
        self.per_rule: dict[str, FilterStats] = {}
        self.per_kind: dict[str, FilterStats] = {}

    def of(self, item: QAItem) -> list[FilterStats]:
        return [self.total, self.per_style.setdefault(item.style, FilterStats()),
                self.per_rule.setdefault(item.rule, FilterStats()), self.per_kind.setdefault(item.kind, FilterStats())]

    def to_json(self) -> dict:
        return {"total": self.total.to_json(),
                "by_style": {k: v.to_json() for k, v in sorted(self.per_style.items())},
                "by_rule": {k: v.to_json() for k, v in sorted(self.per_rule.items())},
                "by_span_kind": {k: v.to_json() for k, v in sorted(self.per_kind.items())}}


def _pool(chunks, config: SynthConfig, access: _Access) -> tuple[list, int]:
    """(the chunks items are made from, in document order (a seeded sample with --limit), restricted ones left out)."""
    pool = [c for c in chunks if access.allowed(c)]
    restricted_excluded = sum(1 for c in chunks if not access.allowed(c))
    pool.sort(key=lambda c: (c.doc, c.position))
    if config.limit is not None and config.limit < len(pool):
        pool = sorted(random.Random(config.seed).sample(pool, config.limit), key=lambda c: (c.doc, c.position))
    if not pool:
        raise ValueError("the index has no chunks this dataset may use"
                         + (" (all are restricted; see --include-groups)" if restricted_excluded else ""))
    return pool, restricted_excluded


def _propose(pool, teacher, progress: bool) -> list[QAItem]:
    """The teacher's items for every chunk (the slow part with a model teacher)."""
    from tqdm import tqdm

    proposed: list[QAItem] = []
    bar = tqdm(pool, desc="synth: questions", unit="chunk", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for chunk in bar:
        proposed.extend(teacher.items(chunk))
        if progress:
            bar.set_postfix(items=len(proposed), refresh=False)
    bar.close()
    return proposed


def _cheap_filters(proposed: list[QAItem], config: SynthConfig, seen_text, tally: _Tally):
    """The filters before the round trip, in order: [(item, its FilterStats)] of the items that passed them."""
    dedup = Deduper(config.dedup_jaccard)
    pending: list[tuple[QAItem, list[FilterStats]]] = []
    for item in proposed:
        stats = tally.of(item)
        for s in stats:
            s.candidates += 1
        reason = _cheap_check(item, config, dedup, seen_text)
        if reason:
            for s in stats:
                s.remove(reason)
            continue
        dedup.add(item.question, item.chunk.id)
        pending.append((item, stats))
    return pending


def _round_trip(pending, searcher, config: SynthConfig, access: _Access, pool, seen_text, progress: bool):
    """Keep the items whose question finds its chunk in the top round_trip_k and make their chat examples;
    returns (examples, kept items per style). Query vectors are embedded in batches up front: one query at a
    time is ~40x slower on a CPU."""
    from tqdm import tqdm

    search_k = max(config.round_trip_k, config.distractors + 8)
    examples: list[dict] = []
    kept_items: Counter = Counter()
    with searcher.queries_embedded([item.search_query for item, _ in pending], progress=progress,
                                   desc="synth: embedding queries"):
        bar = tqdm(pending, desc="synth: round trip", unit="item", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        for item, stats in bar:
            hits = searcher.search(item.search_query, k=search_k, mode="hybrid", groups=access.groups(item.chunk))
            if round_trip_rank(hits[: config.round_trip_k], item.chunk.id) is None:
                for s in stats:
                    s.remove("round_trip")
                continue
            for s in stats:
                s.kept += 1
            kept_items[item.style] += 1
            examples.extend(raft_examples(item, hits, config, access.allowed, access.groups(item.chunk), pool,
                                          seen_text))
        bar.close()
    return examples, kept_items


def _split(examples: list[dict], config: SynthConfig, pool, seen_text, warnings: list[str]):
    """(the recipe's examples, train, val, validation documents, all documents), shuffled with the seed."""
    if config.recipe == "facts":
        examples = [e for e in examples if e["kind"] == "closed_book" and e["style"] in config.facts_styles]
    docs = sorted({e["doc"] for e in examples})
    if config.recipe == "facts":
        train, val = facts_split(examples, config.val_fraction, config.seed)
        val_docs: set[str] = set()
    else:
        train, val, val_docs = split_by_document(examples, config.val_fraction, config.seed)
        if len(docs) < 2:
            warnings.append("fewer than two documents produced examples: no validation split")
    if config.recite:
        train += recite_examples([c for c in pool if c.doc not in val_docs and c.doc in docs], seen_text)
    random.Random(config.seed + 1).shuffle(train)
    random.Random(config.seed + 2).shuffle(val)
    if not train:
        warnings.append("no training examples survived the filters")
    return examples, train, val, val_docs, docs


def _counts(train, val, examples, tally: _Tally, pool, docs, val_docs) -> dict:
    return {"train": len(train), "val": len(val), "by_kind": dict(Counter(e["kind"] for e in train + val)),
            "by_style": dict(Counter(e["style"] for e in examples)),
            "by_question_kind": dict(Counter(e.get("question_kind", e["kind"]) for e in train + val)),
            "by_split_kind": {"train": dict(Counter(e["kind"] for e in train)),
                              "val": dict(Counter(e["kind"] for e in val))},
            "items_kept": tally.total.kept, "items_candidates": tally.total.candidates,
            "chunks_used": len(pool), "documents": len(docs), "val_documents": sorted(val_docs)}


def _cheap_check(item: QAItem, config: SynthConfig, dedup: Deduper, seen_text) -> str | None:
    """The name of the first failing filter before the round trip, or None."""
    if not item.question.strip() or not item.answer.strip() or \
            (item.style == "question" and not item.question.rstrip().endswith("?")):
        return "malformed"
    if item.evidence:  # a form item: a clause or sentences, checked on the chunk text it rests on
        words = config.max_form_answer_words
        if not answer_length_ok(item.evidence, config.min_answer_chars, 8 * words, words):
            return "answer_length"
    elif not answer_length_ok(item.answer, config.min_answer_chars, config.max_answer_chars, config.max_answer_words):
        return "answer_length"
    if answer_in_question(item.question, item.answer):
        return "answer_in_question"
    if item.rule in ("local", "teacher") and not answer_type_ok(item.question, _answer_kind(item)):
        return "answer_type"
    if not supported(item.support, seen_text(item.chunk)):
        return "unsupported"
    if dedup.is_duplicate(item.question, item.chunk.id):
        return "duplicate"
    return None


def _answer_kind(item: QAItem) -> str:
    """The span kind of the answer: known for extracted spans, else the kind find_spans gives the whole answer."""
    if item.kind != "teacher":
        return item.kind
    spans = find_spans(item.answer)
    if len(spans) == 1 and spans[0].text == item.answer.strip().rstrip(".").strip():
        return spans[0].kind
    return ""
