"""Retrieval that learns the workspace's documents (issue 21): weighted fusion, the retriever settings file, a
reranker and a tuned embedder trained by `ragtune tune-retriever` on a small synth-like dataset of the sample
corpus, search and the index using them, and the chunk-level retrieval table of `ragtune eval`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from retrieve import Searcher
from retrieve.fusion import RRF_K, fuse
from retrieve.retrievers import RetrieverSettings, read_settings, write_settings
from retrieve.store import load_current
from tests.conftest import REPO


def _packaged():
    from retrieve.embed import resolve_embedder

    return resolve_embedder("all-minilm-l6-v2")


def test_fusion_weights_span_bm25_alone_to_dense_alone():
    dense, lexical = ["a", "b", "c"], ["c", "d", "a"]
    assert [i for i, _ in fuse(dense, lexical, 0.0)][:3] == lexical  # BM25's order, dense-only ids after it
    assert [i for i, _ in fuse(dense, lexical, 1.0)][:3] == dense
    plain = dict(fuse(dense, lexical, 0.5))
    assert plain["a"] == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 3))  # w = 0.5 is the plain RRF of before
    assert [i for i, _ in fuse(dense, lexical, 0.5)][0] in ("a", "c")


def test_fusion_is_adaptive_unless_auto_or_a_weight_is_given():
    from tune.retriever import RetrieverTuneConfig, _weight

    tables = {round(0.1 * i, 1): {"recall@3": 1.0 - 0.05 * i, "mrr": 0.5, "n": 100} for i in range(11)}
    tables["adaptive"] = {"recall@3": 0.8, "mrr": 0.5, "n": 100}
    assert _weight(RetrieverTuneConfig(workspace=Path(".")), tables) == "adaptive"
    assert _weight(RetrieverTuneConfig(workspace=Path("."), fusion_weight=0.5), tables) == 0.5
    assert _weight(RetrieverTuneConfig(workspace=Path("."), fusion_weight=None), tables) == 0.0
    assert _weight(RetrieverTuneConfig(workspace=Path("."), fusion_weight=0.72), tables) == 0.7
    with pytest.raises(ValueError, match="--fusion-weight"):
        RetrieverTuneConfig(workspace=Path("."), fusion_weight=1.5).check()


def test_a_part_that_only_ties_on_recall_says_the_mrr_that_decided(tmp_path):
    from tune.retriever import _validated

    card = {"name": "embedder-x", "kind": "embedder", "created": "now", "dataset": "d", "data_hash": "0" * 16,
            "base_model": "m", "steps": 3, "wall_s": 1.0, "device": "cpu", "precision": "fp32"}
    (tmp_path / "card.json").write_text(json.dumps(card))
    before = {"recall@3": 1.0, "mrr": 0.9844}
    won = _validated(tmp_path, before, {"recall@3": 1.0, "mrr": 0.9911}, "with the index's embedder")
    assert won.active and won.why == "validation recall@3 1.0 vs 1.0 (MRR 0.9911 vs 0.9844) with the index's embedder"
    lost = _validated(tmp_path, before, {"recall@3": 0.99, "mrr": 0.99}, "with fusion alone")
    assert not lost.active and lost.why == "validation recall@3 0.99 vs 1.0 with fusion alone: not better, not used"
    assert json.loads((tmp_path / "card.json").read_text())["active"] is False


def test_fusion_weight_one_standard_error_rule():
    from tune.retriever import choose_weight

    def tables(r3):
        return {w: {"recall@3": r, "mrr": r, "n": 259} for w, r in zip([i / 10 for i in range(11)], r3)}

    # synth questions copy the chunk's words: BM25 alone (0.0) leads by less than a standard error over 0.3, so the
    # weight nearest plain RRF within it is kept; a clear lead is followed
    assert choose_weight(tables([.992, .992, .988, .988, .985, .969, .957, .950, .923, .907, .865])) == 0.3
    assert choose_weight(tables([.95, .92, .90, .85, .80, .75, .70, .65, .60, .55, .50])) == 0.0
    assert choose_weight(tables([.9] * 11)) == 0.5


def test_settings_file_defaults_and_damage(tmp_path):
    assert read_settings(tmp_path) == RetrieverSettings()  # none written: the defaults (adaptive fusion)
    write_settings(tmp_path, RetrieverSettings(dense_weight=0.3))
    assert read_settings(tmp_path).dense_weight == 0.3
    (tmp_path / "retrievers" / "settings.json").write_text("{not json")
    with pytest.raises(ValueError, match="settings.json"):
        read_settings(tmp_path)
    (tmp_path / "retrievers" / "settings.json").write_text(json.dumps({"dense_weight": 2}))
    with pytest.raises(ValueError, match="dense_weight"):
        read_settings(tmp_path)


def test_search_follows_the_workspace_fusion_weight(index_copy, embedder):
    _, ws = index_copy
    searcher = Searcher(ws, embedder)
    query = "mileage rate for my own car"
    lexical = [h.chunk.id for h in searcher.search(query, k=5, mode="bm25")]
    assert [h.chunk.id for h in searcher.search(query, k=5, dense_weight=0.0)] == lexical
    write_settings(ws, RetrieverSettings(dense_weight=0.0))  # re-read by the running searcher
    hits = searcher.search(query, k=5)
    assert [h.chunk.id for h in hits] == lexical
    assert hits[0].retriever == "hybrid (dense 0.00 all-minilm-l6-v2 + BM25 1.00)"


def _synth_like_dataset(ws: Path) -> Path:
    """A small dataset in synth's format: for each unrestricted chunk, a question made of its first words (and
    one for a restricted chunk, which tune-retriever must leave out); validation from other documents."""
    chunks = load_current(ws).chunks
    public = [c for c in chunks if not c.groups]
    restricted = next(c for c in chunks if c.groups)
    val_docs = sorted({c.doc for c in public})[:4]
    rows = {"train.jsonl": [], "val.jsonl": []}
    for c in public[::2] + [restricted]:
        words = c.text.split()
        if len(words) < 20:
            continue
        rows["val.jsonl" if c.doc in val_docs else "train.jsonl"].append(
            {"question": "What about " + " ".join(words[5:14]) + "?", "answer": words[14], "chunk_id": c.id,
             "doc": c.doc, "kind": "raft", "messages": []})
    folder = ws / "datasets" / "small"
    folder.mkdir(parents=True)
    for name, items in rows.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in items))
    return folder


def _ratings(ws: Path) -> None:
    """Users' ratings as the chat writes them (tune/ratings.py): 11 liked answers citing public chunks (one rated
    twice: its last rating counts), one citing a restricted chunk, one a chunk no longer indexed, one disliked and
    one taken back."""
    from tune.ratings import record_rating

    chunks = load_current(ws).chunks
    public = [c for c in chunks if not c.groups][1::7][:11]
    restricted = next(c for c in chunks if c.groups)

    def rate(user, n, question, liked, chunk_ids, mode="rag", passage=None):
        record_rating(ws, user, f"a{n}", question, liked, mode=mode, adapter=None, answer="an answer",
                      cited=chunk_ids, docs=["doc"] * len(chunk_ids), passage=passage)

    for n, c in enumerate(public):  # the second a passage picked in the chat, the third a section in the viewer
        rate("bob", n, f"In other words, what does the part about {c.section or c.doc} say? ({n})", True, [c.id],
             mode="viewer" if n == 2 else "rag", passage=2 if n == 1 else None)
    rate("bob", 0, f"In other words, what does the part about {public[0].section or public[0].doc} say? (0)", True,
         [public[0].id])
    rate("bob", 20, "Who may see the restricted notes?", True, [restricted.id])
    rate("bob", 21, "What did the deleted page say?", True, ["gone-chunk"])
    rate("erin", 22, "A question answered badly", False, [public[0].id])
    rate("erin", 23, "A rating taken back", True, [public[1].id])
    rate("erin", 23, "A rating taken back", None, [public[1].id])


def test_liked_answers_become_training_and_validation_questions(tmp_path, built_index):
    import shutil

    from tune.ratings import liked_pairs, rating_counts, read_ratings
    from tune.retriever_data import load_questions

    ws = tmp_path / "ws"
    shutil.copytree(built_index[1], ws)
    dataset = _synth_like_dataset(ws)
    _ratings(ws)
    (ws / "ratings.jsonl").open("a").write("{damaged line\n")  # skipped, never fatal
    assert rating_counts(ws) == {"liked": 13, "disliked": 1, "liked_with_sources": 13, "passage_picks": 1,
                                 "viewer_picks": 1, "users": 2, "pairs": 13}
    pairs = liked_pairs(read_ratings(ws))
    assert len(pairs) == 13  # the answer rated twice counts once; the disliked and the taken-back one not at all
    chunks = load_current(ws).chunks
    plain = load_questions(ws, dataset, chunks, max_train=40, max_val=20)
    sets = load_questions(ws, dataset, chunks, max_train=40, max_val=20, rated=pairs, rated_weight=4)
    assert sets.rated == {"train": 8, "val": 3}  # 11 usable: every 5th (seeded) held out for validation
    assert sets.skipped == {**plain.skipped, "rated restricted": 1, "rated stale": 1}
    users = [q for q in sets.train if q.query.startswith("In other words")]
    assert len(users) == 8 and all(q.weight == 4 for q in users) and all(q.weight == 1 for q in plain.train)
    assert len([q for q in sets.val if q.query.startswith("In other words")]) == 3
    assert sets.data_hash != plain.data_hash  # the card's data hash changes with the ratings


@pytest.fixture(scope="module")
def tuned_ws(tmp_path_factory, built_index):
    """A copy of the sample index after `tune_retriever` trained both parts for a few steps."""
    import shutil

    from tune.retriever import RetrieverTuneConfig, tune_retriever

    docs, ws0, _ = built_index
    root = tmp_path_factory.mktemp("tuned")
    shutil.copytree(docs, root / "docs")
    shutil.copytree(ws0, root / "ws")
    ws = root / "ws"
    dataset = _synth_like_dataset(ws)
    _ratings(ws)
    config = RetrieverTuneConfig(workspace=ws, dataset=dataset, max_steps=2, max_train_questions=40,
                                 max_val_questions=20, negatives=2, reranker_batch=4, embedder_batch=8,
                                 rerank_layers=2)
    report = tune_retriever(config)
    return ws, report


def test_tune_retriever_writes_cards_and_settings(tuned_ws):
    ws, report = tuned_ws
    assert report.questions["skipped"].get("restricted") == 1  # the restricted chunk's question stayed out
    assert report.questions["skipped"].get("rated restricted") == 1  # so did the liked answer citing one
    assert report.questions["rated"] == {"train": 8, "val": 3}  # users' liked questions joined synth's
    assert report.questions["train"] >= 10 and report.questions["val"] >= 10
    assert set(report.parts) == {"embedder", "reranker"}
    for kind, part in report.parts.items():
        card = json.loads((ws / "retrievers" / part.name / "card.json").read_text())
        assert card["kind"] == kind and card["steps"] == 2 and len(card["data_hash"]) == 64
        assert set(card["validation"]) == {"before", "after"} and "recall@3" in card["validation"]["after"]
        assert card["active"] == part.active and (ws / "retrievers" / part.name / "README.md").is_file()
    reranker = ws / "retrievers" / report.parts["reranker"].name
    assert json.loads((reranker / "card.json").read_text())["layers"] == 2  # the packaged MiniLM's first 2 of 6
    assert json.loads((reranker / "config.json").read_text())["num_hidden_layers"] == 2
    settings = read_settings(ws)
    assert settings.reranker == (report.parts["reranker"].name if report.parts["reranker"].active else None)
    # adaptive unless asked (docs/RESULTS.md), scored beside every RRF weight; settings.json says null for it
    assert report.dense_weight == "adaptive" and settings.dense_weight is None
    assert set(report.fusion) == {"adaptive"} | {round(0.1 * i, 1) for i in range(11)}
    assert json.loads(json.dumps(report.to_json()))["fusion"]["adaptive"]["n"] == report.questions["val"]


def test_an_untrained_reranker_already_tells_pairs_apart():
    """The packaged MiniLM's [CLS] state is the same for every input through layer 5, so a [CLS] classification
    head gave unrelated pairs one score and its listwise loss stayed at chance (docs/RESULTS.md); the reranker's
    mean-pooling head starts from scores that differ with the pair, which training can then order."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from tune.retriever_train import mean_pooling_cross_encoder

    pairs = [("How many days of paid holiday do I get?", "Full-time employees get 27 days of paid holiday a year."),
             ("How many days of paid holiday do I get?", "The VPN client is Wayfarer Connect."),
             ("Which room is the war room?", "The Blackthorn Room is the war room."),
             ("What laptop do engineers get?", "Engineers get a ThinkPad P16s Gen 3.")]

    def spread(model) -> float:
        scores = model.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)
        return float(scores.max() - scores.min())

    torch.manual_seed(0)
    cls_head = CrossEncoder(str(_packaged()), num_labels=1, max_length=64, config_kwargs={"num_hidden_layers": 2})
    torch.manual_seed(0)
    ours = mean_pooling_cross_encoder(str(_packaged()), 64, 2)
    assert spread(cls_head) < 1e-3 < 2e-2 < spread(ours)  # measured 0.0002 against 0.097
    with pytest.raises(ValueError, match="--rerank-layers 7: .* has 6 layers"):
        mean_pooling_cross_encoder(str(_packaged()), 64, 7)  # transformers would have added a random seventh


