"""What kind of answer a question asks for. One rule, read by every layer: synth tags its items with it, the answer
engine picks how much of each passage to show from it, and `ragtune eval` breaks its scores down by it.

    >>> question_kind("How many days of leave do I get?"), question_kind("Why did the castle fall?")
    ('quantity', 'reason')
    >>> coarse_kind("Is shaving before surgery harmful?")
    'explain'

Kinds, and the coarse group each belongs to:
    factoid   who, when, where, quantity (how many / much / long / often / old), what (what / which / other wh-)
    explain   reason (why, what for), procedure (how do I / how to / steps), yes_no (is / does / can ...),
              describe (describe, explain, tell me about, what is X (about), what happens)
    cloze     a sentence to complete ("Complete the sentence: ... ")
"""

from __future__ import annotations

import re

from ingest.sentences import ends_with_abbreviation

FACTOID_KINDS = ("who", "when", "where", "quantity", "what")
EXPLAIN_KINDS = ("reason", "procedure", "yes_no", "describe")
KINDS = (*FACTOID_KINDS, *EXPLAIN_KINDS, "cloze")
COARSE = {**{k: "factoid" for k in FACTOID_KINDS}, **{k: "explain" for k in EXPLAIN_KINDS}, "cloze": "cloze"}

_LEAD = re.compile(r"^(?:(?:and|but|so|also|then|ok|okay|please|now|well|hi|hello)[,]?\s+)+", re.I)
_PREP_LEAD = re.compile(r"^(?:in|on|at|during|after|before|from|by|with|to|for|of|according to|since|under)\s+",
                        re.I)
_WH = re.compile(r"\b(?:what|which|who|whom|whose|when|where|how|why)\b")
_STEPS = r"(?=.*\b(?:procedure|steps?|how to|how do i|how can i)\b)"  # asks for steps, anywhere in the question
_ASK_TO_EXPLAIN = r"(?:(?:describe|explain|summari[sz]e|tell me (?:about|more)|give (?:me )?(?:an )?overview)\b|" \
                  r".*\b(?:explain|describe) (?:the|how|what|why)\b)"
# "What is Remote Support?": a term to define (no "the", no possessive, not ending in a preposition or a participle)
_DEFINITION = r"what (?:is|are) (?:an? )?(?!the )(?![\w-]+(?: [\w-]+)* (?:from|to|for|by|with|of|in|on|at|about|" \
              r"into)\??$)(?:[\w-]+(?<!ed))(?: [\w-]+(?<!ed)){0,3}\??$"
# (kind, pattern) tried in order on the lower-cased question clause; the first match decides
_RULES = [(kind, re.compile(pattern)) for kind, pattern in (
    ("procedure", _STEPS + _ASK_TO_EXPLAIN),
    ("describe", _ASK_TO_EXPLAIN),
    ("reason", r"why\b|what\b.*\b(?:used|use|needed|good|meant|designed|intended)\s+for\??$|what is the (?:purpose|"
               r"reason|point|use)\b|for what (?:reason|purpose)\b|how come\b"),
    ("quantity", r"how (?:many|much|long|often|old|far|big|large|high|tall|fast|soon|frequently)\b"),
    ("procedure", r"how (?:do|can|could|should|must) (?:i|we|you|one|users?)\b(?! describe)|what (?:do|should|must|"
                  r"can) (?:i|we|you) (?:do|need to do|have to do)\b|how to\b|what (?:are the )?steps\b|"
                  r"what is the procedure\b"),
    ("describe", r"how\b|in what way\b"),
    ("who", r"(?:who|whom|whose)\b"),
    ("when", r"(?:when|what (?:year|date|day|month|time|century|decade|period))\b"),
    ("where", r"(?:where|what (?:place|city|country|town|planet|room|location))\b"),
    ("describe", r"what happens?\b|what (?:is|are) .* about\??$|what is (?:meant by|known about)\b|" + _DEFINITION),
    ("what", r"(?:what|which)\b"),
    ("yes_no", r"(?:is|are|was|were|am|do|does|did|can|could|should|would|will|shall|has|have|had|may|might|must)"
               r"(?:n't)?\b"),
)]


def _clause(question: str) -> str:
    """The part that carries the question: the last sentence with a question mark (or the last sentence), after a
    'Title: ' lead-in, without courtesy words."""
    text = re.sub(r"\s+", " ", (question or "").strip())
    parts: list[str] = []
    for piece in re.split(r"(?<=[.?!])\s+", text):
        if parts and parts[-1].endswith(".") and ends_with_abbreviation(parts[-1]):
            parts[-1] = f"{parts[-1]} {piece}"  # "Ms. Frisby": not a sentence end
        elif piece.strip():
            parts.append(piece.strip())
    asked = [p for p in parts if p.endswith("?")]
    clause = (asked or parts or [""])[-1]
    if ": " in clause:  # "Visceral adipose tissue: can it represent ...?" / "Topic: What is ...?"
        tail = clause.rsplit(": ", 1)[1]
        if len(tail.split()) >= 2:
            clause = tail
    return _LEAD.sub("", clause).strip()


def question_kind(question: str) -> str:
    """One of KINDS for a question (see the module docstring); 'what' when nothing more specific fits."""
    raw = (question or "").strip()
    if re.match(r"^\s*complete the sentence:", raw, re.I):
        return "cloze"
    q = _clause(raw).lower()
    for kind, pattern in _RULES:
        if pattern.match(q):
            return kind
    body = _PREP_LEAD.sub("", q)  # "In what year ...", "According to X, who ..."
    if body != q and _WH.match(body):
        return question_kind(body)
    if _WH.search(q):
        return "what"  # a wh-word inside: "The Normans were in what country?"
    return "yes_no"  # "A link between X and Y?"


def coarse_kind(question: str) -> str:
    """'factoid', 'explain' or 'cloze'."""
    return COARSE[question_kind(question)]
