"""The answer modes: one table that every layer reads (the engine, the adapter choice, the app, the API, eval).

    >>> [m.name for m in TABLE if m.retrieval]
    ['rag', 'hybrid']
    >>> mode("hybrid").focus, ADAPTER_MODES
    (0, ('tuned', 'hybrid'))

A new mode is a row here plus what it does differently in the engine (serve/answer.py); ARCHITECTURE.md lists the
files that read each column.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    retrieval: bool  # the prompt carries retrieved passages (and the answer must be supported by them)
    adapter: bool  # answered with a LoRA adapter (WS/adapters/NAME), chosen per mode (serve/adapter_choice.py)
    focus: int | None  # fact questions: sentences kept either side of the best one per chunk, -1 = whole chunks;
    # None without retrieval
    in_app: bool  # offered in the chat's mode picker, the compare tab and its votes
    recipes: tuple[str | None, ...] = ()  # synth recipes whose adapters suit it (None: cards older than the field)


# The tuned reader answers fact questions best from the one sentence most like the question in each chunk (focus 0;
# +-1 and +-2 sentences scored lower on Fictional Knowledge and data/eval); the base model does not gain from
# focusing (fewer correct citations), so rag stays plain RAG over whole chunks unless asked (docs/RESULTS.md).
TABLE = (
    Mode("base", retrieval=False, adapter=False, focus=None, in_app=False),
    Mode("rag", retrieval=True, adapter=False, focus=-1, in_app=True),
    Mode("tuned", retrieval=False, adapter=True, focus=None, in_app=True, recipes=("facts",)),
    Mode("hybrid", retrieval=True, adapter=True, focus=0, in_app=True, recipes=("raft", None)),
)
DEFAULT_MODE = "rag"  # what a chat, `ragtune ask` and the API's plain model name use when nothing better is known

MODES = tuple(m.name for m in TABLE)
RETRIEVAL_MODES = tuple(m.name for m in TABLE if m.retrieval)
ADAPTER_MODES = tuple(m.name for m in TABLE if m.adapter)
APP_MODES = tuple(m.name for m in TABLE if m.in_app)
FOCUS_WINDOW = {m.name: m.focus for m in TABLE if m.retrieval}
SUITED_RECIPES = {m.name: m.recipes for m in TABLE if m.adapter}


def mode(name: str) -> Mode:
    """The row of `name`; KeyError for an unknown mode (callers say which modes exist)."""
    return {m.name: m for m in TABLE}[name]
