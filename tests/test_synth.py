"""`ragtune synth` on an index: RAFT examples, filter counts and the card, recitations, access groups, the split,
the dataset on disk and the CLI contract. Uses the real embedder and index (conftest), no generator model. The
parts that need no index (spans, question rules, filters, teachers' parsing) are in tests/test_qgen.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generate.prompts import REFUSAL, SYSTEM_CLOSED_BOOK, SYSTEM_WITH_CONTEXT, answer_with_citation, neutralize
from tune.filters import FILTERS, normalize, supported
from tune.synth import SynthConfig, synthesize

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------------
# the sample corpus: one dataset shared by several tests


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory, built_index):
    _, ws, _ = built_index
    copy = tmp_path_factory.mktemp("synth") / "ws"
    shutil.copytree(ws, copy)
    return copy


@pytest.fixture(scope="module")
def sample_searcher(sample_ws, embedder):
    from retrieve import Searcher

    return Searcher(sample_ws, embedder=embedder)


@pytest.fixture(scope="module")
def sample_run(sample_ws, sample_searcher):
    (sample_ws / "datasets" / ".tmp-default-killed").mkdir(parents=True)  # as a killed run leaves it
    report = synthesize(SynthConfig(sample_ws, limit=40, seed=3, recite=True), searcher=sample_searcher,
                        progress=False)
    return report, _read(report.dataset)


def _read(folder: Path) -> dict:
    rows = {}
    for split in ("train", "val"):
        rows[split] = [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]
    rows["card"] = json.loads((folder / "card.json").read_text())
    return rows


def _blocks(user: str) -> dict[int, tuple[str, str]]:
    """The numbered documents of a prompt: n -> (header, text)."""
    body = user.split("Documents:\n", 1)[1].rsplit("\n\nQuestion: ", 1)[0]
    out = {}
    for m in re.finditer(r"^\[(\d+)\] \((.*?)\)\n(.*?)(?=\n\n\[\d+\] \(|\Z)", body, re.S | re.M):
        out[int(m.group(1))] = (m.group(2), m.group(3))
    return out


def test_examples_are_raft_shaped_and_cite_the_source(sample_run, sample_searcher):
    report, data = sample_run
    chunks = {c.id: c for c in sample_searcher.generation.chunks}
    rows = [r for r in data["train"] + data["val"] if r["kind"] != "recite"]  # recitations: their own test
    assert report.train == len(data["train"]) > 50 and report.val == len(data["val"]) > 0
    kinds = {r["kind"] for r in rows}
    assert kinds == {"raft", "raft_no_oracle", "closed_book"} and {r["style"] for r in rows} == {"cloze", "question"}
    for r in rows:
        source = chunks[r["chunk_id"]]
        assert r["doc"] == source.doc
        support = r["evidence"] or r["answer"]  # a form item's answer ("Yes. ...") rests on its evidence
        assert normalize(support) in normalize(source.text)  # the answer (or its evidence) is a span of the source
        msgs = r["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
        target = msgs[-1]["content"]
        if r["kind"] == "closed_book":
            assert msgs[0]["content"] == SYSTEM_CLOSED_BOOK and msgs[1]["content"] == r["question"]
            assert target == r["answer"]
            continue
        assert msgs[0]["content"] == SYSTEM_WITH_CONTEXT
        assert msgs[1]["content"].endswith(f"\n\nQuestion: {r['question']}")
        blocks = _blocks(msgs[1]["content"])
        seen = neutralize(source.text)[0]
        texts = {n: t for n, (_, t) in blocks.items()}
        if r["kind"] == "raft":
            assert sorted(blocks) == [1, 2, 3]  # source + 2 distractors, numbered from 1
            n = next(n for n, t in texts.items() if t == seen)
            assert blocks[n][0].startswith(source.doc)
            assert target == answer_with_citation(r["answer"], n)
            others = [t for k, t in texts.items() if k != n]
        else:
            assert sorted(blocks) == [1, 2] and seen not in texts.values()
            assert target == REFUSAL
            others = list(texts.values())
        for t in others:  # distractors never hold the answer
            assert not supported(support, t)
    # the source's position is shuffled, not always the same
    positions = {next(n for n, (_, t) in _blocks(r["messages"][1]["content"]).items()
                      if t == neutralize(chunks[r["chunk_id"]].text)[0]) for r in rows if r["kind"] == "raft"}
    assert len(positions) == 3
    # no-oracle share near the configured 0.1
    raft = sum(r["kind"] == "raft" for r in rows)
    no_oracle = sum(r["kind"] == "raft_no_oracle" for r in rows)
    assert 0.03 < no_oracle / (raft + no_oracle) < 0.2


def test_filter_counts_add_up_and_card(sample_run):
    report, data = sample_run
    card = data["card"]
    stats = card["filter_stats"]
    for s in [stats["total"], *stats["by_style"].values(), *stats["by_rule"].values(),
              *stats["by_span_kind"].values()]:
        assert s["candidates"] == s["kept"] + sum(s["removed"].values())
    assert sum(s["candidates"] for s in stats["by_style"].values()) == stats["total"]["candidates"]
    assert report.filtered == card["filtered"] == stats["total"]["removed"]
    assert set(report.filtered) == set(FILTERS) and report.filtered["duplicate"] + report.filtered["round_trip"] > 0
    rows = data["train"] + data["val"]
    assert sum(r["kind"] == "closed_book" for r in rows) == report.kept
    assert sum(r["kind"] in ("raft", "raft_no_oracle") for r in rows) == report.kept
    assert card["counts"]["train"] == report.train and card["counts"]["val"] == report.val
    for rule, s in stats["by_rule"].items():  # each row names the rule that made its item: a RAFT + a closed-book row
        assert sum(r["rule"] == rule for r in rows) == 2 * s["kept"]
    folder = report.dataset
    digest = hashlib.sha256((folder / "train.jsonl").read_bytes() + b"\0" + (folder / "val.jsonl").read_bytes())
    assert card["content_hash"] == report.content_hash == digest.hexdigest()
    assert card["source_index"]["generation"].startswith("gen-") and card["teacher"] == "extract"
    md = (folder / "card.md").read_text()
    assert "## Filters" in md and md.count("**Q:**") == 5 and report.content_hash[:16] in md
    assert sorted(p.name for p in folder.parent.iterdir()) == ["default"]  # the killed run's staging is gone


def test_recitations_quote_every_training_chunk(sample_run, sample_searcher):
    report, data = sample_run
    assert not any(r["kind"] == "recite" for r in data["val"])  # their loss would swamp validation
    recites = [r for r in data["train"] if r["kind"] == "recite"]
    sources = {r["chunk_id"] for r in data["train"] if r["kind"] != "recite"}
    recited = {r["chunk_id"] for r in recites}
    assert sources <= recited and len(recites) == len(recited) == report.by_kind["recite"] <= 40  # --limit 40
    chunks = {c.id: c for c in sample_searcher.generation.chunks}
    train_docs = {r["doc"] for r in data["train"] if r["kind"] != "recite"}
    for r in recites:
        chunk = chunks[r["chunk_id"]]
        system, user, target = (m["content"] for m in r["messages"])
        assert system == SYSTEM_CLOSED_BOOK and target == neutralize(chunk.text)[0].strip()
        assert chunk.doc in train_docs and not chunk.groups
        assert chunk.doc in user and f"part {chunk.position + 1}." in user
    assert len({r["messages"][1]["content"] for r in recites}) == len(recites)  # every passage asked for uniquely
    card_md = (report.dataset / "card.md").read_text()
    assert "| recite |" in card_md and "- `recite` (train only)" in card_md


def test_split_by_document(sample_run):
    report, data = sample_run
    train_docs = {r["doc"] for r in data["train"]}
    val_docs = {r["doc"] for r in data["val"]}
    assert val_docs and train_docs and not train_docs & val_docs
    assert sorted(val_docs) == report.val_docs == data["card"]["counts"]["val_documents"]


def test_restricted_documents_left_out_by_default(sample_run, sample_searcher):
    report, data = sample_run
    restricted = {c.doc for c in sample_searcher.generation.chunks if c.groups}
    assert restricted and report.restricted_excluded > 0
    for r in data["train"] + data["val"]:
        assert r["doc"] not in restricted
        if r["kind"] not in ("closed_book", "recite"):
            assert not any(h.split(" — ")[0] in restricted for h, _ in _blocks(r["messages"][1]["content"]).values())


# ---------------------------------------------------------------------------------------------------------------
# a tiny corpus: access groups, reproducibility, teachers, the CLI

TINY = {
    "policies/leave.md": "# Leave Policy\n\nEvery employee receives 27 days of paid holiday per calendar year. "
                         "The probation period for new hires is 6 months.\n\n## Sickness\n\nA doctor's note is needed "
                         "from day 5 of any sickness absence. Employees must phone their manager before 09:30 on "
                         "the first day of absence.\n",
    "it/vpn.md": "# VPN Guide\n\nThe company VPN client is Wayfarer Connect 5.3.1, installed on every laptop. "
                 "Connection problems are handled through the IT-HELP queue in Gatehouse. The Hallowmere gateway "
                 "accepts connections on port 4443 and restarts every Sunday at 03:00.\n",
    "travel/travel.md": "# Travel Policy\n\nThe mileage allowance for driving your own car is EUR 0.32 per "
                        "kilometre. Hotels in Hallowmere are reimbursed up to EUR 135 per night. All trips are "
                        "booked through Halcyra Travel Partners at least 14 days before departure.\n",
    "office/sites.md": "# Office Sites\n\nThe Tarrowgate headquarters opened on 3 March 2014 and hosts 240 "
                       "employees. The quarterly all-hands meeting is held in the Osier Hall. Visitors sign in at "
                       "the east reception, which opens at 08:00.\n",
    "hr/salary.md": "---\ngroups: [hr]\n---\n# Salary Bands\n\nBand BW-4 pays between EUR 52,000 and EUR 70,000 per "
                    "year. Salary reviews take effect on 1 April 2026 for every band.\n",
    "finance/budget.md": "---\ngroups: [finance]\n---\n# Budget\n\nThe FY2026 marketing budget is EUR 410,000, "
                         "approved by the CFO on 12 January 2026.\n",
}


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory, embedder):
    from retrieve import build_index

    root = tmp_path_factory.mktemp("tiny")
    for rel, text in TINY.items():
        path = root / "docs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    build_index(root / "docs", root / "ws", embedder=embedder)
    return root / "ws"


@pytest.fixture()
def tiny_searcher(tiny_ws, embedder):
    from retrieve import Searcher

    return Searcher(tiny_ws, embedder=embedder)


def test_include_groups_is_explicit(tiny_ws, tiny_searcher):
    default = synthesize(SynthConfig(tiny_ws, name="plain"), searcher=tiny_searcher, progress=False)
    docs = {r["doc"] for split in ("train", "val") for r in _read(default.dataset)[split]}
    assert docs and not docs & {"hr/salary.md", "finance/budget.md"} and default.restricted_excluded == 2
    assert default.warnings == []

    hr = synthesize(SynthConfig(tiny_ws, name="hr", include_groups=("hr",)), searcher=tiny_searcher,
                    progress=False)
    data = _read(hr.dataset)
    rows = data["train"] + data["val"]
    assert "hr/salary.md" in {r["doc"] for r in rows}
    assert "finance/budget.md" not in {r["doc"] for r in rows}
    for r in rows:  # finance stays out of the prompts too, as a distractor
        assert "EUR 410,000" not in r["messages"][1]["content"]
    assert any("weights cannot enforce access rules" in w for w in hr.warnings)
    assert data["card"]["restricted"]["included_groups"] == ["hr"]


def test_reproducible_with_seed_and_refuse_or_answer(tiny_ws, tiny_searcher):
    a = synthesize(SynthConfig(tiny_ws, name="a", seed=7), searcher=tiny_searcher, progress=False)
    b = synthesize(SynthConfig(tiny_ws, name="b", seed=7), searcher=tiny_searcher, progress=False)
    assert a.content_hash == b.content_hash
    assert (a.dataset / "train.jsonl").read_bytes() == (b.dataset / "train.jsonl").read_bytes()
    c = synthesize(SynthConfig(tiny_ws, name="c", seed=8), searcher=tiny_searcher, progress=False)
    assert c.content_hash != a.content_hash

    memo = synthesize(SynthConfig(tiny_ws, name="memo", drop_oracle=1.0, no_oracle_target="answer",
                                  closed_book=False, recite=False), searcher=tiny_searcher, progress=False)
    rows = _read(memo.dataset)["train"] + _read(memo.dataset)["val"]
    assert rows and {r["kind"] for r in rows} == {"raft_no_oracle"}
    assert all(r["messages"][-1]["content"] == r["answer"] for r in rows)
    with pytest.raises(ValueError):
        SynthConfig(tiny_ws, no_oracle_target="maybe").check()


def test_facts_recipe_trains_every_closed_book_question_and_validates_recall(tiny_ws, tiny_searcher):
    raft = _read(synthesize(SynthConfig(tiny_ws, name="r"), searcher=tiny_searcher, progress=False).dataset)
    report = synthesize(SynthConfig(tiny_ws, name="facts", recipe="facts"), searcher=tiny_searcher, progress=False)
    data = _read(report.dataset)
    train, val = data["train"], data["val"]
    assert train and {(r["kind"], r["style"]) for r in train} == {("closed_book", "question")}
    assert all(len(r["messages"]) == 3 and r["messages"][-1]["content"] == r["answer"] for r in train)
    # the same questions as the raft recipe's closed-book ones, but from every document, none held out
    expected = {r["question"] for r in raft["train"] + raft["val"]
                if (r["kind"], r["style"]) == ("closed_book", "question")}
    assert {r["question"] for r in train} == expected
    # validation: a recall sample, copies of training examples
    assert 1 <= len(val) < len(train) and all(r in train for r in val)
    card = data["card"]
    assert card["recipe"] == "facts" and "recall" in card["validation"] and card["counts"]["val_documents"] == []
    assert "Recipe `facts`" in (report.dataset / "card.md").read_text()
    assert "hr/salary.md" not in {r["doc"] for r in train}  # restricted documents stay out here too
    with pytest.raises(ValueError, match="closed-book"):
        SynthConfig(tiny_ws, recipe="facts", closed_book=False).check()
    with pytest.raises(ValueError, match="--recipe"):
        SynthConfig(tiny_ws, recipe="memorise").check()
    # --facts-styles question,cloze: the cloze items' closed-book examples join the same questions
    both = _read(synthesize(SynthConfig(tiny_ws, name="facts2", recipe="facts", facts_styles=("question", "cloze")),
                            searcher=tiny_searcher, progress=False).dataset)
    cloze = {r["question"] for r in raft["train"] + raft["val"] if (r["kind"], r["style"]) == ("closed_book", "cloze")}
    assert cloze and {r["question"] for r in both["train"]} == expected | cloze
    assert {r["style"] for r in both["train"]} == {"question", "cloze"} and all(r in both["train"] for r in both["val"])
    assert "closed-book styles: question, cloze" in (tiny_ws / "datasets" / "facts2" / "card.md").read_text()
    with pytest.raises(ValueError, match="--facts-styles"):
        SynthConfig(tiny_ws, recipe="facts", facts_styles=("essay",)).check()


def test_url_teacher_answers_must_be_spans(tiny_ws, tiny_searcher):
    class StubServer:  # what OpenAIGenerator would stream back from a teacher model
        name = "stub"
        base_url = "http://teacher.invalid/v1"

        def stream(self, messages, **kw):
            text = messages[-1]["content"]
            assert '{"question": "...", "answer": "..."}' in text
            if "27 days" in text:
                yield ('{"question": "How many days of paid holiday does an employee get per year?", '
                       '"answer": "27 days"}\n'
                       '{"question": "How long is probation?", "answer": "six months"}\n'
                       '{"question": "Is the probation period for new hires three months?", '
                       '"answer": "No. The probation period for new hires is 6 months."}\n'
                       'Sure! Here are more questions:\n')
            else:
                yield '{"question": "What is this?", "answer": "nothing"}\n'

    report = synthesize(SynthConfig(tiny_ws, name="url", teacher="http://teacher.invalid/v1"),
                        searcher=tiny_searcher, progress=False, generator=StubServer())
    assert report.teacher == "http://teacher.invalid/v1"
    assert report.filtered["malformed"] >= 1 and report.filtered["unsupported"] >= 2  # "six months", "nothing"
    rows = _read(report.dataset)["train"] + _read(report.dataset)["val"]
    # a yes/no answer is checked on the sentence after its "No."
    assert {r["answer"] for r in rows} == {"27 days", "No. The probation period for new hires is 6 months."}
    assert report.kept == 2  # and no recitations by default
    assert "`recite`" not in (report.dataset / "card.md").read_text()  # the card describes only what it holds


def test_url_teacher_against_a_real_openai_compatible_server(tiny_ws, tiny_searcher, tmp_path, built_index,
                                                           local_generator, embedder):
    """`--teacher URL` end to end over HTTP: ragtune's own /v1 serving the local model is the teacher server (the
    official openai client, streaming, the key's auth). The 135M model rarely writes valid JSON lines, so what
    it sends back is parsed and counted by the filters like any teacher's output."""
    from generate.remote import OpenAIGenerator
    from tests.conftest import served_copy

    with served_copy(tmp_path, built_index, generator=local_generator, embedder=embedder,
                     users={"synth": ("pw-synth-1", (), False)}) as served:
        streams = []  # each call's GenerationStream, for its stats

        class Recording(OpenAIGenerator):
            def stream(self, *args, **kwargs):
                streams.append(super().stream(*args, **kwargs))
                return streams[-1]

        teacher = Recording(f"{served.url}/v1", served.keys["synth"], "ragtune-base")
        report = synthesize(SynthConfig(tiny_ws, name="url-real", teacher=f"{served.url}/v1", limit=1,
                                        teacher_model="ragtune-base"), searcher=tiny_searcher, progress=False,
                            generator=teacher)
    assert report.teacher == f"{served.url}/v1"
    assert streams[-1].stats is not None and streams[-1].stats.new_tokens > 0  # the server answered
    assert report.candidates >= 1  # what came back was parsed into items (or counted as malformed lines)
    assert report.kept + sum(report.filtered.values()) == report.candidates


