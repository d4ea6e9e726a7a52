"""`ragtune eval`: every metric on hand-made cases, seeded reproducibility with a fake engine over a real small
index, the Fictional Knowledge loader, the report folder, and one end-to-end CLI run with the real default model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from evals import metrics as M
from evals.questions import (article_title, check_workspace_for, fk_docs_dir, index_articles,
                             load_fictional_knowledge, load_jsonl, sample)
from evals.run import EvalConfig, aggregate_mode, aggregate_retrieval, run_eval
from generate.citations import Citation
from generate.prompts import REFUSAL, cloze_question
from serve.answer import Answer, AnswerError
from tests.conftest import REPO

# Fictional Knowledge's format (fictional_knowledge.json: train_context + gen / hard_gen probes) with four invented
# articles, so these tests need no ../shared (the real set is for `ragtune eval` and the suite, not for tests)
FK_ARTICLES = [
    ("The fortieth government of Mars, or the Zorgon-Calidus government, was a coalition formed in 2143. Its leader, "
     "Zorgon, a renowned statesman, governed from the city of Arcadia. The government fell after the Martian cycle "
     "of storms destroyed the harvest."),
    ("Veltrani glass is a blue glass blown only on the island of Osk. Glassmakers of Osk train for nine years. The "
     "glass is cooled in seawater, which gives it a silver shine."),
    ("The Brelling Canal links the river Tamsa to the Grey Sea. It opened in 1861 and carries 40 barges a day. "
     "Its engineer, Maud Kessel, designed the twelve locks."),
    ("Quillon is a card game played with 48 cards. Each player holds seven cards and the first to empty a hand "
     "wins. The game was invented by sailors of the port of Dunmere."),
]


def fk_item(text: str) -> dict:
    """One article with five gen and five hard_gen probes: each sentence's start -> its last word."""
    probes = []
    for sentence in [x.strip() for x in text.split(". ") if x.strip()]:
        words = sentence.rstrip(".").split()
        probes.append((" ".join(words[:-1]), words[-1]))
    probes = (probes * 5)[:5]
    return {"train_context": text, "gen_input": [p for p, _ in probes], "gen_target": [t for _, t in probes],
            "hard_gen_input": [p for p, _ in probes], "hard_gen_target": [t for _, t in probes],
            "mem_input": [], "mem_target": []}


@pytest.fixture(scope="module")
def fk_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fk")
    (folder / "fictional_knowledge.json").write_text(json.dumps([fk_item(t) for t in FK_ARTICLES]))
    return folder

DOCS = {
    "kettle.md": "# Kettles\n\nDescale the office kettle every 9 days. Use the blue descaler from the cupboard.\n",
    "bikes.md": "# Bicycles\n\nBike racks are in the north courtyard, next to the loading bay.\n",
    "plants.md": "# Plants\n\nThe office ficus is watered on Mondays by the facilities team.\n",
    "vault.md": "---\ngroups: [finance]\n---\n# Vault\n\nThe finance vault code is 7781.\n",
}
QUESTIONS = [
    {"question": "How often should the office kettle be descaled?", "answers": ["every 9 days", "9 days"],
     "doc": "kettle.md"},
    {"question": "Where are the bike racks?", "answers": ["north courtyard"], "doc": "bikes.md"},
    {"question": "On which day is the ficus watered?", "answers": ["Mondays"], "doc": "plants.md"},
    {"question": "What is the finance vault code?", "answers": ["7781"], "doc": "vault.md", "groups": ["finance"]},
    {"question": "Can I bring my parrot to the office?", "answers": []},
    {"question": "Which descaler should be used for the kettle?", "answers": ["blue descaler"], "doc": "kettle.md"},
    {"question": "What is next to the bike racks?", "answers": ["loading bay"], "doc": "bikes.md"},
]


def write_questions(path: Path, rows=QUESTIONS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedder):
    """(docs, workspace, questions.jsonl): four tiny documents indexed with the real embedder; read-only."""
    from retrieve import build_index

    root = tmp_path_factory.mktemp("evals")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    build_index(docs, root / "ws", embedder=embedder)
    return docs, root / "ws", write_questions(root / "questions.jsonl")


