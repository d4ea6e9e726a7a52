"""Issue 20, attacked the way the review did: through HTTP against a real server (real SmolLM2, a copy of the
sample index, a users file), Gradio's event API called by fn_index with raw JSON. One test per finding, named after
it; the reader cost bounds are in tests/test_reader_limits.py, the throttle and user management in
tests/test_security_users.py. See SECURITY.md for the rules these tests hold."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from gradio.utils import get_upload_folder

from retrieve import build_index
from tests.conftest import served_copy
from tests.gradio_http import GradioSession, fn_index, fn_named

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-12"}
USERS = {"alice": (PASSWORDS["alice"], ("hr",), True), "bob": (PASSWORDS["bob"], (), False),
         "carol": ("carol-secret-1", ("finance",), False)}
FINANCE_DOC = "finance/budget-fy2026.md"  # groups: [finance]; alice is an admin in hr only
HR_DOC = "hr/hr-investigations-procedure.txt"  # groups: [hr]
FINANCE_Q = "What is the total operating expenditure budget for FY2026?"


def add_links(root: Path, embedder) -> None:
    """The review's link cases, indexed the way an admin's `ragtune index` would: a link in a public folder to a
    restricted document, a link to a file outside the documents folder, a linked folder."""
    docs = root / "docs"
    (docs / "public").mkdir()
    (docs / "public" / "alias.docx").symlink_to(docs / "finance" / "pricing-and-discounts.docx")
    (root / "outside.md").write_text("# Outside\n\nThe server's private notes: the door code is 7310.\n")
    (docs / "public" / "outside.md").symlink_to(root / "outside.md")
    (docs / "public" / "finance-link").symlink_to(docs / "finance", target_is_directory=True)
    build_index(docs, root / "ws", embedder=embedder)


@pytest.fixture(scope="module")
def sec(tmp_path_factory, built_index, embedder, local_generator):
    with served_copy(tmp_path_factory.mktemp("sec"), built_index, generator=local_generator, embedder=embedder,
                     users=USERS, prepare=lambda root: add_links(root, embedder)) as server:
        yield server


def session(sec, name: str) -> GradioSession:
    return GradioSession(sec.url, name, PASSWORDS[name])


def bearer(sec, name: str) -> dict:
    return {"Authorization": f"Bearer {sec.keys[name]}"}


def file_data(path) -> dict:
    return {"path": str(path), "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


# ---- 1. uploads --------------------------------------------------------------------------------------------------

def test_an_upload_call_cannot_copy_a_server_file_and_a_refused_call_touches_nothing(sec) -> None:
    demo = sec.service.demo
    upload = fn_index(demo, demo.ragtune_handlers["upload"])
    secret = sec.root / "ws" / "adapters" / "x" / "README.md"  # in the workspace, which Gradio's blocked_paths name
    secret.parent.mkdir(parents=True)
    secret.write_bytes(f"# Adapter notes\n\nThe launch code is {os.urandom(8).hex()}.\n".encode())  # found nowhere else
    alice, bob = session(sec, "alice"), session(sec, "bob")
    data = [[file_data(secret)], "", "uploads"]
    for who, status in ((bob, 403), (alice, 400)):
        assert who.join(upload, data).status_code == status
        assert who.join(upload, data, fn_index=str(upload)).status_code == status  # Gradio reads "15" as 15
        for route in ("/gradio_api/call/upload", "/gradio_api/run/upload", "/gradio_api/call/v2/upload"):
            assert who.http.post(route, json={"data": data}).status_code == status, route
    cached = [p for p in Path(get_upload_folder()).rglob("*") if p.is_file() and p.read_bytes() == secret.read_bytes()]
    assert cached == []  # refused before Gradio copied anything into its cache
    assert not any(p.name == "README.md" for p in (sec.root / "docs").rglob("*"))

    assert bob.upload("parked.md", b"x" * 1000).status_code == 403  # only admins put files into Gradio's cache
    sent = alice.upload("Canteen hours.md", b"# Canteen\n\nThe canteen opens at 11:45 in the Larch Hall.\n")
    assert sent.status_code == 200
    [cache_path] = sent.json()
    done = alice.call(upload, [[file_data(cache_path)], "", "uploads"])
    assert done["success"] and "Uploaded uploads/Canteen-hours.md" in done["output"]["data"][0]
    assert not Path(cache_path).exists()  # Gradio's copy is removed once it is in the documents folder


# ---- 3. malformed paths ------------------------------------------------------------------------------------------

def test_malformed_paths_are_400_or_404_never_500(sec) -> None:
    long = "a" * 5000
    paths = ["/ragtune/doc/x.md%00.txt", "/ragtune/doc/hr/employee-handbook.md%00", "/ragtune/doc/%0a.md",
             "/ragtune/doc/%ff%fe.md", f"/ragtune/doc/{long}.md", "/ragtune/doc/" + "a/" * 2100 + "x.md",
             "/ragtune/doc/hr/%2e%2e/%2e%2e/users.yaml", "/ragtune/evals/%00/report.md",
             f"/ragtune/evals/{long}/report.md", "/gradio_api/file=%00", "/ragtune/doc/public/alias.docx%00"]
    for path in paths:
        for headers in (bearer(sec, "alice"), {}):
            status = httpx.get(sec.url + path, headers=headers).status_code
            assert status in (400, 401, 404) and (headers == {} or status != 401), (path, status)


# ---- 5. one reading rule -----------------------------------------------------------------------------------------

def test_groups_decide_reading_for_admins_too_on_every_path(sec) -> None:
    alice = session(sec, "alice")
    for url in (f"/ragtune/doc/{FINANCE_DOC}", f"/ragtune/doc/{FINANCE_DOC}?raw=1"):
        assert alice.http.get(url).status_code == 403  # her session cookie
        assert httpx.get(sec.url + url, headers=bearer(sec, "alice")).status_code == 403  # her key
    assert alice.http.get(f"/ragtune/doc/{HR_DOC}").status_code == 200  # her own group opens
    reply = httpx.post(sec.url + "/v1/chat/completions", headers=bearer(sec, "alice"), timeout=300, json={
        "model": "ragtune-rag", "max_tokens": 16, "messages": [{"role": "user", "content": FINANCE_Q}]}).json()
    assert FINANCE_DOC not in [s["doc"] for s in reply["ragtune"]["sources"]]

    handlers = sec.service.demo.ragtune_handlers
    chat = alice.call(fn_index(sec.service.demo, handlers["chat"]), [FINANCE_Q, [], [], "rag", None, {}])
    assert chat["success"] and "budget-fy2026" not in json.dumps(chat["output"]["data"][0])
    rows = alice.call(fn_named(sec.service.demo, "refresh_docs"), [])["output"]["data"][0]["data"]
    [finance] = [r for r in rows if "budget-fy2026" in r[0]]
    assert "](" not in finance[0] and finance[1] == "" and finance[2] == "finance"  # listed to manage, not to read
    assert all("](" in r[0] for r in rows if "hr-investigations" in r[0])  # a document of her group: a link


# ---- 6. links ----------------------------------------------------------------------------------------------------

def test_links_in_the_documents_folder_are_not_followed_and_never_weaken_groups(sec, tmp_path, embedder) -> None:
    indexed = sec.service.docs.indexed_docs()
    assert indexed["finance/pricing-and-discounts.docx"]["groups"] == ["finance"]
    assert not [p for p in indexed if p.startswith("public/")]
    failed = {f[0]: f[1] for f in sec.service.docs.failures()}
    assert "symbolic link" in failed["public/alias.docx"] and "symbolic link" in failed["public/outside.md"]
    assert "linked folder" in failed["public/finance-link"]
    for path in ("public/alias.docx", "public/outside.md", "public/finance-link/budget-fy2026.md"):
        for raw in ("", "?raw=1"):
            assert httpx.get(f"{sec.url}/ragtune/doc/{path}{raw}", headers=bearer(sec, "bob")).status_code == 404

    docs = tmp_path / "docs"  # a hard link is the same file at two paths: indexed at neither
    (docs / "finance").mkdir(parents=True)
    shutil.copy(sec.root / "docs" / "finance" / "pricing-and-discounts.docx", docs / "finance")
    (docs / "finance" / "pricing-and-discounts.docx.meta.yaml").write_text("groups: [finance]\n")
    os.link(docs / "finance" / "pricing-and-discounts.docx", docs / "copy.docx")
    (docs / "plain.md").write_text("# Plain\n\nNothing restricted here.\n")
    report = build_index(docs, tmp_path / "ws", embedder=embedder)
    assert report.added == ["plain.md"]
    assert {f.path for f in report.failed} == {"copy.docx", "finance/pricing-and-discounts.docx"}
    assert all("hard link" in f.error for f in report.failed)


# ---- 7. smaller ones ---------------------------------------------------------------------------------------------

def test_temperature_and_token_limits_outside_their_range_are_refused_like_openai(sec) -> None:
    for field, value, code in (("temperature", 2.5, "decimal_above_max_value"),
                               ("temperature", -0.1, "decimal_below_min_value"),
                               ("max_tokens", 0, "integer_below_min_value")):
        resp = httpx.post(sec.url + "/v1/chat/completions", headers=bearer(sec, "bob"), json={
            "model": "ragtune-base", field: value, "messages": [{"role": "user", "content": "hi"}]})
        error = resp.json()["error"]
        assert resp.status_code == 400 and error["param"] == field and error["code"] == code, resp.text
    ok = httpx.post(sec.url + "/v1/chat/completions", headers=bearer(sec, "bob"), timeout=300, json={
        "model": "ragtune-base", "temperature": 2, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_refused_gradio_calls_print_no_traceback(sec, capfd) -> None:
    demo = sec.service.demo
    handlers = demo.ragtune_handlers
    capfd.readouterr()
    assert session(sec, "bob").join(fn_index(demo, handlers["delete"]), ["hr/employee-handbook.md"]).status_code \
        == 403
    refused = session(sec, "alice").call(fn_index(demo, handlers["set_groups"]), [None, "hr"])  # nothing picked
    assert not refused["success"] and refused["output"]["error"] == "Pick a document first."
    out = capfd.readouterr()
    assert "Traceback" not in out.out + out.err


def test_health_counters_and_the_route_list_need_a_login(sec) -> None:
    assert httpx.get(sec.url + "/ragtune/health").json() == {"ok": True}  # a load balancer's probe
    assert httpx.get(sec.url + "/openapi.json").status_code == 401
    full = httpx.get(sec.url + "/ragtune/health", headers=bearer(sec, "bob")).json()
    assert full["ok"] and "served" in full and "waiting" in full
    assert session(sec, "bob").http.get("/openapi.json").status_code == 200


def test_a_rating_records_only_the_raters_own_answer_and_what_they_may_read(sec) -> None:
    """The chat's thumbs up / down (tune/ratings.py: what tune-retriever learns from) over Gradio's HTTP API: no login
    is refused; what a rating records comes from the server's state of the rater's own chat, never from the call."""
    demo = sec.service.demo
    chat, rate = (fn_index(demo, demo.ragtune_handlers[n]) for n in ("chat", "rate"))
    log = sec.root / "ws" / "ratings.jsonl"
    start = len(log.read_text().splitlines()) if log.exists() else 0
    like = {"index": 1, "value": "x", "liked": True}
    forged = {"1": {"id": "forged", "question": FINANCE_Q, "mode": "rag", "adapter": None, "answer": "x",
                    "cited": ["forged"], "docs": [FINANCE_DOC]}}

    def rated(who: GradioSession, liked=True) -> dict:
        joined = who.join(rate, [forged], event_data={**like, "liked": liked})
        return joined.json() if joined.status_code != 200 else who.result(joined.json()["event_id"])

    assert not rated(GradioSession(sec.url)).get("success")  # not logged in: refused, nothing written
    bob = session(sec, "bob")
    nothing = rated(bob)  # no answer in his chat yet: the forged state is not his
    assert nothing["success"] and "Only answers given in this chat" in nothing["output"]["data"][0]
    assert (len(log.read_text().splitlines()) if log.exists() else 0) == start
    answered = bob.call(chat, ["How long is the probation period for new hires?", [], [], "rag", None, forged])
    assert answered["success"]
    thanks = rated(bob)
    assert thanks["success"] and "recorded" in thanks["output"]["data"][0]
    [row] = [json.loads(line) for line in log.read_text().splitlines()[start:]]
    assert row["user"] == "bob" and row["liked"] is True and row["question"].startswith("How long is the probation")
    assert row["id"] != "forged" and row["cited"] and FINANCE_DOC not in row["docs"]
    assert all(sec.service.docs.may_read(d, frozenset()) for d in row["docs"])
    assert oct(log.stat().st_mode & 0o777) == "0o600"  # it holds users' questions
    for liked, says in (("Passage [9] had the answer", "Unknown feedback"), ({"x": 1}, "Unknown feedback"),
                        ("Passage [5] had the answer", "read no passage [5]")):  # the answer read three
        assert says in rated(bob, liked)["output"]["data"][0]
    assert len(log.read_text().splitlines()) == start + 1  # none of those wrote a line
    assert "passage [1] held the answer" in rated(bob, "Passage [1] had the answer")["output"]["data"][0]
    pick = json.loads(log.read_text().splitlines()[-1])
    assert pick["id"] == row["id"] and pick["passage"] == 1 and len(pick["cited"]) == 1


def test_the_viewers_section_form_needs_the_readers_own_token_and_a_document_they_may_read(sec) -> None:
    """The viewer's "this section answers it" (a rating naming a section's chunks): a form another site could post
    for a logged-in reader carries no valid token; bounds on the section and the question; restricted stays out."""
    import html

    handbook = "/ragtune/doc/hr/employee-handbook.md"
    log = sec.root / "ws" / "ratings.jsonl"
    lines = lambda: len(log.read_text().splitlines()) if log.exists() else 0  # noqa: E731
    start = lines()
    bob, alice = session(sec, "bob"), session(sec, "alice")
    token = re.search(r"name='token' value='([0-9a-f]+)'", bob.http.get(handbook).text).group(1)
    alices = re.search(r"name='token' value='([0-9a-f]+)'", alice.http.get(handbook).text).group(1)
    heading = re.search(r"name='section' value='1'><input type='hidden' name='heading' value='([^']*)'",
                        bob.http.get(handbook).text).group(1)
    form = {"token": token, "section": "1", "heading": html.unescape(heading),
            "question": "How long until a new starter is fully on board?"}
    post = "/ragtune/source/hr/employee-handbook.md"
    assert httpx.post(sec.url + post, data=form).status_code == 401  # no login
    for bad, code in (({"token": "0" * 64}, 403), ({"token": alices}, 403), ({"section": "99"}, 400),
                      ({"section": "-1"}, 400), ({"question": "  "}, 400), ({"question": "x" * 501}, 400),
                      ({"section": "2"}, 409)):  # the heading of section 1 with section 2: a changed document
        assert bob.http.post(post, data={**form, **bad}).status_code == code, bad
    assert bob.http.post(f"/ragtune/source/{FINANCE_DOC}", data=form).status_code == 403  # not his token, nor group
    assert lines() == start  # none of those wrote a line
    done = bob.http.post(post, data=form)
    assert done.status_code == 303 and "thanks=1" in done.headers["location"]
    assert "Thanks: recorded" in bob.http.get(done.headers["location"]).text
    row = json.loads(log.read_text().splitlines()[-1])
    assert row["user"] == "bob" and row["mode"] == "viewer" and row["liked"] is True and row["cited"]
    assert row["docs"] == ["hr/employee-handbook.md"] * len(row["cited"])
    chunks = {c.id: c for c in sec.service.searcher.get().generation.chunks}
    assert {chunks[c].doc for c in row["cited"]} == {"hr/employee-handbook.md"}


def test_the_viewers_form_credits_the_chunk_of_a_long_section_that_is_most_like_the_question(sec) -> None:
    """A section of several chunks: the rating names the one the question matches (serve/server.section_chunks),
    not the whole section, so search training does not learn the section's other chunks as answers."""
    import html
    from collections import defaultdict

    sections = defaultdict(list)
    for c in sec.service.searcher.get().generation.chunks:
        if not c.groups and c.section:
            sections[(c.doc, c.section)].append(c)
    (doc, heading), parts = next((k, v) for k, v in sections.items() if len(v) >= 3)
    bob = session(sec, "bob")
    page = bob.http.get(f"/ragtune/doc/{doc}").text
    forms = re.findall(r"name='section' value='(\d+)'><input type='hidden' name='heading' value='([^']*)'", page)
    index = next(i for i, h in forms if html.unescape(h) == heading)
    token = re.search(r"name='token' value='([0-9a-f]+)'", page).group(1)
    target = parts[1]
    question = "Where does it say that " + " ".join(target.text.split()[:30]) + "?"
    done = bob.http.post(f"/ragtune/source/{doc}", data={"token": token, "section": index, "heading": heading,
                                                        "question": question})
    assert done.status_code == 303
    row = json.loads((sec.root / "ws" / "ratings.jsonl").read_text().splitlines()[-1])
    assert row["question"] == question and row["cited"][0] == target.id and len(row["cited"]) < len(parts)


