"""Focused passages: sentence spans, and the window around the sentence most like the question (real embedder)."""

from __future__ import annotations

import pytest

from generate.prompts import cloze_prefix, cloze_question
from ingest.sentences import is_abbreviation
import retrieve.focus as focus
from retrieve.focus import focus_passages, sentence_spans, term_scores
from tune.spans import split_sentences

HANDBOOK = ("Brindlewick was founded in 1998 in Hallowmere. The canteen opens at 8 am on weekdays. "
            "Parking permits are issued by Facilities. Every employee receives 27 days of paid holiday per year. "
            "Unused holiday can be carried over until March. The office dog is called Biscuit. "
            "Fire drills take place twice a year.")


def _sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def test_sentence_spans_keep_abbreviations_quotes_and_lines_together():
    text = 'Dr. Smith joined in 2020. He said "It works." Then e.g. this one! A line\n- bullet one\n- bullet two.'
    assert _sentences(text) == ["Dr. Smith joined in 2020.", 'He said "It works."', "Then e.g. this one!",
                                "A line", "- bullet one", "- bullet two."]
    assert _sentences("  ") == [] and _sentences("No end") == ["No end"]
    assert cloze_prefix(cloze_question("Every employee receives")) == "Every employee receives"
    assert cloze_prefix("Complete the sentence: Every employee receives …") == "Every employee receives"
    assert cloze_prefix("How many days?") == "How many days?"


def test_both_sentence_splitters_share_one_abbreviation_rule():
    """tune's training sentences and the focused passages cut the same text at the same places."""
    assert is_abbreviation("e.g") and is_abbreviation("(i.e") and is_abbreviation("Jan") and is_abbreviation("J")
    assert is_abbreviation("Corp") and is_abbreviation("al") and not is_abbreviation("noon")
    text = ("Smith et al. met J. Doe of Acme Corp. on Jan. 5 (e.g. at noon). The deal closed in March. "
            "It was signed by Dr. Lee.")
    expected = ["Smith et al. met J. Doe of Acme Corp. on Jan. 5 (e.g. at noon).", "The deal closed in March.",
                "It was signed by Dr. Lee."]
    assert [text[a:b] for a, b in sentence_spans(text)] == expected
    assert split_sentences(text) == expected


def test_focus_keeps_the_best_sentence_and_its_neighbours(embedder):
    short = "Holiday is 27 days. It is paid."
    out = focus_passages(embedder, "How many days of paid holiday does an employee get?", [HANDBOOK, short], 1)
    assert out[0] == ("Parking permits are issued by Facilities. Every employee receives 27 days of paid holiday "
                      "per year. Unused holiday can be carried over until March.")
    assert out[1] == short  # 2 sentences <= 2 * window + 1: nothing to cut
    cloze = focus_passages(embedder, cloze_prefix(cloze_question("The office dog is called")), [HANDBOOK], 0)
    assert cloze == ["The office dog is called Biscuit."]
    assert focus_passages(embedder, "dog", [HANDBOOK], -1) == [HANDBOOK]
    assert focus_passages(embedder, "dog", [], 1) == []


PROBES = ("The C3 comes in three lengths. - C3-0410: 40 cm probe with four sensing rings at 10, 20, 30 and 40 cm.\n"
          "- C3-0610: 60 cm probe with six sensing rings, intended for orchards.\n- C3-0910: 90 cm probe with nine rings.")


def test_the_question_s_rare_terms_pick_the_sentence_the_embedder_alone_misses(embedder, monkeypatch):
    question = "What part number do I order for the 60 cm C3 probe?"
    dense_pick = "- C3-0410: 40 cm probe with four sensing rings at 10, 20, 30 and 40 cm."
    term_pick = "- C3-0610: 60 cm probe with six sensing rings, intended for orchards."
    assert focus_passages(embedder, question, [PROBES], 0) == [f"{dense_pick}\n{term_pick}"]  # adjacent: one run
    far = PROBES.replace("\n- C3-0610", "\nEach probe ships with a cap.\n- C3-0610")
    assert focus_passages(embedder, question, [far], 0) == [f"{dense_pick} … {term_pick}"]
    monkeypatch.setattr(focus, "TERM_WEIGHT", 0.0)  # the embedder alone reads every probe line as the same
    assert focus_passages(embedder, question, [PROBES], 0) == [dense_pick]


def test_term_scores_weigh_rare_terms_over_common_ones():
    scores = term_scores("band BW-4 top", ["Band BW-3 starts here.", "Band BW-4 tops out at 70,000.", "Nothing."])
    assert scores[1] > scores[0] > scores[2] == 0.0 and scores[1] <= 1.0
    # 'bw-4' is held by one sentence, 'band' by two: the rare term counts for more
    assert term_scores("BW-4", ["BW-4 here", "BW-4 again"]).tolist() == [1.0, 1.0]
    assert term_scores("the of and", ["the end"]).tolist() == [0.0]  # no terms: nothing to weigh


def test_focus_recall_compares_whole_chunks_one_sentence_and_the_default_focus(built_index, capsys):
    from evals.focus_recall import focus_recall, main
    from evals.questions import DEFAULT_QUESTIONS, load_jsonl

    questions = load_jsonl(DEFAULT_QUESTIONS)[:12]
    result = focus_recall(built_index[1], questions)
    (whole, whole_n), (one, one_n), (default, default_n) = result.values()
    assert 0.0 < one <= default <= whole <= 1.0  # the default keeps the embedder's sentence, and maybe one more
    assert one_n == 1.0 and 1.0 <= default_n <= 2.0 < whole_n
    main(["--workspace", str(built_index[1]), "--limit", "3"])
    assert "| default focus |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: question file .*missing.jsonl does not exist"):
        main(["--workspace", str(built_index[1]), "--questions", str(built_index[1] / "missing.jsonl")])
