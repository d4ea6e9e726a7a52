"""The evaluation report: a folder WS/evals/<timestamp>-<set>/ with results.json, per_question.jsonl, report.md and
PNG bar charts (answers, retrieval, cost), plus WS/evals/latest.json pointing at the newest report."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from datetime import datetime
from pathlib import Path

ANSWER_COLUMNS = (("contains", "contains"), ("f1", "F1"), ("exact", "exact"), ("refusal_acc", "refusal acc"),
                  ("false_refusal", "false refusal"), ("citation_acc", "citation acc"),
                  ("faithfulness", "faithfulness"), ("context_recall", "answer in context"))
RETRIEVAL_COLUMNS = (("recall@1", "R@1"), ("recall@3", "R@3"), ("recall@5", "R@5"), ("recall@10", "R@10"),
                     ("mrr", "MRR"))
COST_COLUMNS = (("retrieve_ms", "retrieve ms"), ("first_token_ms", "first token ms"), ("tokens_per_s", "tokens/s"))
CHART_ANSWERS = ("contains", "f1", "exact", "refusal_acc")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("ragtune", "torch", "transformers", "sentence-transformers", "faiss-cpu", "bm25s"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["python"] = platform.python_version()
    out["platform"] = platform.platform()
    return out


def new_report_dir(parent: Path, set_name: str) -> Path:
    """parent/<YYYYmmdd-HHMMSS>-<set>/, with a -2, -3 ... suffix if two runs start in the same second."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", set_name).strip("-") or "questions"
    base = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{slug}"
    for i in range(1, 1000):
        folder = parent / (base if i == 1 else f"{base}-{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a report folder under {parent}")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _retrieval_columns(block: dict) -> list[tuple[str, str]]:
    """The recall columns a retrieval block has (gold document: R@1/5/10; answer chunk: R@1/3/5), then MRR."""
    return [(k, label) for k, label in RETRIEVAL_COLUMNS if any(k in row for row in block.values())]


def _cell(est: dict | None, digits: int = 3) -> str:
    if not est:
        return "–"
    hw = (est["high"] - est["low"]) / 2
    return f"{est['value']:.{digits}f} ± {hw:.{digits}f} (n={est['n']})"


