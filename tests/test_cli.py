"""The CLI contract: `ragtune index` and `ragtune search` flags and JSON shapes, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import REPO


def ragtune(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ragtune_cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_help_is_fast_and_lists_commands():
    start = time.perf_counter()
    out = ragtune("--help")
    assert out.returncode == 0 and "index" in out.stdout and "search" in out.stdout
    assert time.perf_counter() - start < 5  # no torch import for --help


def test_index_and_search_json_contract(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "a.md").write_text("# Kettles\n\n## Descaling\n\nDescale the Brindlewick kettle every 9 days.\n")
    (docs / "secret.md").write_text("---\ngroups: [finance]\n---\n# Secret\n\nThe vault kettle code is 7781.\n")
    (docs / "bad.pdf").write_bytes(b"not a pdf")
    out = ragtune("index", docs, "--json", env={"RAGTUNE_WORKSPACE": str(tmp_path / "ws")})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {k: report[k] for k in ("added", "updated", "removed", "unchanged")} == {
        "added": 2, "updated": 0, "removed": 0, "unchanged": 0}
    assert report["chunks"] == 2 and report["failed"][0]["path"] == "bad.pdf" and report["failed"][0]["error"]
    out = ragtune("search", "how often to descale the kettle", "--json", "-k", "5",
                  env={"RAGTUNE_WORKSPACE": str(tmp_path / "ws")})
    hits = json.loads(out.stdout)["hits"]
    assert [h["doc"] for h in hits] == ["sub/a.md"]  # secret.md is restricted and no --groups was given
    assert set(hits[0]) >= {"doc", "section", "score", "text"} and hits[0]["section"] == "Kettles > Descaling"
    out = ragtune("search", "vault kettle code", "--workspace", tmp_path / "ws", "--groups", "finance",
                  "--mode", "bm25", "--json")
    assert json.loads(out.stdout)["hits"][0]["doc"] == "secret.md"
    out = ragtune("search", "kettle", "--workspace", tmp_path / "ws", "--mode", "dense")
    assert out.returncode == 0 and "sub/a.md" in out.stdout


def test_errors_are_one_clear_line(tmp_path):
    out = ragtune("index", tmp_path / "missing", "--workspace", tmp_path / "ws")
    assert out.returncode == 2 and "documents folder not found" in out.stderr and "Traceback" not in out.stderr
    out = ragtune("search", "x", "--workspace", tmp_path / "empty")
    assert out.returncode == 2 and "no index" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\ntext\n")
    ragtune("index", tmp_path / "docs", "--workspace", tmp_path / "ws")
    out = ragtune("search", "x", "--workspace", tmp_path / "ws", "--mode", "fuzzy")
    assert out.returncode == 2 and "search mode" in out.stderr and "Traceback" not in out.stderr


def test_ask_reprints_the_final_answer_only_when_it_differs_from_the_last_streamed_draft():
    from ragtune_cli.main import answer_to_reprint
    from generate.prompts import REFUSAL

    assert answer_to_reprint("27 days [1]", "27 days [1]") is None
    assert answer_to_reprint(" 27 days [1]\n", "27 days [1]") is None
    assert answer_to_reprint("27 days [3]", "27 days [1]") == "27 days [1]"  # the citation was moved
    assert answer_to_reprint("EUR 20 [2]", REFUSAL) == REFUSAL  # an unsupported guess was withheld
    # a second look streams its draft after a blank line: only that last draft counts
    assert answer_to_reprint("EUR 20 [2]\n\n27 days [1]", "27 days [1]") is None
    assert answer_to_reprint("Para one.\n\nPara two [1].", "Para one.\n\nPara two [1].") is None
    assert answer_to_reprint(f"{REFUSAL}\n\n27 days [2]", "27 days [1]") == "27 days [1]"