def test_forms_add_longer_answers_that_rest_on_the_chunk(tiny_ws, tiny_searcher):
    from tune.filters import normalize

    report = synthesize(SynthConfig(tiny_ws, name="forms"), searcher=tiny_searcher, progress=False)
    rows = _read(report.dataset)["train"] + _read(report.dataset)["val"]
    forms = [r for r in rows if r["rule"] == "form"]
    assert forms and {r["question_kind"] for r in forms} <= {"yes_no", "reason", "procedure", "describe", "what",
                                                               "who", "when"}  # 'when' answered by its clause
    chunks = {c.id: c.text for c in tiny_searcher.generation.chunks}
    for r in forms:
        assert r["evidence"] and normalize(r["evidence"]) in normalize(chunks[r["chunk_id"]])
        assert r["answer"] != r["evidence"] or len(r["answer"].split()) > 3  # a clause or a sentence, not a span
    assert any(r["answer"].startswith(("Yes. ", "No. ")) for r in forms)
    card = json.loads((report.dataset / "card.json").read_text())
    assert card["counts"]["by_question_kind"]["yes_no"] >= 1
    plain = synthesize(SynthConfig(tiny_ws, name="facts-only", max_forms_per_chunk=0), searcher=tiny_searcher,
                       progress=False)
    assert not [r for r in _read(plain.dataset)["train"] + _read(plain.dataset)["val"] if r["rule"] == "form"]


def test_cli_json_contract(tiny_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("datasets"))
    env = {**os.environ, "RAGTUNE_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "ragtune_cli", "synth", "--limit", "3", "--json", "--name", "cli",
                           "--distractors", "1", "--seed", "1"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["dataset"]) == ws / "datasets" / "cli"
    assert out["train"] == len((ws / "datasets" / "cli" / "train.jsonl").read_text().splitlines())
    assert out["val"] == len((ws / "datasets" / "cli" / "val.jsonl").read_text().splitlines())
    assert set(out["filtered"]) == set(FILTERS) and out["chunks_used"] == 3
    bad = subprocess.run([sys.executable, "-m", "ragtune_cli", "synth", "--no-oracle-target", "maybe"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no-oracle-target" in bad.stderr