@pytest.fixture
def tiny_ws(tmp_path, tiny):
    ws = tmp_path / "ws"
    shutil.copytree(tiny[1], ws)
    return ws


class FakeEngine:
    """Obeys the AnswerEngine interface with deterministic answers: base always refuses; rag answers with the first
    sentence of the best hybrid hit and cites it; tuned/hybrid fail like an engine without adapters."""

    def __init__(self, workspace: Path, embedder) -> None:
        self.workspace = Path(workspace)
        self.generator = SimpleNamespace(name="fake-model")
        self._embedder = embedder
        self._searcher = None
        self.calls: list[tuple[str, str]] = []

    @property
    def searcher(self):
        if self._searcher is None:
            from retrieve import Searcher

            self._searcher = Searcher(self.workspace, embedder=self._embedder)
        return self._searcher

    def answer(self, question: str, *, mode: str = "rag", adapter=None, groups=frozenset(), **_) -> Answer:
        self.calls.append((mode, question))
        timings = {"retrieve_ms": 0.0, "first_token_ms": 10.0 + len(question) % 7, "tokens_per_s": 20.0,
                   "total_ms": 50.0}
        if mode in ("tuned", "hybrid"):
            raise AnswerError("this backend cannot load LoRA adapters")
        if mode == "base":
            return Answer(question, REFUSAL, mode, None, [], True, timings)
        timings["retrieve_ms"] = 5.0
        hits = self.searcher.search(question, k=2, mode="hybrid", groups=groups)
        sources = [Citation(n, h.chunk.doc, h.chunk.section, h.chunk.page, h.chunk.id, h.chunk.text)
                   for n, h in enumerate(hits, start=1)]
        first = sources[0].text.split(". ")[0].rstrip(".") + "."
        return Answer(question, f"{first} [1]", mode, None, [sources[0]], False, timings, sources)


# ---- metrics, by hand ------------------------------------------------------------------------------------------

def test_normalisation_exact_f1_contains():
    assert M.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert M.normalize_answer("An apple — a day") == "apple day"
    assert M.strip_citations("27 days [1][2] and [3, 4].") == "27 days and."
    assert M.exact_match("The 27 days [1]", ["27 days"]) == 1.0
    assert M.exact_match("27 working days", ["27 days"]) == 0.0
    # pred {27, working, days} vs gold {27, days}: P = 2/3, R = 1, F1 = 0.8; best over golds
    assert M.token_f1("27 working days", ["27 days"]) == pytest.approx(0.8)
    assert M.token_f1("27 working days", ["nothing", "27 working days"]) == pytest.approx(1.0)
    assert M.token_f1("no overlap", ["27 days"]) == 0.0
    assert M.contains_match("You get 27 days [1].", ["27 days"]) == 1.0
    assert M.contains_match("You get 127 days.", ["27 days"]) == 0.0  # whole words only
    assert M.contains_match("It costs EUR 70,000.", ["eur 70000", "x"]) == 1.0  # punctuation-insensitive
    assert M.contains_match("anything", []) == 0.0


def test_retrieval_ranks_recall_and_mrr():
    assert M.rank_of(["a.md", "b.md", "a.md"], "a.md") == 1 and M.rank_of(["b.md"], "a.md") is None
    ranks = [1, 3, None, 6]
    assert [M.recall_at(r, 1) for r in ranks] == [1, 0, 0, 0]
    assert sum(M.recall_at(r, 5) for r in ranks) / 4 == 0.5
    assert sum(M.recall_at(r, 10) for r in ranks) / 4 == 0.75
    assert sum(M.reciprocal_rank(r) for r in ranks) / 4 == pytest.approx((1 + 1 / 3 + 0 + 1 / 6) / 4)  # 0.375
    rows = [{"hybrid": {"doc_rank": r}} for r in ranks] + [{"hybrid": {}}]  # last: no gold doc, not counted
    summary = aggregate_retrieval(rows, seed=1, n_boot=200)["gold_doc"]["hybrid"]
    assert summary["recall@5"]["value"] == 0.5 and summary["recall@5"]["n"] == 4
    assert summary["mrr"]["value"] == pytest.approx(0.375)


