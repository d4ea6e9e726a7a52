"""What the app shows, as plain functions of plain data: chat messages flattened for the chat template, answers
with their citations and timings as Markdown, the tuning job's state and loss plot, adapter cards and evaluation
reports. serve/app.py wires them to Gradio."""

from __future__ import annotations

import json
import time
from pathlib import Path

from generate.modes import ADAPTER_MODES
from ingest.workspace import Workspace
from serve.answer import READ_AS, Answer
from serve.docs_admin import doc_link
from serve.jobs import JOB_NAMES

PASSAGE_CHARS = 320
NO_ADAPTER = "(none yet)"
AUTO_ADAPTER = "(default for the mode)"  # each mode answers with the app's adapter for it (Tune tab, "Use ... for")
USE_FOR = {" and ".join(ADAPTER_MODES): ADAPTER_MODES, **{m: (m,) for m in reversed(ADAPTER_MODES)}}

# ---- formatting -------------------------------------------------------------------------------------------------

def flatten_content(content) -> str:
    """Gradio 6 gives message content as a list of blocks ([{"type": "text", "text": ...}]); make it a string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(flatten_content(c) for c in content)
    return str(content)


def flatten_messages(messages) -> list[dict]:
    out = []
    for m in messages or []:
        if isinstance(m, dict):
            out.append({"role": m.get("role", "assistant"), "content": flatten_content(m.get("content"))})
        else:  # a ChatMessage-like object
            out.append({"role": getattr(m, "role", "assistant"), "content": flatten_content(getattr(m, "content", ""))})
    return out


def _quote(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > PASSAGE_CHARS:
        text = text[:PASSAGE_CHARS].rsplit(" ", 1)[0] + " …"
    return text.replace("\n", " ")


def _md_escape(text: str) -> str:
    """Escape what Markdown would treat as markup (and raw HTML) in text that comes from documents."""
    out = text.replace("\\", "\\\\").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "`*_[]#|":
        out = out.replace(ch, "\\" + ch)
    return out


def format_citations(answer: Answer) -> str:
    if not answer.citations:
        return ""
    lines = ["", "", "**Sources**", ""]
    for c in answer.citations:
        where = f"{c.doc} — {c.section}" if c.section else c.doc
        if c.page:
            where += f", page {c.page}"
        matched = " *(matched by wording)*" if c.inferred else ""
        lines.append(f"[{c.n}] [{_md_escape(where)}]({doc_link(c.doc, c.section, c.page)}){matched}")
        lines.append(f"> {_md_escape(_quote(c.text))}")
        lines.append("")
    return "\n".join(lines)


def format_other_passages(answer: Answer) -> str:
    """One line naming the passages the model read but did not cite, each a link, so a reader can check them and
    say which one held the answer (the chat's feedback menu, tune/ratings.py)."""
    cited = {c.n for c in answer.citations}
    rest = [s for s in answer.sources if s.n not in cited]
    if not rest:
        return ""
    links = [f"[{s.n}] [{_md_escape(s.doc + (' — ' + s.section if s.section else ''))}]"
             f"({doc_link(s.doc, s.section, s.page)})" for s in rest]
    return "\n\n*Also read:* " + " · ".join(links)


def format_timings(answer: Answer) -> str:
    t = answer.timings
    parts = [answer.mode + (f" ({answer.adapter})" if answer.adapter else "")]
    if answer.model:
        parts.append(answer.model)  # which model or server answered (--model / --backend-url)
    if t.get("retrieve_ms"):
        parts.append(f"retrieve {t['retrieve_ms']:.0f} ms" + (f" ({t['retriever']})" if t.get("retriever") else ""))
    if t.get("first_token_ms"):
        parts.append(f"first token {t['first_token_ms'] / 1000:.1f} s")
    if t.get("tokens_per_s"):
        parts.append(f"{t['tokens_per_s']:.1f} tokens/s")
    parts.append(f"total {t.get('total_ms', 0) / 1000:.1f} s")
    return " · ".join(parts)


def format_answer(answer: Answer, *, timings: bool = True) -> str:
    text = answer.answer
    read = [w for w in answer.warnings if w.startswith(READ_AS)]  # generate/requests: a request put as a question
    if read:
        text = f"*{read[0][0].upper()}{read[0][1:]}*\n\n{text}"
    notes = [w for w in answer.warnings if "withheld" in w]
    if notes:
        text += "\n\n*The model's draft was not supported by the documents, so it was withheld.*"
    text += format_citations(answer)
    if timings:  # the chat; the compare columns show neither the timings nor the passages read but not cited
        text += format_other_passages(answer)
        text += f"\n\n<sub>{format_timings(answer)}</sub>"
    return text


def card_markdown(ws: Path, name) -> str:
    if not name or name == NO_ADAPTER:
        return "*No adapter selected.*"
    readme = Workspace(ws).adapter(name) / "README.md"
    if readme.is_file():
        return readme.read_text(encoding="utf-8")
    return f"*Adapter `{name}` has no card.*"


def loss_plot(job):
    """A matplotlib figure of the run's train and validation loss (None before the first step)."""
    rows = list(job.losses) if job is not None else []
    if not rows:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 2.8), dpi=100)
    ax = fig.add_subplot()
    for kind, style in (("train", "-o"), ("val", "-s")):
        pts = sorted((r["step"], r["loss"]) for r in rows if r["kind"] == kind)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, markersize=3, label=kind)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def job_view(job) -> str:
    if job is None:
        return "No tuning run yet in this server session."
    elapsed = max(0.0, (job.finished or time.time()) - job.started)
    head = f"**{JOB_NAMES.get(job.kind, job.kind)}**: {job.phase} ({elapsed:.0f} s)"
    if job.running:
        filled = int(round(20 * max(0.0, min(1.0, job.fraction))))
        head += f" `{'█' * filled}{'░' * (20 - filled)}` {job.fraction:.0%}"
    if job.error:
        head += f"\n\n❌ {_md_escape(job.error)}"
    elif not job.running and job.result.get("summary"):
        head += f"\n\n{_md_escape(job.result['summary'])}"
    return head + ("\n\n```\n" + "\n".join(job.log[-12:]) + "\n```" if job.log else "")


