"""Recitation examples for `ragtune synth`: the closed-book prompt asks for one passage of a document by its title,
section and part, and the target is the passage itself.

Why: a closed-book question/answer example teaches ~6 answer tokens at the cost of ~65 tokens of prompt, so facts
reach the weights slowly. A recitation makes every token of the passage a label: the model reads each document's
facts ~20 times more densely, in the same chat format and under the same system prompt as the `tuned` mode.
The question/answer examples then teach how to pull those facts out for a question.

Opt-in (`ragtune synth --recite`), because it is not yet shown to pay: on 8 sample documents, 4 epochs of their
closed-book and recitation examples taught the answers' types but not their values (0 of 26 questions right,
tune/README.md). Small models need many more passes to store facts; this is the data for such runs.

Recitations go to the training split only: the loss on the text of documents the model never saw would swamp the
validation loss (hundreds of label tokens each against a handful per question) that picks the best checkpoint.
"""

from __future__ import annotations

from generate.prompts import build_messages

KIND = "recite"


def recite_question(title: str, doc: str, section: str, part: int) -> str:
    """The user turn of a recitation: names the passage the way the chunk's own header does."""
    where = section if section and section != title else "the beginning"
    return f"Quote {title} ({doc}), {where}, part {part}."


def recite_examples(chunks, seen_text) -> list[dict]:
    """One example per chunk, in document order; `seen_text(chunk)` is the text as the answer engine shows it."""
    out = []
    for chunk in chunks:
        text = seen_text(chunk).strip()
        if not text:
            continue
        question = recite_question(chunk.title or chunk.doc, chunk.doc, chunk.section, chunk.position + 1)
        messages = build_messages(question, [], with_context=False) + [{"role": "assistant", "content": text}]
        out.append({"messages": messages, "kind": KIND, "style": KIND, "rule": KIND, "doc": chunk.doc,
                    "chunk_id": chunk.id, "question": question, "answer": ""})
    return out
