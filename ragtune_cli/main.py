"""The `ragtune` command: a thin typer layer over the library, and the top layer of the code: it registers every
stage's commands (each module beside its library code) and wires what crosses layers (the app's evaluation job). Heavy modules are imported inside each command, so
`ragtune --help` starts instantly. Errors the user can fix are printed as one line, never as a traceback
(set RAGTUNE_DEBUG=1 to see the traceback)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from generate.modes import DEFAULT_MODE
from serve import answer_options

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ragtune: private chat over your company's documents (hybrid retrieval + a LoRA-tuned model).")

WorkspaceOpt = typer.Option(Path("workspace"), "--workspace", "-w", envvar="RAGTUNE_WORKSPACE",
                            help="Folder holding the index, models and adapters (default $RAGTUNE_WORKSPACE, "
                                 "else ./workspace).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout (progress goes to stderr).")
NoRerankOpt = typer.Option(False, "--no-rerank", help="Hybrid search without the workspace's reranker (made by "
                           "`ragtune tune-retriever`).")


def _groups(value: Optional[str]) -> frozenset[str]:
    return frozenset(g.strip().lower() for g in (value or "").split(",") if g.strip())


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@app.command()
def index(
    docs_dir: Path = typer.Argument(..., help="Folder tree of .md .txt .html .pdf .docx documents."),
    workspace: Path = WorkspaceOpt,
    embedder: str = typer.Option("all-minilm-l6-v2", help="Embedding model: the packaged default, a local "
                                 "sentence-transformers folder, or a hub id."),
    chunk_tokens: int = typer.Option(200, help="Chunk size in embedder tokens."),
    overlap_tokens: int = typer.Option(40, help="Tokens shared by neighbouring chunks."),
    dense: str = typer.Option("auto", help="Dense index: auto, flat (exact) or hnsw (approximate)."),
    as_json: bool = JsonOpt,
) -> None:
    """Build or update the index of DOCS_DIR in the workspace (only new or changed documents are embedded)."""
    from ingest import ChunkConfig
    from retrieve import EmbedConfig, IndexConfig, build_index

    config = IndexConfig(EmbedConfig(model=embedder), ChunkConfig(chunk_tokens, overlap_tokens), dense)
    report = build_index(docs_dir, workspace, config, progress=True)
    if as_json:
        _emit(report.to_json())
        return
    from rich.console import Console

    con = Console()
    con.print(f"[bold]index[/] {workspace}: {len(report.added)} added, {len(report.updated)} updated, "
              f"{len(report.removed)} removed, {len(report.unchanged)} unchanged; {report.chunks} chunks "
              f"({report.embedded} embedded) in {report.seconds:.1f}s")
    for f in report.failed:
        kept = " (previous version kept)" if f.path in report.kept_previous else ""
        con.print(f"[red]failed[/] {f.path}: {f.error}{kept}", markup=False)


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for."),
    workspace: Path = WorkspaceOpt,
    k: int = typer.Option(5, "-k", help="Number of hits."),
    mode: str = typer.Option("hybrid", help="dense, bm25 or hybrid."),
    groups: Optional[str] = typer.Option(None, help="Comma-separated groups of the reader; without it only "
                                         "unrestricted documents are searched."),
    no_rerank: bool = NoRerankOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Search the index and print ranked hits (and which retriever ran)."""
    from retrieve import Searcher

    searcher = Searcher(workspace, rerank=not no_rerank)
    hits = searcher.search(query, k=k, mode=mode, groups=_groups(groups))
    retriever = searcher.describe(mode)
    if as_json:
        _emit({"retriever": retriever, "hits": [h.to_json() for h in hits]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{retriever}: {query}")
    for col in ("#", "score", "document", "section", "text"):
        table.add_column(col, overflow="fold")
    for rank, h in enumerate(hits, start=1):
        snippet = " ".join(h.chunk.text.split())[:160]
        score = h.score if h.rerank_score is None else h.rerank_score
        table.add_row(str(rank), f"{score:.4f}", h.chunk.doc, h.chunk.section, snippet)
    Console().print(table)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    workspace: Path = WorkspaceOpt,
    mode: str = typer.Option(DEFAULT_MODE, help="rag (retrieval), tuned (adapter, no retrieval), hybrid (both), "
                             "or base (the model alone)."),
    adapter: Optional[str] = answer_options.ADAPTER,
    groups: Optional[str] = typer.Option(None, help="Comma-separated groups of the asker."),
    k: int = typer.Option(3, "-k", help="Retrieved chunks put in the prompt."),
    model: Optional[str] = answer_options.MODEL,
    dtype: str = answer_options.DTYPE,
    backend_url: Optional[str] = answer_options.BACKEND_URL,
    api_key: Optional[str] = answer_options.API_KEY,
    max_new_tokens: int = typer.Option(128, help="Longest answer in tokens."),
    focus_window: Optional[int] = answer_options.FOCUS_WINDOW,
    no_rerank: bool = answer_options.NO_RERANK,
    as_json: bool = JsonOpt,
) -> None:
    """Answer a question from the documents, with citations (streams unless --json)."""
    from serve.adapter_choice import parse_adapter_choice
    from serve.answer import AnswerConfig, create_engine

    adapter = parse_adapter_choice(adapter).for_mode(mode)  # a bad --adapter fails before the model loads
    config = AnswerConfig(k=k, max_new_tokens=max_new_tokens, focus_window=focus_window)
    engine = create_engine(workspace, model, backend_url, api_key, config, dtype)
    if no_rerank:
        engine.searcher.use_reranker = False
    stream = engine.start(question, mode=mode, adapter=adapter, groups=_groups(groups))
    streamed: list[str] = []
    for piece in stream:
        if not as_json:
            streamed.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    result = stream.result
    if as_json:
        _emit(result.to_json())
        return
    sys.stdout.write("\n")
    for w in result.warnings:
        sys.stderr.write(f"note: {w}\n")
    final = answer_to_reprint("".join(streamed), result.answer)
    if final is not None:
        sys.stdout.write(final + "\n")
    for c in result.citations:
        page = f", page {c.page}" if c.page else ""
        sys.stdout.write(f"[{c.n}] {c.doc} — {c.section}{page}{' (matched)' if c.inferred else ''}\n")
    t = result.timings
    retriever = f" ({t['retriever']})" if t.get("retriever") else ""
    sys.stderr.write(f"{result.mode}: retrieve {t['retrieve_ms']:.0f} ms{retriever}, first token "
                     f"{t['first_token_ms'] or 0:.0f} ms, {t['tokens_per_s']:.1f} tokens/s\n")


def answer_to_reprint(streamed: str, answer: str) -> str | None:
    """The final answer, when it is not what was streamed last: a withheld guess (the refusal replaces it) or a
    citation marker moved to the passage that holds the answer. A second look streams its draft after the
    first one, so the streamed text only has to end with the answer."""
    return None if streamed.strip().endswith(answer.strip()) else answer


# Commands that live beside their library code; each module imports only typer and the stdlib at its top.
from evals.cli import eval_command  # noqa: E402
from serve.web_cli import serve_command, users_app  # noqa: E402
from tune.synth_cli import synth_command  # noqa: E402
from tune.retriever_cli import tune_retriever_command  # noqa: E402
from tune.train_cli import adapters_command, export_command, tune_command  # noqa: E402

app.command("synth")(synth_command)
app.command("tune")(tune_command)
app.command("tune-retriever")(tune_retriever_command)
app.command("adapters")(adapters_command)
app.command("export")(export_command)
app.command("eval")(eval_command)
app.command("serve")(serve_command)
app.add_typer(users_app, name="users")


def _eval_job(service, job) -> None:
    """The app's Evaluate tab runs evals, a layer above serve: the server gets it from here (imported when it runs)."""
    from evals.app_job import run_eval_job

    run_eval_job(service, job)


def main() -> None:
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft calls a transformers 5 API that warns of its own deprecation whenever an adapter loads: nothing a user
    # can act on, and it lands in the middle of `ask`/`eval` output
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        app(obj={"job_runners": {"eval": _eval_job}})
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as e:  # every failure reaches the user as one clear line
        if os.environ.get("RAGTUNE_DEBUG"):
            raise
        sys.stderr.write(f"error: {e}\n" if _is_user_error(e) else f"error: {type(e).__name__}: {e}\n")
        sys.exit(2 if _is_user_error(e) else 1)


def _is_user_error(e: Exception) -> bool:
    return isinstance(e, (FileNotFoundError, ValueError, PermissionError)) or type(e).__name__.endswith(
        ("BusyError", "MissingError", "EmbedderError", "ModelError", "UsageError"))


if __name__ == "__main__":
    main()