def report_view(folder: Path | None):
    if folder is None or not folder.is_dir():
        return "*No evaluation report yet. Run one above (it takes a while on a CPU: start with a few " \
               "questions).*", []
    images = []
    for png in ("answers.png", "retrieval.png", "cost.png"):
        if (folder / png).is_file():
            from PIL import Image

            with Image.open(folder / png) as im:
                images.append((im.convert("RGB"), png))
    base = f"ragtune/evals/{folder.name}"
    md = f"[report.md]({base}/report.md) · [results.json]({base}/results.json)\n\n"
    report = folder / "report.md"
    if report.is_file():
        md += report.read_text(encoding="utf-8")
    return md, images


def latest_report(ws: Path) -> Path | None:
    try:
        latest = json.loads((Workspace(ws).evals / "latest.json").read_text())
    except (OSError, ValueError):
        return None
    folder = Path(latest.get("report", ""))
    if not folder.is_dir():
        folder = Workspace(ws).evals / str(latest.get("name", ""))
    return folder if folder.is_dir() and folder.parent.resolve() == Workspace(ws).evals.resolve() else None


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ("" if v is None else str(v))


def dataset_choices(ws: Path) -> list[str]:
    """Synth datasets of the workspace that search training can read (train.jsonl and val.jsonl), newest first."""
    root = Workspace(ws).datasets
    found = [d for d in root.iterdir() if (d / "train.jsonl").is_file() and (d / "val.jsonl").is_file()] \
        if root.is_dir() else []
    return [d.name for d in sorted(found, key=lambda d: (d / "train.jsonl").stat().st_mtime, reverse=True)]


def search_markdown(ws: Path, unhelpful: list[dict] | None = None) -> str:
    """The Tune tab's "Search that learns" panel: users' feedback so far (tune/ratings.py), the search that runs
    now (retrieve/retrievers.py), each trained part with its validation recall, and `unhelpful`: the answers marked
    not helpful that the admin looking may see (AdminHandlers.unhelpful_for), newest first."""
    from retrieve.retrievers import list_parts, read_settings
    from tune.ratings import rating_counts
    from tune.retriever_cli import fusion_label

    c = rating_counts(ws)
    settings = read_settings(ws)
    cards = {p["name"]: p["card"] for p in list_parts(ws)}

    def part(name: str | None, default: str) -> str:
        if not name:
            return default
        v = (cards.get(name) or {}).get("validation") or {}
        recall = (f" (validation recall@3 {v['before'].get('recall@3')} → {v['after'].get('recall@3')})"
                  if v.get("before") and v.get("after") else "")
        return f"`{_md_escape(name)}`{recall}"

    rated = c["liked"] + c["disliked"]
    feedback = (f"**Users' feedback:** {_count(rated, 'answer')} rated by {_count(c['users'], 'user')}: "
                f"{c['liked']} helpful "
                f"({c['passage_picks']} with a passage picked in the chat, {c['viewer_picks']} with a section "
                f"pointed at in the viewer), {c['disliked']} not. Training adds {c['pairs']} question–passage "
                "pairs from them to the synth questions." if rated else
                "**Users' feedback:** no answer rated yet. Readers rate answers in the Chat tab (👍 / 👎, or "
                "*Passage [n] had the answer*) and point at sections in the document viewer.")
    return (f"{feedback}\n\n**Search now:** {fusion_label(settings.dense_weight)}; reranker "
            f"{part(settings.reranker, 'none')}; embedder {part(settings.embedder, 'untuned')}."
            + unhelpful_markdown(unhelpful or [], c["disliked"]))


def unhelpful_markdown(rows: list[dict], disliked: int) -> str:
    """The questions marked not helpful, as a table (when last, times, question, its newest answer, documents it
    read); empty when none is."""
    if not disliked:
        return ""
    if not rows:
        return ("\n\n**Not helpful:** none you may see (each asked by a user with groups you do not have, or about "
                "a document you may not open).")

    def cell(text, limit: int) -> str:
        text = " ".join(str(text or "").split())
        return _md_escape(text if len(text) <= limit else text[:limit - 1] + "…")

    lines = [f"\n\n**Not helpful, newest first** (the newest {_count(len(rows), 'question')} you may see, of "
             f"{_count(disliked, 'answer')} marked in all; a question marked again and again points at a gap in the "
             "documents or in search):\n",
             "| when | times | question | answer | documents read |", "|---|---|---|---|---|"]
    for r in rows:
        docs = ", ".join(dict.fromkeys(d for d in r.get("docs") or [] if isinstance(d, str)))
        lines.append(f"| {cell(str(r.get('ts', ''))[:16].replace('T', ' '), 16)} | {r.get('times', 1)} | "
                     f"{cell(r['question'], 160)} | "
                     f"{cell(r.get('answer'), 160)} | {cell(docs, 120) or 'none'} |")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
