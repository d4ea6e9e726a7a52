"""The last look at an answer the engine judged fine (serve/answer.py), before the reader gets it.

`quote_value(text, sources)`: a short answer that is one value, written as the passage writes it. A small model
drops or moves a value's unit or currency ('3.4 million [1]' where the passage says 'EUR 3.4 million', '55 euros'
for 'EUR 55', '10 [1]' for 'up to 10 keep-in-touch days'); the reader should see the document's own words, which
are also what they will search the source for. Only when exactly one value of the cited passages (tune/spans.py
finds them, as synth does) has the same numbers and every word of the answer; otherwise the answer stays as is.
When no cited passage has such a value (or the answer cites none), all passages are searched; `cite` then moves a
marker that names the wrong passage, as for any answer.

`better_value(question, text, sources)`: a one-value answer taken from the wrong sentence. A small reader given a
few passages full of values of one kind copies a neighbour ('8 hours [2]' where passage [1] says 'Temporary access
can last up to 90 days' for 'What is the longest period temporary access can be granted for?'). When the answer is
one value (not a code) found in the passages, and another sentence holds clearly more (VALUE_LEAD) of the
question's rare words (retrieve/focus.term_scores, as the focus weighs them) than every sentence with the answer's
value, and that sentence has exactly one value of the same kind that the question does not name itself, that value
replaces the answer, cited to its passage.

`complete_sentence(question, text, sources)`: an answer to a why / how / yes-no / describe question (generate.
question_kind's 'explain' kinds) that is a passage's words cut off before their sentence ends ('Settings General
System Manager Time Clock [1]', 'When the surroundings get dark [1]') gets the rest of that sentence, when the
whole sentence is at most MAX_COMPLETED_WORDS. Only answers of two or more words with no digit (a value is
complete as it is: 'Within 1 hour'); the words stay the passage's own, the marker stays where it was.

`cite(text, sources, warnings)`: the [n] markers that name a real passage, as `Citation`s. A single marker on a
passage lacking the answer's words moves to the passage that has them (in the answer too, flagged `inferred`,
with a warning); with no marker, the passage sharing the most words with the answer, flagged `inferred`.

    quote_value("3.4 million [1]", [Citation(1, ..., text="- Capital budget: EUR 3.4 million")])
    # -> ("EUR 3.4 million [1]", "3.4 million", 1)
"""

from __future__ import annotations

import re
from dataclasses import asdict
from functools import lru_cache

from generate.citations import Citation
from generate.prompts import support_score, ungroup_digits
from generate.question_kind import coarse_kind
from retrieve.focus import term_scores
from tune.spans import CURRENCY_NAMES, find_spans, split_sentences

MAX_VALUE_WORDS = 6  # an answer longer than this is a sentence, not a value, and is never rewritten
MAX_COMPLETED_WORDS = 60  # complete_sentence: a cut-off answer gets the rest of a sentence this long at most
_VALUE_KINDS = frozenset(("amount", "percent", "time", "date", "duration", "measure", "count", "code"))
# how much more of the question's rare words (0-1, retrieve/focus.term_scores) another sentence must hold than the
# answer's own before `better_value` takes its value: small leads are one common word, not a better sentence
VALUE_LEAD = 0.1
# codes are left alone: a question names a code by what it stands for ('the 60 cm probe'), which the sentence that
# explains the numbering holds too ('CRV-C3-0410 reads as ... 04 for a 40 cm probe')
_RIVAL_KINDS = _VALUE_KINDS - {"code"}
_TAIL = re.compile(r"(?P<body>.*?)[\s.]*(?P<markers>(?:\[\d+\][\s.]*)*)", re.S)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# one currency or sign, however written (tune/spans.CURRENCY_NAMES: 'euros', '€' -> 'eur')
_SAME = {name: code.lower() for code, names in CURRENCY_NAMES.items() for name in names} | {"percent": "%"}


@lru_cache(maxsize=64)
def _sentences(passage: str) -> tuple[str, ...]:
    """A passage's sentences, split once for both looks of `last_look` (quote_value, then better_value)."""
    return tuple(split_sentences(passage))


def _numbers(text: str) -> list[str]:
    return sorted(_NUMBER.findall(ungroup_digits(text)))


def _words(text: str) -> set[str]:
    return {_SAME.get(t, t) for t in re.findall(r"[a-z][a-z-]*|[€$£%]", text.lower())}


def _values(numbers: list[str], words: set[str], sources: list[Citation]) -> dict[str, int]:
    """{value as written: its passage's number} for the values of `sources` with these numbers and words."""
    found: dict[str, int] = {}
    for source in sources:
        for sentence in _sentences(source.text):
            for span in find_spans(sentence):
                if span.kind in _VALUE_KINDS and _numbers(span.text) == numbers and words <= _words(span.text):
                    found.setdefault(span.text, source.n)
    return found


def quote_value(text: str, sources: list[Citation]) -> tuple[str, str, int] | None:
    """(the answer with its value as the passage writes it, the value it replaced, the passage's number), or
    None when the answer is not a single value or the passages do not settle how to write it."""
    m = _TAIL.fullmatch(text.strip())
    body, cited = m.group("body").strip(), [int(n) for n in re.findall(r"\[(\d+)\]", m.group("markers"))]
    numbers = _numbers(body)
    if not numbers or len(body.split()) > MAX_VALUE_WORDS:
        return None
    markers = " ".join(f"[{n}]" for n in cited)
    words = _words(body)
    found = _values(numbers, words, [s for s in sources if s.n in cited]) or _values(numbers, words, sources)
    if len(found) != 1:
        return None
    (value, n), = found.items()
    if value.lower() == body.lower():
        return None
    return (f"{value} {markers}" if markers else value), body, n


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", ungroup_digits(text).lower()))


