"""Quality filters for synthetic question/answer items, each a small pure check plus a `FilterStats` that counts
what every filter removed (the data card reports them).

Order (cheapest first; an item is counted under the first filter it fails, so the counts add up):
    malformed         a teacher output without a question (or a question-style item not ending in "?") or answer
    answer_length     answer too short or too long to be a specific fact
    answer_in_question  the question gives its own answer away (a trivial item)
    answer_type       a question that cannot be asking for its answer's type (a date answer to "What is the purpose
                      of ...?"); checked for model-written questions whose answer kind is known, not for cloze items
    unsupported       the normalised answer does not occur in the normalised source chunk
    duplicate         the same normalised question seen before, or token Jaccard >= 0.85 with an earlier question
                      of the same chunk
    round_trip        the question (for a cloze item, its sentence prefix) does not retrieve its source chunk in the
                      top k with hybrid search and the chunk's groups
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

FILTERS = ("malformed", "answer_length", "answer_in_question", "answer_type", "unsupported", "duplicate", "round_trip")

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                         "\u2212": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " "})
_TOKEN = re.compile(r"[a-z0-9]+(?:[.,:/-][a-z0-9]+)*")


def normalize(text: str) -> str:
    """Case, unicode form, curly quotes, dashes and whitespace folded: the form in which spans are compared."""
    text = unicodedata.normalize("NFKC", text or "").translate(_QUOTES).lower()
    return re.sub(r"\s+", " ", text).strip()


def tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(normalize(text)))


def jaccard(a: str, b: str) -> float:
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def answer_length_ok(answer: str, min_chars: int = 2, max_chars: int = 80, max_words: int = 10) -> bool:
    a = normalize(answer)
    return min_chars <= len(a) <= max_chars and len(a.split()) <= max_words and any(ch.isalnum() for ch in a)


def supported(answer: str, chunk_text: str) -> bool:
    """The answer is a span of its chunk (after normalisation), on word boundaries: "BW-4" is not in "BW-40"."""
    a = normalize(answer)
    return bool(a) and _contains_phrase(normalize(chunk_text), a)


def _contains_phrase(haystack: str, needle: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(needle) + r"(?![a-z0-9])", haystack) is not None


def answer_in_question(question: str, answer: str) -> bool:
    """True when the question already contains its answer (as a whole word or phrase)."""
    a = normalize(answer)
    return bool(a) and _contains_phrase(normalize(question), a)


# what a question asking for an answer of each kind must contain somewhere
_TYPE_CUES = {
    "amount": r"how much|amount|cost|price|fee|rate|limit|allowance|budget|maximum|minimum|cap\b|how many (euros|"
              r"dollars|pounds)|pay|spend|reimburs|worth|value|salary",
    "percent": r"percent|percentage|how much|share|proportion|rate|discount|fraction",
    "time": r"what time|when|at what|by what|until what|\btime\b|o'clock|start|open|close|begin|end",
    "date": r"when|what date|what day|which day|what month|which month|what year|which year|by what|deadline|\bdate\b"
            r"|\bday\b|start|begin|open|close|end",
    "duration": r"how long|how many|how much time|period|duration|\b(time|days?|weeks?|months?|years?|hours?|"
                r"minutes?|nights?)\b|how often|frequency|within",
    "count": r"how many|how much|number|amount|size|capacity|maximum|minimum|count",
    "measure": r"how many|how much|how (big|large|small|heavy|long|wide|tall|high|far|fast|hot|cold)|what (is the )?"
               r"(maximum|minimum|size|range|capacity|weight|length|width|height|distance|voltage|power|"
               r"temperature|speed|rate|consumption|depth)|\b(range|capacity|size|weight|temperature|voltage|power)\b",
    "person": r"\bwho|whom|whose|name|which person|which (manager|employee|member|officer)",
    "role": r"\bwho|whom|whose|which (role|position|title|person)|\brole\b|\bposition\b|\btitle\b",
}


def answer_type_ok(question: str, kind: str) -> bool:
    """Whether the question can be asking for an answer of this kind (True for kinds without a rule)."""
    cue = _TYPE_CUES.get(kind)
    return cue is None or re.search(cue, normalize(question)) is not None


@dataclass
class Deduper:
    """Near-duplicate questions: equal normalised text anywhere, or token Jaccard >= threshold with an earlier
    question of the same chunk."""

    threshold: float = 0.85
    _seen: set[str] = field(default_factory=set)
    _by_chunk: dict[str, list[str]] = field(default_factory=dict)

    def is_duplicate(self, question: str, chunk_id: str) -> bool:
        q = normalize(question)
        if q in self._seen:
            return True
        return any(jaccard(q, earlier) >= self.threshold for earlier in self._by_chunk.get(chunk_id, ()))

    def add(self, question: str, chunk_id: str) -> None:
        q = normalize(question)
        self._seen.add(q)
        self._by_chunk.setdefault(chunk_id, []).append(q)


def round_trip_rank(hits, chunk_id: str) -> int | None:
    """1-based rank of the source chunk among `hits` (Searcher hits), None when absent."""
    for rank, h in enumerate(hits, start=1):
        if h.chunk.id == chunk_id:
            return rank
    return None


@dataclass
class FilterStats:
    """Candidates seen and, per filter, how many it removed; kept = candidates - sum(removed)."""

    candidates: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {f: 0 for f in FILTERS})

    def remove(self, name: str) -> None:
        self.removed[name] += 1

    def to_json(self) -> dict:
        return {"candidates": self.candidates, "kept": self.kept, "removed": dict(self.removed),
                "pass_rate": round(self.kept / self.candidates, 4) if self.candidates else None}
