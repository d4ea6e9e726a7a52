"""Per-question records of `ragtune eval` (evals/run.py) turned into estimates with 95% bootstrap intervals: one
block per answer mode, one per search mode for retrieval."""

from __future__ import annotations

from evals import metrics as M
from generate.modes import RETRIEVAL_MODES
from retrieve.search import MODES as SEARCH_MODES

RECALL_KS = (1, 5, 10)


def aggregate_retrieval(retrieval: list[dict], seed: int = 0, n_boot: int = 1000) -> dict:
    """recall@1/5/10 and MRR of the gold document per search mode; recall@1/3/5 and MRR of the answer's chunk per
    retriever setting (evals/retrieval.py)."""
    from evals.retrieval import aggregate_chunk_recall

    out: dict = {"gold_doc": {}, "answer_chunk": {}}
    for mode in SEARCH_MODES:
        ranks = [r[mode]["doc_rank"] for r in retrieval if "doc_rank" in r.get(mode, {})]
        if not ranks:
            continue
        block = {f"recall@{k}": M.bootstrap([M.recall_at(x, k) for x in ranks], seed, n_boot) for k in RECALL_KS}
        block["mrr"] = M.bootstrap([M.reciprocal_rank(x) for x in ranks], seed, n_boot)
        out["gold_doc"][mode] = {name: e.to_json() for name, e in block.items()}
    out["answer_chunk"] = aggregate_chunk_recall([r["answer_chunk"] for r in retrieval if r.get("answer_chunk")],
                                                 seed, n_boot)
    return out


def aggregate_mode(records: list[dict], mode: str, seed: int = 0, n_boot: int = 1000) -> dict:
    """Estimates of every answer and cost metric of one mode from its per_question records."""
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    est: dict[str, M.Estimate | None] = {}
    for name in ("contains", "f1", "exact"):
        est[name] = M.bootstrap([r["correct"][name] for r in answerable], seed, n_boot)
    est["refusal_acc"] = M.bootstrap([float(r["refused"]) for r in unanswerable], seed, n_boot)
    # an answer shown that is empty, a question or the question said back (the engine should never let one out),
    # and the share of questions where the model wrote such a draft that the engine withheld
    est["degenerate"] = M.bootstrap([float(r.get("degenerate", False)) for r in records], seed, n_boot)
    est["degenerate_drafts"] = M.bootstrap([float(bool(r.get("degenerate_drafts"))) for r in records], seed, n_boot)
    est["false_refusal"] = M.bootstrap([float(r["refused"]) for r in answerable], seed, n_boot)
    for name in ("citation_acc", "faithfulness", "context_recall"):
        est[name] = M.bootstrap([r["correct"].get(name) for r in records], seed, n_boot)
    probe_sets = sorted({r.get("probe_set") for r in answerable if r.get("probe_set")})
    if len(probe_sets) > 1:  # Fictional Knowledge: gen (reworded facts) and hard_gen (composition) apart
        for ps in probe_sets:
            rows = [r for r in answerable if r.get("probe_set") == ps]
            for name in ("contains", "f1"):
                est[f"{name}_{ps}"] = M.bootstrap([r["correct"][name] for r in rows], seed, n_boot)
    generated = [r["timings"] for r in records if r["timings"].get("first_token_ms") is not None]
    if mode in RETRIEVAL_MODES:
        est["retrieve_ms"] = M.bootstrap([r["timings"].get("retrieve_ms") for r in records], seed, n_boot, median=True)
    est["first_token_ms"] = M.bootstrap([t["first_token_ms"] for t in generated], seed, n_boot, median=True)
    est["tokens_per_s"] = M.bootstrap([t.get("tokens_per_s") for t in generated if t.get("tokens_per_s")], seed,
                                      n_boot, median=True)
    return {name: e for name, e in est.items() if e is not None}


def flat(estimates: dict) -> dict:
    out = {}
    for name, e in estimates.items():
        out[name] = round(e.value, 4)
        if e.p50 is not None:
            out[f"{name}_p50"] = round(e.p50, 4)
    return out
