"""Questions whose answer is a clause, a sentence or steps, not a name or a number: the `forms` of the extract
teacher (tune/qgen.py asks these next to its fact spans). Rules, no model: a sentence is cut at a connective or a
copula and its main clause turned into a question by auxiliary inversion or do-support (verb forms from
lemminflect's dictionary). The answer's length and form follow the question:

    reason      "X happened because Y."            Why did X happen?          -> Because Y.
    purpose     "X did Y to achieve Z."            Why did X do Y?            -> To achieve Z.
    manner      "X escaped by climbing the wall."  How did X escape?          -> By climbing the wall.
    time        "X fled after the castle burned."  When did X flee?           -> After the castle burned.
    condition   "If a receipt is lost, complete    What should I do if a      -> Complete form MR2.
                form MR2." / "When you press X,    receipt is lost? / What
                a bar appears."                    happens when I press X?    -> A bar appears.
    definition  "X is a device that ..."           What is X? / Who is X?     -> A device that ...
    apposition  "X, a retired sailor, ..."         Who is X?                  -> A retired sailor.
    yes / no    "The groups did not differ."       Did the groups differ?     -> No. The groups did not differ.
                a sentence with one fact swapped for another fact of the chunk: the answer says No and gives the
                true sentence
    task        "To reset the TV, select Reset."   How do I reset the TV?     -> Select Reset.
                "You can X by Y-ing Z."            How can I X?               -> By Y-ing Z.
    section     a heading "Changing the clock"     How do I change the clock? -> the section's first sentences
                                                   + one more wording: How to / How can I / What are the steps to /
                                                   Can I change the clock? (-> Yes. + the same sentences)
                a heading "Remote Support"         What is Remote Support?    -> the section's first sentences

Every answer rests on `evidence`, verbatim text of the chunk (the filters check that, not the added "Because" or
"No."). Rules that do not fit a sentence make nothing: precision over recall.
"""

from __future__ import annotations

import re
import zlib

from tune.inversion import (ADVERBS, AUX, CLAUSE, DETS, IMPERATIVE_LEADS, NEGATION, PREPS, bare, finite, invert,
                            lemmas, lower_first, verb_lemma)
from tune.spans import _CAP_STOP, _ROLE_WORDS, find_spans, known_names_of, split_sentences

FORMS = ("reason", "purpose", "manner", "time", "condition", "definition", "apposition", "yes", "no", "task",
         "section")
MAX_EVIDENCE_WORDS = 60

_COMPLEMENT_VERBS = frozenset("agree want try decide need plan refuse begin start continue seem appear hope fail "
                              "manage ask tell able go use have ought like love hate prefer learn promise expect "
                              "allow force order persuade convince help intend wish attempt choose offer "
                              "threaten prepare arrange".split())
_PERSON_NOUNS = _ROLE_WORDS | frozenset(
    "man woman boy girl son daughter wife husband father mother brother sister child friend uncle aunt cousin "
    "widow orphan servant soldier sailor farmer student teacher priest knight lord lady doctor detective thief "
    "hero heroine villain character narrator protagonist member leader citizen resident".split())
_CAUSAL = re.compile(r",?\s+\b(because of|because|due to|owing to|as a result of|thanks to|so that|in order to)\s+",
                     re.I)
_GENERIC_HEADINGS = frozenset(
    "introduction background methods method results result conclusion conclusions objective objectives summary "
    "design abstract overview notes note discussion purpose aims aim materials patients setting settings study "
    "contents index appendix references".split())


def _sentence_case(text: str) -> str:
    text = text.strip().rstrip(",;:")
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


class FormItem:
    """A proposed explanatory item: the question, the answer shown to the model, and the chunk text it rests on."""

    __slots__ = ("question", "answer", "evidence", "form")

    def __init__(self, question: str, answer: str, evidence: str, form: str) -> None:
        self.question, self.answer, self.evidence, self.form = question, answer, evidence, form


_CLAUSE_END = re.compile(r"[;,]\s|\s+and\s+(?=(?:then\s+)?(?:is|are|was|were|must|will|can|may|the|\w+ed)\b)")
# 'lead people to choose', 'cause the panel to overheat': the infinitive is what the object does, not a purpose
_OBJECT_CONTROL = frozenset("allow cause lead help enable encourage require permit urge invite remind teach force "
                            "persuade convince ask tell want expect get order instruct train show turn find "
                            "convert".split())
_TO_NOUNS = frozenset("ability initiative right chance opportunity way time power authority decision attempt effort "
                      "permission need plan intention option freedom means tendency failure responsibility duty "
                      "obligation capacity days hours minutes weeks months years free possible necessary ready "
                      "what how where when whether which".split())