def _cost_cell(est: dict | None) -> str:
    if not est:
        return "–"
    p50 = f", p50 {est['p50']:.1f}" if est.get("p50") is not None else ""
    return f"{est['value']:.1f} ± {(est['high'] - est['low']) / 2:.1f}{p50} (n={est['n']})"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(payload: dict) -> str:
    v = payload["versions"]
    metrics, retrieval = payload["metrics"], payload.get("retrieval") or {}
    out = [f"# ragtune eval: {payload['set']}", ""]
    out.append(f"{payload['n']} questions ({payload['n_answerable']} answerable, {payload['n_unanswerable']} "
               f"unanswerable) from `{payload['source']}`, created {payload['created']}.")
    out += ["", "Each cell: mean ± half-width of the bootstrap 95% confidence interval (n = questions it applies to).",
            ""]
    out += ["```", payload["command"], "```", ""]
    adapter = payload.get("adapter") or "none"
    out.append(f"- model: `{payload['model']}`" + (f" at {payload['backend_url']}" if payload.get("backend_url")
                                                    else "") + f"; adapter: `{adapter}`; embedder: "
               f"`{payload.get('embed_model') or '–'}`")
    out.append(f"- seed {payload['seed']}, limit {payload['limit'] if payload['limit'] is not None else 'all'}, "
               f"k {payload['k']} chunks in the prompt, max {payload['max_new_tokens']} new tokens")
    out.append("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "platform" and val)
               + f"; {v.get('platform')}")
    for mode, reason in payload.get("skipped", {}).items():
        out.append(f"- **skipped mode {mode}**: {reason}")
    for note in payload.get("notes", []):
        out.append(f"- note: {note}")
    modes = list(metrics)
    if modes:
        cols = [(k, label) for k, label in ANSWER_COLUMNS if any(k in metrics[m] for m in modes)]
        out += ["", "## Answers", "", _table(["mode"] + [label for _, label in cols],
                                             [[m] + [_cell(metrics[m].get(k)) for k, _ in cols] for m in modes])]
    by_set = sorted({k for m in modes for k in metrics[m] if k.startswith(("contains_", "f1_"))})
    if by_set:
        out += ["", "## Answers by probe set", "",
                _table(["mode"] + by_set, [[m] + [_cell(metrics[m].get(k)) for k in by_set] for m in modes])]
    for kind, title in (("gold_doc", "Retrieval: gold document"), ("answer_chunk", "Retrieval: the answer's chunk "
                                                                                   "per retriever setting")):
        block = retrieval.get(kind) or {}
        if block:
            cols = _retrieval_columns(block)
            out += ["", f"## {title}", "", _table(["search"] + [label for _, label in cols],
                                                  [[s] + [_cell(block[s].get(k)) for k, _ in cols] for s in block])]
    if retrieval.get("retrievers"):
        out += ["", "Retriever settings: " + "; ".join(f"`{name}` = {what}" for name, what in
                                                       retrieval["retrievers"].items()) + "."]
    if modes:
        cols = [(k, label) for k, label in COST_COLUMNS if any(k in metrics[m] for m in modes)]
        out += ["", "## Cost (mean ± CI half-width, p50)", "",
                _table(["mode"] + [label for _, label in cols],
                       [[m] + [_cost_cell(metrics[m].get(k)) for k, _ in cols] for m in modes])]
    out += ["", "## Metrics", "",
            "- contains / F1 / exact: SQuAD-normalised gold answer (lowercase, no punctuation or a/an/the) inside /"
            " token F1 with / equal to the answer, citation markers removed; answerable questions only.",
            "- refusal acc: share of unanswerable questions refused; false refusal: share of answerable ones refused.",
            "- citation acc: share of answered answerable questions whose cited passages contain a gold answer.",
            "- faithfulness: share of answer sentences with >= 50% of their content words in the cited passages "
            "(lexical overlap, not a judge model).",
            "- answer in context: share of answerable questions where a passage given to the model holds a gold "
            "answer.",
            "- retrieval: recall@k and MRR (top 10) of the gold document per search mode, and of the answer's chunk "
            "(a chunk holding a gold answer's text, else the gold document's chunk sharing most of the answer's "
            "words) per retriever setting (evals/retrieval.py).",
            "", "Files: `results.json`, `per_question.jsonl` (every answer with its scores), "
            + ", ".join(f"`{p}`" for p in payload.get("charts", [])) + "."]
    return "\n".join(out) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(ax, groups: list[str], series: list[str], get, ylabel: str) -> None:
    import numpy as np

    def fmt(v: float) -> str:
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"

    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, s in enumerate(series):
        vals, lo, hi = [], [], []
        for g in groups:
            e = get(g, s)
            vals.append(e["value"] if e else 0.0)
            lo.append(e["value"] - e["low"] if e else 0.0)
            hi.append(e["high"] - e["value"] if e else 0.0)
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=3, label=s)
        ax.bar_label(bars, labels=[fmt(v) for v in vals], fontsize=7, padding=2)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def write_charts(folder: Path, payload: dict) -> list[str]:
    plt = _plt()
    metrics, retrieval = payload["metrics"], payload.get("retrieval") or {}
    modes = list(metrics)
    written = []
    names = [m for m in CHART_ANSWERS if any(m in metrics[x] for x in modes)]
    if modes and names:
        fig, ax = plt.subplots(figsize=(7, 4))
        _grouped_bars(ax, names, modes, lambda g, s: metrics[s].get(g), "score (95% CI)")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Answers by mode ({payload['set']}, n={payload['n']})")
        fig.tight_layout()
        fig.savefig(folder / "answers.png", dpi=110)
        plt.close(fig)
        written.append("answers.png")
    block = retrieval.get("gold_doc") or {}
    if block:
        fig, axes = plt.subplots(1, 2 if retrieval.get("answer_chunk") else 1, figsize=(10, 4), squeeze=False)
        for ax, (kind, title) in zip(axes[0], (("gold_doc", "gold document"), ("answer_chunk", "answer chunk"))):
            b = retrieval.get(kind) or {}
            _grouped_bars(ax, [k for k, _ in _retrieval_columns(b)], list(b), lambda g, s, b=b: b[s].get(g),
                          "recall / MRR (95% CI)")
            ax.set_ylim(0, 1.05)
            ax.set_title(f"Retrieval: {title}")
        fig.tight_layout()
        fig.savefig(folder / "retrieval.png", dpi=110)
        plt.close(fig)
        written.append("retrieval.png")
    cost = [k for k, _ in COST_COLUMNS if any(k in metrics[m] for m in modes)]
    if modes and cost:
        fig, axes = plt.subplots(1, len(cost), figsize=(4 * len(cost), 3.6), squeeze=False)
        for ax, name in zip(axes[0], cost):
            _grouped_bars(ax, modes, [name], lambda g, s: metrics[g].get(s), dict(COST_COLUMNS)[name])
            ax.get_legend().remove()
            ax.set_title(dict(COST_COLUMNS)[name] + " (mean)")
        fig.tight_layout()
        fig.savefig(folder / "cost.png", dpi=110)
        plt.close(fig)
        written.append("cost.png")
    return written


def write_report(parent: Path, payload: dict, records: list[dict]) -> Path:
    """Write the report folder under `parent` and point parent/latest.json at it. Returns the folder."""
    folder = new_report_dir(parent, payload["set"])
    payload = {**payload, "created": datetime.now().astimezone().isoformat(timespec="seconds"),
               "versions": versions()}
    with open(folder / "per_question.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    payload["charts"] = write_charts(folder, payload)
    (folder / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(payload), encoding="utf-8")
    latest = {"report": str(folder.resolve()), "name": folder.name, "set": payload["set"], "n": payload["n"],
              "results_json": f"{folder.name}/results.json", "report_md": f"{folder.name}/report.md",
              "created": payload["created"], "written_at": time.time()}
    _atomic_write(Path(parent) / "latest.json", json.dumps(latest, indent=2) + "\n")
    return folder


__all__ = ["render_markdown", "versions", "write_charts", "write_report"]