def test_search_training_is_for_admins_and_starts_only_on_a_dataset_of_the_workspace(sec) -> None:
    """The Tune tab's "Train search" (`tune-retriever` as a job, serve/jobs.py) over HTTP: another user's call is
    refused before it is read; an admin's call naming a path instead of one of the workspace's datasets, nothing to
    train or minutes out of range is refused with the reason, and none of them starts a job. The feedback panel
    (how many users rated) is filled for admins only."""
    demo = sec.service.demo
    train = fn_index(demo, demo.ragtune_handlers["train_search"])
    mini = sec.root / "ws" / "datasets" / "mini"
    mini.mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "val.jsonl"):
        (mini / name).write_text("")
    bob, alice = session(sec, "bob"), session(sec, "alice")
    assert bob.join(train, ["mini", ["reranker"], 1, True]).status_code == 403
    assert bob.join(fn_index(demo, demo.ragtune_handlers["reset_search"]), []).status_code == 403
    assert GradioSession(sec.url).join(train, ["mini", ["reranker"], 1, True]).status_code == 401
    load = fn_index(demo, demo.ragtune_handlers["on_load"])  # the page load fills the panel: admins only
    assert "Users' feedback" in json.dumps(alice.call(load, [])["output"])  # and lists the datasets
    assert "Users' feedback" not in json.dumps(bob.call(load, [])["output"])
    gradio_says = "is not in the list of choices"  # Gradio checks a dropdown's value against its choices first
    for data, says in ((["../../../etc", ["reranker"], 1, True], gradio_says),
                       ([str(mini), ["reranker"], 1, True], gradio_says),
                       (["mini", ["everything"], 1, True], gradio_says),
                       (["mini", [], 1, True], "Pick what to train"),
                       (["mini", ["reranker"], 0, True], "Minutes per part must be a number from 0.5 to 60"),
                       (["mini", ["reranker"], "1e9", True], "Minutes per part"),
                       (["mini", ["reranker"], None, True], "Minutes per part")):
        refused = alice.call(train, data)
        assert not refused["success"] and says in refused["output"]["error"], (data, refused)
    assert "retriever" not in sec.service.jobs.last  # nothing started


