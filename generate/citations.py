"""`Citation`: a numbered passage given to the model and, when the answer cites it, quoted back to the reader.
The answer engine (serve/answer.py) makes them; tune/raft.py writes training prompts with the same numbering.

    Citation(n=1, doc="hr/leave.md", section="Leave", page=None, chunk_id="ab12", text="Staff get 25 days.")
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Citation:
    n: int  # the number the chunk had in the prompt
    doc: str
    section: str
    page: int | None
    chunk_id: str
    text: str  # the quoted passage
    inferred: bool = False  # True when the model gave no [n] marker and the passage was matched by overlap
