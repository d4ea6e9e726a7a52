"""The development suite (evals/suite.py) end to end on a tiny set with a tiny random model: every stage runs,
a missing set is reported, a second run reuses what did not change, the table has every column."""

from __future__ import annotations

import json

import pytest

from evals.suite import SuiteConfig, main, parse_overrides, run_suite
from tune.synth import SynthConfig

DOCS = {
    "travel.md": "# Travel Policy\n\nHotels are reimbursed up to EUR 135 per night. The mileage rate is EUR 0.32 per "
                 "km because fuel prices rose in 2025. To book a flight, use the Wayfinder portal.\n",
    "leave.md": "# Leave Policy\n\nEmployees get 27 days of paid holiday each year. Unused days expire on 31 March. "
                "Managers approve leave requests in the HR portal.\n",
}
QUESTIONS = [
    {"id": "q1", "question": "How much is reimbursed per night for hotels?", "answers": ["EUR 135"], "doc": "travel.md"},
    {"id": "q2", "question": "Why is the mileage rate EUR 0.32 per km?", "answers": ["fuel prices rose"],
     "doc": "travel.md"},
    {"id": "q3", "question": "Who owns the canteen?", "answers": [], "doc": "leave.md"},
]


@pytest.fixture
def shared(tmp_path):
    folder = tmp_path / "shared" / "squad2"
    (folder / "docs").mkdir(parents=True)
    for name, text in DOCS.items():
        (folder / "docs" / name).write_text(text)
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return tmp_path / "shared"


def test_suite_runs_every_stage_and_reports_missing_sets(shared, tmp_path, tiny_dir, model_cache_dir):
    config = SuiteConfig(shared=shared, sets=("squad2", "narrativeqa"), out=tmp_path / "out", steps=1, limit=3,
                         max_new_tokens=6, model=str(tiny_dir), synth={"distractors": 1})
    summary = run_suite(config)
    rows = {r["set"]: r for r in summary["sets"]}
    assert "not found" in rows["narrativeqa"]["missing"]
    row = rows["squad2"]
    assert row["n"] == 3 and set(row["results"]) == {"base", "rag", "hybrid"} and row["reused"] == []
    for mode in ("rag", "hybrid"):
        assert {"contains", "f1", "refusal_acc", "degenerate", "degenerate_drafts"} <= set(row["results"][mode])
        assert row["results"][mode]["degenerate"] == 0.0  # the engine never shows a degenerate draft
    kinds = row["by_kind"]["hybrid"]
    assert kinds["factoid"]["f1"]["n"] == 1 and kinds["explain"]["f1"]["n"] == 1 and "reason" in kinds
    table = (tmp_path / "out" / "suite.md").read_text()
    assert "| squad2 | 3 | hybrid |" in table and "missing:" in table and "factoid" in table
    assert (tmp_path / "out" / "suite.png").stat().st_size > 1000
    card = json.loads((tmp_path / "out" / "squad2" / "ws" / "datasets" / "suite" / "card.json").read_text())
    assert card["config"]["distractors"] == 1  # the override reached synth

    again = run_suite(SuiteConfig(**{**config.__dict__, "sets": ("squad2",), "modes": "rag"}))
    assert again["sets"][0]["reused"] == ["synth", "tune"] and set(again["sets"][0]["results"]) == {"rag"}


def test_suite_overrides_and_flags_are_checked(capsys):
    assert parse_overrides(["max_forms_per_chunk=0", "drop_oracle=0.2", "styles=question",
                            "max_endings_per_chunk=2", "teacher_model=none"], SynthConfig) == {
        "max_forms_per_chunk": 0, "drop_oracle": 0.2, "styles": ("question",), "max_endings_per_chunk": 2,
        "teacher_model": None}
    with pytest.raises(ValueError, match="KEY a field of SynthConfig"):
        parse_overrides(["no_such=1"], SynthConfig)
    assert main(["--sets", "squad2,nope"]) == 2
    assert "unknown nope" in capsys.readouterr().err
    assert main(["--synth", "bogus=1"]) == 2