def test_admins_see_only_the_not_helpful_questions_their_own_groups_could_have_asked(sec) -> None:
    """The search panel lists the newest answers marked not helpful (gaps in the documents), filled on page load over
    HTTP: an admin sees a question only when every group of its asker is theirs and every document its answer read
    is one they may open; a rater no longer in the users file, a liked answer and a non-admin see nothing."""
    from tune.ratings import record_rating

    ws = sec.root / "ws"
    for user, question, liked, docs in (
            ("bob", "How many weeks of parental leave do fathers get?", False, ["hr/employee-handbook.md"]),
            ("bob", "how many weeks of parental leave do fathers get", False, []),  # the same question again
            ("carol", "Is the Zephyrine acquisition still going ahead?", False, []),  # finance may know of it
            ("bob", "Which cost centre pays for Orrery?", False, [FINANCE_DOC]),  # read a finance document
            ("mallory", "Who is being let go in March?", False, []),  # gone from the users file
            ("bob", "What is the dress code on Fridays?", True, ["hr/employee-handbook.md"])):
        record_rating(ws, user, question, question, liked, mode="rag", adapter=None, answer="I do not know.",
                      cited=[], docs=docs)
    demo = sec.service.demo
    load = fn_index(demo, demo.ragtune_handlers["on_load"])
    alice = json.dumps(session(sec, "alice").call(load, [])["output"])
    assert "Not helpful, newest first" in alice and alice.count("parental leave") == 1  # once, marked twice
    assert re.search(r"\| 2 \| [Hh]ow many weeks of parental leave do fathers get", alice), alice
    for hidden in ("Zephyrine", "Orrery", "let go", "dress code"):
        assert hidden not in alice, hidden
    bob = json.dumps(session(sec, "bob").call(load, [])["output"])
    assert "parental leave" not in bob and "Not helpful" not in bob  # no admin: no panel at all


