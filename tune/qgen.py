"""Question generation: turn an indexed chunk into (question, answer span, source chunk) items.

Three pluggable teachers share one interface, `teacher.items(chunk) -> list[QAItem]`:

    extract  (default; no model, deterministic) split the chunk into sentences, pick answer spans that are specific
             facts (amounts, percentages, times, dates, counts and durations with their unit, codes, people, names,
             quoted terms) and make, per span, a cloze item (serve.prompts.cloze_question(prefix)) and a
             question-style item by a rule-based wh-transformation of the sentence.
    local    the local base model is shown the chunk and one extracted answer span and asked to write a question.
    URL      an OpenAI-compatible server (any teacher string starting with http) is asked for JSON lines
             {"question", "answer"} per chunk; the answers must be spans of the chunk (synth's filters check).

Teachers only propose; tune.filters decides what is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from serve.prompts import cloze_question

# ---------------------------------------------------------------------------------------------------------------
# items and spans


@dataclass
class QAItem:
    question: str
    answer: str
    chunk: object  # ingest.types.Chunk
    style: str  # "cloze" | "question"
    kind: str  # span kind (amount, date, ...) or "teacher"
    rule: str  # how the question was made: cloze, subject, inverted, in_situ, local, teacher
    search_query: str  # what the round-trip filter searches: the question, or a cloze item's sentence prefix


@dataclass(frozen=True)
class Span:
    text: str
    start: int  # character offsets in the sentence
    end: int
    kind: str  # amount percent time date duration measure count code role quoted person name
    unit: str = ""  # the counted noun / unit for count, duration and measure spans ("working days")


KINDS = ("amount", "percent", "time", "date", "duration", "measure", "count", "code", "role", "quoted", "person",
         "name")
_PRIORITY = {k: i for i, k in enumerate(KINDS)}

# ---------------------------------------------------------------------------------------------------------------
# sentences

_BULLET = re.compile(r"^\s*(?:[-*•▪‣◦]|\d{1,2}[.)])\s+")
_ABBREV = frozenset("e.g i.e etc vs dr mr mrs ms prof no approx incl st fig ca cf al jr sr ltd inc co dept".split())


def split_sentences(text: str) -> list[str]:
    """Sentences of a chunk, whitespace-normalised. Bullet and numbered-list lines are units of their own, a
    PDF's hard line wraps are joined, Markdown headings and table rows are skipped."""
    units: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            units.append(" ".join(current))
            current.clear()

    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("|") or s.count(" | ") >= 1 or set(s) <= set("-=_*| :"):
            flush()
            continue
        if _BULLET.match(s):
            flush()
            current.append(_BULLET.sub("", s, count=1))
        else:
            prev = current[-1] if current else ""
            # a new line starting with a capital after a short line without closing punctuation is a line of its
            # own (an unmarked list item); long lines are a PDF's hard wraps and are joined
            if prev and s[0].isupper() and not re.search(r"[.!?,;:]$|\b(?:and|or|the|a|of|to|in)$", prev) \
                    and len(prev) < 70:
                flush()
            current.append(s)
    flush()
    out: list[str] = []
    for unit in units:
        out.extend(_split_unit(re.sub(r"\s+", " ", unit).strip()))
    return [s for s in out if s]


def _split_unit(unit: str) -> list[str]:
    pieces, start = [], 0
    for m in re.finditer(r"[.!?][\"')\]]?\s+(?=[\"'(“]?[A-Z0-9])", unit):
        end = m.start() + 1
        word = re.search(r"(\S+)$", unit[start:end])
        last = word.group(1).rstrip(".").lower() if word else ""
        if last in _ABBREV or re.fullmatch(r"[a-z]", last):  # "e.g.", an initial "J."
            continue
        pieces.append(unit[start:m.end()].strip())
        start = m.end()
    pieces.append(unit[start:].strip())
    return [p for p in pieces if p]