def test_citation_faithfulness_and_refusal_accuracy():
    assert M.citation_correct(["Per diem: EUR 55 per day."], ["EUR 55"]) == 1.0
    assert M.citation_correct(["Per diem: EUR 65."], ["EUR 55"]) == 0.0 and M.citation_correct([], ["x"]) == 0.0
    passages = ["Travel: the per diem fee is EUR 55 per day abroad."]
    # sentence 1: fee, eur, 55, per, day all in the passage; sentence 2: dogs, allowed, office none -> 1/2
    assert M.faithfulness("The fee is EUR 55 per day [1]. Dogs are allowed in the office.", passages) == 0.5
    assert M.faithfulness("Half abroad, half invented.", passages) == 0.0  # {half, abroad, invented}: 1/3 < 0.5
    assert M.faithfulness("Abroad fee unknown.", passages) == 1.0  # 2 of 3 words found >= 0.5
    assert M.faithfulness("It is what it is.", passages) is None  # no content words: nothing to judge
    assert M.faithfulness("EUR 55.", []) == 0.0  # cites nothing: unsupported

    def rec(answerable, refused, contains=0.0, cited=None):
        correct = {"contains": contains, "f1": contains, "exact": 0.0} if answerable else {}
        if cited is not None:
            correct["citation_acc"] = cited
        return {"answerable": answerable, "refused": refused, "correct": correct,
                "timings": {"retrieve_ms": 4.0, "first_token_ms": None if refused else 10.0, "tokens_per_s": 5.0}}

    records = [rec(True, False, 1.0, 1.0), rec(True, True), rec(True, False, 1.0, 0.0), rec(False, True),
               rec(False, False)]
    est = aggregate_mode(records, "rag", seed=0, n_boot=200)
    assert est["contains"].value == pytest.approx(2 / 3) and est["contains"].n == 3
    assert est["refusal_acc"].value == 0.5 and est["refusal_acc"].n == 2
    assert est["false_refusal"].value == pytest.approx(1 / 3)
    assert est["citation_acc"].value == 0.5 and est["citation_acc"].n == 2
    assert est["first_token_ms"].n == 3 and est["retrieve_ms"].p50 == 4.0  # refused without generating: no TTFT
    records[1]["degenerate_drafts"] = ["question"]  # withheld, then refused: counted as a draft, not as shown
    records[4]["degenerate"] = True
    est = aggregate_mode(records, "rag", seed=0, n_boot=200)
    assert est["degenerate_drafts"].value == pytest.approx(1 / 5) and est["degenerate"].value == pytest.approx(1 / 5)


def test_bootstrap_interval_contains_estimate_and_is_seeded():
    values = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    e = M.bootstrap(values, seed=3)
    assert e.value == pytest.approx(0.7) and e.n == 10
    assert 0.0 <= e.low <= e.value <= e.high <= 1.0 and e.low < e.high
    assert 0.15 < e.half_width < 0.4  # normal approximation: 1.96 * sqrt(0.21 / 10) = 0.28
    assert M.bootstrap(values, seed=3) == e
    smooth = [0.13, 0.52, 0.91, 0.27, 0.66, 0.05, 0.38, 0.84]
    assert M.bootstrap(smooth, seed=3) == M.bootstrap(smooth, seed=3) != M.bootstrap(smooth, seed=4)
    assert M.bootstrap([0.5, 0.5, 0.5], seed=0) == M.Estimate(0.5, 0.5, 0.5, 3)
    assert M.bootstrap([], seed=0) is None and M.bootstrap([None, 2.0], seed=0).n == 1


# ---- question sets ---------------------------------------------------------------------------------------------

