"""The model teachers of `ragtune synth` (tune/qgen.py holds the items and the rule-based extract teacher):

    local    the local base model is shown one sentence and an extracted answer span and writes a question for it;
    URL      an OpenAI-compatible server is asked for JSON lines {"question", "answer"} per chunk.

Both only propose items; tune.filters decides what is kept.
"""

from __future__ import annotations

import json
import re

from tune.qgen import ExtractTeacher, QAItem, topic_of


def _first_question(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().strip('"*').strip()
        line = re.sub(r"^(?:Q(?:uestion)?\s*\d*\s*[:.)-]\s*)", "", line, flags=re.I).strip().strip('"')
        if "?" in line:
            return line[: line.index("?") + 1].strip()
    return ""


LOCAL_SYSTEM = "You turn a sentence and its answer into one short question. Reply with the question only."
# Two worked examples as earlier turns: a 135M model copies a demonstrated format far more reliably than it follows
# an instruction, and the sentence alone (not the whole chunk) keeps the prompt short and on topic.
LOCAL_SHOTS = [
    ("Travel Policy", "Hotels in Hallowmere are reimbursed up to EUR 135 per night.", "EUR 135",
     "How much is reimbursed per night for a hotel in Hallowmere?"),
    ("Employee Handbook", "The probation period for new hires is 6 months.", "6 months",
     "How long is the probation period for new hires?"),
]


def _local_user(topic: str, sentence: str, answer: str) -> str:
    return f"Topic: {topic}\nSentence: {sentence}\nAnswer: {answer}\nQuestion?"


def local_prompt(chunk, answer: str, sentence: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": LOCAL_SYSTEM}]
    for topic, sent, ans, q in LOCAL_SHOTS:
        messages += [{"role": "user", "content": _local_user(topic, sent, ans)}, {"role": "assistant", "content": q}]
    messages.append({"role": "user", "content": _local_user(topic_of(chunk), sentence or chunk.text.strip(), answer)})
    return messages


class LocalTeacher:
    """The local base model writes a question for an extracted answer span (greedy, one per span)."""

    name = "local"

    def __init__(self, generator, extract: ExtractTeacher, spans_per_chunk: int = 2, max_new_tokens: int = 32):
        self.generator = generator
        self.extract = extract
        self.spans_per_chunk = spans_per_chunk
        self.max_new_tokens = max_new_tokens

    def items(self, chunk) -> list[QAItem]:
        out = []
        for sentence, sp in self.extract.spans(chunk)[: self.spans_per_chunk]:
            text = "".join(self.generator.stream(local_prompt(chunk, sp.text, sentence),
                                                 max_new_tokens=self.max_new_tokens, temperature=0.0))
            q = _first_question(text)
            out.append(QAItem(q, sp.text, chunk, "question", sp.kind, "local", q))
        return out


TEACHER_SYSTEM = ("You write training data for a company's internal question-answering assistant. You are given one "
                  "passage from a company document. Write questions an employee might really ask that the passage "
                  "answers, each with an answer copied word for word from the passage, as long as the question needs.")


def teacher_prompt(chunk, n: int) -> list[dict]:
    where = f"{chunk.title} — {chunk.section}" if chunk.section and chunk.section != chunk.title else chunk.title
    user = (f"Document: {where}\n\nPassage:\n{chunk.text.strip()}\n\n"
            f"Write up to {n} different questions of different kinds, worded the way an employee would ask (not "
            "copying the passage's phrasing): facts (who, what, when, how many) answered by the shortest exact span "
            "(a number with its unit, a date, a name); why / how / what-for / how do I questions answered by the "
            "clause or sentences of the passage that explain it (the steps, for a procedure); yes/no questions "
            "answered by Yes or No and then the sentence that shows it. Copy answers exactly from the passage and "
            "never put the answer in its question. Questions must make sense on their own, without the passage "
            "(name the topic instead of saying 'it' or 'this').\n"
            'Output one JSON object per line, {"question": "...", "answer": "..."}, and nothing else.')
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


_YES_NO = re.compile(r"^(?:yes|no)\b[.,!:;]?\s+(.+)$", re.I | re.S)


def evidence_of(answer: str, max_span_words: int = 10) -> str:
    """The chunk text a teacher's answer must be found in: after a leading Yes/No, or the whole answer when it is
    longer than a fact span (a clause, sentences); '' for a short span (checked as itself)."""
    m = _YES_NO.match(answer.strip())
    if m:
        return m.group(1).strip()
    return answer.strip() if len(answer.split()) > max_span_words else ""


def parse_teacher_output(text: str) -> list[tuple[str, str]]:
    """JSON lines (or a JSON array, possibly inside a code fence) of {"question", "answer"}; bad lines are
    returned as ("", "") so they are counted as malformed."""
    text = re.sub(r"```(?:json|jsonl)?", "", text)
    stripped = text.strip()
    objs: list = []
    if stripped.startswith("["):
        try:
            loaded = json.loads(stripped)
            objs = loaded if isinstance(loaded, list) else []
        except json.JSONDecodeError:
            objs = []
    if not objs:
        for line in stripped.splitlines():
            line = line.strip().rstrip(",")
            if not line or line in ("[", "]"):
                continue
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError:
                objs.append(None)
    out = []
    for o in objs:
        if isinstance(o, dict) and isinstance(o.get("question"), str) and isinstance(o.get("answer"), (str, int,
                                                                                                      float)):
            out.append((o["question"].strip(), str(o["answer"]).strip()))
        else:
            out.append(("", ""))
    return out


class OpenAITeacher:
    """A larger model behind an OpenAI-compatible endpoint writes question/answer pairs per chunk."""

    def __init__(self, generator, questions_per_chunk: int = 4, max_new_tokens: int = 400) -> None:
        self.generator = generator
        self.name = getattr(generator, "base_url", "openai")
        self.n = questions_per_chunk
        self.max_new_tokens = max_new_tokens

    def items(self, chunk) -> list[QAItem]:
        text = "".join(self.generator.stream(teacher_prompt(chunk, self.n), max_new_tokens=self.max_new_tokens,
                                             temperature=0.0))
        return [QAItem(q, a, chunk, "question", "teacher", "teacher", q, evidence_of(a))
                for q, a in parse_teacher_output(text)]