def better_value(question: str, text: str, sources: list[Citation],
                 lead: float = VALUE_LEAD) -> tuple[str, str, int] | None:
    """(the answer with the value of the sentence that matches the question best, the value it replaced, that
    sentence's passage), or None: see the module doc. `lead`: VALUE_LEAD unless AnswerConfig.value_lead says."""
    m = _TAIL.fullmatch(text.strip())
    body = m.group("body").strip()
    if not body or len(body.split()) > MAX_VALUE_WORDS:
        return None
    sentences = [(s.n, sentence) for s in sources for sentence in _sentences(s.text)]
    if len(sentences) < 2:
        return None
    said, asked = _norm(body), f" {_norm(question)} "
    # per sentence, its values (each with its normalised text, computed once)
    spans = [[(sp, _norm(sp.text)) for sp in find_spans(sentence) if sp.kind in _RIVAL_KINDS]
             for _, sentence in sentences]
    own = [(i, sp.kind) for i, found in enumerate(spans) for sp, norm in found if norm == said]
    if not own:
        return None
    kind = own[0][1]
    scores = term_scores(question, [sentence for _, sentence in sentences])
    mine = max(scores[i] for i, _ in own)
    others = {i: [sp for sp, norm in found if sp.kind == kind and norm not in (said, "") and f" {norm} " not in asked]
              for i, found in enumerate(spans)}
    rivals = sorted((i for i, found in others.items() if found and scores[i] > mine + lead),
                    key=lambda i: -scores[i])
    if not rivals or len(others[rivals[0]]) != 1 or (len(rivals) > 1 and scores[rivals[1]] == scores[rivals[0]]):
        return None
    n, value = sentences[rivals[0]][0], others[rivals[0]][0].text
    return f"{value} [{n}]", body, n


def complete_sentence(question: str, text: str, sources: list[Citation]) -> tuple[str, int] | None:
    """(the answer with the rest of its passage sentence, that passage), or None: see the module doc."""
    m = _TAIL.fullmatch(text.strip())
    body, markers = m.group("body").strip(), m.group("markers").strip()
    if coarse_kind(question) != "explain" or len(body.split()) < 2 or any(ch.isdigit() for ch in body):
        return None
    body = " ".join(body.split())
    said = re.compile(r"(?<![a-z0-9])" + re.escape(body.lower()) + r"(?![a-z0-9])")
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", markers)]
    for source in sorted(sources, key=lambda s: s.n not in cited):  # the cited passage first
        for sentence in _sentences(source.text):
            sentence = " ".join(sentence.split())
            found = said.search(sentence.lower())
            rest = sentence[found.end():].strip() if found else ""
            if len(rest) < 3 or len(sentence[found.start():].split()) > MAX_COMPLETED_WORDS:
                continue
            return f"{body}{'' if rest[0] in ',;:.' else ' '}{rest}" + (f" {markers}" if markers else ""), source.n
    return None


def last_look(question: str, text: str, sources: list[Citation], warnings: list[str],
              lead: float = VALUE_LEAD) -> str:
    """The engine's last look at an answer it judged fine: a cut-off clause completed to its sentence's end
    (`complete_sentence`), the value as its passage writes it (`quote_value`), then from the sentence that fits the
    question best (`better_value`); each change is said in `warnings`."""
    completed = complete_sentence(question, text, sources) if sources else None
    if completed is not None:
        warnings.append(f"the answer was completed to the end of its sentence in passage [{completed[1]}]")
        text = completed[0]
    quoted = quote_value(text, sources) if sources else None
    if quoted is not None:
        warnings.append(f"the answer's {quoted[1]!r} is written as passage [{quoted[2]}] writes it")
        text = quoted[0]
    better = better_value(question, text, sources, lead) if sources else None
    if better is not None:
        warnings.append(f"the answer's {better[1]!r} was replaced by the value of passage [{better[2]}], whose "
                        "sentence holds more of the question's words")
        text = better[0]
    return text


def cite(text: str, sources: list[Citation], warnings: list[str]) -> tuple[str, list[Citation]]:
    """(answer, citations): see the module doc."""
    if not sources:
        return text, []
    by_n = {s.n: s for s in sources}
    markers = [n for n in dict.fromkeys(int(m) for m in re.findall(r"\[(\d+)\]", text)) if n in by_n]
    support = {s.n: support_score(text, [s.text]) for s in sources}
    best = max(sources, key=lambda s: support[s.n])
    matched = Citation(**{**asdict(best), "inferred": True}) if support[best.n] >= 0.5 else None
    if len(markers) == 1 and matched and support[markers[0]] < 0.5:
        warnings.append(f"citation [{markers[0]}] moved to [{best.n}]: the answer's words are in passage "
                        f"[{best.n}], not [{markers[0]}]")
        return text.replace(f"[{markers[0]}]", f"[{best.n}]"), [matched]
    if markers:
        return text, [by_n[n] for n in markers]
    return text, [matched] if matched else []