def test_search_reranks_with_the_trained_reranker_unless_told_not_to(tuned_ws, embedder):
    ws, report = tuned_ws
    name = report.parts["reranker"].name
    write_settings(ws, RetrieverSettings(dense_weight=0.5, reranker=name, rerank_top=8))
    searcher = Searcher(ws, embedder)
    hits = searcher.search("mileage rate for my own car", k=5)
    assert all(h.rerank_score is not None for h in hits)
    assert f"reranked by {name} (top 8)" in hits[0].retriever
    plain = Searcher(ws, embedder, rerank=False).search("mileage rate for my own car", k=5)
    assert all(h.rerank_score is None for h in plain) and "reranked" not in plain[0].retriever
    scores = [h.rerank_score for h in hits]
    assert scores == sorted(scores, reverse=True)  # blend weight 1: the reranker's order


def test_a_tuned_embedder_is_recorded_in_the_manifest_and_kept_by_the_indexer(tuned_ws, embedder):
    from retrieve import build_index
    from tune.retriever import reindex, reset_retriever

    ws, report = tuned_ws
    name = report.parts["embedder"].name
    write_settings(ws, RetrieverSettings(embedder=name))
    reindex(ws)
    model = load_current(ws).manifest.settings["embed_model"]
    assert Path(model).name == name
    searcher = Searcher(ws, embedder)  # given the packaged embedder, it loads the index's own instead
    assert searcher.embedder_name == name and Path(searcher.embedder.path).name == name
    again = build_index(ws.parent / "docs", ws)  # the default embedder setting means the workspace's tuned one
    assert again.embedded == 0
    out = reset_retriever(ws)
    assert out["reindexed"] and name in out["removed"]
    assert load_current(ws).manifest.settings["embed_model"] == "all-minilm-l6-v2"


