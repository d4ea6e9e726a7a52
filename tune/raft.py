"""RAFT-style chat examples for one synthesised item (tune/synth.py makes the items and calls this): the question
with its source chunk and hard-negative distractors, shuffled and numbered exactly as the answer engine numbers
them, and the closed-book twin."""

from __future__ import annotations

import random

from generate.citations import Citation
from generate.prompts import REFUSAL, answer_with_citation, build_messages
from ingest.types import can_read
from generate.question_kind import question_kind
from tune.filters import normalize, supported
from tune.qgen import QAItem
from tune.synth_config import SynthConfig


def _citation(n: int, chunk, text: str) -> Citation:
    return Citation(n, chunk.doc, chunk.section, chunk.page, chunk.id, text)


def raft_examples(item: QAItem, hits, config: SynthConfig, allowed, groups, pool, seen_text) -> list[dict]:
    """The chat examples of one kept item: a RAFT example (the source chunk among `config.distractors` hard
    negatives from `hits`, or, for a seeded `drop_oracle` share, the distractors alone and the refusal as target)
    and, with `config.closed_book`, the question alone with the bare answer. `seen_text(chunk)` is the chunk as
    the answer engine shows it; `allowed(chunk)` says whether a chunk may appear in the data."""
    chunk = item.chunk
    rng = random.Random(f"{config.seed}|{chunk.id}|{item.question}")
    distractors = []
    for h in hits:
        c = h.chunk
        if len(distractors) >= config.distractors:
            break
        if c.id == chunk.id or not allowed(c) or supported(item.support, c.text) or \
                supported(item.support, seen_text(c)) or normalize(c.text) == normalize(chunk.text):
            continue
        distractors.append(c)
    if len(distractors) < config.distractors:  # rare: fill with random readable chunks of other documents
        others = [c for c in pool if c.doc != chunk.doc and can_read(c.groups, groups)
                  and c.id not in {d.id for d in distractors} and not supported(item.support, c.text)]
        rng.shuffle(others)
        distractors.extend(others[: config.distractors - len(distractors)])
    base = {"style": item.style, "rule": item.rule, "doc": chunk.doc, "chunk_id": chunk.id,
            "question": item.question, "answer": item.answer, "question_kind": question_kind(item.question),
            "evidence": item.evidence}
    out = []
    drop = config.drop_oracle > 0 and rng.random() < config.drop_oracle
    if drop and not distractors:
        drop = False  # nothing to show without the source
    sources = list(distractors) if drop else [*distractors, chunk]
    rng.shuffle(sources)
    citations = [_citation(n, c, seen_text(c)) for n, c in enumerate(sources, start=1)]
    if drop:
        target = REFUSAL if config.no_oracle_target == "refuse" else answer_with_citation(item.answer, None)
        kind = "raft_no_oracle"
    else:
        n_source = next(cit.n for cit in citations if cit.chunk_id == chunk.id)
        target = answer_with_citation(item.answer, n_source)
        kind = "raft"
    messages = build_messages(item.question, citations) + [{"role": "assistant", "content": target}]
    out.append({"messages": messages, "kind": kind, **base})
    if config.closed_book:
        messages = build_messages(item.question, [], with_context=False)
        messages.append({"role": "assistant", "content": answer_with_citation(item.answer, None)})
        out.append({"messages": messages, "kind": "closed_book", **base})
    return out
