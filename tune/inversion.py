"""A declarative clause as a question, by rule: auxiliary inversion ('The meeting was moved' -> 'Was the
meeting moved?') or do-support ('He left the castle' -> 'Did he leave the castle?'), with verb forms from
lemminflect's dictionary (no tagger or parser). tune/forms.py builds its why / how / yes-no questions on it.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tune.spans import NUMBER_WORDS

AUX = frozenset("is are was were will would can could should shall may might must has have had".split())
DO = frozenset("do does did".split())
CLAUSE = frozenset("if when whenever while because although though unless that which who whom whose where after "
                   "before until once since as than and or but so".split())
DETS = frozenset("the a an his her their its our my your this that these those some many each every any no "
                 "all both several".split())
PREPS = frozenset("at to of for on in with by from about into onto over under per through via within after before "
                  "until since during against among between without".split())
# a manual's "you" is the reader, who asks about themself: "You can set the clock" -> "Can I set the clock?"
_PRONOUN_SUBJ = {"i": "you", "we": "we", "you": "I", "he": "he", "she": "she", "it": "it", "they": "they"}
NEGATION = re.compile(r"\b(?:not|never|no longer)\s+", re.I)
IMPERATIVE_LEADS = frozenset("select press go open use turn enter navigate connect set change move choose click "
                             "tap follow check make sure insert remove hold".split())


@lru_cache(maxsize=8192)
def lemmas(word: str) -> dict:
    """lemminflect's lemmas of a word by part of speech ({'VERB': ('leave',), ...}; {} for a word it lacks)."""
    from lemminflect import getAllLemmas

    return getAllLemmas(word)


def verb_lemma(word: str) -> str | None:
    """The verb lemma of an inflected or base verb form ('left' -> 'leave'), None when it is not a verb."""
    verbs = lemmas(word.lower()).get("VERB")
    return verbs[0] if verbs else None


def _inflect(lemma: str, tag: str) -> set[str]:
    from lemminflect import getInflection

    return set(getInflection(lemma, tag=tag) or ())


def bare(word: str) -> str:
    """The word lower-cased, without the quotes, brackets and punctuation around it."""
    return word.strip("\"'“”‘’()[],.;:!?").lower()


def finite(word: str, prev: str, plural_subject: bool = False) -> tuple[str, str] | None:
    """(do-form, lemma) when `word` is a finite lexical verb after `prev` ('left' -> ('did', 'leave')), else None.
    A base form counts after a plural subject ('The rats agree', 'Roy and Dextry travel')."""
    w = bare(word)
    if not w.isalpha() or bare(prev) in DETS or bare(prev) in PREPS or w.endswith("ing"):
        return None
    lemma = verb_lemma(w)
    if lemma is None or lemma in ("be", "have", "do"):
        return None
    if w in _inflect(lemma, "VBD") and w != lemma:
        return "did", lemma
    if w in _inflect(lemma, "VBZ") and w != lemma:
        return "does", lemma
    if w == lemma and (bare(prev) in ("they", "we", "you", "i") or plural_subject):
        return "do", lemma
    return None


_NUMBER = re.compile(rf"^(?:\d[\d,.]*|{'|'.join(NUMBER_WORDS)}|dozens?|hundreds|thousands)$", re.I)
ADVERBS = frozenset("afterwards then later meanwhile eventually finally however soon also still now once instead "
                    "thus therefore hence moreover furthermore nevertheless overall here there".split())


def _ambiguous(word: str) -> bool:
    """A verb form that is also a noun ('forces', 'functions'): maybe still the subject."""
    return "NOUN" in lemmas(word) or word.endswith("ed")


def _verb_follows(words: list[str], i: int) -> bool:
    """Whether the word after i is 'of', or an auxiliary or a clear finite verb comes within the next six words
    (before a comma or a clause word): then word i belongs to the subject."""
    if i + 1 < len(words) and bare(words[i + 1]) in ("of", "in", "for", "from", "which", "that", "who"):
        return True
    for j in range(i + 1, min(len(words), i + 7)):
        w = bare(words[j])
        if words[j - 1].endswith((",", ";")) or w in CLAUSE:
            return False
        if w in AUX or (not _ambiguous(w) and finite(words[j], words[j - 1])):
            return True
    return False


