"""Votes from the Compare tab: which of rag / tuned / hybrid answered a question best.

One JSON object per line in WS/feedback.jsonl: {ts, user, question, answers: {mode: text}, adapter, choice}.
Lines are appended under a lock with a single write each, so concurrent votes never interleave; a damaged line is
skipped when tallying, never fatal.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from generate.modes import APP_MODES
from ingest.files import append_json_line, read_json_lines
from ingest.workspace import Workspace

COMPARE_MODES = APP_MODES  # the compare tab shows every mode the app offers, side by side
_lock = threading.Lock()


def feedback_path(workspace: Path) -> Path:
    return Workspace(workspace).feedback


def record_vote(workspace: Path, user: str, question: str, answers: dict[str, str], choice: str,
                adapter: str | None = None, timings: dict | None = None) -> dict:
    if choice not in COMPARE_MODES:
        raise ValueError(f"choice must be one of {', '.join(COMPARE_MODES)}, not {choice!r}")
    if not (question or "").strip():
        raise ValueError("nothing to vote on: ask a question first")
    row = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": user, "question": question.strip(),
           "answers": {m: answers.get(m, "") for m in COMPARE_MODES}, "adapter": adapter, "choice": choice}
    if timings:
        row["timings"] = timings
    append_json_line(feedback_path(workspace), row, _lock)
    return row


def read_votes(workspace: Path) -> list[dict]:
    return [r for r in read_json_lines(feedback_path(workspace)) if r.get("choice") in COMPARE_MODES]


def tally(workspace: Path) -> list[list]:
    """[[mode, votes, share %], ...] for rag, tuned, hybrid (all rows present, zero when none)."""
    counts = Counter(r["choice"] for r in read_votes(workspace))
    total = sum(counts.values())
    return [[m, counts.get(m, 0), round(100.0 * counts.get(m, 0) / total, 1) if total else 0.0] for m in COMPARE_MODES]
