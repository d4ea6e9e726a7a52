"""Sentences and answer spans: the facts of a chunk that questions can be asked about (tune/qgen.py uses them).

`split_sentences(text)` cuts a chunk into sentences (bullets and list items count as sentences); `find_spans(sentence,
known_names)` picks specific facts (amounts, percentages, times, dates, counts and durations with their unit, codes,
roles, quoted terms, people, names), each a `Span` with its kind and, for counted things, its unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ingest.sentences import ends_with_abbreviation


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
        if ends_with_abbreviation(unit[start:end]):  # "e.g.", an initial "J."
            continue
        pieces.append(unit[start:m.end()].strip())
        start = m.end()
    pieces.append(unit[start:].strip())
    return [p for p in pieces if p]


# ---------------------------------------------------------------------------------------------------------------
# answer spans

NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "hundred")  # counts written as words
_NUMWORD = f"(?:{'|'.join(NUMBER_WORDS)})"
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# each currency's code and the words and signs that also write it (serve/citing reads a value's currency by them)
CURRENCY_NAMES = {"EUR": ("euro", "euros", "€"), "USD": ("dollar", "dollars", "$"), "GBP": ("pound", "pounds", "£")}
_SIGNS = [re.escape(n) for names in CURRENCY_NAMES.values() for n in names if not n.isalpha()]
_CUR = f"(?:{'|'.join(['EUR', 'USD', 'GBP', 'CHF', 'SEK', 'NOK', 'DKK', *_SIGNS])})"  # before the number
_WORDS = [n for names in CURRENCY_NAMES.values() for n in names if n.isalpha()]
_CUR_AFTER = f"(?:{'|'.join([*_WORDS, *CURRENCY_NAMES])})"  # after the number
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
    ("amount", re.compile(rf"(?<![\w.]){_NUM}\s?(?:million |billion |thousand )?{_CUR_AFTER}\b")),
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
    "welcomed welcomes introduced introduces "
    # what people do in stories and histories
    "loves loved marries married kills killed tells told meets met falls fell wants wanted tries tried returns "
    "returned escapes escaped learns learned realizes realized discovers discovered visits visited helps helped "
    "saves saved rescues rescued accepts accepted refuses refused dies died lives lived becomes agrees fears "
    "feared hopes hoped believes believed travels travelled traveled flees fled hides hid kisses kissed "
    "confesses confessed persuades persuaded promises promised".split())


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


_KIN_WORDS = frozenset("friend acquaintance wife husband son daughter father mother brother sister uncle aunt "
                       "cousin nephew niece widow lover fiance fiancee servant maid neighbour neighbor rival "
                       "companion".split())


def _not_a_word(word: str) -> bool:
    from lemminflect import getAllLemmas

    return not getAllLemmas(word.lower())


def _person_or_name(sentence: str, start: int, end: int, words: list[str]) -> str:
    if any(w in _ORG_WORDS or w.lower() in _ROLE_WORDS for w in words) or len(words) > 3:
        return "name"
    before = re.findall(r"[A-Za-z]+", sentence[:start].lower())[-4:]
    after_text = sentence[end:].lower()
    after = re.findall(r"[a-z]+", after_text)[:6]
    cue_before = any(w in _ROLE_WORDS or w in ("mr", "mrs", "ms", "dr", "prof") for w in before[-2:]) or \
        any(w in _ROLE_WORDS for w in before) or (len(words) >= 2 and before[-1:] == ["by"])
    appositive = re.match(r"\s*(?:,|\()\s*(?:(?:a|an|the|our|their|its|his|her)\s)?(?:[a-z-]+\s){0,3}", after_text) \
        and any(w in _ROLE_WORDS or w in _KIN_WORDS for w in after[:5])
    verb_after = bool(after) and after[0] in _HUMAN_VERBS and re.match(r"\s+[a-z]", after_text) is not None
    person_slot = bool(before) and before[-1] in ("by", "to", "with", "from", "contact", "ask", "under", "call",
                                                 "email", "tell", "inform", "thank", "thanked", "congratulated")
    if cue_before or appositive:
        return "person"
    if len(words) >= 2 and (verb_after or person_slot) and \
            all(re.fullmatch(r"[A-Z][a-z]+(?:-[A-Z][a-z]+)?", w) for w in words):
        return "person"
    if len(words) == 1 and (verb_after or person_slot) and _not_a_word(words[0]):
        return "person"  # "Maskull accepts an invitation": a name no dictionary knows, doing what people do
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


# words after which a sentence's final phrase may start: "... the perfect partner for | Smith."
_CUT_AFTER = frozenset(
    "of for to by in on at as with from into onto than and or is was are were be been became becomes called named "
    "like about through across under over between among during toward towards via including such".split())
_FUNCTION = _CUT_AFTER | frozenset("a an the its his her their this that these those it them he she they we you which "
                                   "who".split())


def _bare(word: str) -> str:
    return word.lower().strip("\"'“”(),")


def sentence_ending(sentence: str, min_prefix_words: int = 6, max_answer_words: int = 6) -> tuple[str, str] | None:
    """(prefix, ending): the sentence cut before its final phrase, the way sentence-completion probes are made.
    The cut is the last one after a preposition, conjunction, copula or comma that leaves an ending of 1 to
    `max_answer_words` words ending in a content word (a single word only when it is a name or a number); a
    determiner stays with its noun ("the GBM Telescope"). None when no cut fits."""
    words = sentence.strip().rstrip(".!?;:").rstrip().split()
    for i in range(len(words) - 1, max(min_prefix_words, len(words) - max_answer_words) - 1, -1):
        before, ending = words[i - 1], words[i:]
        if not (before.endswith(",") or _bare(before) in _CUT_AFTER):
            continue
        if _bare(ending[-1]) in _FUNCTION or all(_bare(w) in _FUNCTION for w in ending):
            continue
        if len(ending) == 1 and not re.match(r"[\"'“(]?[A-Z0-9]", ending[0]):
            continue
        return " ".join(words[:i]), " ".join(ending)
    return None
