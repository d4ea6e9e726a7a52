"""`ragtune eval`: registered in ragtune_cli/main.py as `app.command("eval")(eval_command)`. Only typer, the standard
library and the option tables are imported here; the evaluation itself is imported when the command runs."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from generate.modes import MODES
from serve import answer_options


def eval_command(
    workspace: Path = typer.Option(Path("workspace"), "--workspace", "-w", envvar="RAGTUNE_WORKSPACE",
                                   help="Workspace with the index (and adapters); the report goes to WS/evals/. "
                                        "Default $RAGTUNE_WORKSPACE, else ./workspace."),
    questions: Optional[Path] = typer.Option(None, "--questions", help="Question file in ragtune JSONL (question, "
                                             "answers, optional doc and groups); default data/eval/questions.jsonl."),
    fictional_knowledge: Optional[Path] = typer.Option(
        None, "--fictional-knowledge", help="The Fictional Knowledge folder (e.g. ../shared/eval/fictional_knowledge): "
        "its 130 articles are indexed into the workspace (use a separate one) and its gen and hard_gen probes asked; "
        "with --questions, that file's questions about the articles instead (data/eval/fk_questions.jsonl)."),
    modes: str = typer.Option(",".join(MODES), "--modes", help=f"Comma-separated answer modes: {', '.join(MODES)}. "
                              "Modes needing an adapter are skipped when none exists."),
    adapter: Optional[str] = answer_options.ADAPTER,
    limit: Optional[int] = typer.Option(None, "--limit", help="Ask only N questions (a seeded sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the bootstrap intervals."),
    k: int = typer.Option(3, "--k", "-k", help="Retrieved chunks put in the prompt (rag, hybrid)."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Longest answer in tokens."),
    focus_window: Optional[int] = answer_options.FOCUS_WINDOW,
    model: Optional[str] = answer_options.MODEL,
    dtype: str = answer_options.DTYPE,
    backend_url: Optional[str] = answer_options.BACKEND_URL,
    api_key: Optional[str] = answer_options.API_KEY,
    no_rerank: bool = answer_options.NO_RERANK,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {report, n, results} on stdout "
                                 "(progress goes to stderr)."),
) -> None:
    """Evaluate answers (base, rag, tuned, hybrid) and retrieval on a question set; writes a report folder."""
    from evals.run import EvalConfig, run_eval

    if limit is not None and limit < 1:
        raise ValueError("--limit must be a positive number of questions")
    config = EvalConfig(workspace=workspace, questions=questions, fictional_knowledge=fictional_knowledge,
                        modes=modes, adapter=adapter, limit=limit, seed=seed, k=k, max_new_tokens=max_new_tokens,
                        focus_window=focus_window, model=model, dtype=dtype, backend_url=backend_url, api_key=api_key,
                        rerank=not no_rerank, command=" ".join(["ragtune"] + [shlex.quote(a) for a in sys.argv[1:]]))
    if as_json:
        with contextlib.redirect_stdout(sys.stderr):  # nothing but the one JSON object reaches stdout
            out = run_eval(config, progress=True)
        sys.stdout.write(json.dumps({"report": out["report"], "n": out["n"], "results": out["results"]},
                                    ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    out = run_eval(config, progress=True)
    _print_summary(out)


def _print_summary(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    results = out["results"]
    labels = {"contains": "contains", "f1": "F1", "exact": "EM", "refusal_acc": "refusal", "citation_acc": "cite",
              "faithfulness": "faith", "degenerate_drafts": "degen.", "recall@5": "R@5", "first_token_ms": "TTFT ms",
              "tokens_per_s": "tok/s"}
    names = [n for n in labels if any(n in r for r in results.values())]
    table = Table(title=f"ragtune eval: {out['n']} questions")
    table.add_column("mode")
    for n in names:
        table.add_column(labels[n], justify="right")
    for mode, r in results.items():
        table.add_row(mode, *[("–" if n not in r else f"{r[n]:.3f}" if abs(r[n]) < 10 else f"{r[n]:.0f}")
                              for n in names])
    con = Console()
    con.print(table)
    chunk = (out.get("retrieval") or {}).get("answer_chunk") or {}
    if chunk:
        described = out["retrieval"].get("retrievers", {})
        rt = Table(title="the answer's chunk in the top k, per retriever setting")
        for col in ("setting", "R@1", "R@3", "R@5", "MRR", "what ran"):
            rt.add_column(col, overflow="fold")
        for name, r in chunk.items():
            rt.add_row(name, *[f"{r[k]['value']:.3f}" for k in ("recall@1", "recall@3", "recall@5", "mrr")],
                       described.get(name, ""))
        con.print(rt)
    for mode, reason in out.get("skipped", {}).items():
        con.print(f"skipped {mode}: {reason}", markup=False)
    con.print(f"report: {Path(out['report']) / 'report.md'}", markup=False)
