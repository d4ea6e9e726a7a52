"""`ragtune synth`'s parts that need no index: span extraction, the question rules, sentence endings, the filters,
and the model teachers' prompts and output parsing (with a fake generator)."""

from __future__ import annotations

import pytest

from generate.prompts import cloze_question
from tune.filters import (FILTERS, Deduper, FilterStats, answer_in_question, answer_length_ok, jaccard, normalize,
                          supported)
from tune.qgen import ExtractTeacher, find_spans, make_question, split_sentences
from tune.spans import sentence_ending
from tune.teachers import LocalTeacher, parse_teacher_output

# ---------------------------------------------------------------------------------------------------------------
# spans and question rules on hand-made sentences


def _spans(sentence: str, known=()) -> dict[str, str]:
    return {s.text: s.kind for s in find_spans(sentence, known)}


def test_span_extraction_finds_specific_facts():
    s = _spans("Expense claims above EUR 5,000 must be approved by the CFO within 10 working days, before 09:30 on "
               "12 March 2026; use the FIN-AP queue and the \"Urgent\" flag.")
    assert s["EUR 5,000"] == "amount"
    assert s["CFO"] == "role"
    assert s["10 working days"] == "duration"
    assert s["09:30"] == "time"
    assert s["12 March 2026"] == "date"
    assert s["FIN-AP"] == "code"
    assert s["Urgent"] == "quoted"

    s = _spans("Tobiah Marwick confirmed that the LG-2 stock moved to the Osier Hall, which holds 250 sensors and "
               "40% of spares.")
    assert s["Tobiah Marwick"] == "person"
    assert s["Osier Hall"] == "name"
    assert s["LG-2"] == "code"
    assert s["250 sensors"] == "count"
    assert s["40%"] == "percent"

    # a capital at the start of a sentence is not a name; a name used as a modifier is skipped; unknown calendars
    s = _spans("Employees of Mars passed five bills on 5 Outcrop 6678 under a Martian statesman.")
    assert "Employees" not in s and "Martian" not in s
    assert s["5 Outcrop 6678"] == "date" and s["five bills"] == "count" and s["Mars"] == "name"
    # pieces of longer tokens and adjectives are not spans
    s = _spans("The current build is BWI-Win 26.2 for a rolling 12-month period.")
    assert "Win 26.2" not in s and not any("month" in t for t in s)


@pytest.mark.parametrize("sentence, answer, question, rule", [
    ("The one-time allowance for setting up a home office is EUR 400.", "EUR 400",
     "How much is the one-time allowance for setting up a home office?", "inverted"),
    ("The next all-hands meeting will be held on Thursday 21 January 2027 at 15:00 in the Osier Hall.",
     "Thursday 21 January 2027", "When will the next all-hands meeting be held at 15:00 in the Osier Hall?",
     "inverted"),
    ("New starters should arrive at Tarrowgate reception at 09:15 on their first day.", "09:15",
     "At what time should new starters arrive at Tarrowgate reception on their first day?", "inverted"),
    ("The induction session is held in the Alder Room.", "Alder Room", "Where is the induction session held?",
     "inverted"),
    ("The probation period is 6 months.", "6 months", "How many months is the probation period?", "inverted"),
    ("Expense claims above EUR 5,000 must be approved by the CFO.", "CFO",
     "Who must expense claims above EUR 5,000 be approved by?", "inverted"),
    ("Tobiah Marwick presented the new roadmap to the council.", "Tobiah Marwick",
     "Who presented the new roadmap to the council?", "subject"),
    ("Brindlewick pays full salary for up to 20 working days of sickness absence.", "20 working days",
     "Brindlewick pays full salary for up to how many working days of sickness absence?", "in_situ"),
    ("Gym discount: up to 25% off membership through the Verdantis Select plan.", "Verdantis Select",
     "Gym discount: up to 25% off membership through what plan?", "in_situ"),
    ("The lease was renewed in 2025 for a further five years.", "2025",
     "In what year was the lease renewed for a further five years?", "inverted"),
])
def test_wh_question_rules(sentence, answer, question, rule):
    span = next(s for s in find_spans(sentence, {"Brindlewick", "Tarrowgate"}) if s.text == answer)
    q, r = make_question(sentence, span, "Topic", {"Brindlewick", "Tarrowgate"})
    assert (q, r) == (question, rule)


def test_question_rules_pronoun_topic_label_and_definitions():
    s = "It holds 14 days of data for a fully loaded gateway."
    span = next(x for x in find_spans(s) if x.kind == "duration")
    q, _ = make_question(s, span, "LG-2 Gateway Specification, Backhaul")
    assert q == "LG-2 Gateway Specification, Backhaul: It holds how many days of data for a fully loaded gateway?"
    s = "Current client version: Wayfarer Connect 5.3.1"
    span = next(x for x in find_spans(s) if x.text == "Wayfarer Connect 5.3.1")
    assert make_question(s, span, "VPN How-To") == ("VPN How-To: What is the current client version?", "label")
    s = "POST /v4/alerts/rules: create an alert rule"  # a definition list entry: no sensible wh-question
    span = next(x for x in find_spans(s) if x.kind == "code")
    assert span.text == "POST /v4/alerts/rules" and make_question(s, span, "API")[0] == ""