def test_answer_chunks_text_else_best_overlap_of_the_gold_document():
    from evals import metrics as M
    from evals.retrieval import answer_chunks

    def chunk(cid, doc, text):
        return SimpleNamespace(id=cid, doc=doc, text=text)

    chunks = [chunk("a", "d1.md", "The fee is EUR 55 per day."), chunk("b", "d2.md", "Fees: EUR 55 abroad."),
              chunk("c", "d1.md", "Patients improved after twelve weeks of therapy."),
              chunk("d", "d1.md", "Methods: a randomised trial.")]
    normalized = [f" {M.normalize_answer(c.text)} " for c in chunks]
    short = SimpleNamespace(answers=["EUR 55"], doc="d1.md")
    assert answer_chunks(short, chunks, normalized) == {"a", "b"}  # the text, wherever it is
    long = SimpleNamespace(answers=["Therapy improved patients within weeks."], doc="d1.md")
    assert answer_chunks(long, chunks, normalized) == {"c"}  # no chunk holds it: the gold doc's closest chunk
    assert answer_chunks(SimpleNamespace(answers=["nowhere"], doc=None), chunks, normalized) == set()


def test_cli_tune_retriever_errors_are_one_line(tmp_path, built_index):
    import shutil

    shutil.copytree(built_index[1], tmp_path / "ws")
    r = subprocess.run([sys.executable, "-m", "ragtune_cli", "tune-retriever", "--workspace", str(tmp_path / "ws")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "no synth dataset" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "ragtune_cli", "tune-retriever", "--workspace", str(tmp_path / "ws"),
                        "--parts", "decoder"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "--parts takes embedder, reranker" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ragtune_cli", "tune-retriever", "--workspace", str(tmp_path / "ws"),
                        "--fusion-weight", "most"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "--fusion-weight" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "ragtune_cli", "tune-retriever", "--workspace", str(tmp_path / "ws"),
                        "--rerank-layers", "0"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "--rerank-layers must be >= 1" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "ragtune_cli", "tune-retriever", "--workspace", str(tmp_path / "ws"),
                        "--rerank-layers", "7"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "--rerank-layers 7:" in r.stderr and "has 6 layers" in r.stderr  # before mining
    r = subprocess.run([sys.executable, "-m", "ragtune_cli", "search", "holiday days", "--workspace",
                        str(tmp_path / "ws"), "--no-rerank", "--json"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0
    label = "hybrid (dense all-minilm-l6-v2 + BM25 + documents' BM25, adaptive score fusion)"
    assert json.loads(r.stdout)["retriever"] == label


def test_synth_files_with_a_bad_line_name_the_file_and_line(tmp_path):
    from tune.data import DataError, read_jsonl
    from tune.retriever_data import _rows

    bad = tmp_path / "train.jsonl"
    bad.write_text('\n{not json\n', encoding="utf-8")  # blank lines are skipped but counted
    for read in (read_jsonl, _rows):
        with pytest.raises(DataError, match=f"{bad}:2: not valid JSON"):
            read(bad)
    bad.write_text('{"question": "Q?"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=f"{bad}:1: a synth row needs 'question' and 'chunk_id'"):
        _rows(bad)


def test_the_apps_search_training_runs_tune_retriever_in_a_child_process(tmp_path, built_index):
    """The Tune tab's "Train search": serve/jobs.py runs `tune_retriever` in a child process, which reports each stage
    and the summary; the panel then shows users' feedback and the search that runs. A bad setting fails the job
    with its reason, never the server."""
    import shutil
    import time

    from serve.app_views import dataset_choices, job_view, search_markdown
    from serve.jobs import Jobs

    ws = tmp_path / "ws"
    shutil.copytree(built_index[1], ws)
    dataset = _synth_like_dataset(ws)
    _ratings(ws)
    assert dataset_choices(ws) == ["small"]
    assert search_markdown(ws).startswith("**Users' feedback:** 14 answers rated by 2 users: 13 helpful (1 with a "
                                          "passage picked in the chat, 1 with a section pointed at in the viewer)")
    jobs = Jobs(SimpleNamespace(workspace=ws))

    def run(params: dict):
        job = jobs.start("retriever", params)
        deadline = time.monotonic() + 600
        while job.running and time.monotonic() < deadline:
            time.sleep(0.5)
        return job

    failed = run({"dataset": str(dataset), "parts": ["reranker"], "learning_rate": 1.0})
    assert failed.error == "RuntimeError: the search training process exited with status 1: ValueError: unknown " \
                           "search-training settings: learning_rate"
    # "new questions from every document": synth (its defaults) into WS/datasets/search first, then the training
    job = run({"synth": True, "parts": ["reranker"], "max_steps": 2, "max_train_questions": 40,
               "max_val_questions": 20, "negatives": 2, "reranker_batch": 4, "rerank_layers": 2})
    assert job.error is None, job.log
    assert job.result["retriever"]["dataset"] == str(ws / "datasets" / "search")
    assert dataset_choices(ws)[0] == "search" and any(" synth: " in line for line in job.log)
    assert any(line.endswith("training the reranker") for line in job.log)
    assert job.result["retriever"]["questions"]["rated"] == {"train": 8, "val": 3}
    part = job.result["retriever"]["parts"]["reranker"]
    assert job.result["summary"].startswith("search training done: fusion: adaptive score fusion")
    assert f"reranker {part['name']}: {'used' if part['active'] else 'not used'}" in job.result["summary"]
    assert (ws / "retrievers" / part["name"] / "card.json").is_file()
    shown = job_view(job)  # the Tune tab's status: the outcome first, then the stages
    assert shown.startswith("**search training**: done") and "search training done: fusion" in shown
    assert "search now: adaptive score fusion, reranker" in job.log[-2]
    assert ("reranker `" + part["name"] in search_markdown(ws)) == part["active"]
    back = run({"reset": True})  # "Back to the default search"
    assert back.error is None and back.result["summary"].startswith("search is back to the default")
    assert read_settings(ws) == RetrieverSettings() and not any((ws / "retrievers").glob("reranker-*"))
