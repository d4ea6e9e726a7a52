"""What of a draft answer may reach the reader while it is generated (the answer engine streams through this).

A draft that another try may replace (the focused passages' answer, before the second look) is held back whole
until it is judged. The last try is held only until it has shown it is an answer, then streams: it must say a
word of its own (generate.prompts.own_words: a content word not in the question and not about the task, so it is
neither empty, nor the question said back, nor 'the document contains the answer to ...') and finish its first
sentence without a question mark, or run on past the length where a question mark would still make it a
question (generate.prompts.may_ask: 12 words, not opening like a question). A draft that never shows that is
judged whole at the end. So a degenerate draft ("[2]", "the castle by the river?", the question said back;
generate.prompts.degenerate) never reaches the reader in any mode, and the gate and the judge cannot disagree.

    gate = DraftGate(question, hold_all=False)
    for piece in pieces: out = gate.feed(piece)   # text that may be shown now ('' while held)
    text, reason = gate.finish()                 # the whole draft and why it is degenerate (None: it is fine)
    rest = gate.rest()                           # what is still held, to show when the draft is fine
"""

from __future__ import annotations

import re

from generate.prompts import FIRST_SENTENCE_END, degenerate, may_ask, own_words, strip_markers

_OPEN_MARKER = re.compile(r"\[[\d,\s]*$")
_WORD_ENDS = frozenset(" \t\n.,;:!?)]\"'")


def _last_space(text: str) -> int:
    return max(text.rfind(" "), text.rfind("\n"), 0)


class DraftGate:
    def __init__(self, question: str, hold_all: bool) -> None:
        self.question = question
        self.hold_all = hold_all
        self.pending = ""  # generated, not shown
        self.shown = ""  # shown already
        self.open = False  # the draft has shown it is an answer: pieces pass straight through

    def feed(self, piece: str) -> str:
        if self.open:
            self.shown += piece
            return piece
        self.pending += piece
        if self.hold_all or not self._is_answer(self.pending):
            return ""
        self.open = True
        return self.rest()

    def _is_answer(self, text: str) -> bool:
        # judged on whole words: '[3' is a marker still being written and 'manu' may become 'manually'
        whole = text[-1:] in _WORD_ENDS
        plain = strip_markers(_OPEN_MARKER.sub("", text if whole else text[:_last_space(text)]))
        if plain.count("(") > plain.count(")"):
            return False  # a parenthesis being written may be a passage's label ('(hr/handbook.md — ...'): wait
        if not own_words(plain, self.question):
            return False  # nothing of its own yet: maybe empty, the question said back, or talk about the task
        end = FIRST_SENTENCE_END.search(plain)
        if end and whole and end.end() == len(plain) and plain[end.start() - 1:end.start()].isdigit():
            end = None  # a digit's stop where the text so far ends may go on ('Fernhollow 4.' -> '4.2.1 ship?')
        if end:
            return plain[end.start()] != "?" or not may_ask(plain[:end.start()])
        return not may_ask(plain)  # still running: past where a '?' could make it a question

    def finish(self) -> tuple[str, str | None]:
        """(the whole draft, why it is degenerate or None). A draft that already streamed is not degenerate."""
        whole = (self.shown + self.pending).strip()
        return whole, None if self.open else degenerate(whole, self.question)

    def rest(self) -> str:
        """What is still held (all of it once the draft is judged fine); it counts as shown from here on."""
        out, self.pending = self.pending, ""
        self.shown += out
        return out