def _clause(text: str) -> str:
    """The subordinate clause up to where the next clause or verb phrase starts: 'after 5 failed attempts and is
    never unlocked' -> 'after 5 failed attempts'."""
    return _CLAUSE_END.split(text.rstrip("."))[0]


def _askable(main: str, answer: str) -> bool:
    """A main clause short and plain enough to ask, and an answer with its brackets closed."""
    return len(main.split()) <= 16 and not re.search(r"[();:]|,\s|\bbut\b", main) and \
        answer.count("(") == answer.count(")") and answer.count('"') % 2 == 0


def reason_items(sentence: str, known) -> list[FormItem]:
    """Because / due to / so that / in order to: 'Why ...?' -> the connective and what follows it."""
    m = _CAUSAL.search(sentence)
    if not m:
        return []
    lead = re.match(r"^(because of|because|due to|owing to|thanks to|as a result of)\s+(.+?),\s+(.+)$", sentence, re.I)
    if lead:  # "Because the roads were closed, the race was cancelled."
        connective, reason, main = lead.group(1), lead.group(2), lead.group(3)
        evidence = f"{connective} {reason}"
    else:
        main, connective = sentence[:m.start()], m.group(1)
        reason = re.split(r"[;]|,\s+(?:which|but|and|while|although)\s", sentence[m.end():])[0]
        evidence = sentence[m.start():m.end()].strip(" ,") + " " + reason
    if len(reason.split()) < 2 or not _askable(main, evidence):
        return []
    question = invert(main, "why", known)
    if not question:
        return []
    form = "purpose" if connective.lower() in ("so that", "in order to") else "reason"
    return [FormItem(question, _sentence_case(evidence), evidence, form)]


_TEMPORAL = re.compile(r",?\s+\b(after|before|when|once)\s+", re.I)
_TIME_WORDS = frozenset("time times moment day days week weeks month months year years hour hours minute minutes "
                        "second seconds period point era age night morning shortly soon immediately just long directly "
                        "right even only and or but".split())
_PRONOUN_WORDS = frozenset("i you he she it we they these those this that".split())
_WH_VERBS = frozenset("predict know decide determine tell ask show see check find choose specify indicate say explain "
                      "remember learn understand wonder notice describe list".split())


def _time_misread(main: str, connective: str, clause: str, known) -> bool:
    """The cuts of a 'when' item that read a sentence wrongly: 'Quotes issued before 1 May are honoured' (the
    connective inside the subject), '8 months after X' and 'at a time when X' (a time phrase, not a clause),
    'predict when X' (an embedded question), 'once more', a main clause that already holds a date."""
    words = main.split()
    last = bare(words[-1]) if words else ""
    clause_words = [bare(w) for w in clause.split()]
    if last in _TIME_WORDS or (verb_lemma(last) or last) in _WH_VERBS or re.search(r"\d", words[-1]) or \
            clause_words[-1] in PREPS | DETS | {"to", "and", "or"}:
        return True
    if connective.lower() == "once" and clause_words[0] in ("more", "again", "or", "and", "upon", "a"):
        return True
    if any(bare(w) in ("how", "what", "whether", "if", "which", "who", "why", "where") for w in words):
        return True
    if not any(bare(w) in AUX for w in words) and last.endswith("ed") and \
            any(w in AUX or w.endswith("ed") for w in clause_words[1:]):
        return True  # 'Quotes issued before X are honoured': 'issued' is a participle, the verb comes after
    if any(w in AUX for w in clause_words[1:3]) and (clause_words[0][:1].isdigit() or clause.split()[0].islower()
                                                     and clause_words[0] not in _PRONOUN_WORDS):
        return True  # 'haemorrhages after convulsions is not well established': the verb is past the connective
    return any(s.kind in ("date", "time", "duration") for s in find_spans(main, known))


def time_items(sentence: str, known) -> list[FormItem]:
    """'Martin fell into a coma after the Emperor hit him.' -> 'When did Martin fall into a coma?' -> 'After the
    Emperor hit him.' (also a leading 'After X, Y.')."""
    lead = re.match(r"^(after|before|when|once)\s+([^,]{3,100}),\s+(.+)$", sentence.rstrip("."), re.I)
    if lead:
        connective, clause, main = lead.groups()
    else:
        m = _TEMPORAL.search(sentence)
        if not m:
            return []
        main, connective = sentence[:m.start()], m.group(1)
        clause = _clause(sentence[m.end():])
    if len(clause.split()) < 3 or not _askable(main, clause) or _time_misread(main, connective, clause, known):
        return []
    question = invert(main, "when", known)
    first = bare(main.split()[0])
    if not question or connective.lower() == "when" and lead is None and \
            not re.match(r"[A-Z]|the |his |her |their |a |an ", clause) or \
            first == verb_lemma(first) and bare(question.split()[2]) == first or \
            bare(question.split()[1]) in ("do", "does", "did") and any(bare(w) in AUX for w in question.split()[2:]):
        return []  # (the last: an instruction, 'Back up your files before ...' -> 'When does back up ...?')
    evidence = f"{connective} {clause}"
    return [FormItem(question, _sentence_case(evidence), evidence, "time")]


