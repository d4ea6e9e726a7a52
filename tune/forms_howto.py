"""The forms that ask what to do or what follows (tune/forms.py collects them with the others):

    task        "To reset the TV, select Reset."   How do I reset the TV?     -> Select Reset.
    condition   "If a receipt is lost, complete    What should I do if a      -> Complete form MR2.
                form MR2." / "When you press X,    receipt is lost? / What
                a bar appears."                    happens when I press X?    -> A bar appears.
    section     a heading "Changing the clock"     How do I change the clock? -> the section's first sentences
"""

from __future__ import annotations

import re
import zlib

from tune.form_item import MAX_EVIDENCE_WORDS, FormItem, sentence_case
from tune.inversion import AUX, CLAUSE, DETS, IMPERATIVE_LEADS, PREPS, bare, finite, lemmas, lower_first, verb_lemma

_GENERIC_HEADINGS = frozenset(
    "introduction background methods method results result conclusion conclusions objective objectives summary "
    "design abstract overview notes note discussion purpose aims aim materials patients setting settings study "
    "contents index appendix references".split())


def task_items(sentence: str, known) -> list[FormItem]:
    """'To reset the TV, select Reset.' -> 'How do I reset the TV?' -> 'Select Reset.'; 'You can X by Y-ing Z.' ->
    'How can I X?' -> 'By Y-ing Z.'"""
    m = re.match(r"^To ([a-z]+) ([^,]{3,80}), (.{5,})$", sentence.rstrip("."))
    step = m.group(3) if m else ""
    if m and verb_lemma(m.group(1)) == m.group(1) and verb_lemma(bare(step.split()[0])) == step.split()[0].lower() \
            and (step[:1].islower() or bare(step.split()[0]) in IMPERATIVE_LEADS):
        return [FormItem(f"How do I {m.group(1)} {m.group(2)}?", sentence_case(step), step, "task")]
    m = re.match(r"^You can ([a-z]+ [^,]{3,80}?) (by [a-z]+ing .{3,})$", sentence.rstrip("."))
    if m and verb_lemma(m.group(1).split()[0]):
        return [FormItem(f"How can I {m.group(1)}?", sentence_case(m.group(2)), m.group(2), "task")]
    return []


_SECOND_PERSON = {"you": "I", "your": "my", "yours": "mine", "yourself": "myself", "you're": "I'm", "you’re": "I’m"}
_CONTINUATIONS = frozenset("or and but nor such for including especially which who these this".split())


def _imperative(words: list[str]) -> bool:
    """'Call the desk on 2200' is an instruction; 'Screen distortion may be visible' and 'Free oxygen began to
    outgas' are not: a base-form verb first, and no auxiliary or finite verb of its own before the next clause."""
    head = bare(words[0])
    if head != verb_lemma(head) and head not in IMPERATIVE_LEADS or words[0].endswith(","):
        return False
    for prev, w in zip(words, words[1:]):
        if bare(w) in CLAUSE or prev.endswith(","):
            break
        if bare(w) in AUX or finite(w, prev) and "NOUN" not in lemmas(bare(w)):  # ('vaults' may be a noun)
            return False
    return True


def condition_items(sentence: str, known) -> list[FormItem]:
    """'If a receipt is lost, complete form FIN-MR2.' -> 'What should I do if a receipt is lost?' -> 'Complete form
    FIN-MR2.'; 'When you press the button, a control bar appears.' -> 'What happens when I press the button?' -> 'A
    control bar appears.' The condition needs a subject of its own ('When considering X, ...' makes nothing)."""
    m = re.match(r"^(If|When)\s+([^,;:()]{8,100}),\s+(?:then\s+)?([^;:]{15,})$", sentence.rstrip(".!"))
    if not m:
        return []
    connective, condition, outcome = m.group(1).lower(), m.group(2), m.group(3)
    words, out_words = condition.split(), outcome.split()
    first, head = bare(words[0]), bare(out_words[0])
    if not 3 <= len(words) <= 16 or first in PREPS or first.endswith(("ing", "ed")) or len(out_words) < 4 or \
            head in _CONTINUATIONS or out_words[0].endswith(",") or not any(bare(w) in AUX or verb_lemma(bare(w)) for w in words[1:]):
        return []  # (the outcome opening 'or ...', 'such as ...': the condition went on past its comma)
    asked = " ".join(_SECOND_PERSON.get(w.lower(), w) for w in lower_first(words, set(known)))
    asked = re.sub(r"\bI are\b", "I am", re.sub(r"\bI were\b", "I was", asked))
    past = any(bare(w) in ("was", "were", "had", "did") for w in words)  # ('-ed' is as often a participle)
    instruction = not past and _imperative(out_words)
    question = f"What should I do {connective} {asked}?" if instruction else \
        f"What {'happened' if past else 'happens'} {connective} {asked}?"
    return [FormItem(question, sentence_case(outcome), outcome, "condition")]


