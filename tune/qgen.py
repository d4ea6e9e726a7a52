"""Question generation: turn an indexed chunk into (question, answer span, source chunk) items.

Three pluggable teachers share one interface, `teacher.items(chunk) -> list[QAItem]`:

    extract  (default; no model, deterministic) split the chunk into sentences, pick answer spans that are specific
             facts (amounts, percentages, times, dates, counts and durations with their unit, codes, people, names,
             quoted terms) and make, per span, a cloze item (generate.prompts.cloze_question(prefix)) and a
             question-style item by a rule-based wh-transformation of the sentence.
    local    the local base model is shown the chunk and one extracted answer span and asked to write a question.
    URL      an OpenAI-compatible server (any teacher string starting with http) is asked for JSON lines
             {"question", "answer"} per chunk; the answers must be spans of the chunk (synth's filters check).
The two model teachers live in tune/teachers.py.

Teachers only propose; tune.filters decides what is kept.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from generate.prompts import cloze_question
from tune.forms import form_items
from tune.spans import (_MONTH, _PLACE_WORDS, _PRIORITY, _WEEKDAY, Span, find_spans, known_names_of, sentence_ending,
                        split_sentences)

# ---------------------------------------------------------------------------------------------------------------
# items

STYLES = ("cloze", "question")  # the item styles: complete a sentence of the chunk, or a wh-question


@dataclass
class QAItem:
    question: str
    answer: str
    chunk: object  # ingest.types.Chunk
    style: str  # "cloze" | "question"
    kind: str  # span kind (amount, date, ...) or "teacher"
    rule: str  # how the question was made: cloze, subject, inverted, in_situ, local, teacher, form
    search_query: str  # what the round-trip filter searches: the question, or a cloze item's sentence prefix
    evidence: str = ""  # a form item (tune/forms.py): the chunk text its longer answer rests on ("" = the answer
    # itself is a span of the chunk)

    @property
    def support(self) -> str:
        """The text that must be found in the source chunk (and must not be in a distractor)."""
        return self.evidence or self.answer


# ---------------------------------------------------------------------------------------------------------------
# wh-transformation

_AUX = frozenset("is are was were will would can could must may might should shall has have had".split())
_PERFECT = re.compile(r"^(?:[a-z]+ed|[a-z]+en|been|made|set|paid|held|kept|sent|put|run|left|built|bought|"
                      r"brought|told|won|lost|met|begun|become|done|gone|seen|said|found|taught|spent)$")
_NEG = re.compile(r"\b(?:not|never|cannot|can't|won't|don't|doesn't|isn't|aren't|no longer)\b", re.I)
_PRONOUN_START = re.compile(r"^(?:it|its|they|their|them|this|these|those|that|he|she|his|her|there|such)\b", re.I)
_CLAUSE = frozenset("if when whenever while because although though unless that which who whom whose where after "
                    "before until once since as than".split())
_SIMPLE_PREPS = frozenset("at to of for on in with by from about into onto over under per through via within "
                          "after before until since during".split())
_MODIFIERS = ("up to", "at least", "at most", "more than", "less than", "fewer than", "no more than", "over",
              "under", "about", "around", "approximately", "roughly", "nearly", "almost", "only", "just",
              "a maximum of",
              "a minimum of", "a total of", "the first", "the next", "a further", "an extra", "another", "exactly")


def date_unit(text: str) -> str:
    """What a date span names: 'year' (2026), 'month' (June 2026), 'day' (Thursday) or 'date'."""
    if re.fullmatch(r"\d{4}", text):
        return "year"
    if re.fullmatch(rf"{_MONTH}\s\d{{4}}|(?:Q[1-4]|H[12])\s\d{{4}}", text):
        return "month" if not text.startswith(("Q", "H")) else "quarter"
    if re.fullmatch(rf"{_WEEKDAY}s?", text):
        return "day"
    return "date"


def _wh(span: Span, fronted: bool) -> str:
    k = span.kind
    if k == "amount":
        return "how much"
    if k == "percent":
        return "what percentage"
    if k == "time":
        return "what time"
    if k == "date":
        return "when" if fronted else f"what {date_unit(span.text)}"
    if k in ("duration", "count", "measure"):
        return f"how many {span.unit}"
    if k in ("person", "role"):
        return "who"
    return "what"


def _tidy(q: str) -> str:
    q = re.sub(r"\s+", " ", q).strip()
    q = re.sub(r"\s+([,;:?!.)\]])", r"\1", q)
    q = re.sub(r"([(\[])\s+", r"\1", q)
    q = re.sub(r"\(\s*\)", "", q)
    q = q.rstrip(" ,;:-–—.!")
    q = re.sub(r"\s+\?$", "?", q)
    return (q[:1].upper() + q[1:] + "?") if q else q


def _lower_first(words: list[str], known_names: set[str]) -> list[str]:
    if not words:
        return words
    w = words[0]
    bare = w.strip("\"'“”‘’()[],.;:!?")
    if bare and bare[0].isupper() and bare[1:].islower() and bare not in known_names:
        return [w[0].lower() + w[1:]] + words[1:]
    return words


def make_question(sentence: str, span: Span, topic: str = "", known_names: Iterable[str] = ()) -> tuple[str, str]:
    """A wh-question whose answer is `span`, made from the sentence by rule; returns (question, rule) where rule is
    'subject' (the span was the subject: 'Who approves ...?'), 'inverted' (fronted wh-phrase and auxiliary
    inversion: 'When will the meeting be held?') or 'in_situ' (the wh-phrase replaces the span in place:
    'Brindlewick pays full salary for up to how many working days ...?') or 'label' (a 'Label: value' line:
    'Topic: What is the current client version?'). An empty question means no rule fits the sentence."""
    known = set(known_names)
    pre = sentence[:span.start]
    post = sentence[span.end:]
    if not pre.strip() and re.match(r"[^.;]*?:\s", post + " "):
        return "", "skipped"  # "POST /v4/alerts/rules: create an alert rule" is a definition, not a statement
    if span.kind == "quoted":  # the quote marks go with the span
        pre, post = pre.rstrip("\"“"), post.lstrip("\"”")
    post = post.strip()
    post = re.sub(r"[.!?;:]+$", "", post)
    if not pre.strip() or pre.strip().lower() == "the":
        post = re.sub(r"^,[^,]{0,80},\s*", "", post)  # "Zorgon, a renowned statesman, was ..." -> "Who was ..."
    pre_words = pre.split()
    wh_in_situ = _wh(span, fronted=False)
    noun_after = ""
    # "through the Verdantis Select plan" -> "through what plan"
    if span.kind in ("name", "code", "quoted") and pre_words and pre_words[-1].lower() == "the":
        m = re.match(r"([a-z]{3,})\b(?![-'])", post)
        if m and m.group(1) not in _AUX and m.group(1) not in _CLAUSE and not m.group(1).endswith(("ly", "ing")) \
                and m.group(1) not in _SIMPLE_PREPS and m.group(1) not in ("and", "or", "but", "to"):
            noun_after = m.group(1)
    if span.kind in ("name", "code", "quoted", "person", "role") and pre_words and \
            pre_words[-1].lower() in ("the", "a", "an", "our", "its"):
        pre_words = pre_words[:-1]
    if noun_after:
        wh_in_situ = f"what {noun_after}"
        post = post[len(noun_after):].strip()
    post, post_in_situ = _clause_of_span(post)
    # the preposition (and quantifier modifiers) right before the span
    tail = " ".join(pre_words[-3:]).lower()
    modifier = next((m for m in _MODIFIERS if tail.endswith(m) and len(pre_words) >= len(m.split())), "")
    core_words = pre_words[:len(pre_words) - len(modifier.split())] if modifier else list(pre_words)
    prep = core_words[-1].lower() if core_words and core_words[-1].lower() in _SIMPLE_PREPS else ""
    negated = bool(_NEG.search(sentence))
    fronted_q: str | None = None
    rule = "in_situ"
    label = re.fullmatch(r"\s*([A-Za-z][\w /&'-]{1,40}):\s*", pre)

    # 0. a "Label: value" line: "What is the current client version?" (with the topic: labels are terse)
    if label and topic:
        wh = "when" if span.kind == "date" else _wh(span, True)
        words = _lower_first(label.group(1).split(), known)
        question = _tidy(f"{wh} is the {' '.join(words)}")
        return f"{topic}: {question}", "label"
    # 1. the span is the subject
    if not core_words and not modifier:
        fronted_q = f"{noun_after and f'what {noun_after}' or _wh(span, True)} {post}"
        if span.kind == "date":
            fronted_q = f"what date {post}" if not noun_after else fronted_q
        rule = "subject"
    # 2. auxiliary inversion: SUBJECT AUX ... SPAN ... -> WH AUX SUBJECT ... ...?
    elif not negated and not modifier and not noun_after:
        fronted_q = _inverted(span, core_words, prep, post, known)
        rule = "inverted" if fronted_q is not None else rule
    if fronted_q is not None:
        question = fronted_q
    else:
        head = " ".join(pre_words)
        if span.kind == "duration" and prep == "for" and not modifier:
            wh_in_situ = "how long"
        elif span.kind in ("person", "role") and prep:
            wh_in_situ = "whom"
        question = f"{head} {wh_in_situ} {post_in_situ}"
        rule = "in_situ"
    question = _tidy(question)
    if _PRONOUN_START.match(sentence) and topic:
        question = f"{topic}: {question}"
    return question, rule


def _clause_of_span(post: str) -> tuple[str, str]:
    """The words after the span up to the end of its clause: (when the wh-phrase is fronted, in place). The clause
    ends at a semicolon, bracket, dash or a coordinated new clause, and (fronted) at any comma; in place, at a
    comma only before a new clause or an apposition."""
    clause = r"[;(]|:\s|\s[-–—]\s|(?:^|\s)and (?:will|is|are|was|were|must|can|should|may|has|have|the|it|they|" \
             r"its|their|then)\b|,\s*(?:which|who|whom|where|when|following|and|but|so|as|while|although|because|" \
             r"including|for example|e\.g\.|such as|unless|if|then|[A-Z])"
    cut_fronted = re.search(clause + r"|,", post)
    cut_in_situ = re.search(clause, post)
    in_situ = post[:cut_in_situ.start()].strip() if cut_in_situ else post
    return (post[:cut_fronted.start()].strip() if cut_fronted else post), in_situ


def _inverted(span: Span, core_words: list[str], prep: str, post: str, known: set[str]) -> str | None:
    """Auxiliary inversion: SUBJECT AUX ... SPAN ... -> WH AUX SUBJECT ... ...? ('When will the meeting be
    held?'); None when the words before the span are no plain subject + auxiliary (make_question then asks in
    place). Called only without a quantifier modifier, a noun after the span or a negation."""
    aux_i = next((i for i, w in enumerate(core_words) if w.lower() in _AUX), None)
    if aux_i is None or not 1 <= aux_i <= 12:
        return None
    subject = core_words[:aux_i]
    middle = core_words[aux_i + 1:]
    aux = core_words[aux_i].lower()
    ok_subject = not any(w.endswith((",", ";", ":")) or w.lower() in _CLAUSE or w.lower() in _AUX
                         for w in subject) and subject[0].lower() not in _SIMPLE_PREPS
    ok_middle = not any(w.endswith((",", ";", ":")) or w.lower() in _CLAUSE or w.lower() in _AUX
                        or w.lower() in ("and", "or", "but") for w in middle)
    # a stranded preposition reads well only at the end: "How much is the limit set at?"
    if middle and not prep and middle[-1].lower() not in _AUX:
        ok_middle = False  # "for their first 90 days": the span is inside a noun phrase
    is_place = span.kind == "name" and prep in ("in", "at") and \
        any(w in _PLACE_WORDS for w in span.text.split())
    if prep and post and span.kind not in ("time", "date", "duration") and not is_place:
        ok_middle = False
    if aux in ("has", "have", "had") and not (middle and _PERFECT.match(middle[0].lower())):
        ok_subject = False
    if not (ok_subject and ok_middle):
        return None
    wh = _wh(span, fronted=True)
    if span.kind == "time":
        lead = "at what time" if prep == "at" else (f"{prep} what time" if prep else "what time")
        middle = middle[:-1] if prep else middle
    elif span.kind == "date":
        unit = date_unit(span.text)
        if prep == "in" and unit != "date":
            lead = f"in what {unit}"
        else:
            lead = "when" if prep in ("on", "in", "during", "") else f"{prep} what {unit}"
        middle = middle[:-1] if prep else middle
    elif span.kind == "duration" and prep == "for":
        lead, middle = "how long", middle[:-1]
    elif span.kind == "duration" and prep in ("within", "after", "in"):
        lead, middle = f"{prep} {wh}", middle[:-1]
    elif is_place:
        lead, middle = "where", middle[:-1]
    else:
        lead = wh  # any other preposition stays where it was: "How much is the limit set at?"
    return " ".join([lead, aux, *_lower_first(subject, known), *middle, post])


def topic_of(chunk) -> str:
    leaf = (chunk.section or "").split(" > ")[-1].strip()
    title = (chunk.title or "").strip()
    if leaf and title and leaf != title:
        return f"{title}, {leaf}"
    return title or leaf


# ---------------------------------------------------------------------------------------------------------------
# teachers


class ExtractTeacher:
    """Rule-based: span extraction plus cloze and wh-question items. Deterministic, needs no model. A cloze item's
    answer completes the sentence (the span and what follows it, at most `max_cloze_answer_words` words), as a
    sentence-completion probe expects; every sentence without such an item gets one that asks for its final
    phrase (tune.spans.sentence_ending), so the model practises finding a sentence in its context and reading on.

    `frequent(text)` says whether a span text is found in too many chunks of the index (the company's own name,
    its main product): such spans are not specific facts and are skipped. A set of lower-cased texts works too."""

    name = "extract"

    def __init__(self, frequent=None, max_spans_per_chunk: int = 6, min_cloze_words: int = 6,
                 max_cloze_answer_words: int = 8, styles: tuple[str, ...] = STYLES, max_forms_per_chunk: int = 4,
                 max_endings_per_chunk: int | None = None, seed: int = 0) -> None:
        if frequent is None:
            frequent = set()
        self.frequent = frequent if callable(frequent) else (lambda text, _s=frozenset(frequent): text.lower() in _s)
        self.max_spans = max_spans_per_chunk
        self.min_cloze_words = min_cloze_words
        self.max_cloze_answer_words = max_cloze_answer_words
        self.styles = styles
        self.max_forms = max_forms_per_chunk
        self.max_endings = max_endings_per_chunk
        self.seed = seed

    def spans(self, chunk, sentences: list[str] | None = None) -> list[tuple[str, Span]]:
        """(sentence, span) pairs worth asking about, at most `max_spans`, most specific kinds first.
        `sentences`: the chunk already split by split_sentences (it is split here otherwise)."""
        known = known_names_of(chunk)
        heading = f"{chunk.title} {chunk.section}".lower()
        found: list[tuple[int, int, str, Span]] = []
        for si, sent in enumerate(split_sentences(chunk.text) if sentences is None else sentences):
            for sp in find_spans(sent, known):
                low = sp.text.lower()
                if self.frequent(sp.text):
                    continue
                if sp.kind == "name" and low in heading:
                    continue  # the document's own topic: not a fact about it
                found.append((_PRIORITY[sp.kind] >= _PRIORITY["quoted"], si, sent, sp))
        found.sort(key=lambda x: (x[0], x[1], x[3].start))
        picked = found[: self.max_spans]
        picked.sort(key=lambda x: (x[1], x[3].start))
        return [(sent, sp) for _, _, sent, sp in picked]

    def items(self, chunk) -> list[QAItem]:
        out: list[QAItem] = []
        topic = topic_of(chunk)
        known = known_names_of(chunk)
        clozed: set[str] = set()
        sentences = split_sentences(chunk.text)
        for sent, sp in self.spans(chunk, sentences):
            if "cloze" in self.styles:
                # "Complete the sentence" means everything that follows: the span and the rest of its sentence.
                # Spans far from the sentence's end get only a question item.
                prefix = sent[:sp.start].rstrip().rstrip("\"“(").rstrip()
                completion = sent[sp.start:].strip().rstrip(".!?;:").rstrip()
                if (len(prefix.split()) >= self.min_cloze_words
                        and len(completion.split()) <= self.max_cloze_answer_words):
                    out.append(QAItem(cloze_question(prefix), completion, chunk, "cloze", sp.kind, "cloze", prefix))
                    clozed.add(sent)
            if "question" in self.styles:
                q, rule = make_question(sent, sp, topic, known)
                if q:  # an empty question: no rule fits this sentence
                    out.append(QAItem(q, sp.text, chunk, "question", sp.kind, rule, q))
        if "question" in self.styles and self.max_forms:  # why / how / yes-no / what-is: longer answers
            rng = random.Random(f"{self.seed}|{chunk.id}")
            for f in form_items(chunk, rng.choice, self.max_forms):
                out.append(QAItem(f.question, f.answer, chunk, "question", f.form, "form", f.question, f.evidence))
        if "cloze" in self.styles:  # every other sentence: complete its final phrase (reading practice)
            endings = [cut for sent in sentences if sent not in clozed
                       for cut in [sentence_ending(sent, self.min_cloze_words, self.max_cloze_answer_words)] if cut]
            if self.max_endings is not None and len(endings) > self.max_endings:  # a seeded few, in text order
                keep = sorted(random.Random(f"{self.seed}|{chunk.id}|endings").sample(range(len(endings)),
                                                                                      self.max_endings))
                endings = [endings[i] for i in keep]
            for prefix, ending in endings:
                out.append(QAItem(cloze_question(prefix), ending, chunk, "cloze", "ending", "ending", prefix))
        return out
