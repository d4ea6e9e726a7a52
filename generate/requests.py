"""A request, or a question in two parts, put the way the reader was taught to read questions (tune/forms.py asks
'How do I change the clock?' and 'What is Remote Support?') before search and the prompt. People ask:

    "I want to enable the light effect. How can I do this?"    -> "How do I enable the light effect?"
    "Please explain how to schedule a recording?"              -> "How do I schedule a recording?"
    "Explain the procedure for cancelling a recording."        -> "How do I cancel a recording?"
    "Can you explain connecting with a component cable?"       -> "How do I connect with a component cable?"
    "I don't know about Ambient Mode. Can you explain it?"     -> "What is Ambient Mode?"
    "Can you explain Ambient Mode?"                            -> "What is Ambient Mode?"

Asked as written, a small reader answers "Can you explain Ambient Mode?" with "Yes. You can." and "I want to X.
How can I do that?" with the passage's first menu path. Anything else, and a request that asks two things at once
('... and is there any way to stop it?'), stays as asked: precision over recall, as for the synth rules.

    plain_question("Please instruct how to record any program?")  # -> "How do I record any program?"
"""

from __future__ import annotations

import re

_END = r"\s*[?.!]*\s*$"
_ASK = r"(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?|please\s+)?"
_HOW_TO = re.compile(
    _ASK + r"(?:explain|describe|show\s+me|tell\s+me|instruct(?:\s+me)?|provide\s+(?:me\s+)?(?:some\s+)?"
    r"(?:instructions|steps))\s+(?:(?:me\s+)?(?:the\s+)?(?:steps|procedure|process|way)\s+)?(?:on\s+|of\s+|for\s+)?"
    r"how\s+(?:to|do\s+i|can\s+i|i\s+can|should\s+i)\s+(?P<task>[^?]+?)" + _END, re.I)
_FOR_ING = re.compile(_ASK + r"(?:explain|describe|show\s+me|tell\s+me)\s+(?:me\s+)?the\s+(?:steps|procedure|"
                      r"process)\s+(?:for|of|to)\s+(?P<verb>[a-z]+ing)\b(?P<rest>[^?]*?)" + _END, re.I)
_INTENT = re.compile(r"(?:i|we)\s+(?:want|need|would\s+like|'d\s+like|wish)\s+to\s+(?P<task>[^.?!]+?)\s*[.?!,]+\s*"
                     r"(?:so\s+)?how\s+(?:can|do|should|could|would)\s+(?:i|we)\s+(?:do|achieve|manage)\s+"
                     r"(?:that|this|it)" + _END, re.I)
_ABOUT = re.compile(
    r"(?:i\s+(?:want|would\s+like|need)\s+to\s+know\s+(?:more\s+)?about|i\s+(?:do\s*n['o]?t|dont)\s+know\s+"
    r"(?:anything\s+)?about|tell\s+me\s+about)\s+(?P<thing>[^.?!]+?)\s*[.?!,]+\s*(?:what\s+(?:is|are)\s+"
    r"(?:it|that|this|they)|" + _ASK + r"(?:explain|describe)(?:\s+(?:it|that|this|them|briefly|about\s+(?:it|that)"
    r"))*)" + _END, re.I)
_EXPLAIN = re.compile(_ASK + r"(?:explain|describe)\s+(?:to\s+me\s+)?(?P<thing>[^?]+?)" + _END, re.I)
_TWO_ASKS = re.compile(r"\b(?:and|also)\s+(?:also\s+)?(?:explain|describe|is\s+there|can\s+you|please|how|what|why)\b",
                       re.I)
_WH = re.compile(r"(?:how|what|why|when|where|which|who|whether|if)\b", re.I)
MAX_TASK_WORDS = 20  # a longer task is more than one request


def _base(verb: str) -> str:
    """'cancelling' -> 'cancel', 'connecting' -> 'connect' (lemminflect's dictionary; unknown words stay)."""
    from lemminflect import getLemma

    lemmas = getLemma(verb.lower(), upos="VERB")
    return lemmas[0] if lemmas else verb


def _how_do_i(task: str) -> str:
    return f"How do I {task.strip().rstrip('?.! ')}?"


def _what_is(thing: str) -> str:
    """'What is Ambient Mode?', 'What are the connection notes for computers?' (the head noun before any
    preposition decides)."""
    head = re.split(r"\s+(?:for|of|in|on|with|about|from|to|at|by)\s+", thing.strip(), maxsplit=1)[0].split()[-1]
    plural = head.lower().endswith("s") and not head.lower().endswith(("ss", "us", "is")) and head[:1].islower()
    return f"What {'are' if plural else 'is'} {thing.strip()}?"


def plain_question(question: str) -> str:
    """The question as the reader reads it best: see the module doc. Unchanged when no rule fits exactly."""
    q = " ".join(question.split())
    if _TWO_ASKS.search(q):
        return question
    if (m := _INTENT.fullmatch(q)) or (m := _HOW_TO.fullmatch(q)):
        task = m.group("task")
        return _how_do_i(task) if len(task.split()) <= MAX_TASK_WORDS else question
    if m := _FOR_ING.fullmatch(q):
        return _how_do_i(_base(m.group("verb")) + m.group("rest"))
    if m := _ABOUT.fullmatch(q):
        return _what_is(m.group("thing"))
    if (m := _EXPLAIN.fullmatch(q)) and not _WH.match(m.group("thing")):
        thing = m.group("thing").strip()
        first, _, rest = thing.partition(" ")
        base = _base(first) if first.lower().endswith("ing") and rest else first.lower()
        if base != first.lower():
            return _how_do_i(f"{base} {rest}")
        if len(thing.split()) <= MAX_TASK_WORDS:
            return _what_is(thing)
    return question
