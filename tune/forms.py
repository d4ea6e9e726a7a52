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

Task, condition and section items are made in tune/forms_howto.py. Every answer rests on `evidence`, verbatim text
of the chunk (the filters check that, not the added "Because" or "No."). Rules that do not fit a sentence make
nothing: precision over recall.
"""

from __future__ import annotations

import re

from tune.form_item import MAX_EVIDENCE_WORDS, FormItem, sentence_case
from tune.forms_howto import condition_items, section_items, task_items
from tune.inversion import ADVERBS, AUX, CLAUSE, DETS, NEGATION, PREPS, bare, finite, invert, lemmas, verb_lemma
from tune.spans import _CAP_STOP, _ROLE_WORDS, find_spans, known_names_of, split_sentences

__all__ = ["FORMS", "FormItem", "condition_items", "definition_items", "form_items", "purpose_items", "reason_items",
           "section_items", "task_items", "time_items", "yes_no_items"]

FORMS = ("reason", "purpose", "manner", "time", "condition", "definition", "apposition", "yes", "no", "task",
         "section")

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


def _instruction(clause: str, question: str, at: int) -> bool:
    """Whether `question` asks an instruction as if it had a subject: the clause opens with a base-form verb and
    that verb is the question's word `at` (after its auxiliary): 'Keep your manager updated' -> 'Did keep ...?'."""
    first = bare(clause.split()[0])
    return first == verb_lemma(first) and bare((question.split() + ["", ""])[at]) == first


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
    return [FormItem(question, sentence_case(evidence), evidence, form)]


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
    if not question or connective.lower() == "when" and lead is None and \
            not re.match(r"[A-Z]|the |his |her |their |a |an ", clause) or _instruction(main, question, 2) or \
            bare(question.split()[1]) in ("do", "does", "did") and any(bare(w) in AUX for w in question.split()[2:]):
        return []  # (the last: an instruction, 'Back up your files before ...' -> 'When does back up ...?')
    evidence = f"{connective} {clause}"
    return [FormItem(question, sentence_case(evidence), evidence, "time")]


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
            out.append(FormItem(question, sentence_case(tail), tail, form))
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
            out.append(FormItem(f"{wh.capitalize()} {verb} {subject}?", sentence_case(predicate), predicate,
                                "definition"))
    a = re.match(r"^([A-Z][\w'’.-]*(?: [A-Z][\w'’.-]*){0,3}), ((?:an?|the|his|her|their) [^,]{3,80}), ", sentence)
    if a and a.group(1) not in _CAP_STOP and not a.group(1).lower().endswith("ly") and \
            bare(a.group(1)) not in ADVERBS and any(bare(w) in _PERSON_NOUNS for w in a.group(2).split()):
        tense = "was" if re.search(r"\b(was|were|had|\w+ed)\b", sentence[a.end():a.end() + 40]) else "is"
        out.append(FormItem(f"Who {tense} {a.group(1)}?", sentence_case(a.group(2)), a.group(2), "apposition"))
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
    if not question or _instruction(sentence, question, 1):
        return []  # an instruction has no subject to ask about: 'Keep your manager updated' -> 'Did keep ...?'
    out = [FormItem(question, f"{'No' if negated else 'Yes'}. {sentence_case(sentence)}", sentence,
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
                    out.append(FormItem(q, f"No. {sentence_case(sentence)}", sentence, "no"))
                break
    return out


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