# ---------------------------------------------------------------------------------------------------------------
# answer spans

_NUMWORD = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|" \
           r"sixty|hundred)"
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_CUR = r"(?:EUR|USD|GBP|CHF|SEK|NOK|DKK|€|\$|£)"
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|" \
         r"Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_TIME_UNIT = r"(?:seconds?|minutes?|mins|hours?|hrs|days?|weeks?|fortnights?|months?|years?|nights?|quarters?|" \
             r"shifts?|sessions?)"
_QUANT_ADJ = r"(?:working|calendar|business|full|consecutive|additional|extra|paid|unpaid|school|clear|" \
             r"keep-in-touch|half|rolling)"
_MEASURE_UNIT = r"(?:km|kg|g|mm|cm|m|MB|GB|TB|kB|KB|Mbit/s|Mbps|kbps|V|W|kW|kWh|mAh|Ah|Hz|kHz|MHz|GHz|dB|dBm|" \
                r"°C|ms|mA|µA|uA|bar|kPa|L|ml|litres?|liters?|metres?|meters?|kilometres?|kilometers?|" \
                r"kilograms?|grams?|miles?|inches|feet|pixels?|px|cores?|rpm|IP\d\d)"
_NOT_PLURAL = frozenset("was has does is this its his hers always perhaps across less unless as plus minus "
                        "towards afterwards onwards backwards forwards upwards downwards besides whereas sometimes "
                        "nevertheless series means news thanks thus us yes bus gas status goes campus process "
                        "access business address regardless bonus".split())
_ROLE_ACRONYM = r"(?:CEO|CFO|CTO|COO|CIO|CISO|CPO|CRO|CMO|DPO|CHRO|VP)"