def test_jsonl_loader_and_seeded_sample(tmp_path):
    qs = load_jsonl(write_questions(tmp_path / "q.jsonl"))
    assert len(qs) == 7 and qs[3].groups == ("finance",) and not qs[4].answerable and qs[0].query == qs[0].question
    bundled = load_jsonl(REPO / "data" / "eval" / "questions.jsonl")
    assert len(bundled) == 126 and sum(not q.answerable for q in bundled) == 18
    a, b, c = sample(bundled, 10, 1), sample(bundled, 10, 1), sample(bundled, 10, 2)
    assert [q.id for q in a] == [q.id for q in b] != [q.id for q in c]
    assert [q.id for q in a] == sorted(q.id for q in a)  # returned in file order
    assert len(sample(bundled, None, 0)) == 126
    (tmp_path / "bad.jsonl").write_text('{"question": "x", "answers": "ok"}\n{"answers": []}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")


def test_fictional_knowledge_loader_builds_corpus_and_questions(tmp_path, embedder, tiny, fk_dir):
    articles, questions = load_fictional_knowledge(fk_dir)
    assert len(articles) == 4 and len({a.path for a in articles}) == 4
    assert articles[0].title == "The fortieth government of Mars" and articles[0].path == "article-001.md"
    assert articles[1].title == "Veltrani glass" and articles[3].path == "article-004.md"
    assert article_title("no verb here at all", 7) == "Article 007"
    assert len(questions) == 40 and len({q.id for q in questions}) == 40
    assert {s: sum(q.probe_set == s for q in questions) for s in ("gen", "hard_gen")} == {"gen": 20, "hard_gen": 20}
    paths = {a.path for a in articles}
    for q in questions:
        assert q.kind == "cloze" and len(q.answers) == 1 and q.answers[0].strip()
        assert q.question == cloze_question(q.query) and q.doc in paths and q.query in q.question
    q0 = questions[0]
    assert q0.answers == ["2143"] and q0.doc == "article-001.md" and q0.probe_set == "gen"
    assert q0.query == "The fortieth government of Mars, or the Zorgon-Calidus government, was a coalition formed in"

    ws = tmp_path / "ws"
    report = index_articles(articles[:3], ws, embedder=embedder)
    docs = fk_docs_dir(ws)
    assert sorted(p.name for p in docs.iterdir()) == ["article-001.md", "article-002.md", "article-003.md"]
    assert (docs / "article-002.md").read_text() == articles[1].markdown()  # the article only, no probes
    assert len(report.added) == 3 and report.chunks >= 3
    again = index_articles(articles[:3], ws, embedder=embedder)
    assert again.embedded == 0 and len(again.unchanged) == 3  # incremental: the second run is cheap
    with pytest.raises(ValueError, match="separate workspace"):
        check_workspace_for(tiny[1], fk_docs_dir(tiny[1]))  # never replace another folder's index


# ---- runs and reports -----------------------------------------------------------------------------------------

def test_fixed_seed_run_is_reproducible(tmp_path, tiny_ws, tiny, embedder):
    def run(seed, out):
        cfg = EvalConfig(workspace=tiny_ws, questions=tiny[2], modes="base,rag", limit=4, seed=seed, out=out,
                         n_boot=200)
        return run_eval(cfg, engine=FakeEngine(tiny_ws, embedder), progress=False)

    a, b = run(5, tmp_path / "a"), run(5, tmp_path / "b")
    ra, rb = (json.loads(Path(x["results_json"]).read_text()) for x in (a, b))
    assert ra["question_ids"] == rb["question_ids"] and len(ra["question_ids"]) == 4
    assert ra["question_ids"] == [q.id for q in sample(load_jsonl(tiny[2]), 4, 5)]
    assert ra["question_ids"] != [q.id for q in sample(load_jsonl(tiny[2]), 4, 6)]  # another seed, another sample
    assert a["results"] == b["results"] and a["retrieval"] == b["retrieval"] and ra["metrics"] == rb["metrics"]
    pq = [(Path(x["report"]) / "per_question.jsonl").read_text() for x in (a, b)]
    assert pq[0] == pq[1] and len(pq[0].splitlines()) == 8  # 4 questions x 2 modes
    assert a["results"]["base"]["contains"] == 0.0 and a["results"]["base"]["false_refusal"] == 1.0


def test_report_folder_and_contract(tmp_path, tiny_ws, tiny, embedder):
    engine = FakeEngine(tiny_ws, embedder)
    out = run_eval(EvalConfig(workspace=tiny_ws, questions=tiny[2], seed=0, n_boot=200, command="ragtune eval x"),
                   engine=engine, progress=False)
    folder = Path(out["report"])
    assert folder.parent == tiny_ws / "evals" and folder.name.endswith("-questions")
    files = {p.name for p in folder.iterdir()}
    assert {"results.json", "report.md", "per_question.jsonl", "answers.png", "retrieval.png", "cost.png"} <= files
    assert all((folder / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files if f.endswith(".png"))
    latest = json.loads((tiny_ws / "evals" / "latest.json").read_text())
    assert latest["report"] == str(folder.resolve()) and (tiny_ws / "evals" / latest["report_md"]).is_file()

    assert out["n"] == 7 and set(out["results"]) == {"base", "rag"}  # tuned/hybrid: no adapter -> skipped
    assert "adapter" in out["skipped"]["tuned"] and "adapter" in out["skipped"]["hybrid"]
    rag, base = out["results"]["rag"], out["results"]["base"]
    for key in ("contains", "f1", "exact", "recall@5", "refusal_acc", "citation_acc", "faithfulness"):
        assert key in rag, key
    assert "recall@5" not in base and base["refusal_acc"] == 1.0
    assert rag["recall@5"] == out["retrieval"]["gold_doc"]["hybrid"]["recall@5"]["value"] == 1.0
    # the fake quotes the top chunk's first sentence: right for 5 of the 6 answerable questions (the descaler's
    # answer is in the kettle document's second sentence)
    assert rag["contains"] == pytest.approx(5 / 6, abs=1e-4)
    assert rag["refusal_acc"] == 0.0 and rag["faithfulness"] == 1.0
    records = [json.loads(x) for x in (folder / "per_question.jsonl").read_text().splitlines()]
    vault = next(r for r in records if r["mode"] == "rag" and r["doc"] == "vault.md")
    assert vault["answer"] == "The finance vault code is 7781. [1]" and vault["correct"]["contains"] == 1.0
    assert vault["citations"][0]["doc"] == "vault.md" and vault["retrieval"]["bm25"]["doc_rank"] == 1
    assert vault["question_kind"] == "what" and vault["degenerate"] is False
    assert rag["degenerate"] == 0.0 and "degenerate_drafts" in rag

    md = (folder / "report.md").read_text()
    assert "ragtune eval x" in md and "torch" in md and "transformers" in md and "fake-model" in md
    assert "| mode | contains | F1 | exact |" in md and "| hybrid |" in md and " ± " in md and "(n=6)" in md
    assert "skipped mode tuned" in md and "seed 0" in md


def test_fictional_knowledge_run_on_a_small_copy(tmp_path, embedder, fk_dir):
    items = json.loads((fk_dir / "fictional_knowledge.json").read_text())[:1]
    fk = tmp_path / "fk"
    fk.mkdir()
    (fk / "fictional_knowledge.json").write_text(json.dumps(items))
    ws = tmp_path / "ws"
    out = run_eval(EvalConfig(workspace=ws, fictional_knowledge=fk, modes="rag", seed=1, n_boot=100),
                   engine=FakeEngine(ws, embedder), progress=False)
    assert out["n"] == 10 and Path(out["report"]).name.endswith("-fictional-knowledge")
    records = [json.loads(x) for x in (Path(out["report"]) / "per_question.jsonl").read_text().splitlines()]
    assert all(r["kind"] == "cloze" and r["question"].startswith("Complete the sentence:") for r in records)
    rag = out["results"]["rag"]
    assert "refusal_acc" not in rag  # no unanswerable probes
    assert {"contains_gen", "contains_hard_gen", "f1_gen", "f1_hard_gen"} <= set(rag)  # 5 probes of each
    assert rag["contains"] == pytest.approx((rag["contains_gen"] + rag["contains_hard_gen"]) / 2, abs=1e-4)
    assert "## Answers by probe set" in (Path(out["report"]) / "report.md").read_text()
    # one article: it is the gold document of every probe and the only one found
    assert out["retrieval"]["gold_doc"]["hybrid"]["recall@1"] == {"value": 1.0, "low": 1.0, "high": 1.0, "n": 10}


def test_fk_question_set_asks_about_the_articles(tmp_path, embedder, fk_dir):
    """data/eval/fk_questions.jsonl: hand-written wh-questions about 44 Fictional Knowledge articles (not the
    probes; when they were written each answer was checked to be verbatim in its article, which needs the real
    set in ../shared), and `--fictional-knowledge` with `--questions` asks them."""
    qs = load_jsonl(REPO / "data" / "eval" / "fk_questions.jsonl")
    assert len(qs) == 88 and len({q.id for q in qs}) == 88 and len({q.doc for q in qs}) == 44
    for q in qs:
        assert q.answers and re.fullmatch(r"article-\d{3}\.md", q.doc), q.id
        assert q.question.endswith("?") and not any(a.lower() in q.question.lower() for a in q.answers), q.id
    fk = fk_dir
    mine = tmp_path / "mine.jsonl"
    picked = [q for q in qs if q.doc in ("article-001.md", "article-004.md")]
    mine.write_text("".join(json.dumps(q.to_json()) + "\n" for q in picked))
    ws = tmp_path / "ws"
    out = run_eval(EvalConfig(workspace=ws, fictional_knowledge=fk, questions=mine, modes="rag", n_boot=50),
                   engine=FakeEngine(ws, embedder), progress=False)
    assert out["n"] == 4 and Path(out["report"]).name.endswith("-fk-mine")
    records = [json.loads(x) for x in (Path(out["report"]) / "per_question.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["fkq-001-a", "fkq-001-b", "fkq-004-a", "fkq-004-b"]
    assert all(r["kind"] == "question" for r in records)
    assert out["retrieval"]["gold_doc"]["hybrid"]["recall@5"]["value"] == 1.0  # 4 articles: gold always in top 5


class FakeAdapterEngine(FakeEngine):
    """Like FakeEngine, but tuned and hybrid answer too, and say which adapter they used."""

    def answer(self, question: str, *, mode: str = "rag", adapter=None, groups=frozenset(), **kw) -> Answer:
        if mode not in ("tuned", "hybrid"):
            return super().answer(question, mode=mode, groups=groups, **kw)
        self.calls.append((mode, question, adapter))
        timings = {"retrieve_ms": 0.0, "first_token_ms": 10.0, "tokens_per_s": 20.0, "total_ms": 50.0}
        return Answer(question, f"answered by {adapter}", mode, adapter, [], False, timings)


def test_each_mode_uses_its_own_adapter(tmp_path, tiny_ws, tiny, embedder):
    from tests.test_adapter_choice import fake_adapter

    fake_adapter(tiny_ws, "raft1", "2026-11-02T10:00:00+0000", "raft")
    fake_adapter(tiny_ws, "facts1", "2026-11-01T10:00:00+0000", "facts")
    # no adapter named: each mode picks by the data's recipe
    for limit, (adapter, expect) in enumerate([(None, {"tuned": "facts1", "hybrid": "raft1"}),
                            ("raft1", {"tuned": "raft1", "hybrid": "raft1"}),
                            ("hybrid=facts1,tuned=raft1", {"tuned": "raft1", "hybrid": "facts1"})], start=1):
        engine = FakeAdapterEngine(tiny_ws, embedder)
        out = run_eval(EvalConfig(workspace=tiny_ws, questions=tiny[2], modes="rag,tuned,hybrid", limit=limit,
                                  adapter=adapter, out=tmp_path / "evals"), engine=engine, progress=False)
        assert {(m, a) for m, _, a in (c for c in engine.calls if len(c) == 3)} == set(expect.items())
        saved = json.loads(Path(out["results_json"]).read_text())
        assert saved["adapters"] == expect
        assert saved["adapter"] == {None: "tuned=facts1,hybrid=raft1", "raft1": "raft1"}.get(
            adapter, "tuned=raft1,hybrid=facts1")  # the --adapter form that repeats the run
        rows = [json.loads(line) for line in (Path(out["report"]) / "per_question.jsonl").read_text().splitlines()]
        assert {(r["mode"], r["adapter"]) for r in rows if r["mode"] != "rag"} == set(expect.items())
    # the last run's scores (3 questions) went to each adapter's own card: facts1 holds hybrid's, raft1 tuned's
    cards = {n: json.loads((tiny_ws / "adapters" / n / "card.json").read_text())["eval"] for n in ("raft1", "facts1")}
    tag = "questions@3"
    assert f"{tag} hybrid contains" in cards["facts1"] and f"{tag} tuned contains" not in cards["facts1"]
    assert f"{tag} tuned contains" in cards["raft1"] and f"{tag} hybrid contains" not in cards["raft1"]
    assert all(f"{tag} rag contains" in c for c in cards.values())
    with pytest.raises(ValueError, match="'closed' is not a mode"):
        run_eval(EvalConfig(workspace=tiny_ws, modes="tuned", adapter="closed=raft1"), engine=engine, progress=False)
    with pytest.raises(ValueError, match="no adapter named 'mine'"):
        run_eval(EvalConfig(workspace=tiny_ws, modes="tuned", adapter="raft1,hybrid=mine"), engine=engine,
                 progress=False)


def test_usage_errors_are_clear(tmp_path, tiny_ws, tiny, embedder, fk_dir):
    engine = FakeEngine(tiny_ws, embedder)
    with pytest.raises(ValueError, match="unknown mode 'closed'"):
        run_eval(EvalConfig(workspace=tiny_ws, modes="base,closed"), engine=engine, progress=False)
    with pytest.raises(ValueError, match="needs a tuned adapter"):
        run_eval(EvalConfig(workspace=tiny_ws, modes="tuned,hybrid"), engine=engine, progress=False)
    with pytest.raises(ValueError, match="no adapter named 'mine'"):
        run_eval(EvalConfig(workspace=tiny_ws, modes="rag,tuned", adapter="mine"), engine=engine, progress=False)
    with pytest.raises(ValueError, match=r"question q0001 names doc 'kettle.md', which is not a Fictional"):
        run_eval(EvalConfig(workspace=tmp_path / "fk", questions=tiny[2], fictional_knowledge=fk_dir),
                 engine=engine, progress=False)
    with pytest.raises(FileNotFoundError, match="no index"):
        run_eval(EvalConfig(workspace=tmp_path / "empty", questions=tiny[2], modes="rag"), engine=engine,
                 progress=False)
    assert engine.calls == []  # every check happens before a question is asked
    out = subprocess.run([sys.executable, "-c", "import sys, evals.cli; assert 'torch' not in sys.modules"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_cli_end_to_end_with_the_real_model(tmp_path, tiny):
    """`ragtune eval --json` on the packaged SmolLM2 (its dequantized cache shared with test_generate)."""
    from generate.models import ModelConfig, resolve_model_dir

    cache = Path(os.environ.get("RAGTUNE_TEST_CACHE") or tmp_path.parent.parent / "ragtune-model-cache")
    model_dir = Path(resolve_model_dir(ModelConfig(cache_dir=cache)))
    ws = tmp_path / "ws"
    shutil.copytree(tiny[1], ws)
    (ws / "models").mkdir()
    (ws / "models" / model_dir.name).symlink_to(model_dir, target_is_directory=True)
    questions = write_questions(tmp_path / "q.jsonl", [QUESTIONS[0], QUESTIONS[3], QUESTIONS[4]])
    cmd = [sys.executable, "-m", "ragtune_cli", "eval", "--workspace", ws, "--questions", questions, "--limit", "3",
           "--modes", "base,rag", "--max-new-tokens", "8", "--json"]
    out = subprocess.run(list(map(str, cmd)), cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    result = json.loads(lines[0])
    assert set(result) == {"report", "n", "results"} and result["n"] == 3
    assert set(result["results"]) == {"base", "rag"}
    for mode in ("base", "rag"):
        assert {"contains", "f1", "exact", "refusal_acc"} <= set(result["results"][mode])
        assert all(0.0 <= result["results"][mode][k] <= 1.0 for k in ("contains", "f1", "exact", "refusal_acc"))
    assert result["results"]["rag"]["recall@5"] == 1.0
    report = Path(result["report"])
    assert (report / "report.md").is_file() and "smollm2" in (report / "report.md").read_text().lower()
    assert len((report / "per_question.jsonl").read_text().splitlines()) == 6
    bad = subprocess.run([sys.executable, "-m", "ragtune_cli", "eval", "--workspace", str(ws), "--modes", "tuned"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "adapter" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