def purpose_items(sentence: str, known) -> list[FormItem]:
    """'He sold the farm to pay his debts.' -> 'Why did he sell the farm?' -> 'To pay his debts.'; 'She escaped by
    climbing the wall.' -> 'How did she escape?' -> 'By climbing the wall.'"""
    out = []
    words = sentence.rstrip(".!?").split()
    for i in range(3, len(words) - 1):
        w, nxt = bare(words[i]), bare(words[i + 1])
        before = words[i - 1]
        if before.endswith((",", ";")) or bare(before) in DETS:
            continue
        after = bare(words[i + 2]) if i + 2 < len(words) else ""
        if w == "to" and verb_lemma(nxt) == nxt and nxt not in PREPS and nxt != "be" and \
                not any(verb_lemma(bare(b)) in _OBJECT_CONTROL for b in words[max(0, i - 6):i]) and \
                ("NOUN" not in lemmas(nxt) or after in DETS) and \
                not any((verb_lemma(bare(b)) or bare(b)) in _COMPLEMENT_VERBS for b in words[max(0, i - 2):i]) \
                and not finite(before, words[i - 2]) and not bare(before).endswith(("ed", "ing")) and \
                bare(before) not in _TO_NOUNS and not ("ADJ" in lemmas(bare(before)) and
                                                       "NOUN" not in lemmas(bare(before))):
            wh, form = "why", "purpose"
        elif w == "by" and nxt.endswith("ing") and verb_lemma(nxt):
            wh, form = "how", "manner"
        else:
            continue
        tail = _clause(" ".join(words[i:]))
        question = _askable(" ".join(words[:i]), tail) and invert(" ".join(words[:i]), wh, known)
        if question and len(tail.split()) >= 3:
            out.append(FormItem(question, _sentence_case(tail), tail, form))
        break
    return out


def definition_items(sentence: str, known) -> list[FormItem]:
    """'X is a Y ...' -> 'What is X?' (or 'Who is X?' for a person) -> 'A Y ...'; 'X, a Y, ...' -> 'Who is X?'."""
    m = re.match(r"^((?:The |An? )?[A-Z][\w'’-]*(?: [\w'’-]+){0,4}?) (is|are|was|were) ((?:an?|the|one of the) .+)$",
                 sentence.rstrip(".!?"))
    out = []
    pronoun = m and bare(m.group(1)) in ("this", "that", "these", "those", "it", "they", "he", "she", "there")
    if m and not pronoun and \
            not any(bare(w) in CLAUSE | AUX | PREPS or w.endswith(",") for w in m.group(1).split()[:1]) and \
            not any(bare(w) in CLAUSE | AUX or w.endswith(",") for w in m.group(1).split()[1:]):
        subject, verb, predicate = m.groups()
        predicate = re.split(r"[;]|,\s+(?:which|but|and|while|although|who)\s", predicate)[0]
        head = [bare(w) for w in predicate.split()[:4]]
        wh = "who" if any(w in _PERSON_NOUNS for w in head) else "what"
        subject = subject if subject.split()[0] not in ("The", "A", "An") or subject in known \
            else subject[:1].lower() + subject[1:]
        if len(predicate.split()) >= 3:
            out.append(FormItem(f"{wh.capitalize()} {verb} {subject}?", _sentence_case(predicate), predicate,
                                "definition"))
    a = re.match(r"^([A-Z][\w'’.-]*(?: [A-Z][\w'’.-]*){0,3}), ((?:an?|the|his|her|their) [^,]{3,80}), ", sentence)
    if a and a.group(1) not in _CAP_STOP and not a.group(1).lower().endswith("ly") and \
            bare(a.group(1)) not in ADVERBS and any(bare(w) in _PERSON_NOUNS for w in a.group(2).split()):
        tense = "was" if re.search(r"\b(was|were|had|\w+ed)\b", sentence[a.end():a.end() + 40]) else "is"
        out.append(FormItem(f"Who {tense} {a.group(1)}?", _sentence_case(a.group(2)), a.group(2), "apposition"))
    return out


_SUBORDINATORS = frozenset("if when unless once after before while although though because until whenever "
                           "where wherever whether".split())


