"""How often the passages a reader gets still hold the gold answer, focused or whole (retrieve/focus.py).

    python -m evals.focus_recall --workspace WS [--questions FILE | --fictional-knowledge DIR] [--limit N]

For each answerable question that reads focused passages (fact questions and cloze probes; why/how/yes-no
questions read whole chunks), the top-k hybrid chunks are searched as the answer engine searches them, and the
table gives the share whose gold answer (contains-match, as `ragtune eval` scores) is in: the whole chunks, the
embedder's one sentence per chunk (`term_weight` 0), and the default focus (the embedder's sentence and the one
the question's terms pick), with the sentences kept per chunk. No model is asked: it takes a minute or two.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evals.metrics import contains_answer
from evals.questions import DEFAULT_QUESTIONS, load_fictional_knowledge, load_jsonl, sample
from generate.modes import FOCUS_WINDOW
from generate.prompts import cloze_prefix, neutralize
from generate.question_kind import coarse_kind
from retrieve.focus import focus_passages, sentence_spans

WINDOW = FOCUS_WINDOW["hybrid"]  # the sentences either side that hybrid keeps (0: the picked sentences alone)
SETTINGS = (("whole chunks", -1, None), ("embedder's sentence", WINDOW, 0.0), ("default focus", WINDOW, None))


def focus_recall(workspace: Path, questions, k: int = 3) -> dict[str, tuple[float, float]]:
    """{setting: (share of questions with the gold in the passages, sentences per chunk)} over `questions`."""
    from retrieve import Searcher

    searcher = Searcher(workspace)
    asked = [q for q in questions if q.answers and coarse_kind(q.question) != "explain"]
    held = {name: 0 for name, _, _ in SETTINGS}
    sentences = {name: 0 for name, _, _ in SETTINGS}
    chunks = 0
    # the questions are embedded in one batch, and every sentence once: the cache keeps what each setting encodes
    with searcher.queries_embedded([t for q in asked for t in (q.question, cloze_prefix(q.question))]):
        for q in asked:
            texts = [neutralize(h.chunk.text)[0] for h in searcher.search(q.question, k=k, mode="hybrid")]
            chunks += len(texts)
            for name, window, weight in SETTINGS:
                passages = focus_passages(searcher.embedder, cloze_prefix(q.question), texts, window, weight)
                held[name] += contains_answer(" ".join(passages), q.answers)
                sentences[name] += sum(len(sentence_spans(p)) for p in passages)
    n = max(len(asked), 1)
    return {name: (held[name] / n, sentences[name] / max(chunks, 1)) for name, _, _ in SETTINGS}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, required=True, help="a workspace whose index holds the documents")
    p.add_argument("--questions", type=Path, help=f"question file (default {DEFAULT_QUESTIONS})")
    p.add_argument("--fictional-knowledge", type=Path, help="the Fictional Knowledge folder: its probes instead")
    p.add_argument("--limit", type=int, help="a seeded sample of N questions")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        if a.fictional_knowledge:
            questions = load_fictional_knowledge(a.fictional_knowledge)[1]
        else:
            questions = load_jsonl(a.questions or DEFAULT_QUESTIONS)
        result = focus_recall(a.workspace, sample(questions, a.limit, a.seed))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print("| passages | gold in them | sentences per chunk |\n|---|---|---|")
    for name, (share, per_chunk) in result.items():
        print(f"| {name} | {share:.3f} | {per_chunk:.2f} |")


if __name__ == "__main__":
    main()