def test_split_sentences_bullets_wraps_and_abbreviations():
    text = ("# Heading\nBrindlewick pays a pension through Ashcombe Mutual. You are\nenrolled in month one, e.g. in "
            "March. Dr. Vale approves it.\n- First bullet: EUR 20\n* Second bullet\n| a | b |\nShort line\nNext line")
    sents = split_sentences(text)
    assert sents == ["Brindlewick pays a pension through Ashcombe Mutual.", "You are enrolled in month one, e.g. in "
                     "March.", "Dr. Vale approves it.", "First bullet: EUR 20", "Second bullet", "Short line",
                     "Next line"]


def test_extract_teacher_items_cloze_and_question():
    class C:  # a chunk-like object
        id, doc, title, section, page, text, groups = "c1", "d.md", "Leave Policy", "Leave Policy", None, (
            "Every new employee at Brindlewick receives 27 days of paid holiday each calendar year. "
            "The probation period is 6 months. Ashcombe Mutual has run the pension fund since 2019 for every "
            "employee who joined the company in any of its offices."), ()

    items = ExtractTeacher().items(C)
    by = {(i.style, i.answer): i for i in items}
    cloze = by[("cloze", "27 days of paid holiday each calendar year")]  # the span and the rest of its sentence
    assert cloze.question == cloze_question("Every new employee at Brindlewick receives")
    assert cloze.search_query == "Every new employee at Brindlewick receives"  # the round trip searches the prefix
    assert by[("question", "6 months")].question == "How many months is the probation period?"
    assert ("cloze", "6 months") not in by  # the prefix "The probation period is" has fewer than 6 words
    assert ("question", "2019") in by and not any(i.style == "cloze" and i.answer.startswith("2019") for i in items)
    assert all(supported(i.support, C.text) for i in items)  # a form item: on its evidence
    # the sentence without a span-based cloze item gets one for its final phrase
    ending = [i for i in items if i.rule == "ending"]
    assert [(i.search_query, i.answer) for i in ending] == [
        ("Ashcombe Mutual has run the pension fund since 2019 for every employee who joined the company in any of",
         "its offices")]
    capped = ExtractTeacher(max_endings_per_chunk=0).items(C)
    assert not [i for i in capped if i.rule == "ending"] and len(capped) == len(items) - 1  # only endings go


@pytest.mark.parametrize("sentence, expected", [
    ("Hughes, notorious for his ability to draw audiences into a web of intrigue, was the perfect partner for Smith.",
     ("Hughes, notorious for his ability to draw audiences into a web of intrigue, was the perfect partner for",
      "Smith")),
    ("'Comet Day', observed on February 15, commemorates the triumphant functioning of the GBM Telescope.",
     ("'Comet Day', observed on February 15, commemorates the triumphant functioning of", "the GBM Telescope")),
    ("The company was founded in Wyoming and has its main office in Phoenix, United States.",
     ("The company was founded in Wyoming and has its main office in Phoenix,", "United States")),
    ("Though the series opened to mixed reviews, it quickly picked up steam and now enjoys it.", None),  # "it"
    ("The team met in the spring to talk about it.", None),  # no cut leaves a content ending
    ("Short sentence about Smith.", None),  # the prefix would be under 6 words
])
def test_sentence_ending(sentence, expected):
    assert sentence_ending(sentence) == expected


# ---------------------------------------------------------------------------------------------------------------
# filters


def test_filters():
    assert normalize("  EUR\u00a05,000 \u2013 “x”") == 'eur 5,000 - "x"'
    assert supported("EUR 5,000", "claims above EUR  5,000\nneed approval")
    assert not supported("EUR 6,000", "claims above EUR 5,000")
    assert not supported("BW-4", "band BW-40 pays more") and supported("Centurion Inc.", "Centurion Inc. is big")
    assert answer_in_question("How many days is 27 days?", "27 days")
    assert not answer_in_question("What is band BW-40?", "BW-4")
    assert answer_length_ok("EUR 400") and not answer_length_ok("x") and not answer_length_ok("word " * 20)
    d = Deduper(0.85)
    d.add("How many days of paid holiday do employees get each year?", "c1")
    assert d.is_duplicate("how many days of paid  holiday do employees get each year?", "c2")  # same text anywhere
    near = "How many days of paid holiday do all employees get each year?"
    assert jaccard(near, "How many days of paid holiday do employees get each year?") >= 0.85
    assert d.is_duplicate(near, "c1")
    assert not d.is_duplicate(near, "c2")  # near-duplicates only count within one chunk
    assert not d.is_duplicate("How long is the probation period?", "c1")
    st = FilterStats()
    assert set(st.removed) == set(FILTERS)


def test_parse_teacher_output_and_local_question():
    out = parse_teacher_output('```json\n{"question": "What is the rate?", "answer": "EUR 0.32"}\nnot json\n'
                               '{"question": "When?", "answer": 2026}\n```')
    assert out == [("What is the rate?", "EUR 0.32"), ("", ""), ("When?", "2026")]
    assert parse_teacher_output('[{"question": "Q?", "answer": "A"}]') == [("Q?", "A")]

    class Gen:
        name = "stub"

        def stream(self, messages, **kw):
            assert messages[-1]["content"].endswith("Sentence: The probation period is 6 months.\n"
                                                    "Answer: 6 months\nQuestion?")
            yield "Question: How long is the probation period?\nExtra text"

    class C:
        id, doc, title, section, page, groups = "c", "d.md", "T", "T", None, ()
        text = "The probation period is 6 months."

    items = LocalTeacher(Gen(), ExtractTeacher()).items(C)
    assert [(i.question, i.answer, i.rule) for i in items] == [("How long is the probation period?", "6 months",
                                                                 "local")]
