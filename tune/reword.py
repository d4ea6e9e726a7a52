"""Reworded copies of synthetic items, so the reader learns to find a fact when the question does not repeat the
document's words (`ragtune synth --reword SHARE`).

Rule-made items repeat their sentence almost word for word, and a model trained on them matches words, not
meaning: on Fictional Knowledge's `hard_gen` probes, whose prefixes are paraphrased and often open with a
sentence of background, the fk3 adapter answered 0.42 against 0.73 on the literal `gen` probes. Without a
paraphrasing teacher (`--teacher URL`), this makes the cheapest approximation of such a prompt: drop about a quarter
of the lower-case content words from the item's wording (names, numbers and the last few words before the answer
stay, since they anchor it), and, for half of the copies, put another sentence of the same chunk in front as
background. The copy keeps the original's answer and source chunk, and has to pass the same filters (its round
trip searches the reworded text, so a copy that no longer finds its chunk is dropped and counted).
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from serve.prompts import cloze_question
from tune.qgen import QAItem
from tune.spans import split_sentences

_STOP = frozenset("a an the and or but of to in on for at by with from as is are was were be been being it its "
                  "this that these those which who whom whose what when where why how not no than then there "
                  "their they he she his her we our you your has have had do does did will would can could "
                  "should may might must shall into over under after before during about".split())
_CLOZE = re.compile(r"^Complete the sentence: (.*) \.\.\.$", re.S)


def _drop_words(text: str, rng: random.Random, share: float, keep_last: int) -> str:
    """Drop about `share` of the droppable words: lower-case, not a stop word, no digit, not among the last
    `keep_last` words. Capitalised words (names) and numbers stay."""
    words = text.split()
    out = []
    for i, w in enumerate(words):
        bare = w.strip(".,;:!?\"'()[]")
        droppable = (i < len(words) - keep_last and bare.islower() and bare.lower() not in _STOP
                     and not any(ch.isdigit() for ch in bare) and len(bare) > 2)
        if droppable and rng.random() < share:
            continue
        out.append(w)
    return " ".join(out)


def _background(item: QAItem, key: str, rng: random.Random) -> str | None:
    """Another sentence of the item's chunk that does not hold its answer, or None."""
    answer = item.answer.lower()
    others = [s for s in split_sentences(item.chunk.text)
              if answer not in s.lower() and key[:40].lower() not in s.lower() and 5 <= len(s.split()) <= 40]
    return rng.choice(others) if others else None


def reword(item: QAItem, rng: random.Random, share: float = 0.25) -> QAItem | None:
    """A reworded copy of `item` (rule "reworded"), or None for a short item or when nothing was dropped."""
    m = _CLOZE.match(item.question) if item.style == "cloze" else None
    key = m.group(1) if m else item.question
    if len(key.split()) < 8:
        return None  # too short to lose words and still say what it asks
    keep_last = 3 if m else 2  # a cloze blank depends on the words right before it; a question on its "?" end
    dropped = _drop_words(key, rng, share, keep_last)
    if dropped == key or len(dropped.split()) < 4:
        return None
    background = _background(item, key, rng) if rng.random() < 0.5 else None
    if background:
        joined = f"{dropped[0].upper()}{dropped[1:]}" if m else dropped  # a cloze prefix now starts a sentence
        dropped = f"{background.rstrip()} {joined}"
    question = cloze_question(dropped) if m else dropped
    return replace(item, question=question, rule="reworded", search_query=dropped)


def reworded_items(items: list[QAItem], share_of_items: float, rng: random.Random) -> list[QAItem]:
    """Reworded copies of about `share_of_items` of `items` (those where a copy is possible)."""
    out = []
    for item in items:
        if rng.random() < share_of_items:
            copy = reword(item, rng)
            if copy is not None:
                out.append(copy)
    return out
