"""`ragtune tune-retriever` (registered on the app in ragtune_cli/main.py): the command-line face of
tune.retriever.tune_retriever. Only typer, the standard library and the config dataclass (its defaults are the
options' defaults) are imported here; the training libraries load inside the command."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tune.retriever import PARTS, RetrieverTuneConfig as Config


def tune_retriever_command(
    workspace: Path = typer.Option(Path("workspace"), "--workspace", "-w", envvar="RAGTUNE_WORKSPACE",
                                   help="Workspace with the index and a synth dataset (default $RAGTUNE_WORKSPACE, "
                                        "else ./workspace); results go to WS/retrievers."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A synth dataset folder (train.jsonl, val.jsonl); "
                                           "default WS/datasets/default."),
    parts: str = typer.Option(",".join(PARTS), "--parts", help="What to train, comma-separated: embedder, "
                              "reranker."),
    fusion_weight: str = typer.Option(Config.fusion_weight, "--fusion-weight", help="How hybrid search fuses dense "
                                      "and BM25: 'adaptive' (the default: score fusion weighted per query, no "
                                      "constant), a dense weight of reciprocal-rank fusion from 0 (BM25 alone) to 1 "
                                      "(dense alone; 0.5 is plain RRF), or 'auto' to choose among those on the synth "
                                      "validation questions (they favour BM25: see docs/RESULTS.md)."),
    negatives: int = typer.Option(Config.negatives, "--negatives", help="Hard negatives per question (top hybrid "
                                  "hits that are neither the source chunk nor hold the answer)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps per part (default: one "
                                            "pass over the training questions)."),
    time_budget: float = typer.Option(Config.time_budget_s, "--time-budget", help="Seconds of training per part at "
                                      "most."),
    questions: int = typer.Option(Config.max_train_questions, "--questions", help="Training questions used at most "
                                  "(a seeded sample)."),
    rerank_top: int = typer.Option(Config.rerank_top, "--rerank-top", help="Fused candidates the reranker reorders "
                                   "per search."),
    rerank_tokens: int = typer.Option(Config.rerank_tokens, "--rerank-tokens", help="Question + passage tokens the "
                                      "reranker reads (fewer: faster searches)."),
    rerank_layers: int = typer.Option(Config.rerank_layers, "--rerank-layers", help="Transformer layers of the "
                                      "reranker: the first N of the packaged MiniLM's 6 (fewer: faster searches)."),
    include_groups: Optional[str] = typer.Option(None, "--include-groups", help="Comma-separated groups whose "
                                                 "restricted documents may be used; default none."),
    ratings: bool = typer.Option(Config.ratings, "--ratings/--no-ratings", help="Also learn from users' feedback in "
                                 "the app (WS/ratings.jsonl): each liked question with the chunks its answer "
                                 "cited, the passage picked, or the section pointed at in the viewer."),
    rated_weight: int = typer.Option(Config.rated_weight, "--rated-weight", help="Times each liked question is "
                                     "trained on (synth's once)."),
    seed: int = typer.Option(Config.seed, "--seed", help="Seed of the samples and of training."),
    reset: bool = typer.Option(False, "--reset", help="Go back to the default search (adaptive fusion, the packaged "
                               "embedder, no reranker) instead of training."),
    list_parts: bool = typer.Option(False, "--list", help="List the trained parts and their cards, then stop."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (progress goes to stderr)."),
) -> None:
    """Train a reranker and a tuned embedder on a synth dataset and set the fusion (adaptive unless told); search
    uses each part only where it beat search without it on held-out synth questions."""
    from tune.train_cli import quiet_libraries

    quiet_libraries()
    if list_parts or reset:
        from retrieve.retrievers import list_parts as parts_of, read_settings
        from tune.retriever import reset_retriever

        out = reset_retriever(workspace, progress=True) if reset else {}
        out.update(settings=read_settings(workspace).__dict__, parts=parts_of(workspace))
        _print(out, as_json)
        return
    from tune.retriever import tune_retriever

    groups = tuple(sorted({g.strip().lower() for g in (include_groups or "").split(",") if g.strip()}))
    weight = parse_fusion(fusion_weight)
    config = Config(workspace=workspace, dataset=dataset, negatives=negatives, max_steps=max_steps,
                                 fusion_weight=weight,
                                 parts=tuple(p.strip() for p in parts.split(",") if p.strip()),
                                 time_budget_s=time_budget, max_train_questions=questions, rerank_top=rerank_top,
                                 rerank_tokens=rerank_tokens, rerank_layers=rerank_layers,
                                 include_groups=groups, ratings=ratings, rated_weight=rated_weight,
                                 seed=seed).check()
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        report = tune_retriever(config, progress=True)
    if as_json:
        _print(report.to_json(), True)
        return
    sys.stdout.write(report_summary(report, workspace) + "\n")


def report_summary(report, workspace: Path) -> str:
    """What `tune-retriever` did, in a few lines (the CLI prints them, the app's search-training job shows them): the
    questions, the fusion, each part and whether search uses it."""
    q = report.questions
    rated = q.get("rated") or {}
    users = (f" (users' liked questions: {rated['train']} training, {rated['val']} validation)"
             if rated.get("train") or rated.get("val") else "")
    lines = [f"retriever of {workspace}: {q['train']} training / {q['val']} validation questions from "
             f"{report.dataset}{users}", f"fusion: {fusion_label(report.dense_weight)} (validation recall@3 "
             f"{report.fusion[report.dense_weight]['recall@3']}; adaptive {report.fusion['adaptive']['recall@3']}, "
             f"plain RRF {report.fusion[0.5]['recall@3']})"]
    for kind, p in report.parts.items():
        lines.append(f"{kind} {p.name}: {'used' if p.active else 'not used'}; {p.why}; {p.steps} steps, {p.wall_s} s")
    if report.reindexed:
        lines.append("the index was re-embedded with the chosen embedder")
    from retrieve.retrievers import read_settings

    now = read_settings(workspace)
    lines.append(f"done in {report.seconds:.0f} s; search now: {settings_line(now)}"
                 + (" (`--no-rerank` turns the reranker off)" if now.reranker else ""))
    return "\n".join(lines)


def parse_fusion(text: str) -> float | str | None:
    """--fusion-weight: 'adaptive' -> "adaptive", 'auto' -> None (choose on validation), a number from 0 to 1 -> it
    (weighted RRF)."""
    word = text.strip().lower()
    if word in ("adaptive", "auto"):
        return None if word == "auto" else word
    try:
        weight = float(word)
    except ValueError:
        weight = -1.0
    if not 0.0 <= weight <= 1.0:
        raise typer.BadParameter(f"'adaptive', 'auto' or a number from 0 to 1, not {text!r}",
                                 param_hint="--fusion-weight")
    return weight


def fusion_label(weight: float | str | None) -> str:
    """A fusion as the summaries name it (None and "adaptive": adaptive score fusion)."""
    if weight is None or weight == "adaptive":
        return "adaptive score fusion"
    return f"weighted RRF, dense weight {weight}" + (" (plain RRF)" if weight == 0.5 else "")


def settings_line(settings) -> str:
    """The search a RetrieverSettings makes, in words: 'adaptive score fusion, reranker none, embedder untuned'."""
    return (f"{fusion_label(settings.dense_weight)}, reranker {settings.reranker or 'none'}, embedder "
            f"{settings.embedder or 'untuned'}")


def _print(obj: dict, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        return
    from retrieve.retrievers import RetrieverSettings

    sys.stdout.write(f"settings: {settings_line(RetrieverSettings(**obj['settings']))}\n")
    for p in obj["parts"]:
        v = p["card"].get("validation", {})
        sys.stdout.write(f"{p['name']}: {'used' if p['active'] else 'not used'}; validation recall@3 "
                         f"{v.get('before', {}).get('recall@3', '?')} -> {v.get('after', {}).get('recall@3', '?')}\n")
