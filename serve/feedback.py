"""Votes from the Compare tab: which of rag / tuned / hybrid answered a question best.

One JSON object per line in WS/feedback.jsonl: {ts, user, question, answers: {mode: text}, adapter, choice}.
Lines are appended under a lock with a single write each, so concurrent votes never interleave; a damaged line is
skipped when tallying, never fatal.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

from generate.modes import APP_MODES
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
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    path = feedback_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return row


def read_votes(workspace: Path) -> list[dict]:
    path = feedback_path(workspace)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("choice") in COMPARE_MODES:
            rows.append(row)
    return rows


def tally(workspace: Path) -> list[list]:
    """[[mode, votes, share %], ...] for rag, tuned, hybrid (all rows present, zero when none)."""
    counts = Counter(r["choice"] for r in read_votes(workspace))
    total = sum(counts.values())
    return [[m, counts.get(m, 0), round(100.0 * counts.get(m, 0) / total, 1) if total else 0.0] for m in COMPARE_MODES]
