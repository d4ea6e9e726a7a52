"""Where a sentence may end: the abbreviations after which a full stop does not end one.

Shared by the two sentence splitters: tune/spans.py (training items: whitespace-normalised sentences) and
retrieve/focus.py (focused passages: spans into the chunk, formatting kept).
"""

from __future__ import annotations

import re

# lower case, without the final full stop; single letters (initials such as "J.") count too
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al ca approx incl no fig dept st mr mrs ms dr prof jr sr "
    "inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec".split())

_EDGES = re.compile(r"^[\"'“‘(\[]+|[.\"'”’)\]]+$")
_LAST_WORD = re.compile(r"(\S+)\.[\"'”’)\]]*$")  # the word before a final full stop


def is_abbreviation(word: str) -> bool:
    """Whether a full stop after `word` (the last word before it, punctuation around it allowed) is part of an
    abbreviation or an initial rather than the end of a sentence."""
    core = _EDGES.sub("", word).lower()
    return core in ABBREVIATIONS or (len(core) == 1 and core.isalpha())


def ends_with_abbreviation(segment: str) -> bool:
    """Whether `segment`, text up to a full stop (closing quotes or brackets after it allowed), ends with an
    abbreviation or an initial, so that full stop does not end a sentence."""
    word = _LAST_WORD.search(segment)
    return bool(word) and is_abbreviation(word.group(1))