def test_a_copied_workspace_writes_uploads_into_its_own_documents(tmp_path, embedder, local_generator) -> None:
    from serve.server import Ragtune, ServeConfig

    original = tmp_path / "original"
    (original / "docs").mkdir(parents=True)
    (original / "docs" / "a.md").write_text("# A\n\nThe first document.\n")
    build_index(original / "docs", original, embedder=embedder)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)

    def docs_dir(ws: Path) -> Path:
        return Ragtune(ServeConfig(workspace=ws), generator=local_generator, embedder=embedder).docs.docs_dir

    assert docs_dir(copy).resolve() == (copy / "docs").resolve()
    manifest = next((copy / "index").glob("gen-*/manifest.json"))
    legacy = {k: v for k, v in json.loads(manifest.read_text()).items() if k != "workspace"}
    manifest.write_text(json.dumps(legacy))  # an index written before the manifest named its workspace
    assert docs_dir(copy).resolve() == (copy / "docs").resolve()
    outside = tmp_path / "shared-docs"  # a folder outside any workspace is the one it names, copy or not
    shutil.copytree(original / "docs", outside)
    build_index(outside, tmp_path / "third", embedder=embedder)
    shutil.copytree(tmp_path / "third", tmp_path / "third-copy")
    assert docs_dir(tmp_path / "third-copy").resolve() == outside.resolve()
