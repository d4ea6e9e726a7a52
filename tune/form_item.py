"""The item every question form makes (tune/forms.py, tune/forms_howto.py): the question, the answer shown to the
model, and the verbatim chunk text it rests on."""

from __future__ import annotations

MAX_EVIDENCE_WORDS = 60  # longer evidence makes an answer nobody reads to the end


def sentence_case(text: str) -> str:
    """'the castle burned,' -> 'The castle burned.'"""
    text = text.strip().rstrip(",;:")
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


class FormItem:
    """A proposed explanatory item: the question, the answer shown to the model, and the chunk text it rests on."""

    __slots__ = ("question", "answer", "evidence", "form")

    def __init__(self, question: str, answer: str, evidence: str, form: str) -> None:
        self.question, self.answer, self.evidence, self.form = question, answer, evidence, form