def yes_no_items(sentence: str, known, others: dict[str, list[str]], pick) -> list[FormItem]:
    """A statement asked as a yes/no question: 'Yes.' or, for a negated one, 'No.', then the sentence. With
    `others` (the chunk's spans by kind: {'duration': ['2 hours']}), a second question with one fact swapped for
    another of its kind: 'No.' + the sentence. `pick(seq)` chooses (seeded by the caller)."""
    words = sentence.split()
    if not 5 <= len(words) <= 30 or sentence.rstrip().endswith("?") or re.search(r"[;:—–()]| - ", sentence) or \
            sentence.count(",") > 1 or re.search(r"\bbut\b|, and\b|\band \w+(?:s|ed)\b", sentence):
        return []  # a short, plain statement: a long one makes a question nobody would ask
    lead = bare(words[0])
    if lead in _SUBORDINATORS:
        return []  # 'If all licences are in use, ...' asserts nothing: 'Are all licences in use?' 'Yes.' is false
    negated = bool(NEGATION.search(sentence))
    question = invert(sentence, "", known, drop_negation=negated)
    if not question or lead == verb_lemma(lead) and bare((question.split() + [""])[1]) == lead:
        return []  # an instruction has no subject to ask about: 'Keep your manager updated' -> 'Did keep ...?'
    out = [FormItem(question, f"{'No' if negated else 'Yes'}. {_sentence_case(sentence)}", sentence,
                    "no" if negated else "yes")]
    if not negated:
        spans = [s for s in find_spans(sentence, known) if s.kind in ("amount", "percent", "date", "duration",
                                                                      "count", "person", "name", "time")]
        for sp in spans:
            swaps = [o for o in others.get(sp.kind, ()) if o.lower() != sp.text.lower() and o.lower() not in
                     sentence.lower()]  # a duration for a duration: 'up to Office Manager' is no question
            if swaps:
                wrong = sentence[:sp.start] + pick(swaps) + sentence[sp.end:]
                q = invert(wrong, "", known)
                if q:
                    out.append(FormItem(q, f"No. {_sentence_case(sentence)}", sentence, "no"))
                break
    return out


def task_items(sentence: str, known) -> list[FormItem]:
    """'To reset the TV, select Reset.' -> 'How do I reset the TV?' -> 'Select Reset.'; 'You can X by Y-ing Z.' ->
    'How can I X?' -> 'By Y-ing Z.'"""
    m = re.match(r"^To ([a-z]+) ([^,]{3,80}), (.{5,})$", sentence.rstrip("."))
    step = m.group(3) if m else ""
    if m and verb_lemma(m.group(1)) == m.group(1) and verb_lemma(bare(step.split()[0])) == step.split()[0].lower() \
            and (step[:1].islower() or bare(step.split()[0]) in IMPERATIVE_LEADS):
        return [FormItem(f"How do I {m.group(1)} {m.group(2)}?", _sentence_case(step), step, "task")]
    m = re.match(r"^You can ([a-z]+ [^,]{3,80}?) (by [a-z]+ing .{3,})$", sentence.rstrip("."))
    if m and verb_lemma(m.group(1).split()[0]):
        return [FormItem(f"How can I {m.group(1)}?", _sentence_case(m.group(2)), m.group(2), "task")]
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
    return [FormItem(question, _sentence_case(outcome), outcome, "condition")]


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


def form_items(chunk, pick, max_items: int = 4) -> list[FormItem]:
    """Every form that fits a sentence of the chunk, the section question first; at most `max_items`, spread over
    forms (one of each before a second of any)."""
    known = known_names_of(chunk)
    sentences = split_sentences(chunk.text)
    facts: dict[str, list[str]] = {}
    for sp in (sp for s in sentences for sp in find_spans(s, known)):
        facts.setdefault(sp.kind, []).append(sp.text)
    found: list[FormItem] = list(section_items(chunk, sentences))
    for s in sentences:
        if len(s.split()) > MAX_EVIDENCE_WORDS:
            continue
        for make in (reason_items, purpose_items, time_items, condition_items, definition_items, task_items):
            found.extend(make(s, known))
        found.extend(yes_no_items(s, known, facts, pick))
    by_form: dict[str, list[FormItem]] = {}
    for item in found:
        by_form.setdefault(item.form, []).append(item)
    for form in ("yes", "no"):  # every plain statement makes these: one of each per chunk, or they crowd out the rest
        by_form[form] = by_form.get(form, [])[:1]
    chosen: list[FormItem] = []
    while len(chosen) < max_items and any(by_form.values()):
        for form in FORMS:
            if by_form.get(form) and len(chosen) < max_items:
                chosen.append(by_form[form].pop(0))
    return chosen