def _plural(words: list[str]) -> bool:
    """A subject that takes a plural verb: two coordinated names or a plural noun at its end ('The rats')."""
    last = bare(words[-1])
    return "and" in (bare(w) for w in words) or (last.endswith("s") and not last.endswith("ss") and
                                                 lemmas(last).get("NOUN", (last,))[0] != last)


def _subject_ok(words: list[str]) -> bool:
    first = bare(words[0]) if words else ""
    joined = [w for i, w in enumerate(words) if not (bare(w) == "and" and 0 < i < len(words) - 1
                                                     and words[i + 1][:1].isupper())]  # "Roy and Dextry"
    return 1 <= len(words) <= 8 and not any(w.endswith((",", ";", ":")) or bare(w) in CLAUSE for w in joined) \
        and first not in PREPS | ADVERBS | IMPERATIVE_LEADS | {"every", "each"} and not first.endswith("ly") \
        and not any(bare(w) in ("you", "we", "they", "he", "she", "it", "to") for w in words[1:])


def lower_first(words: list[str], known: set[str]) -> list[str]:
    first = words[0]
    core = first.strip("\"'“”‘’()")
    if bare(first) in _PRONOUN_SUBJ:
        return [_PRONOUN_SUBJ[bare(first)]] + words[1:]
    if core[:1].isupper() and core[1:].islower() and core not in known and \
            (core.lower() in DETS or lemmas(core.lower())):  # a dictionary word, not a name
        return [first[:1].lower() + first[1:]] + words[1:]
    return words


def invert(clause: str, wh: str = "", known: set[str] | frozenset = frozenset(),
           drop_negation: bool = False) -> str | None:
    """A declarative clause as a question: 'The meeting was moved to Friday' -> 'Was the meeting moved to Friday?'
    (with wh='why': 'Why was the meeting moved to Friday?'); lexical verbs get do-support ('He left the castle' ->
    'Why did he leave the castle?'). None when no subject + verb split fits within the first eight words."""
    words = clause.strip().rstrip(".!?;:,").split()
    if not words or bare(words[-1]) in CLAUSE | PREPS | DETS:
        return None  # a cut-off sentence ("... available only if")
    for i in range(1, min(len(words), 9)):
        w = bare(words[i])
        if not _subject_ok(words[:i]):
            if bare(words[i - 1]) == "and" and words[i][:1].isupper():
                continue  # "Roy Glenister and | Dextry": the subject goes on
            return None
        if w == "cannot":  # "cannot" = "can" + "not"
            w, words = "can", words[:i] + ["can", "not"] + words[i + 1:]
        subject = lower_first(words[:i], set(known))
        rest = words[i + 1:]
        if w in AUX or w in DO:
            if w in ("has", "have", "had") and not (rest and verb_lemma(bare(rest[0])) and
                                                     bare(rest[0]).endswith(("ed", "en", "wn", "ne"))):
                lead, verb = {"has": "does", "have": "do", "had": "did"}[w], ["have"]  # possession
            else:
                lead, verb = w, []
            tail = " ".join(verb + rest)
        else:
            found = finite(words[i], words[i - 1], _plural(words[:i]))
            if found is None or (_ambiguous(w) and (_verb_follows(words, i) or _NUMBER.match(" ".join(words[:i])))):
                continue  # (a bare number as subject: 'Ten rejected pushes trigger an alert': 'rejected' is no verb)
            aux = next((j for j, x in enumerate(rest[:8]) if bare(x) in AUX | CLAUSE - {"and", "or"}), None)
            if aux is not None and bare(rest[aux]) in AUX:
                continue  # 'Some HDMI cables and devices may not ...': 'cables' is no verb, the verb comes later
            lead, lemma = found
            tail = " ".join([lemma] + rest)
        if NEGATION.match(tail):
            if not drop_negation:
                return None  # "Why did he not go?" reads badly; the positive question is asked instead
            tail = NEGATION.sub("", tail, count=1)
        elif drop_negation:
            return None  # the negation is elsewhere ("told them not to speak"): not a plain No
        if subject == ["I"]:
            tail = re.sub(r"\byour\b", "my", re.sub(r"\byourself\b", "myself", tail))
        question = " ".join(x for x in (wh, lead, " ".join(subject), tail) if x).strip()
        if len(question.split()) < 3 or all(t.endswith("ly") for t in tail.split()):
            return None  # nothing left to ask about ("Why is the treatment possibly?")
        return question[:1].upper() + question[1:] + "?"
    return None