# after a verb that is also a noun ('Request', 'Support'), these words show the heading is a task ('Request a
# laptop', 'Switch between devices'), where a noun ('Support Contracts', 'Report sickness') leaves it unclear
_TASK_LINKS = frozenset("a an the your my our this that these those up down to between whether where about "
                        "if".split())


def _ing_verb(word: str) -> bool:
    lemma = verb_lemma(word.lower())
    return word.lower().endswith("ing") and bool(lemma) and lemma != word.lower()


def _heading_task(heading: str) -> tuple[str, str] | None:
    """('task', 'change the clock') for a task heading ('Changing the clock', 'Change the clock'), ('name',
    'Remote Support') for a short name heading in title case, None for a generic, long or unclear one. A label
    ('Level C2: Confidential', 'Step 1: ...'), a noun pair ('Support and Returns') or a verb that may be a noun
    before a noun ('Release Cadence', 'Report sickness') is not taken for a task: a wrong guess teaches the reader
    'How do I release cadence?' with a section for its answer."""
    words = heading.strip().rstrip(".?").split()
    if not words or len(words) > 8 or heading.lower().strip() in _GENERIC_HEADINGS or not words[0][:1].isupper() \
            or ":" in heading:
        return None
    first = words[0].lower()
    second = words[1].lower() if len(words) > 1 else ""
    if _ing_verb(first):
        words = [verb_lemma(first), *words[1:]]
        if second in ("and", "or") and len(words) > 3 and _ing_verb(words[2]):
            words[2] = verb_lemma(words[2].lower())  # 'Creating and managing your account'
        elif not second or second in ("and", "or", "&"):
            return None  # 'Training', 'Housing and Relocation'
        rest = [w if (w[:1].isupper() and w.lower() not in DETS | PREPS and i > 0 and not w.istitle()) or w.isupper()
                else w.lower() if w.istitle() and i == 0 else w for i, w in enumerate(words[1:])]
        return "task", f"{words[0]} {' '.join(rest)}".replace("  ", " ").strip()
    if first in IMPERATIVE_LEADS or verb_lemma(first) == first and first not in DETS | {"read"} and second and \
            second not in ("and", "or", "&") and ("NOUN" not in lemmas(first) or second in _TASK_LINKS):
        return "task", f"{first} {' '.join(words[1:])}"
    if len(words) <= 5 and all(w[:1].isupper() or w.lower() in DETS | PREPS | {"and", "or", "&"} for w in words) \
            and not any(w.lower() in CLAUSE for w in words) and not re.search(r"\d", heading):
        return "name", heading.strip()
    return None


# people ask for a procedure in many words ("How to ...", "What are the steps to ...", "Can I ...?"): the first is
# always made, one more wording is drawn per section, so the answer (the section's steps) follows the intent, not
# one template
_TASK_WORDINGS = ("How can I {}?", "How to {}?", "What are the steps to {}?", "Can I {}?")


def _heading_questions(heading: str) -> list[str]:
    found = _heading_task(heading)
    if not found:
        return []
    kind, phrase = found
    if kind == "name":
        return [f"What is {phrase}?"]
    # the second wording is drawn by the heading, so every chunk of a section asks the same (the duplicate filter
    # keeps the first chunk's, which holds the section's first sentences)
    return [f"How do I {phrase}?", _TASK_WORDINGS[zlib.crc32(heading.encode()) % len(_TASK_WORDINGS)].format(phrase)]


def section_items(chunk, sentences: list[str]) -> list[FormItem]:
    """A task heading ('Changing the clock') as 'How do I change the clock?' and one more wording drawn by the
    heading ('Can I change the clock?' is answered 'Yes.' and the steps), a name heading ('Remote Support') as
    'What is Remote Support?'; the answer is the first sentences of the section (up to 60 words). A chunk that
    starts in the middle of a sentence (a section's later chunk) makes none."""
    leaf = (chunk.section or "").split(" > ")[-1].strip()
    if not leaf or leaf == (chunk.title or "").strip() or not sentences or not sentences[0][:1].isupper():
        return []
    questions = _heading_questions(leaf)
    if not questions:
        return []
    taken: list[str] = []
    for s in sentences:
        if taken and len(" ".join(taken + [s]).split()) > MAX_EVIDENCE_WORDS:
            break
        taken.append(s)
    evidence = " ".join(taken)
    if len(evidence.split()) < 6 or len(evidence.split()) > MAX_EVIDENCE_WORDS:
        return []
    return [FormItem(q, f"Yes. {evidence}" if q.startswith("Can I") else evidence, evidence, "section")
            for q in questions]
