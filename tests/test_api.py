"""The OpenAI-compatible API of `ragtune serve`, tested with the official `openai` client against a real server
(real SmolLM2, a copy of the sample index, a users file): models, streaming with citations, bad keys, groups
carried by keys, the document route's group check, single-user mode, the busy limit. Every server test runs twice:
with the model in-process, and through `--backend-url` (issue 23: "the API through --backend-url passes the same
API tests as the local model"), the same model then served by another OpenAI-compatible server on loopback. Also the
document-admin safety rules and the vote tally (plain functions, no server)."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from retrieve import build_index
from serve.docs_admin import DocsAdmin, DocsError, safe_filename, safe_folder
from serve.feedback import read_votes, record_vote, tally
from serve.http_guard import upload_folder
from serve.openai_api import serve_in_thread
from serve.server import ServeConfig
from serve.web import build
from tests.conftest import served_copy

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PUBLIC_Q = "How long is the probation period for new hires?"
PUBLIC_DOC = "hr/employee-handbook.md"
PROBATION_DOCS = (PUBLIC_DOC, "hr/onboarding-checklist.md")  # both say how long probation lasts
HR_DOC = "hr/hr-investigations-procedure.txt"  # groups: [hr]
SECRET_DOC = "uploads/quillfeather.md"  # added by the fixture, groups: [hr]
SECRET_Q = "Who is the Quillfeather project lead?"
SECRET_TEXT = """---
groups: [hr]
---
# Project Quillfeather

