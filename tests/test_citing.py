"""serve/citing: a cut-off clause answering a how / why question is completed to its sentence's end
(complete_sentence), a one-value answer is written as the passage writes it (quote_value) and taken from the sentence
that fits the question (better_value); nothing else changes."""

from __future__ import annotations

import pytest

from generate.citations import Citation
from serve.citing import better_value, cite, complete_sentence, last_look, quote_value


def _sources(*texts: str) -> list[Citation]:
    return [Citation(n, f"doc{n}.md", "", None, f"c{n}", t) for n, t in enumerate(texts, start=1)]


SOURCES = _sources("- Capital expenditure budget: EUR 3.4 million\n- Operating budget: EUR 20 million",
                   "The per diem abroad is EUR 55. Hotels in Hallowmere cost up to EUR 135 per night.",
                   "You may work up to 10 keep-in-touch days. A standard laptop is charged at EUR 1,150.")


@pytest.mark.parametrize("answer, quoted", [
    ("3.4 million [1]", "EUR 3.4 million [1]"),  # the currency the model dropped
    ("55 euros [2]", "EUR 55 [2]"),  # a currency written another way
    ("1150 EUR [3].", "EUR 1,150 [3]"),  # digit groups and order as the document has them
    ("10 [3]", "10 keep-in-touch days [3]"),  # the counted thing
    ("3.4 million", "EUR 3.4 million"),  # no marker: any passage
])
def test_a_value_is_written_as_the_passage_writes_it(answer: str, quoted: str) -> None:
    out = quote_value(answer, SOURCES)
    assert out is not None and out[0] == quoted


@pytest.mark.parametrize("answer", [
    "EUR 3.4 million [1]",  # already the passage's words
    "10 weeks [3]",  # a word the passage's value lacks: another value, not a spelling of this one
    "32 EUR [1]",  # a number no passage has
    "The capital budget is 3.4 million [1].",  # a sentence, not a value
    "Hallowmere [2]",  # no number
])
def test_anything_else_stays_as_it_is(answer: str) -> None:
    assert quote_value(answer, SOURCES) is None


def test_two_ways_of_writing_the_same_number_leave_it_alone() -> None:
    both = _sources("The fee is EUR 40 per visit.", "A taxi costs up to 40 minutes of waiting.")
    assert quote_value("40", both) is None
    assert quote_value("40 euros", both)[0] == "EUR 40"  # the answer's word settles which one it is


def test_a_value_the_cited_passage_lacks_is_looked_for_in_the_others_and_the_marker_moves() -> None:
    text = quote_value("3.4 million [2]", SOURCES)[0]
    assert text == "EUR 3.4 million [2]"  # as the reader model cited it
    warnings: list[str] = []
    text, citations = cite(text, SOURCES, warnings)
    assert text == "EUR 3.4 million [1]" and [c.n for c in citations] == [1] and citations[0].inferred
    assert warnings == ["citation [2] moved to [1]: the answer's words are in passage [1], not [2]"]


ACCESS = _sources("Temporary access can last up to 90 days and is removed automatically at the end date.",
                  "The security duty officer can grant time-limited access for up to 8 hours through Gatehouse.",
                  "Part CRV-C3-0410 is the 40 cm probe. Request access through form IT-7.")
LONGEST = "What is the longest period temporary access can be granted for?"


def test_a_value_from_a_sentence_that_fits_the_question_less_gives_way() -> None:
    assert better_value(LONGEST, "8 hours [2]", ACCESS) == ("90 days [1]", "8 hours", 1)
    assert better_value(LONGEST, "8 hours", ACCESS) == ("90 days [1]", "8 hours", 1)  # no marker: cited now


@pytest.mark.parametrize("question, answer", [
    (LONGEST, "90 days [1]"),  # already the best sentence's value
    ("How long can the security duty officer grant access through Gatehouse?", "8 hours [2]"),  # its own sentence
    (LONGEST, "The officer grants it for up to 8 hours [2]"),  # a sentence, not a value
    (LONGEST, "12 weeks [1]"),  # no passage has it: the support check's business, not this one's
    ("Which part is the probe with temporary access for 90 days?", "CRV-C3-0410 [3]"),  # codes stay
    ("Is temporary access longer than 90 days?", "8 hours [2]"),  # the only rival is a value the question names
])
def test_a_value_stays_when_no_other_sentence_clearly_fits_better(question: str, answer: str) -> None:
    assert better_value(question, answer, ACCESS) is None


def test_two_values_in_the_better_sentence_leave_the_answer_alone() -> None:
    two = _sources("Temporary access lasts 30 days, or up to 90 days with approval.",
                   "The duty officer can grant access for up to 8 hours.")
    assert better_value(LONGEST, "8 hours [2]", two) is None


MANUAL = _sources("Using the sleep timer Settings General System Manager Time Sleep Timer Try Now You can use this "
                  "function to shut off the TV after a pre-set period of time.",
                  "Ambient light detection. When the surroundings get dark, the TV screen becomes darker. Response "
                  "time is within 1 hour for SEV-2, next working day for SEV-3.")


@pytest.mark.parametrize("question, answer, completed", [
    ("How do I use the sleep timer?", "Settings General System Manager Time Sleep Timer [1]",
     "Settings General System Manager Time Sleep Timer Try Now You can use this function to shut off the TV after a "
     "pre-set period of time. [1]"),
    ("Why does the screen get darker?", "When the surroundings get dark [2]",
     "When the surroundings get dark, the TV screen becomes darker. [2]"),
    ("Why does the screen get darker?", "when the surroundings get dark.", "when the surroundings get dark, the TV "
     "screen becomes darker."),  # no marker, a full stop the passage does not have
])
def test_a_cut_off_clause_gets_the_rest_of_its_sentence(question: str, answer: str, completed: str) -> None:
    warnings: list[str] = []
    assert last_look(question, answer, MANUAL, warnings) == completed
    assert warnings and "completed to the end of its sentence" in warnings[0]


@pytest.mark.parametrize("question, answer", [
    ("When does the TV turn off?", "Settings General System Manager Time Sleep Timer [1]"),  # a fact question
    ("How fast must a SEV-2 ticket be answered?", "within 1 hour [2]"),  # a value is complete as it is
    ("How do I use the sleep timer?", "Sleep [1]"),  # one word is no clause
    ("How do I use the sleep timer?", "When the surroundings get dark, the TV screen becomes darker. [2]"),  # whole
    ("How do I use the sleep timer?", "Press the Sleep button [1]"),  # not the passage's words
    ("Why does the screen get darker?", "the surroundings get da [2]"),  # words, not parts of words
])
def test_anything_but_a_cut_off_clause_of_an_explain_question_stays(question: str, answer: str) -> None:
    assert complete_sentence(question, answer, MANUAL) is None
