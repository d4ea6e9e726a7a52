"""The development suite's table (evals/suite.py): per set and mode, then per question kind, from each set's
eval report (results.json and per_question.jsonl). Writes OUT/suite.md, OUT/suite.json and OUT/suite.png."""

from __future__ import annotations

import json
from pathlib import Path

from evals import metrics as M
from evals.report import _grouped_bars, _plt
from generate.question_kind import EXPLAIN_KINDS, FACTOID_KINDS

KIND_GROUPS = {"factoid": list(FACTOID_KINDS), "explain": list(EXPLAIN_KINDS), "cloze": ["cloze"]}
MODE_COLUMNS = (("contains", "contains"), ("f1", "F1"), ("refusal_acc", "refusal acc."),
                ("degenerate", "degenerate shown"), ("degenerate_drafts", "degenerate drafts"))


def _records(report: str) -> list[dict]:
    path = Path(report) / "per_question.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def by_kind(records: list[dict], seed: int = 0) -> dict:
    """{mode: {group or kind: {contains, f1, n}}} over answerable questions, for the coarse groups and each kind."""
    out: dict = {}
    for r in records:
        if not r.get("answerable"):
            continue
        kind = r.get("question_kind") or "what"
        group = next((g for g, kinds in KIND_GROUPS.items() if kind in kinds), "factoid")
        for key in (group, kind):
            cell = out.setdefault(r["mode"], {}).setdefault(key, {"contains": [], "f1": []})
            cell["contains"].append(r["correct"]["contains"])
            cell["f1"].append(r["correct"]["f1"])
    return {mode: {key: {name: M.bootstrap(vals, seed, 500).to_json() for name, vals in cell.items()}
                   for key, cell in kinds.items()} for mode, kinds in out.items()}


def _cell(results: dict, mode: str, name: str) -> str:
    v = (results.get(mode) or {}).get(name)
    return "–" if v is None else f"{v:.3f}"


def render(summary: dict) -> str:
    cfg = summary["config"]
    lines = ["# ragtune development suite", "",
             f"Per set: index -> synth ({', '.join(f'{k}={v}' for k, v in cfg['synth'].items()) or 'defaults'}) -> "
             f"tune ({cfg['steps']} steps, lr {cfg['lr']}{', ' if cfg['tune'] else ''}"
             f"{', '.join(f'{k}={v}' for k, v in cfg['tune'].items())}) -> eval {cfg['modes']} "
             f"(seed {cfg['seed']}, {cfg['limit']} questions per set, {cfg['fk_limit']} Fictional Knowledge probes, "
             f"max {cfg['max_new_tokens']} new tokens). `python -m evals.suite` made it.", "",
             "| set | n | mode | " + " | ".join(label for _, label in MODE_COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(MODE_COLUMNS)]
    for row in summary["sets"]:
        if "results" not in row:
            lines.append(f"| {row['set']} | – | – | " + (row.get("missing") and f"missing: {row['missing']}"
                                                         or f"failed: {row.get('error')}") + " |" * len(MODE_COLUMNS))
            continue
        for mode in row["results"]:
            lines.append(f"| {row['set']} | {row['n']} | {mode} | "
                         + " | ".join(_cell(row["results"], mode, k) for k, _ in MODE_COLUMNS) + " |")
    lines += ["", "F1 (contains) by question kind, answerable questions (n per kind in brackets):", ""]
    groups = list(KIND_GROUPS)
    lines += ["| set | mode | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
    for row in summary["sets"]:
        for mode, kinds in (row.get("by_kind") or {}).items():
            cells = []
            for g in groups:
                k = kinds.get(g)
                cells.append("–" if not k else f"{k['f1']['value']:.3f} ({k['contains']['value']:.3f}) [{k['f1']['n']}]")
            lines.append(f"| {row['set']} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Reports: " + ", ".join(f"[{r['set']}]({r['report']}/report.md)" for r in summary["sets"]
                                         if r.get("report")), ""]
    return "\n".join(lines) + "\n"


def write_plot(out: Path, summary: dict) -> str | None:
    rows = [r for r in summary["sets"] if r.get("results")]
    if not rows:
        return None
    plt = _plt()
    modes = list(dict.fromkeys(m for r in rows for m in r["results"]))
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    metrics = {r["set"]: r.get("metrics", {}) for r in rows}
    _grouped_bars(axes[0], [r["set"] for r in rows], modes, lambda g, s: (metrics[g].get(s) or {}).get("f1"),
                  "token F1 (95% CI)")
    axes[0].set_title("F1 per set and mode")
    pooled = by_kind([rec for r in rows for rec in _records(r["report"])])
    groups = [g for g in KIND_GROUPS if any(g in pooled.get(m, {}) for m in modes)]
    _grouped_bars(axes[1], groups, modes, lambda g, s: (pooled.get(s, {}).get(g) or {}).get("f1"), "token F1")
    axes[1].set_title("F1 per question kind, all sets pooled")
    for ax in axes:
        ax.set_ylim(0, 1.0)
    fig.tight_layout()
    fig.savefig(out / "suite.png", dpi=110)
    plt.close(fig)
    return str(out / "suite.png")


def write_suite_report(out: Path, summary: dict) -> dict:
    """Add per-kind scores and each set's interval estimates to `summary`, write the three files."""
    out.mkdir(parents=True, exist_ok=True)
    for row in summary["sets"]:
        if row.get("report"):
            row["by_kind"] = by_kind(_records(row["report"]), summary["config"]["seed"])
            row["metrics"] = json.loads((Path(row["report"]) / "results.json").read_text())["metrics"]
    (out / "suite.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "suite.md").write_text(render(summary), encoding="utf-8")
    plot = write_plot(out, summary)
    return {"markdown": str(out / "suite.md"), "json": str(out / "suite.json"), "plot": plot}