Project Quillfeather is the code name for the new soil moisture probe. The Quillfeather launch date is 14 March 2027.
The Quillfeather project lead is Imogen Vasquez-Thorne.
"""


@pytest.fixture(scope="module", params=["local", "backend"])
def api(request, tmp_path_factory, built_index, embedder, local_generator):
    def add_secret(root: Path) -> None:
        (root / "docs" / "uploads").mkdir()
        (root / "docs" / SECRET_DOC).write_text(SECRET_TEXT)
        report = build_index(root / "docs", root / "ws", embedder=embedder)  # incremental: one new document
        assert report.added == [SECRET_DOC] and report.embedded == 1

    users = {"alice": ("alice-secret-1", ("hr",), False), "bob": ("bob-secret-12", (), False)}
    with served_copy(tmp_path_factory.mktemp("api"), built_index, generator=local_generator,
                     through_backend=request.param == "backend", embedder=embedder, users=users,
                     prepare=add_secret) as server:
        server.embedder, server.generator = embedder, server.service.generator
        yield server


def client(api, who: str = "bob", **kw) -> OpenAI:
    key = api.keys.get(who, who)
    return OpenAI(base_url=f"{api.url}/v1", api_key=key, max_retries=0, timeout=300, **kw)


def test_models_list_and_keys(api) -> None:
    ids = [m.id for m in client(api).models.list()]
    assert ids[:3] == ["ragtune", "ragtune-rag", "ragtune-base"]  # ragtune: the workspace's better mode (rag here)
    assert not any(i.startswith(("ragtune-tuned", "ragtune-hybrid")) for i in ids)  # no adapter in this workspace
    with pytest.raises(openai.AuthenticationError) as info:
        client(api, "rt-not-a-real-key").models.list()
    assert info.value.status_code == 401
    for path, method in (("/v1/models", "GET"), ("/v1/chat/completions", "POST")):
        resp = httpx.request(method, api.url + path, json={"model": "ragtune-rag", "messages": []})
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError, match="ragtune-nope"):
        client(api).chat.completions.create(model="ragtune-nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="no tuned adapter"):
        client(api).chat.completions.create(model="ragtune-tuned", messages=[{"role": "user", "content": "hi"}])


def test_stream_a_completion_with_citations(api) -> None:
    chunks = list(client(api).chat.completions.create(
        model="ragtune-rag", messages=[{"role": "user", "content": PUBLIC_Q}], stream=True, max_tokens=24,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    pieces = [c for c in chunks if c.choices and c.choices[0].delta.content]
    # the draft gate holds the first sentence until a '?' can no longer make it a question: it ends, or has run on
    # past may_ask's 12 words
    first = pieces[0].choices[0].delta.content if pieces else ""
    assert "6 months" in text and (re.search(r"[.!]\s*(\[\d+\])?\s*$", first) or len(first.split()) >= 12), first
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    extra = final.model_extra
    # the handbook says it, and the onboarding checklist repeats it ('Probation lasts 6 months in total, as explained
    # in the Employee Handbook'): the base model's answer cites one of them, which depends on its wording
    assert len(extra["citations"]) == 1 and extra["citations"][0]["doc"] in PROBATION_DOCS
    cite = extra["citations"][0]
    assert "6 months" in cite["text"] and cite["url"].startswith("/ragtune/doc/hr/")
    assert extra["ragtune"]["user"] == "bob" and extra["ragtune"]["answer"] == text.strip()
    assert extra["ragtune"]["model"] == api.service.model_label  # the backend's, when one answered
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].usage.prompt_tokens > 100
    # the cited document opens through the viewer for this key, with the cited section marked
    page = httpx.get(api.url + cite["url"].split("#")[0], headers={"Authorization": f"Bearer {api.keys['bob']}"})
    assert page.status_code == 200 and "class='cited'" in page.text and "Probation" in page.text


def test_the_key_carries_the_users_groups(api) -> None:
    msgs = [{"role": "user", "content": SECRET_Q}]
    alice = client(api, "alice").chat.completions.create(model="ragtune-rag", messages=msgs, max_tokens=24)
    bob = client(api, "bob").chat.completions.create(model="ragtune-rag", messages=msgs, max_tokens=24)
    a, b = alice.model_extra, bob.model_extra
    assert a["citations"][0]["doc"] == SECRET_DOC and "Vasquez-Thorne" in alice.choices[0].message.content
    assert SECRET_DOC not in [s["doc"] for s in b["ragtune"]["sources"]]  # never even shown to the model
    assert SECRET_DOC not in [c["doc"] for c in b["citations"]] and "Vasquez" not in bob.choices[0].message.content


def test_document_route_checks_groups_and_paths(api) -> None:
    def get(path: str, who: str | None):
        headers = {"Authorization": f"Bearer {api.keys[who]}"} if who else {}
        return httpx.get(api.url + path, headers=headers)

    assert get(f"/ragtune/doc/{HR_DOC}", None).status_code == 401
    assert get(f"/ragtune/doc/{HR_DOC}", "bob").status_code == 403
    ok = get(f"/ragtune/doc/{HR_DOC}", "alice")
    assert ok.status_code == 200 and "6 years" in ok.text
    assert ok.headers["x-content-type-options"] == "nosniff" and "default-src 'none'" in ok.headers[
        "content-security-policy"]
    raw = get(f"/ragtune/doc/{HR_DOC}?raw=1", "alice")
    assert raw.status_code == 200 and raw.headers["content-disposition"].startswith("attachment")
    for bad in ("/ragtune/doc/..%2F..%2Fusers.yaml", "/ragtune/doc/hr/..%2F..%2F..%2Fusers.yaml",
                "/ragtune/doc/%2Fetc%2Fpasswd", "/ragtune/doc/finance/pricing-and-discounts.docx.meta.yaml",
                "/ragtune/doc/nope.md"):
        resp = get(bad, "alice")
        assert resp.status_code == 404, bad
    assert get("/ragtune/evals/x/report.md", "bob").status_code == 403  # reports are for admins


def test_chats_keep_working_while_a_reindex_runs(api) -> None:
    docs = api.service.docs
    (docs.docs_dir / "uploads" / "canteen.md").write_text(
        "# Canteen\n\nThe Tarrowgate canteen serves the Thursday fish pie at 12:15 sharp, in the Larch Hall.\n")
    job = docs.start_reindex(reason="test")
    assert docs.start_reindex() is job  # one re-index at a time
    reply = client(api).chat.completions.create(model="ragtune-rag", max_tokens=24,
                                                messages=[{"role": "user", "content": PUBLIC_Q}])
    assert "6 months" in reply.choices[0].message.content  # answered from whichever generation was live
    deadline = time.monotonic() + 120
    while job.running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.error is None and job.result["added"] == 1 and job.result["embedded"] == 1, job.summary()
    assert "1 added" in job.summary() and docs.indexed_docs()["uploads/canteen.md"]["groups"] == []
    rows = {r[0]: r for r in docs.status_rows(frozenset(), admin=True)}
    assert rows["uploads/canteen.md"][4] == "indexed" and rows[SECRET_DOC][2] == "hr"


def test_a_full_queue_answers_429(api) -> None:
    gate = api.service.gate
    old = gate.max_waiting
    busy = [gate.reserve() for _ in range(gate.max_active)]  # every slot of the batch is taken ...
    for ticket in busy:
        ticket.wait()
    gate.max_waiting = 0  # ... and no one may wait for one
    try:
        with pytest.raises(openai.RateLimitError, match="busy") as info:
            client(api).chat.completions.create(model="ragtune-base",
                                                messages=[{"role": "user", "content": "hello"}], max_tokens=4)
        assert int(info.value.response.headers["retry-after"]) > 0
    finally:
        gate.max_waiting = old
        for ticket in busy:
            ticket.release()


def test_concurrent_requests_all_answered(api) -> None:
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        r = client(api).chat.completions.create(model="ragtune-base", max_tokens=6,
                                                messages=[{"role": "user", "content": f"Say hello to user {i}."}])
        results[i] = r.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == [0, 1, 2] and all(results.values())
    assert api.service.gate.waiting == 0 and api.service.gate.active == 0


def test_a_page_closed_while_queued_gives_its_place_back(api) -> None:
    import gradio as gr

    gate = api.service.gate
    busy = [gate.reserve() for _ in range(gate.max_active)]  # every answer slot is taken (1 local, 16 backend) ...
    for ticket in busy:
        ticket.wait()
    other = gate.reserve()  # ... and someone is already waiting
    chat = api.service.demo.ragtune_handlers["chat"](PUBLIC_Q, [], [], "rag", None, gr.Request(username="bob"))
    assert next(chat)[3] == "thinking…"
    assert next(chat)[3] == "queued" and gate.waiting == 2
    chat.close()  # what Gradio does when the browser goes away
    assert gate.waiting == 1
    other.release()
    for ticket in busy:
        ticket.release()
    assert gate.waiting == 0 and gate.active == 0


def test_single_user_mode_needs_no_key_from_loopback(api) -> None:
    config = ServeConfig(workspace=api.root / "ws", docs_dir=api.root / "docs", users_file=None, max_new_tokens=8)
    service, app = build(config, generator=api.generator, embedder=api.embedder)
    url, stop = serve_in_thread(app, host="127.0.0.1")
    try:
        models = httpx.get(url + "/v1/models").json()
        assert "ragtune-rag" in [m["id"] for m in models["data"]]
        page = httpx.get(f"{url}/ragtune/doc/{HR_DOC}")  # the local user reads every group
        assert page.status_code == 200 and "6 years" in page.text
        assert service.accounts.local_user().admin and "hr" in service.accounts.local_user().groups
        # the local admin's feedback keeps the restricted passages they may open, as the viewer's rule says
        import json

        import gradio as gr

        local, handlers = gr.Request(username=None), service.demo.ragtune_handlers
        *_, rated = list(handlers["chat"]("How long are investigation case files retained after closure?", [], [],
                                          "rag", None, local))[-1]
        [(index, entry)] = rated.items()
        [passage] = [n for n, (_, doc) in entry["read"].items() if doc == HR_DOC][:1]
        says = handlers["rate"](rated, gr.LikeData(None, {"index": index, "value": "x",
                                                          "liked": f"Passage [{passage}] had the answer"}), local)
        assert f"passage [{passage}] held the answer" in says
        row = json.loads((api.root / "ws" / "ratings.jsonl").read_text().splitlines()[-1])
        assert row["user"] == service.accounts.local_user().name and row["docs"] == [HR_DOC] and row["cited"]
    finally:
        stop()


def test_an_empty_workspace_starts_and_says_what_to_do(api, tmp_path: Path) -> None:
    import gradio as gr

    config = ServeConfig(workspace=tmp_path / "empty", users_file=None, max_new_tokens=8)
    service, app = build(config, generator=api.generator, embedder=api.embedder)
    url, stop = serve_in_thread(app)
    try:
        assert httpx.get(url + "/v1/models").status_code == 200
        resp = httpx.post(url + "/v1/chat/completions",
                          json={"model": "ragtune-rag", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 400 and "no documents are indexed yet" in resp.json()["error"]["message"]
        local = gr.Request(username=None)  # single-user mode: the local admin
        handlers = service.demo.ragtune_handlers
        notice = next(v for c, v in handlers["on_load"](local).items() if c.elem_id == "notice")
        assert notice["visible"] and "Upload documents" in notice["value"]
        assert service.docs.docs_dir == tmp_path / "empty" / "docs" and service.docs.docs_dir.is_dir()
        for mode, says in (("rag", "no documents are indexed yet"), ("tuned", "needs a tuned adapter")):
            display = list(handlers["chat"]("hello?", [], [], mode, None, local))[-1][0]
            assert says in display[-1]["content"], display  # a clear message in the chat, not a crash
        # the first upload creates the index, and the same running server answers from it
        src = upload_folder() / tmp_path.name / "Canteen hours.md"  # where Gradio puts a browser's upload
        src.parent.mkdir(parents=True)
        src.write_text("# Canteen\n\nThe canteen serves the Thursday fish pie at 12:15 sharp, in the Larch Hall.\n")
        status = handlers["upload"]([str(src)], "", "", local)[0]
        assert not src.exists()  # the cached copy is removed once saved
        assert "Uploaded Canteen-hours.md" in status and "1 added" in status and service.docs.has_index()
        display = list(handlers["chat"]("Where does the canteen serve the fish pie?", [], [], "rag", None,
                                        local))[-1][0]
        assert "Canteen-hours.md" in display[-1]["content"] and "Larch Hall" in display[-1]["content"], display
    finally:
        stop()


# ---- document admin and votes, as plain functions ----------------------------------------------------------

def test_gradio_history_is_flattened_for_the_engine() -> None:
    from serve.app_views import flatten_messages

    history = [{"role": "user", "content": [{"type": "text", "text": "How long is "}, {"type": "text", "text": "it?"}]},
               {"role": "assistant", "content": "Six months.", "metadata": None},
               {"role": "user", "content": None}]
    assert flatten_messages(history) == [{"role": "user", "content": "How long is it?"},
                                         {"role": "assistant", "content": "Six months."},
                                         {"role": "user", "content": ""}]


def test_upload_names_are_made_safe(tmp_path: Path) -> None:
    assert safe_filename("../../etc/Report 2026 (final).md") == "Report-2026-final.md"
    assert safe_filename("C:\\Users\\x\\notes.TXT") == "notes.txt"
    assert safe_filename("Café menu.html") == "Cafe-menu.html"
    assert safe_filename(".hidden.md") == "hidden.md"
    for bad in ("evil.exe", "noext", "x.md.meta.yaml", ".md", "archive.tar.gz"):
        with pytest.raises(DocsError):
            safe_filename(bad)
    with pytest.raises(DocsError, match=r"\.\."):
        safe_folder("a/../../b")
    assert safe_folder("/team docs//2026/") == "team-docs/2026"


def test_docs_admin_keeps_files_inside_and_writes_sidecars(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (tmp_path / "secret.md").write_text("# outside\n")
    admin = DocsAdmin(tmp_path / "ws", docs, max_upload_bytes=1000)
    src = tmp_path / "upload.tmp"
    src.write_text("# Pay rules\n\nOvertime is paid at 1.5x.\n")
    rel = admin.save_upload(src, "../../Pay Rules.md", "HR, finance", folder="policies")
    assert rel == "policies/Pay-Rules.md" and (docs / rel).read_text().startswith("# Pay rules")
    assert (docs / "policies" / "Pay-Rules.md.meta.yaml").read_text().strip() == "groups:\n- finance\n- hr"
    assert admin.set_groups(rel, "") == ()  # empty groups: everyone (the sidecar still wins over front matter)
    for bad in ("../secret.md", "/etc/passwd", "policies/../../secret.md", ".hidden.md",
                "policies/Pay-Rules.md.meta.yaml"):
        with pytest.raises(DocsError):
            admin.resolve(bad)
    (docs / "link.md").symlink_to(tmp_path / "secret.md")
    with pytest.raises(DocsError):
        admin.resolve("link.md")  # a link that leaves the folder
    big = tmp_path / "big.md"
    big.write_text("x" * 2000)
    with pytest.raises(DocsError, match="limit"):
        admin.save_upload(big, "big.md")
    with pytest.raises(DocsError, match="not allowed"):
        admin.save_upload(src, "run.sh")
    admin.delete(rel)
    assert not (docs / rel).exists() and not (docs / (rel + ".meta.yaml")).exists()


def test_votes_are_appended_and_tallied(tmp_path: Path) -> None:
    answers = {"rag": "a", "tuned": "b", "hybrid": "c"}
    record_vote(tmp_path, "alice", "q1", answers, "rag")
    record_vote(tmp_path, "bob", "q1", answers, "hybrid")
    record_vote(tmp_path, "bob", "q2", answers, "hybrid", adapter="x")
    (tmp_path / "feedback.jsonl").open("a").write("{broken\n")
    with pytest.raises(ValueError):
        record_vote(tmp_path, "bob", "q3", answers, "base")
    rows = read_votes(tmp_path)
    assert [r["user"] for r in rows] == ["alice", "bob", "bob"] and rows[2]["adapter"] == "x"
    assert rows[0]["answers"] == answers and rows[0]["question"] == "q1"
    assert tally(tmp_path) == [["rag", 1, 33.3], ["tuned", 0, 0.0], ["hybrid", 2, 66.7]]


def test_the_plain_model_name_answers_in_the_workspace_s_better_mode(api) -> None:
    reply = client(api).chat.completions.create(model="ragtune", messages=[{"role": "user", "content": PUBLIC_Q}],
                                                max_tokens=16)
    # no adapter here, so no evaluation has shown hybrid is not below rag: rag (tests/test_adapter_choice.py flips it)
    assert reply.model_extra["ragtune"]["mode"] == "rag" and reply.choices[0].message.content.strip()
