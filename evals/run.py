"""`ragtune eval` as a library call: ask every sampled question in every mode, score it, write the report.

    from evals.run import EvalConfig, run_eval
    out = run_eval(EvalConfig(workspace=Path("ws"), modes="base,rag", limit=20))
    out["report"], out["n"], out["results"]["rag"]["contains"]

The engine (and with it the model) is created once; tests pass a ready engine object instead. Retrieval is scored
once per question for every search mode (dense, bm25, hybrid), independently of the answer modes.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evals import metrics as M
from evals.aggregate import RECALL_KS, SEARCH_MODES, aggregate_mode, aggregate_retrieval, flat
from evals.questions import (DEFAULT_QUESTIONS, Question, index_articles, load_fictional_knowledge, load_jsonl,
                             sample)
from generate.modes import ADAPTER_MODES, MODES, RETRIEVAL_MODES
from generate.prompts import degenerate
from ingest.workspace import Workspace
from serve.adapter_choice import format_adapters, parse_adapter_choice, pick_adapter
from generate.question_kind import question_kind

ANSWER_METRICS = ("contains", "f1", "exact", "refusal_acc", "false_refusal", "citation_acc", "faithfulness",
                  "context_recall", "degenerate", "degenerate_drafts")
COST_METRICS = ("retrieve_ms", "first_token_ms", "tokens_per_s")


@dataclass
class EvalConfig:
    workspace: Path = Path("workspace")
    questions: Path | None = None  # ragtune JSONL; default data/eval/questions.jsonl
    fictional_knowledge: Path | None = None  # the Fictional Knowledge folder (its articles get indexed into WS;
    # its probes are asked unless `questions` names a file of questions about the articles)
    modes: tuple[str, ...] | list[str] | str = MODES
    adapter: str | None = None  # NAME for tuned and hybrid, or per mode "hybrid=A,tuned=B" (serve/adapter_choice.py);
    # a mode not named gets serve.adapter_choice.pick_adapter's choice ('default', else the newest suited one)
    limit: int | None = None  # questions sampled (seeded shuffle, first N); None = all
    seed: int = 0  # sampling and bootstrap seed
    k: int = 3  # chunks put in the prompt (rag/hybrid)
    max_new_tokens: int = 48
    focus_window: int | None = None  # AnswerConfig.focus_window: sentences kept around the best one per chunk;
    # -1 = whole chunks; None = the engine's per-mode default (hybrid 0, rag -1)
    out: Path | None = None  # folder that receives <timestamp>-<set>/ and latest.json; default WS/evals
    model: str | None = None
    dtype: str = "auto"  # --dtype: the local model's weights
    backend_url: str | None = None
    api_key: str | None = None
    retrieval_k: int = 10  # hits fetched for the retrieval metrics
    n_boot: int = 1000  # bootstrap resamples
    rerank: bool = True  # False: search (and so rag/hybrid answers) without the workspace's reranker
    command: str | None = None  # the command line recorded in the report

    def mode_list(self) -> list[str]:
        raw = self.modes.split(",") if isinstance(self.modes, str) else list(self.modes)
        modes: list[str] = []
        for m in (x.strip().lower() for x in raw):
            if not m:
                continue
            if m not in MODES:
                raise ValueError(f"unknown mode {m!r}: --modes takes a comma-separated list of {', '.join(MODES)}")
            if m not in modes:
                modes.append(m)
        if not modes:
            raise ValueError(f"no mode given: --modes takes a comma-separated list of {', '.join(MODES)}")
        return modes


@dataclass
class _Plan:
    questions: list[Question]
    set_name: str
    source: str
    modes: list[str]
    adapters: dict[str, str]  # adapter mode -> the adapter it answers with
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _log(progress: bool, msg: str) -> None:
    if progress:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def _load_questions(config: EvalConfig, progress: bool) -> tuple[list[Question], str, str, list[str]]:
    """The question set and its name, source and notes. With both `fictional_knowledge` and `questions`, the
    articles are indexed and the file's questions (about those articles, e.g. data/eval/fk_questions.jsonl) asked
    instead of the probes."""
    notes: list[str] = []
    if config.fictional_knowledge is not None:
        articles, questions = load_fictional_knowledge(config.fictional_knowledge)
        source, name = str(config.fictional_knowledge), "fictional-knowledge"
        if config.questions is not None:
            questions = load_jsonl(Path(config.questions))
            known = {a.path for a in articles}
            for q in questions:
                if q.doc is not None and q.doc not in known:
                    raise ValueError(f"{config.questions}: question {q.id} names doc {q.doc!r}, which is not a "
                                     f"Fictional Knowledge article (article-001.md ... article-{len(articles):03d}.md)")
            source, name = f"{config.questions} on {source}", f"fk-{Path(config.questions).stem}"
        _log(progress, f"Fictional Knowledge: {len(articles)} articles, {len(questions)} questions; "
                       f"indexing the articles into {config.workspace}")
        report = index_articles(articles, config.workspace, progress=progress)
        if report.failed:
            notes.append(f"{len(report.failed)} articles failed to index: "
                         + "; ".join(f"{f.path}: {f.error}" for f in report.failed[:3]))
        return questions, name, source, notes
    path = Path(config.questions) if config.questions is not None else DEFAULT_QUESTIONS
    questions = load_jsonl(path)
    name = "data-eval" if path.resolve() == DEFAULT_QUESTIONS.resolve() else path.stem
    return questions, name, str(path), notes


def _plan(config: EvalConfig, progress: bool) -> _Plan:
    from serve.answer import list_adapters

    modes = config.mode_list()  # checked before anything slow happens
    if config.k < 1 or config.max_new_tokens < 1:
        raise ValueError("--k and --max-new-tokens must be positive")
    if config.retrieval_k < max(RECALL_KS):
        raise ValueError(f"retrieval_k must be at least {max(RECALL_KS)} (recall@{max(RECALL_KS)} is reported)")
    questions, set_name, source, notes = _load_questions(config, progress)
    chosen = sample(questions, config.limit, config.seed)
    plan = _Plan(chosen, set_name, source, modes, {}, notes=notes)
    choice = parse_adapter_choice(config.adapter)
    wanted = [m for m in modes if m in ADAPTER_MODES]
    available = list_adapters(config.workspace)
    for name in choice.names():
        if name not in available:
            raise ValueError(f"no adapter named {name!r} in {Path(config.workspace) / 'adapters'}"
                             + (f" (available: {', '.join(available)})" if available else " (none exists yet)"))
    for m in wanted:
        name = choice.for_mode(m) or pick_adapter(config.workspace, m)
        if name is not None:
            plan.adapters[m] = name
    if wanted and not plan.adapters:
        reason = (f"needs a tuned adapter and none exists in {Path(config.workspace) / 'adapters'} "
                  f"(run `ragtune synth` and `ragtune tune` first)")
        if len(wanted) == len(modes):
            raise ValueError(f"mode{'s' if len(wanted) > 1 else ''} {', '.join(wanted)} {reason}")
        for m in wanted:
            plan.skipped[m] = reason
    return plan


def _has_index(workspace: Path) -> bool:
    from retrieve.store import current_generation_path

    return current_generation_path(workspace) is not None


def _indexed_docs(workspace: Path) -> tuple[set[str], str]:
    import json

    from retrieve.store import current_generation_path

    gen = current_generation_path(workspace)
    manifest = json.loads((gen / "manifest.json").read_text())
    return set(manifest.get("docs", {})), manifest.get("settings", {}).get("embed_model", "")


def _score_retrieval(searcher, questions: list[Question], k: int, progress: bool) -> tuple[list[dict], dict]:
    """Per question: the gold document's rank per search mode, and under "answer_chunk" the rank of its answer's
    chunk per retriever setting (evals/retrieval.py); and what each setting ran."""
    from tqdm import tqdm

    from evals.retrieval import score_chunk_retrieval

    out = []
    for q in tqdm(questions, desc="retrieval", unit="q", file=sys.stderr, disable=not progress):
        row = {}
        for mode in SEARCH_MODES if q.doc else ():
            hits = searcher.search(q.query, k=k, mode=mode, groups=frozenset(q.groups))
            row[mode] = {"doc_rank": M.rank_of([h.chunk.doc for h in hits], q.doc)}  # None: a miss
        out.append(row)
    chunk_rows, described = score_chunk_retrieval(searcher, questions, k, progress)
    for row, ranks in zip(out, chunk_rows):
        if ranks:
            row["answer_chunk"] = ranks
    return out, described


def _record(q: Question, mode: str, ans, retrieval: dict) -> dict:
    """One line of per_question.jsonl with every per-question score."""
    text = ans.answer or ""
    cited = [c.text for c in ans.citations]
    flags: dict = {}
    if q.answerable:
        flags.update(exact=M.exact_match(text, q.answers), f1=round(M.token_f1(text, q.answers), 4),
                     contains=M.contains_match(text, q.answers))
    if mode in RETRIEVAL_MODES:
        if q.answerable:
            flags["context_recall"] = M.citation_correct([s.text for s in ans.sources], q.answers)
            if not ans.refused:
                flags["citation_acc"] = M.citation_correct(cited, q.answers)
        if not ans.refused:
            flags["faithfulness"] = M.faithfulness(text, cited)
    t = dict(ans.timings or {})
    drafts = list(getattr(ans, "degenerate", []) or [])
    return {"id": q.id, "mode": mode, "adapter": ans.adapter, "kind": q.kind, "probe_set": q.probe_set,
            "question_kind": question_kind(q.question),
            "degenerate": degenerate(text, q.question) is not None, "degenerate_drafts": drafts,
            "question": q.question, "gold": list(q.answers), "doc": q.doc, "groups": list(q.groups),
            "answer": text, "refused": bool(ans.refused), "answerable": q.answerable, "correct": flags,
            "citations": [{"n": c.n, "doc": c.doc, "section": c.section, "inferred": c.inferred,
                           "text": c.text[:400]} for c in ans.citations],
            "sources": [f"[{s.n}] {s.doc} — {s.section}" for s in ans.sources],
            "warnings": list(getattr(ans, "warnings", []) or []),
            "timings": {k: t.get(k) for k in ("retrieve_ms", "first_token_ms", "tokens_per_s", "total_ms",
                                              "new_tokens", "prompt_tokens", "attempts") if k in t},
            "retrieval": retrieval}


def _answer_mode(engine, plan: _Plan, mode: str, retrieval: list[dict], progress: bool) -> list[dict]:
    from tqdm import tqdm

    from serve.answer import AnswerError

    records: list[dict] = []
    hits = scored = 0
    bar = tqdm(plan.questions, desc=f"{mode:>6}", unit="q", file=sys.stderr, disable=not progress)
    for i, q in enumerate(bar):
        adapter = plan.adapters.get(mode)
        try:
            ans = engine.answer(q.question, mode=mode, adapter=adapter, groups=frozenset(q.groups))
        except AnswerError as e:
            if i == 0 and mode in ADAPTER_MODES:  # e.g. a remote backend that cannot load adapters
                bar.close()
                raise _SkipMode(str(e)) from None
            raise
        rec = _record(q, mode, ans, retrieval[i])
        records.append(rec)
        if q.answerable:
            scored += 1
            hits += rec["correct"]["contains"]
            bar.set_postfix(contains=f"{hits / scored:.3f}")
    bar.close()
    return records


class _SkipMode(Exception):
    pass


def _engine_for(config: EvalConfig):
    from serve.answer import AnswerConfig, create_engine

    return create_engine(Path(config.workspace), config.model, config.backend_url, config.api_key,
                         AnswerConfig(k=config.k, max_new_tokens=config.max_new_tokens,
                                      focus_window=config.focus_window), config.dtype)


def run_eval(config: EvalConfig, engine=None, progress: bool = True) -> dict:
    """Run the evaluation and write its report folder. Returns {"report": folder, "n": questions,
    "results": {mode: {metric: value}}, "retrieval": {...}, "skipped": {mode: reason}, "results_json": path}."""
    from evals.report import write_report

    config.workspace = Path(config.workspace)
    plan = _plan(config, progress)
    run_modes = [m for m in plan.modes if m not in plan.skipped]
    has_index = _has_index(config.workspace)
    if not has_index and any(m in RETRIEVAL_MODES for m in run_modes):
        raise FileNotFoundError(f"no index in workspace {config.workspace}: run `ragtune index DOCS_DIR "
                                f"--workspace {config.workspace}` first (modes rag and hybrid search it)")
    embed_model = ""
    if has_index:
        indexed, embed_model = _indexed_docs(config.workspace)
        gold = {q.doc for q in plan.questions if q.doc}
        missing = sorted(gold - indexed)
        if missing:
            plan.notes.append(f"{len(missing)} of {len(gold)} gold documents are not in the index of "
                              f"{config.workspace} (e.g. {missing[0]}): is it the right workspace?")
    else:
        plan.notes.append("the workspace has no index: retrieval metrics were not computed")
    if engine is None:
        _log(progress, "loading the model ...")
        engine = _engine_for(config)

    retrieval = [{} for _ in plan.questions]
    if has_index:
        from retrieve import Searcher

        searcher = getattr(engine, "searcher", None) or Searcher(config.workspace)
        if not config.rerank:
            searcher.use_reranker = False
        retrieval, retrievers = _score_retrieval(searcher, plan.questions, config.retrieval_k, progress)
    retrieval_summary = aggregate_retrieval(retrieval, config.seed, config.n_boot) if has_index else {}
    if has_index:
        retrieval_summary["retrievers"] = retrievers

    records: list[dict] = []
    results: dict[str, dict] = {}
    metrics: dict[str, dict] = {}
    for mode in run_modes:
        try:
            mode_records = _answer_mode(engine, plan, mode, retrieval, progress)
        except _SkipMode as e:
            if all(m in plan.skipped or m == mode for m in plan.modes):
                raise ValueError(f"mode {mode}: {e}") from None
            plan.skipped[mode] = str(e)
            continue
        records.extend(mode_records)
        est = aggregate_mode(mode_records, mode, config.seed, config.n_boot)
        if mode in RETRIEVAL_MODES and retrieval_summary.get("gold_doc", {}).get("hybrid"):
            hybrid = retrieval_summary["gold_doc"]["hybrid"]
            for name in [f"recall@{k}" for k in RECALL_KS] + ["mrr"]:
                est[name] = M.Estimate(**hybrid[name])
        metrics[mode] = {name: e.to_json() for name, e in est.items()}
        results[mode] = flat(est)
    for mode, reason in plan.skipped.items():
        _log(progress, f"skipped mode {mode}: {reason}")

    payload = {
        "set": plan.set_name, "source": plan.source, "n": len(plan.questions),
        "n_answerable": sum(q.answerable for q in plan.questions),
        "n_unanswerable": sum(not q.answerable for q in plan.questions),
        "modes": plan.modes, "skipped": plan.skipped,
        "adapter": format_adapters(plan.adapters) or None, "adapters": plan.adapters,
        "model": getattr(getattr(engine, "generator", None), "name", None) or config.model or "default",
        "backend_url": config.backend_url, "dtype": config.dtype, "embed_model": embed_model,
        "seed": config.seed, "limit": config.limit, "k": config.k, "max_new_tokens": config.max_new_tokens,
        "focus_window": config.focus_window,
        "command": config.command or f"run_eval({_config_repr(config)})",
        "question_ids": [q.id for q in plan.questions],
        "results": results, "metrics": metrics, "retrieval": retrieval_summary, "notes": plan.notes,
    }
    folder = write_report(Path(config.out) if config.out else Workspace(config.workspace).evals, payload, records)
    _score_adapter_card(config, plan, results, folder, progress)
    return {"report": str(folder), "n": len(plan.questions), "results": results, "retrieval": retrieval_summary,
            "skipped": plan.skipped, "results_json": str(folder / "results.json")}


def _score_adapter_card(config: EvalConfig, plan: _Plan, results: dict, folder: Path, progress: bool) -> None:
    """Write each adapter's scores (and, for comparison, base/rag ones from the same run) into its card, keyed by
    question set and limit, so `ragtune adapters` shows what the adapter reached; never fails the evaluation."""
    if config.backend_url:
        return
    from tune.adapters import update_card

    tag = f"{plan.set_name}@{len(plan.questions)}"
    for name in sorted(set(plan.adapters.values())):
        own = [m for m in results if m not in ADAPTER_MODES or plan.adapters.get(m) == name]
        if not any(m in ADAPTER_MODES for m in own):
            continue
        scores = {f"{tag} {mode} {metric}": results[mode][metric] for mode in own
                  for metric in ("contains", "f1") if metric in results[mode]}
        scores[f"{tag} report"] = str(folder)
        scores[f"{tag} workspace"] = str(Path(config.workspace).resolve())  # serve.adapter_choice.preferred_mode
        try:
            update_card(Path(config.workspace), name, scores)
        except (OSError, ValueError) as exc:  # e.g. an adapter folder without a card: the report itself is written
            _log(progress, f"scores not written to adapter {name!r}'s card: {exc}")


def _config_repr(config: EvalConfig) -> str:
    d = asdict(config)
    d.pop("api_key", None)
    d.pop("command", None)
    return ", ".join(f"{k}={str(v) if isinstance(v, Path) else v!r}" for k, v in d.items())


__all__ = ["ADAPTER_MODES", "EvalConfig", "MODES", "RETRIEVAL_MODES", "SEARCH_MODES", "aggregate_mode",
           "aggregate_retrieval", "run_eval"]
