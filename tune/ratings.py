"""Users' feedback on the app's answers, and what `ragtune tune-retriever` learns from it.

The Chat tab (thumbs up / down, "Passage [n] had the answer") and the document viewer ("This section answers it",
mode "viewer", naming the section's chunks) append one JSON object per rating to WS/ratings.jsonl (0600, it holds
users' questions):

    {"ts", "user", "id", "question", "mode", "adapter", "answer", "liked", "cited": [chunk ids], "docs": [paths],
     "passage": n (only for a passage pick)}

`id` names one answer: rating it again, or taking the rating back (`liked` null), appends a row with the same id,
and the last row per (user, id) is the one that counts (the chat keeps one feedback per answer). A liked answer's
cited chunks, or the passage its reader picked as the one that held the answer (when the model missed it), are
passages a reader found answered the question as they worded it: the questions in the company's own words that
synth (which copies its passage's words) cannot write. A disliked answer teaches retrieval nothing (the passages
may have been right and the model wrong); it is counted, never trained on.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ingest.files import append_json_line, read_json_lines
from ingest.workspace import Workspace

MAX_QUESTION_CHARS = 2000  # a longer question is cut to this in the log (the answer path caps what it reads)
MAX_ANSWER_CHARS = 4000
_lock = threading.Lock()


def record_rating(workspace: Path, user: str, answer_id: str, question: str, liked: bool | None, *, mode: str,
                  adapter: str | None, answer: str, cited: list[str], docs: list[str],
                  passage: int | None = None) -> dict:
    """Append one rating. `liked`: True (thumbs up, or `passage` n: the reader's pick of the passage that held the
    answer, then `cited` is that passage's chunk), False (down) or None (taken back)."""
    if liked not in (True, False, None):
        raise ValueError(f"liked must be true, false or null, not {liked!r}")
    if not (question or "").strip() or not answer_id:
        raise ValueError("nothing to rate: the rating names no answer")
    row = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": user, "id": answer_id,
           "question": question.strip()[:MAX_QUESTION_CHARS], "mode": mode, "adapter": adapter,
           "answer": (answer or "")[:MAX_ANSWER_CHARS], "liked": liked, "cited": list(cited), "docs": list(docs)}
    if passage is not None:
        row["passage"] = passage
    append_json_line(Workspace(workspace).ratings, row, _lock)
    return row


def read_ratings(workspace: Path) -> list[dict]:
    """The rating that counts for each (user, answer id), in the order first rated; taken-back ones left out.
    Rows missing a field or of the wrong shape are skipped like damaged lines."""
    last: dict[tuple[str, str], dict] = {}
    for row in read_json_lines(Workspace(workspace).ratings):
        if (not isinstance(row.get("user"), str) or not isinstance(row.get("id"), str)
                or not isinstance(row.get("question"), str) or row.get("liked") not in (True, False, None)
                or not isinstance(row.get("cited", []), list)):
            continue
        last[(row["user"], row["id"])] = row
    return [r for r in last.values() if r["liked"] is not None]


def liked_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """(question, chunk id) for each chunk a liked answer cited, each distinct pair once, in order."""
    pairs: dict[tuple[str, str], None] = {}
    for row in rows:
        if row["liked"] is True:
            for chunk_id in row.get("cited") or []:
                if isinstance(chunk_id, str) and chunk_id:
                    pairs[(row["question"].strip(), chunk_id)] = None
    return list(pairs)


def rating_counts(workspace: Path) -> dict:
    """What the app's Tune tab shows: answers rated (liked / disliked), the likes that name passages and how (a
    reader's passage pick in the chat, a section pointed at in the viewer), the users who rated, and the distinct
    (question, chunk) pairs `tune-retriever` would add to synth's questions."""
    rows = read_ratings(workspace)
    liked = [r for r in rows if r["liked"] is True]
    return {"liked": len(liked), "disliked": sum(r["liked"] is False for r in rows),
            "liked_with_sources": sum(bool(r.get("cited")) for r in liked),
            "passage_picks": sum("passage" in r for r in liked),
            "viewer_picks": sum(r.get("mode") == "viewer" for r in liked),
            "users": len({r["user"] for r in rows}), "pairs": len(liked_pairs(rows))}