_SPAN_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("amount", re.compile(rf"(?<![\w.]){_CUR}\s?{_NUM}(?:\s?(?:million|billion|thousand|bn|m|k)\b)?")),
    ("amount", re.compile(rf"(?<![\w.]){_NUM}\s?(?:million |billion |thousand )?(?:euros?|dollars?|pounds?|EUR|"
                          rf"USD|GBP)\b")),
    ("percent", re.compile(rf"(?<![\w.]){_NUM}\s?(?:%|percent\b|per cent\b)")),
    ("time", re.compile(r"(?<![\w.:])(?:[01]?\d|2[0-3]):[0-5]\d(?!\d)(?:\s?(?:am|pm|a\.m\.|p\.m\.))?"
                        r"(?:\s?(?:CET|CEST|UTC|GMT))?|(?<![\w.])(?:1[0-2]|[1-9])\s?(?:am|pm|a\.m\.|p\.m\.)")),
    ("date", re.compile(rf"(?:{_WEEKDAY},?\s)?\b\d{{1,2}}(?:st|nd|rd|th)?\s{_MONTH}\b(?:,?\s\d{{4}}\b)?")),
    ("date", re.compile(rf"(?:{_WEEKDAY},?\s)?\b{_MONTH}\s\d{{1,2}}(?:st|nd|rd|th)?\b(?:,\s?\d{{4}}\b)?")),
    ("date", re.compile(rf"\b{_MONTH}\s\d{{4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b|\b(?:Q[1-4]|H[12])\s\d{{4}}\b")),
    ("date", re.compile(r"\b\d{1,2}\s[A-Z][a-z]{2,}\s\d{3,4}\b")),  # "5 Outcrop 6678": calendars we do not know
    ("date", re.compile(r"\b(?:in|since|until|by|from|before|after|during|of) (?P<s>\d{4})\b(?![.,]\d)")),
    ("date", re.compile(rf"\b(?:on|every|each|next|last) (?P<s>{_WEEKDAY}s?)\b")),
    ("date", re.compile(r"\b(?:on|by|from|until|before|after) (?P<s>\d{1,2}\s[A-Z][a-z]{3,})\b(?!\s\d)")),
    ("duration", re.compile(rf"(?<![\w.,])(?P<n>{_NUM}|{_NUMWORD})\s(?P<u>(?:{_QUANT_ADJ}\s)?{_TIME_UNIT})\b(?!-)",
                            re.I)),
    ("measure", re.compile(rf"(?<![\w.,])(?P<n>{_NUM})\s?(?P<u>{_MEASURE_UNIT})(?![\w/])")),
    ("code", re.compile(r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\b(?!-)")),  # FIN-AP, LG-2, PIR-2026-017
    ("code", re.compile(r"\b[A-Z]{1,5}\d[A-Z0-9]*\b")),  # C3, B20, RJ45
    ("code", re.compile(r"(?<![\w.])\d+\.\d+\.\d+\b")),  # versions
    ("code", re.compile(r"\b[A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+){0,2} v?\d+(?:\.\d+){1,2}\b")),  # "Wayfarer Connect 5.3.1"
    ("code", re.compile(r"\b(?:GET|POST|PUT|DELETE|PATCH) /[\w/{}.:-]+|(?<![\w/])/[a-z0-9_{}.-]+(?:/[a-z0-9_{}.-]+)+")),
    ("code", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("code", re.compile(r"\b(?:extension|ext\.|version|room|number|no\.|line|phone|floor|building|port|channel|gate|"
                        r"bay|desk)\s(?P<s>\d[\d.]*\d|\d)\b", re.I)),
    ("role", re.compile(rf"\b{_ROLE_ACRONYM}\b")),
    ("quoted", re.compile(r'"(?P<s>[^"]{2,60})"|“(?P<s2>[^”]{2,60})”')),
    ("count", re.compile(rf"(?<![\w.,])(?P<n>{_NUM}|{_NUMWORD})\s(?P<u>(?:[a-z]+-)?[a-z]{{3,}}s)\b", re.I)),
]

_CAP_TOKEN = re.compile(r"^(?:Mc|Mac|O')?[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:-[A-Z][a-z]+)*$")
_CONNECTORS = frozenset("of & de van von der la du".split())  # not "and": "A Ltd and B Technologies" are two
_CAP_STOP = frozenset(
    "The A An This That These Those It Its They Their There Here He She His Her We Our You Your I If When While "
    "Where Why How What Which Who Whom Whose After Before During Once Until Unless Because Although Though As At "
    "On In Into For From By With Without To Of Only Each Every All Any Some Most Many No Not None New Other Please "
    "Note Step Also And But Or So Then Yes Employees Managers Staff Everyone Anyone Questions See Use Do Don't "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August "
    "September October November December Mr Mrs Ms Dr Prof Sir Madam Team Head Owner Section Chapter Table "
    "Figure Appendix Part Page Article".split())
_ORG_WORDS = frozenset(
    "Hall Room Rooms Partners Partner Mutual Pensions Pension Fund Instruments Ltd Inc GmbH Team Policy Plan Select "
    "Gateway Service Services Street Road Lane Centre Center Health Insurance Bank Travel Connect Group Council "
    "Committee Office Board Desk Portal Cloud Pro Labs Lab Systems System Queue Site Building House Park Hotel "
    "Airport Station University College School Hospital Clinic Network App Platform Suite Standard Process "
    "Procedure Review Handbook Guide Notes Meeting Day Week Month Year Project Programme Program Agreement Act "
    "Lifepath Balanced Occupational Cross Market Square Tower Wing Floor Bay Depot Warehouse Stockroom Studio "
    "Academy Institute Foundation Society Association Union Ministry Department Government Parliament Republic "
    "Kingdom Empire Federation Alliance Company Corporation Industries Holdings Solutions Technologies Software "
    "Hardware Sensor Sensors Series Edition Version Release Module Kit Card Account Bus Engine Protocol Api Key "
    "Keys River Lake Mountain Island Valley Bridge City Town Village County Province Region Coast Sea Ocean Moon "
    "Planet Galaxy Cup Prize Award Festival Conference Summit Treaty Accord Initiative Mission Operation".split())
_ROLE_WORDS = frozenset(
    "ceo cfo cto coo cio ciso cpo cro cmo dpo chro vp president chair chairman chairwoman chairperson director "
    "manager head lead leader officer engineer founder minister statesman stateswoman secretary treasurer "
    "coordinator administrator owner sponsor contact champion spokesperson spokesman spokeswoman king queen prince "
    "princess emperor general captain commander governor mayor senator scientist researcher professor author "
    "writer artist inventor explorer architect designer analyst advisor adviser representative deputy chief "
    "partner colleague buddy mentor nurse doctor physician counsel lawyer auditor recruiter controller".split())
_ABBREV_NAME = r"(?:Inc|Ltd|Co|Corp|Jr|Sr|Bros|Plc|Pty|Ltda|S\.A|St)\.(?:,)?"
_FUNCTION_WORDS = frozenset(
    "is are was were will would can could must may might should shall has have had do does did and or but nor "
    "to of for on in at with by from about into onto over under per through via within after before until since "
    "during as than that which who whom whose where when while if because although though unless once also then "
    "only just not never always often again".split())
_PLACE_WORDS = frozenset("Hall Room Rooms Building House Park Hotel Airport Station Centre Center Site Depot "
                         "Warehouse Stockroom Office Campus Street Road Lane Square Tower Wing Floor City Town "
                         "Village Studio Theatre Auditorium Lounge Cafe Canteen Kitchen Lab".split())
_HUMAN_VERBS = frozenset(
    "said says announced announces leads led approves approved chairs chaired presented presents owns owned joined "
    "joins noted notes explained explains asked asks agreed agrees thanked thanks who will signs signed "
    "founded founds wrote writes became becomes served serves sends sent confirmed confirms "
    "reports reported runs ran manages managed handles handled reviews reviewed decides decided replied replies "
    "welcomed welcomes introduced introduces".split())


def _named_spans(sentence: str, known_names: set[str]) -> list[Span]:
    """Runs of capitalised words (with inner connectors like 'of'), classified as person or name."""
    toks = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", sentence)]
    spans: list[Span] = []
    i = 0
    while i < len(toks):
        run: list[int] = []
        j = i
        while j < len(toks):
            word = toks[j][0].strip("\"'“”‘’()[],.;:!?")
            word = re.sub(r"(?:'s|’s)$", "", word)
            if run and toks[j][0][:1] in "(\"“'‘[":
                break  # "(GFF)" or a quotation starts something else
            if (_CAP_TOKEN.match(word) and word not in _CAP_STOP) or (
                    re.fullmatch(r"[A-Z]{2,6}", word) and (run or (j + 1 < len(toks) and _CAP_TOKEN.match(
                        toks[j + 1][0].strip("\"'“”‘’()[],.;:!?"))))):
                run.append(j)
                if re.search(r"[,.;:!?)\]\"”]$|'s$|’s$", toks[j][0]) and not re.fullmatch(_ABBREV_NAME, toks[j][0]):
                    j += 1
                    break
                j += 1
            elif run and word in _CONNECTORS and j + 1 < len(toks) and \
                    _CAP_TOKEN.match(toks[j + 1][0].strip("\"'“”‘’()[],.;:!?")):
                run.append(j)
                j += 1
            else:
                break
        if not run:
            i += 1
            continue
        i = max(j, i + 1)
        if run[0] == 0 and len(run) == 1:  # a capital at the start of a sentence proves nothing, unless known
            first = toks[0][0].strip("\"'“”‘’()[],.;:!?")
            if first not in known_names:
                run = run[1:]
                while run and toks[run[0]][0] in _CONNECTORS:
                    run = run[1:]
        while run and toks[run[-1]][0] in _CONNECTORS:
            run = run[:-1]
        if not run or all(re.fullmatch(r"[A-Z]{2,6}", toks[k][0].strip("\"'“”‘’()[],.;:!?")) for k in run):
            continue
        first_tok, first_pos, _ = toks[run[0]]
        start = first_pos + len(first_tok) - len(first_tok.lstrip("\"'“‘(["))
        last_tok, last_pos, _ = toks[run[-1]]
        core = re.sub(r"(?:'s|’s)$", "", last_tok.rstrip("\"'”’)],.;:!?"))
        if re.match(_ABBREV_NAME, last_tok):
            core = last_tok[:last_tok.index(".") + 1]  # "Centurion Inc." keeps its full stop
        end = last_pos + len(core)
        text = sentence[start:end]
        if not text or len(text) < 3:
            continue
        words = [w for w in text.split() if w not in _CONNECTORS]
        nxt = re.match(r"\s+([a-z]+)\b(?![-'])", sentence[end:])
        prev = sentence[:start].split()[-1:]
        if len(words) == 1 and nxt and prev != ["the"] and not nxt.group(1).endswith(("s", "ed")) and \
                nxt.group(1) not in _FUNCTION_WORDS:
            continue  # a name used as a modifier ("a Martian statesman"): asking "what" about it reads badly
        spans.append(Span(text, start, end, _person_or_name(sentence, start, end, words)))
    return spans


def _person_or_name(sentence: str, start: int, end: int, words: list[str]) -> str:
    if any(w in _ORG_WORDS or w.lower() in _ROLE_WORDS for w in words) or len(words) > 3:
        return "name"
    before = re.findall(r"[A-Za-z]+", sentence[:start].lower())[-4:]
    after_text = sentence[end:].lower()
    after = re.findall(r"[a-z]+", after_text)[:6]
    cue_before = any(w in _ROLE_WORDS or w in ("mr", "mrs", "ms", "dr", "prof") for w in before[-2:]) or \
        any(w in _ROLE_WORDS for w in before) or (len(words) >= 2 and before[-1:] == ["by"])
    appositive = re.match(r"\s*(?:,|\()\s*(?:(?:a|an|the|our|their|its)\s)?(?:[a-z-]+\s){0,3}", after_text) and \
        any(w in _ROLE_WORDS for w in after[:5])
    verb_after = bool(after) and after[0] in _HUMAN_VERBS and re.match(r"\s+[a-z]", after_text) is not None
    person_slot = bool(before) and before[-1] in ("by", "to", "with", "from", "contact", "ask", "under", "call",
                                                 "email", "tell", "inform", "thank", "thanked", "congratulated")
    if cue_before or appositive:
        return "person"
    if len(words) >= 2 and (verb_after or person_slot) and \
            all(re.fullmatch(r"[A-Z][a-z]+(?:-[A-Z][a-z]+)?", w) for w in words):
        return "person"
    return "name"


def find_spans(sentence: str, known_names: Iterable[str] = ()) -> list[Span]:
    """Non-overlapping answer-span candidates in one sentence, in text order. Where candidates overlap, the more
    specific kind wins (amount over count, date over name, ...), then the longer one."""
    known = set(known_names)
    cands: list[Span] = []
    for kind, pattern in _SPAN_PATTERNS:
        for m in pattern.finditer(sentence):
            group = "s" if "s" in m.groupdict() and m.group("s") else ("s2" if m.groupdict().get("s2") else 0)
            text, start, end = m.group(group), m.start(group), m.end(group)
            trimmed = text.rstrip(".:,;")
            text, end = trimmed, start + len(trimmed)
            if not text:
                continue
            if kind != "quoted" and ((start > 0 and (sentence[start - 1].isalnum() or sentence[start - 1] in "-/"))
                                     or (end < len(sentence) and (sentence[end].isalnum() or sentence[end] == "-"))):
                continue  # a piece of a longer token ("Win 26.2" in "BWI-Win 26.2")
            before = sentence[:start].split()[-1:]
            after = sentence[end:].split()[:1]
            if kind == "code" and after and _CAP_TOKEN.match(after[0]) and after[0] not in _CAP_STOP:
                continue  # part of a product name: "Corvane C5 Pro"
            if kind == "measure" and before and re.fullmatch(rf"\d+|{_NUMWORD}", before[0], re.I):
                continue  # "four 3.6 V cells": the count matters, not the unit value
            unit = ""
            if kind in ("duration", "measure", "count"):
                unit = m.group("u")
                if kind == "count" and (unit.lower() in _NOT_PLURAL or unit.lower().endswith(("ss", "us", "is"))):
                    continue
                if kind == "count" and re.fullmatch(_TIME_UNIT, unit.split()[-1], re.I):
                    continue
            cands.append(Span(text, start, end, kind, unit.lower() if kind != "measure" else unit))
    cands.extend(_named_spans(sentence, known))
    cands.sort(key=lambda s: (_PRIORITY[s.kind], -(s.end - s.start), s.start))
    chosen: list[Span] = []
    for c in cands:
        if c.end - c.start >= 0.8 * len(sentence.rstrip(".!?")):
            continue  # the whole sentence is not a "specific fact"
        if all(c.end <= o.start or c.start >= o.end for o in chosen):
            chosen.append(c)
    return sorted(chosen, key=lambda s: s.start)


def known_names_of(chunk) -> set[str]:
    """Words seen capitalised in the middle of a sentence of the chunk (or in its title): names, not sentence
    starts."""
    names = set(re.findall(r"[A-Z][A-Za-z'’-]+", f"{chunk.title} {chunk.section}"))
    for sent in split_sentences(chunk.text):
        for w in sent.split()[1:]:
            w = w.strip("\"'“”‘’()[],.;:!?")
            if _CAP_TOKEN.match(w) and w not in _CAP_STOP:
                names.add(w)
    return names


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
    # the clause the span belongs to ends at a semicolon, bracket, dash or a coordinated new clause, and (when the
    # wh-phrase is fronted) at any comma; in place, at a comma only before a new clause or an apposition
    clause = r"[;(]|:\s|\s[-–—]\s|(?:^|\s)and (?:will|is|are|was|were|must|can|should|may|has|have|the|it|they|" \
             r"its|their|then)\b|,\s*(?:which|who|whom|where|when|following|and|but|so|as|while|although|because|" \
             r"including|for example|e\.g\.|such as|unless|if|then|[A-Z])"
    cut_fronted = re.search(clause + r"|,", post)
    cut_in_situ = re.search(clause, post)
    post_in_situ = post[:cut_in_situ.start()].strip() if cut_in_situ else post
    post = post[:cut_fronted.start()].strip() if cut_fronted else post
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
        aux_i = next((i for i, w in enumerate(core_words) if w.lower() in _AUX), None)
        if aux_i is not None and 1 <= aux_i <= 12:
            subject = core_words[:aux_i]
            middle = core_words[aux_i + 1:]
            aux = core_words[aux_i].lower()
            ok_subject = not any(w.endswith((",", ";", ":")) or w.lower() in _CLAUSE or w.lower() in _AUX
                                 for w in subject) and subject[0].lower() not in _SIMPLE_PREPS
            ok_middle = not any(w.endswith((",", ";", ":")) or w.lower() in _CLAUSE or w.lower() in _AUX
                                or w.lower() in ("and", "or", "but") for w in middle)
            # a stranded preposition reads well only at the end: "How much is the limit set at?"
            if middle and not prep and not modifier and middle[-1].lower() not in _AUX:
                ok_middle = False  # "for their first 90 days": the span is inside a noun phrase
            is_place = span.kind == "name" and prep in ("in", "at") and \
                any(w in _PLACE_WORDS for w in span.text.split())
            if prep and post and span.kind not in ("time", "date", "duration") and not is_place:
                ok_middle = False
            if aux in ("has", "have", "had") and not (middle and _PERFECT.match(middle[0].lower())):
                ok_subject = False
            if ok_subject and ok_middle:
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
                elif span.kind == "name" and prep in ("in", "at") and \
                        any(w in _PLACE_WORDS for w in span.text.split()):
                    lead, middle = "where", middle[:-1]
                else:
                    lead = wh  # any other preposition stays where it was: "How much is the limit set at?"
                subject = _lower_first(subject, known)
                fronted_q = " ".join([lead, aux, *subject, *middle, post])
                rule = "inverted"
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


def topic_of(chunk) -> str:
    leaf = (chunk.section or "").split(" > ")[-1].strip()
    title = (chunk.title or "").strip()
    if leaf and title and leaf != title:
        return f"{title}, {leaf}"
    return title or leaf


# ---------------------------------------------------------------------------------------------------------------
# teachers


class ExtractTeacher:
    """Rule-based: span extraction plus cloze and wh-question items. Deterministic, needs no model.

    `frequent(text)` says whether a span text is found in too many chunks of the index (the company's own name,
    its main product): such spans are not specific facts and are skipped. A set of lower-cased texts works too."""

    name = "extract"

    def __init__(self, frequent=None, max_spans_per_chunk: int = 6, min_cloze_words: int = 6,
                 styles: tuple[str, ...] = ("cloze", "question")) -> None:
        if frequent is None:
            frequent = set()
        self.frequent = frequent if callable(frequent) else (lambda text, _s=frozenset(frequent): text.lower() in _s)
        self.max_spans = max_spans_per_chunk
        self.min_cloze_words = min_cloze_words
        self.styles = styles

    def spans(self, chunk) -> list[tuple[str, Span]]:
        """(sentence, span) pairs worth asking about, at most `max_spans`, most specific kinds first."""
        known = known_names_of(chunk)
        heading = f"{chunk.title} {chunk.section}".lower()
        found: list[tuple[int, int, str, Span]] = []
        for si, sent in enumerate(split_sentences(chunk.text)):
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
        for sent, sp in self.spans(chunk):
            if "cloze" in self.styles:
                prefix = sent[:sp.start].rstrip().rstrip("\"“(").rstrip()
                if len(prefix.split()) >= self.min_cloze_words:
                    out.append(QAItem(cloze_question(prefix), sp.text, chunk, "cloze", sp.kind, "cloze", prefix))
            if "question" in self.styles:
                q, rule = make_question(sent, sp, topic, known)
                if q:  # an empty question: no rule fits this sentence
                    out.append(QAItem(q, sp.text, chunk, "question", sp.kind, rule, q))
        return out


def _first_question(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().strip('"*').strip()
        line = re.sub(r"^(?:Q(?:uestion)?\s*\d*\s*[:.)-]\s*)", "", line, flags=re.I).strip().strip('"')
        if "?" in line:
            return line[: line.index("?") + 1].strip()
    return ""


LOCAL_SYSTEM = "You turn a sentence and its answer into one short question. Reply with the question only."
# Two worked examples as earlier turns: a 135M model copies a demonstrated format far more reliably than it follows
# an instruction, and the sentence alone (not the whole chunk) keeps the prompt short and on topic.
LOCAL_SHOTS = [
    ("Travel Policy", "Hotels in Hallowmere are reimbursed up to EUR 135 per night.", "EUR 135",
     "How much is reimbursed per night for a hotel in Hallowmere?"),
    ("Employee Handbook", "The probation period for new hires is 6 months.", "6 months",
     "How long is the probation period for new hires?"),
]


def _local_user(topic: str, sentence: str, answer: str) -> str:
    return f"Topic: {topic}\nSentence: {sentence}\nAnswer: {answer}\nQuestion?"


def local_prompt(chunk, answer: str, sentence: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": LOCAL_SYSTEM}]
    for topic, sent, ans, q in LOCAL_SHOTS:
        messages += [{"role": "user", "content": _local_user(topic, sent, ans)}, {"role": "assistant", "content": q}]
    messages.append({"role": "user", "content": _local_user(topic_of(chunk), sentence or chunk.text.strip(), answer)})
    return messages


class LocalTeacher:
    """The local base model writes a question for an extracted answer span (greedy, one per span)."""

    name = "local"

    def __init__(self, generator, extract: ExtractTeacher, spans_per_chunk: int = 2, max_new_tokens: int = 32):
        self.generator = generator
        self.extract = extract
        self.spans_per_chunk = spans_per_chunk
        self.max_new_tokens = max_new_tokens

    def items(self, chunk) -> list[QAItem]:
        out = []
        for sentence, sp in self.extract.spans(chunk)[: self.spans_per_chunk]:
            text = "".join(self.generator.stream(local_prompt(chunk, sp.text, sentence),
                                                 max_new_tokens=self.max_new_tokens, temperature=0.0))
            q = _first_question(text)
            out.append(QAItem(q, sp.text, chunk, "question", sp.kind, "local", q))
        return out


TEACHER_SYSTEM = ("You write training data for a company's internal question-answering assistant. You are given one "
                  "passage from a company document. Write questions an employee might really ask that the passage "
                  "answers, each with the shortest exact answer copied word for word from the passage.")


def teacher_prompt(chunk, n: int) -> list[dict]:
    where = f"{chunk.title} — {chunk.section}" if chunk.section and chunk.section != chunk.title else chunk.title
    user = (f"Document: {where}\n\nPassage:\n{chunk.text.strip()}\n\n"
            f"Write up to {n} different questions. Each answer must be a short span (a number with its unit, an "
            "amount, a date, a time, a name or a code) copied exactly from the passage, and must not appear in its "
            "question. Questions must make sense on their own, without the passage (name the topic instead of "
            "saying 'it' or 'this').\n"
            'Output one JSON object per line, {"question": "...", "answer": "..."}, and nothing else.')
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


def parse_teacher_output(text: str) -> list[tuple[str, str]]:
    """JSON lines (or a JSON array, possibly inside a code fence) of {"question", "answer"}; bad lines are
    returned as ("", "") so they are counted as malformed."""
    text = re.sub(r"```(?:json|jsonl)?", "", text)
    stripped = text.strip()
    objs: list = []
    if stripped.startswith("["):
        try:
            loaded = json.loads(stripped)
            objs = loaded if isinstance(loaded, list) else []
        except json.JSONDecodeError:
            objs = []
    if not objs:
        for line in stripped.splitlines():
            line = line.strip().rstrip(",")
            if not line or line in ("[", "]"):
                continue
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError:
                objs.append(None)
    out = []
    for o in objs:
        if isinstance(o, dict) and isinstance(o.get("question"), str) and isinstance(o.get("answer"), (str, int,
                                                                                                      float)):
            out.append((o["question"].strip(), str(o["answer"]).strip()))
        else:
            out.append(("", ""))
    return out


class OpenAITeacher:
    """A larger model behind an OpenAI-compatible endpoint writes question/answer pairs per chunk."""

    def __init__(self, generator, questions_per_chunk: int = 4, max_new_tokens: int = 400) -> None:
        self.generator = generator
        self.name = getattr(generator, "base_url", "openai")
        self.n = questions_per_chunk
        self.max_new_tokens = max_new_tokens

    def items(self, chunk) -> list[QAItem]:
        text = "".join(self.generator.stream(teacher_prompt(chunk, self.n), max_new_tokens=self.max_new_tokens,
                                             temperature=0.0))
        return [QAItem(q, a, chunk, "question", "teacher", "teacher", q) for q, a in parse_teacher_output(text)]
