"""Answers longer than a name or a number: question kinds (generate/question_kind.py), the rule-made why / how /
yes-no / what-is items (tune/forms.py), and the draft gate that keeps degenerate answers from the reader
(generate/prompts.degenerate, serve/drafts.py). No model needed."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from generate.prompts import degenerate
from ingest.types import Chunk
from serve.drafts import DraftGate
from generate.question_kind import coarse_kind, question_kind
from tune.forms import condition_items, form_items, purpose_items, reason_items, section_items, task_items, yes_no_items
from tune.inversion import invert
from tune.spans import split_sentences


@pytest.mark.parametrize("question, kind", [
    ("Who approves travel requests?", "who"),
    ("In what year did London die?", "when"),
    ("Where does Billy put Mrs. Frisby?", "where"),
    ("How many days of annual leave do I get?", "quantity"),
    ("What is the name of Roy's partner?", "what"),
    ("The Normans were in what country?", "what"),
    ("Why does Roy become depressed?", "reason"),
    ("What is the use of search option in the smart hub?", "reason"),
    ("How do I activate Voice Guide?", "procedure"),
    ("I want to get information about weather. How can I do that?", "procedure"),
    ("Please explain the procedure how to edit recording time?", "procedure"),
    ("How does Roy travel to Nome?", "describe"),
    ("What is Remote Support?", "describe"),
    ("Is there a relationship between homocysteine and vitiligo?", "yes_no"),
    ("MR arthrography of the shoulder: do we need local anesthesia?", "yes_no"),
    ("Syncope during bathing in infants, a pediatric form of water-induced urticaria?", "yes_no"),
    ("Complete the sentence: The office opens at ...", "cloze"),
])
def test_question_kind(question, kind):
    assert question_kind(question) == kind


def test_coarse_kinds():
    assert coarse_kind("Who leads the team?") == "factoid"
    assert coarse_kind("Can I set the clock manually?") == "explain"
    assert coarse_kind("Complete the sentence: Leave is ...") == "cloze"


def test_invert_uses_auxiliaries_and_do_support():
    assert invert("The meeting was moved to Friday") == "Was the meeting moved to Friday?"
    assert invert("He left the castle at dawn", "why") == "Why did he leave the castle at dawn?"
    assert invert("The committee approves the budget", "why") == "Why does the committee approve the budget?"
    # a plural noun that could be a verb stays in the subject when a verb follows
    assert invert("The two forces finally met near the lake") == "Did the two forces finally meet near the lake?"
    assert invert("The duration did not differ in the 2 groups", drop_negation=True) == \
        "Did the duration differ in the 2 groups?"
    assert invert("This function is available only if") is None  # a cut-off sentence
    assert invert("Afterwards they eat breakfast at a diner") is None  # an adverb, not a subject


def test_reason_purpose_and_manner_answers_follow_the_question():
    [item] = reason_items("The race was cancelled because the roads were flooded.", set())
    assert (item.question, item.answer, item.form) == ("Why was the race cancelled?",
                                                       "Because the roads were flooded.", "reason")
    assert item.evidence in "The race was cancelled because the roads were flooded."
    [item] = purpose_items("He sold the farm to pay his debts.", set())
    assert (item.question, item.answer) == ("Why did he sell the farm?", "To pay his debts.")
    [item] = purpose_items("Cestids can swim by undulating their bodies.", {"Cestids"})
    assert (item.question, item.answer, item.form) == ("How can Cestids swim?", "By undulating their bodies.",
                                                       "manner")
    assert purpose_items("They agreed to help the rats.", set()) == []  # a complement, not a purpose
    for complement in ["Forced periodic change leads people to choose weaker passwords.",  # what the object does
                       "Watching TV for a long time may cause the panel to generate heat.",
                       "This debate has proved difficult to resolve because sampling is biased.",  # an adjective's
                       "The Scottish Parliament has the ability to alter income tax.",  # a noun's
                       "The runbook explains what to do when gateways stop reporting.",
                       "It was the first time the theory had been shown to be less correct."]:
        assert purpose_items(complement, set()) == [], complement
    assert reason_items("Some HDMI cables and devices may not be compatible due to different specifications.",
                        set()) == []  # was 'Why does some HDMI cable and devices may not be compatible?'


def test_yes_no_items_say_yes_no_and_the_sentence():
    items = yes_no_items("The TV turns off after 4 hours.", set(), {"duration": ["2 hours"], "person": ["Ann"]},
                         random.Random(0).choice)
    assert [(i.question, i.answer) for i in items] == [
        ("Does the TV turn off after 4 hours?", "Yes. The TV turns off after 4 hours."),
        ("Does the TV turn off after 2 hours?", "No. The TV turns off after 4 hours.")]
    [neg] = yes_no_items("These buttons are not available in Canada.", set(), {}, random.choice)
    assert (neg.question, neg.answer) == ("Are these buttons available in Canada?",
                                          "No. These buttons are not available in Canada.")


@pytest.mark.parametrize("heading, questions", [
    ("Changing the clock", ["How do I change the clock?"]),
    ("Request a Laptop in Stockroom", ["How do I request a Laptop in Stockroom?"]),
    ("Installing and running an app", ["How do I install and run an app?"]),
    ("Configure advanced sound settings", ["How do I configure advanced sound settings?"]),
    ("Disk Encryption", ["What is Disk Encryption?"]),  # a verb that is also a noun, before a noun: a name
    ("Support and Returns", []), ("Level C2: Confidential", []), ("Step 1: Identify the Gateway", []),
    ("Report sickness", []), ("Training", []), ("What you do", []), ("Sick pay", []),
])
def test_a_section_question_comes_only_from_a_clear_task_or_name_heading(heading, questions):
    text = "Open Settings and select Picture. Choose the mode that suits the room. Dynamic is the brightest."
    chunk = Chunk("c1", "doc.md", "Doc", f"Doc > {heading}", None, 0, text, "h", ())
    assert [i.question for i in section_items(chunk, split_sentences(text))][:1] == questions


def test_no_yes_no_item_from_an_instruction_or_a_condition():
    assert yes_no_items("Keep your manager updated on day three if you are still unwell.", set(), {},
                        random.choice) == []  # was 'Did keep your manager update on day three ...?'
    assert yes_no_items("If all concurrent VPN licences are in use, wait five minutes.", set(), {},
                        random.choice) == []  # was 'Are all concurrent VPN licences in use?' 'Yes.'
    assert yes_no_items("Ten rejected MFA push notifications within one hour trigger an alert.", set(), {},
                        random.choice) == []  # was 'Did Ten reject MFA push notifications ...?'
    [item] = yes_no_items("Managers approve requests within two days.", set(), {}, random.choice)
    assert item.question == "Do managers approve requests within two days?"


def test_task_and_section_items_answer_with_steps():
    [item] = task_items("To reset the TV, select Reset in the Support menu.", set())
    assert (item.question, item.answer) == ("How do I reset the TV?", "Select Reset in the Support menu.")
    text = "Open Settings and select Picture. Choose the mode that suits the room. Dynamic is the brightest."
    chunk = Chunk("c1", "manual.md", "TV Manual", "TV Manual > Choosing a picture mode", None, 0, text, "h", ())
    first, other = section_items(chunk, split_sentences(text))
    assert first.question == "How do I choose a picture mode?" and first.answer == text
    assert other.question.endswith(" choose a picture mode?") and other.question != first.question
    assert other.answer == ("Yes. " + text if other.question.startswith("Can I") else text)
    wordings = {section_items(replace(chunk, section=f"TV Manual > {h}"), split_sentences(text))[1].question
                for h in ("Choosing a picture mode", "Choose a picture mode", "Choosing  a picture mode",
                          "Choosing a Picture mode", "Choosing the picture mode", "Choosing picture modes")}
    assert any(q.startswith("Can I") for q in wordings) and any(q.startswith("How to") for q in wordings)
    later = Chunk("c2", "manual.md", "TV Manual", chunk.section, None, 1, "and then press Select. " + text, "h", ())
    assert section_items(later, split_sentences(later.text)) == []
    items = form_items(chunk, random.Random(0).choice)
    assert items[0].form == "section" and len(items) <= 4
    assert all(i.evidence in text for i in items)


@pytest.mark.parametrize("answer, reason", [
    ("[2]", "empty"), (" . [1]", "empty"), ("the castle?", "question"),
    ("Why do treatment and management vary in efficacy?", "question"),
    ("treatment and management vary in efficacy [1]", "echo"),
    ("14 days [1]", None), ("Yes. The TV turns off. [1]", None), ("The documents do not contain the answer.", None),
    ('The document you provided contains the answer to the question "Why do treatment and management vary?"',
     "echo"), ("Do they vary in the trials that the authors of the first study ran last year?", "question"),
    ("The passage provided contains the answer to this question: treatment and management vary", "echo"),
    ("The answer to this question is: No, treatment and management do not vary in efficacy", None),
    ("The answer to this question is:", "echo"),
    ("The document you requested is: [4] (trials.md — Trials > Efficacy)\nThe document you requested is", "echo"),
    ("The document is: [1] (benjamin-button-film.md — Benjamin Button (film))", "echo"),  # the label's own words
    ("The document you requested is: [1] (trials.md — Trials)\nThe document you requested is: [2] (cohort.md — Co",
     "echo"),  # the last label cut off where the token limit stopped the draft
    ("The document you requested is: [4] (hr/handbook.md — Handbook)\nThe document you requested is: [1] (hr/empl",
     "echo"),
    ("The answer is:\n[1] (trials.md — Trials > Efficacy)\nDoses differ between the trials.", None),
])
def test_degenerate(answer, reason):
    assert degenerate(answer, "Why do treatment and management vary in efficacy?") == reason


def test_draft_gate_holds_a_draft_that_only_talks_about_the_documents():
    question = "How many cases were confirmed on the ship?"
    gate = DraftGate(question, hold_all=False)
    draft = ['The document', ' you provided', ' contains the answer', ' to the question', ' "How many cases',
             ' were confirmed', ' on the ship?"']
    assert [gate.feed(p) for p in draft] == [""] * len(draft)  # never shown: no word of its own
    assert gate.finish()[1] == "echo"


def test_draft_gate_holds_a_copied_passage_label():
    gate = DraftGate("How many days of paid holiday do I get?", hold_all=False)
    draft = ["The document", " you requested", " is:", " [4]", " (hr/employee", "-handbook.md", " —", " Employee",
             " Handbook", " >", " Holidays", " and Annual Leave)", "\nThe document", " you requested"]
    assert [gate.feed(p) for p in draft] == [""] * len(draft)  # the label's words are not the answer's own
    assert gate.finish()[1] == "echo"
    gate = DraftGate("Who approves travel?", hold_all=False)  # past 12 words it would stream, but '(' is open
    words = "The head of the finance team (see the travel policy of the staff handbook) approves it".split()
    shown = [gate.feed(" " + w if i else w) for i, w in enumerate(words)]
    assert "".join(shown[:13]) == "" and shown[13] == " ".join(words[:14]) and "".join(shown) == " ".join(words)


def test_draft_gate_does_not_take_a_marker_being_written_for_a_word():
    gate = DraftGate("How to change the current time and set the clock manually?", hold_all=False)
    draft = ["Set", " the", " clock", " manually", " [", "3", "]"]
    assert [gate.feed(p) for p in draft] == [""] * len(draft)  # '[3' is no word of its own
    assert gate.finish() == ("Set the clock manually [3]", "echo")
    gate = DraftGate("How do I set the clock manually?", hold_all=False)
    draft = ["Set", " the", " clock", " manu", "ally", " [", "1", "]"]  # 'manu' is no word of its own either
    assert [gate.feed(p) for p in draft] == [""] * len(draft) and gate.finish()[1] == "echo"


def test_draft_gate_streams_an_answer_and_holds_a_degenerate_draft():
    gate = DraftGate("How do I reset the TV?", hold_all=False)
    shown = [gate.feed(p) for p in ["Open Settings", ". Select", " Reset", "."]]
    assert shown == ["", "Open Settings. Select", " Reset", "."]  # held until its first sentence ended, then streams
    assert gate.finish() == ("Open Settings. Select Reset.", None) and gate.rest() == ""
    gate = DraftGate("Who approves travel?", hold_all=False)  # a short running first sentence may still end in '?'
    pieces = ["The", " head", " of", " finance", " approves", " it", " now", ". It", " takes"]
    assert [gate.feed(p) for p in pieces] == [""] * 7 + ["The head of finance approves it now. It", " takes"]
    gate = DraftGate("Where is the castle?", hold_all=False)
    assert [gate.feed(p) for p in ["The", " castle", " by", " the", " old", " river", "?"]] == [""] * 7
    assert gate.finish() == ("The castle by the old river?", "question")
    gate = DraftGate("Who approves travel?", hold_all=False)  # past 12 words a '?' no longer makes it a question
    words = "The head of the finance team approves every trip abroad before anyone books a flight".split()
    shown = [gate.feed(" " + w if i else w) for i, w in enumerate(words)]
    assert "".join(shown[:13]) == "" and "".join(shown) == " ".join(words)
    assert degenerate(" ".join(words) + "?", "Who approves travel?") is None
    gate = DraftGate("What is the castle called?", hold_all=False)
    assert "".join(gate.feed(p) for p in ["the ", "castle", "?"]) == ""
    assert gate.finish() == ("the castle?", "question")
    gate = DraftGate("Why was the castle called Arnwood?", hold_all=False)  # opens like a question: held to the end
    assert "".join(gate.feed(p) for p in ["Who", " knows", " why", " people", " named", " it", "?"]) == ""
    assert gate.finish()[1] == "question"
    gate = DraftGate("Who leads?", hold_all=True)  # a try the second look may replace: nothing until judged
    assert "".join(gate.feed(p) for p in ["Anna Berg leads. ", "She is new."]) == ""
    assert gate.finish() == ("Anna Berg leads. She is new.", None) and gate.rest() == "Anna Berg leads. She is new."
    gate = DraftGate("On what date did Fernhollow 4.2 ship?", hold_all=False)  # a version number is no sentence end
    assert "".join(gate.feed(p) for p in ["Question: On what date did Fernhollow 4.", "2.1 (24 March) ship?"]) == ""
    assert gate.finish()[1] == "question"
    gate = DraftGate("Is the office open on Sunday?", hold_all=False)
    assert gate.feed("No") == "" and gate.finish() == ("No", None)  # a bare No is an answer


def test_time_items_and_plural_subjects():
    from tune.forms import time_items

    [item] = time_items("After the castle burned, Edward fled to France.", {"Edward"})
    assert (item.question, item.answer, item.form) == ("When did Edward flee to France?", "After the castle burned.",
                                                       "time")
    # misreadings that make nothing: the connective inside the subject, a time phrase, an embedded question, a
    # verb past the connective, a main clause that already has its date, a question too long to be asked
    for wrong in ["Quotes issued before 1 February 2026 are honoured at the old prices.",
                  "A study was conducted with nurses 8 months after the new rota began.",
                  "Pitt increased British resources in the colonies at a time when France was unwilling to act.",
                  "The app can predict when a field will drop below its refill point.",
                  "The prevalence of retinal haemorrhages after convulsions is not well established.",
                  "The oil crisis began in October 1973 when the members of the group declared an embargo.",
                  "He meets Mildred once more towards the end of the novel.",
                  "This document describes how reviews work and what happens after ratings are agreed."]:
        assert time_items(wrong, set()) == [], wrong
    [item] = time_items("The privileged account locks after 5 failed attempts and is never unlocked automatically.",
                        set())
    assert item.answer == "After 5 failed attempts."  # the clause ends where the next verb phrase starts
    [item] = reason_items("The rats agree to help Mrs. Frisby because her late husband helped them.", {"Frisby"})
    assert item.question == "Why do the rats agree to help Mrs. Frisby?"
    [item] = purpose_items("Roy Glenister and Dextry travel to Nome to work their gold claim.", {"Dextry", "Nome"})
    assert (item.question, item.answer) == ("Why do Roy Glenister and Dextry travel to Nome?", "To work their gold claim.")


@pytest.mark.parametrize("sentence, question, answer", [
    ("If a receipt is lost, complete the Missing Receipt Declaration in Ledgerly.",
     "What should I do if a receipt is lost?", "Complete the Missing Receipt Declaration in Ledgerly."),
    ("If you cannot reach your manager, call the People team on extension 2140.",
     "What should I do if I cannot reach my manager?", "Call the People team on extension 2140."),
    ("When you press the button while watching TV, a control bar appears on the screen.",
     "What happens when I press the button while watching TV?", "A control bar appears on the screen."),
    ("If the signal reception is weak, screen distortion may be visible.",  # a noun-verb, then 'may': no instruction
     "What happens if the signal reception is weak?", "Screen distortion may be visible."),
    ("When the fighting was over, the survivors fled north.", "What happened when the fighting was over?",
     "The survivors fled north."),
    ("When considering computational problems, a problem instance is a string.", None, None),  # no subject
    ("If the assessment identifies a need, such as a special chair, contact the People team.", None, None),
])
def test_condition_items_ask_what_happens_or_what_to_do(sentence, question, answer):
    items = condition_items(sentence, set())
    assert [(i.question, i.answer, i.form) for i in items] == ([(question, answer, "condition")] if question else [])

