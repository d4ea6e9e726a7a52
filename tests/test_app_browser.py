"""The app in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download)
against a real server started here on a free loopback port: a copy of the sample index, the real SmolLM2, a
zero-initialised LoRA adapter (so tuned and hybrid run), and a users file with an admin in group hr (alice) and a
user without groups (bob).

Screenshots of every page go to the test's tmp_path and to /tmp/ragtune-screens/.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import served_copy

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENS = Path("/tmp/ragtune-screens")
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-12"}
PUBLIC_Q = "How long is the probation period for new hires?"
SECRET_Q = "When is the Quillfeather launch date?"
SECRET_TEXT = """# Project Quillfeather

Project Quillfeather is the code name for the new soil moisture probe. The Quillfeather launch date is 14 March 2027.
The Quillfeather project lead is Imogen Vasquez-Thorne.
"""
ANSWER_WAIT = 240_000  # ms: generous, the 2-core machine is shared


def _tiny_adapter(loaded, folder: Path) -> None:
    """A LoRA adapter whose B matrices are zero (peft's initialisation): it loads and runs like a trained one and
    leaves the base model's answers unchanged. Made on a copy, so the served model stays unwrapped."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(copy.deepcopy(loaded.model), config)
    model.save_pretrained(folder)
    (folder / "card.json").write_text(json.dumps({"name": "tiny", "base_model": loaded.name, "steps": 0,
                                                  "created": "test fixture"}))
    (folder / "README.md").write_text("# LoRA adapter `tiny`\n\nA zero-initialised test adapter.\n")


@pytest.fixture(scope="module", params=["local", "backend"])
def app_server(request, tmp_path_factory, built_index, embedder, model_cache_dir):
    """The app answering with the model in-process, or through `--backend-url` (issue 23: "the app through
    --backend-url passes the same browser tests as the local model"): the same model and adapter then served by
    another OpenAI-compatible server on loopback, the adapter's files also in WS/adapters as for vLLM."""
    from generate.local import LocalGenerator
    from generate.models import ModelConfig, load_model

    # a generator of our own: loading an adapter wraps its model, which must not leak into other test modules
    loaded = load_model(ModelConfig(cache_dir=model_cache_dir))
    users = {"alice": (PASSWORDS["alice"], ("hr",), True), "bob": (PASSWORDS["bob"], (), False)}
    root = tmp_path_factory.mktemp(f"app-{request.param}")
    adapter = root / "tiny"
    _tiny_adapter(loaded, adapter)
    with served_copy(root / "served", built_index, generator=LocalGenerator(loaded),
                     through_backend=request.param == "backend", adapters={"tiny": adapter}, embedder=embedder,
                     users=users) as server:
        SCREENS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield SimpleNamespace(url=server.url + "/", service=server.service, browser=browser, root=server.root)
            browser.close()


def fill_until_it_holds(page, box, value: str, tries: int = 5) -> None:
    """Type into a box and retype until the value survives a short wait. Seen once in CI (not reproduced here):
    the evaluation ran the box's default 5 questions after the test had typed 1 into the just-opened tab."""
    for _ in range(tries):
        box.fill(value)
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == value:
            return
    raise AssertionError(f"{box} kept resetting to {box.input_value()!r} instead of {value!r}")


def login(server, name: str):
    context = server.browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(server.url)
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#who")).to_contain_text(f"Signed in as {name}", timeout=60_000)
    return page


def shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shutil.copy(path, SCREENS / path.name)


# Records in the page every distinct text of the newest answer bubble, at each DOM change: a state that lasts
# less than a polling interval (a one-sentence answer shown just before its sources) is still seen.
WATCH_ANSWER = """(before) => {
  window.__seen = [];
  const root = document.querySelector('#chatbot');
  const note = () => {
    const bots = root.querySelectorAll('.bot');
    if (bots.length <= before) return;
    const text = bots[bots.length - 1].innerText;  // (Gradio's own placeholder is no state of the answer)
    if (text && text !== 'Loading content' && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
  };
  if (window.__watch) window.__watch.disconnect();
  window.__watch = new MutationObserver(note);
  window.__watch.observe(root, {childList: true, subtree: true, characterData: true});
}"""


def ask(page, question: str) -> list[str]:
    """Ask in the Chat tab; return the distinct texts the answer bubble showed while it streamed."""
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill(question)
    bubbles = page.locator("#chatbot .bot")
    before = bubbles.count()
    page.evaluate(WATCH_ANSWER, before)
    page.locator("#chat-send").click()
    deadline = time.monotonic() + ANSWER_WAIT / 1000
    text = ""
    while time.monotonic() < deadline:
        if bubbles.count() > before:
            text = bubbles.last.inner_text()
            if "rag · " in text or "⚠" in text:  # the timing line closes a finished answer
                seen = page.evaluate("() => window.__seen")
                return seen if seen and seen[-1] == text else [*seen, text]
        time.sleep(0.1)
    raise AssertionError(f"no finished answer within {ANSWER_WAIT / 1000:.0f} s; saw {text!r}")


def search_docs(page, term: str) -> str:
    """The documents table's text after typing `term` in its search box (the table only renders visible rows)."""
    box = page.locator("#doc-table input").first
    box.fill(term)
    time.sleep(0.5)
    return page.locator("#doc-table").inner_text()


def test_login_ask_and_see_the_streamed_answer_with_a_citation(app_server, tmp_path) -> None:
    page = login(app_server, "bob")
    shot(page, tmp_path, "01-login-chat-empty")
    seen = ask(page, PUBLIC_Q)
    final = seen[-1]
    partial = [t for t in seen[:-1] if t.strip(" …") and "Sources" not in t]
    # streamed ahead of its sources, from a whole first sentence on (the draft gate holds a first sentence until a
    # question mark can no longer make it a question: it ends, or has run on past may_ask's 12 words)
    assert partial and (re.search(r"[.!]\s*(\[\d+\])?\s*$", partial[0]) or len(partial[0].split()) >= 12), \
        f"the answer did not stream: {seen}"
    assert "6 months" in final and "Sources" in final
    # the handbook and the onboarding checklist both say it; which one the base model's wording cites varies
    sources = final.split("Sources", 1)[1].split("Also read:")[0]  # the cited ones, not the others read
    cited = [d for d in ("hr/employee-handbook.md", "hr/onboarding-checklist.md") if d in sources]
    assert cited and "6 months" in sources  # and the quoted passage
    shot(page, tmp_path, "02-chat-answer-with-citation")
    # a thumbs up records the answer with its sources, which tune-retriever learns from (tune/ratings.py)
    page.locator("#chatbot").get_by_label("Like", exact=True).last.click()
    expect(page.locator("#status-line")).to_contain_text("helped")
    row = json.loads((app_server.root / "ws" / "ratings.jsonl").read_text().splitlines()[-1])
    assert row["user"] == "bob" and row["liked"] is True and row["question"] == PUBLIC_Q and cited[0] in row["docs"]
    # or, from the feedback menu, the passage that held the answer (one feedback per answer: it replaces the like)
    answer = page.locator("#chatbot .bot").last
    answer.hover()
    page.locator("#chatbot").get_by_label("Feedback", exact=True).last.click()
    page.locator("#chatbot").get_by_role("button", name="Passage [2] had the answer").last.click()
    expect(page.locator("#status-line")).to_contain_text("passage [2] held the answer")
    pick = json.loads((app_server.root / "ws" / "ratings.jsonl").read_text().splitlines()[-1])
    assert pick["id"] == row["id"] and pick["passage"] == 2 and pick["liked"] is True and len(pick["cited"]) == 1
    assert page.get_by_text("Only admins").count() == 0  # no admin handler fired for him on page load
    # bob is no admin: no Tune / Evaluate tabs, no document management
    assert page.get_by_role("tab", name="Tune").count() == 0
    assert page.get_by_role("tab", name="Evaluate").count() == 0
    # the citation opens the document through the server's viewer, with the cited section marked
    link = page.locator("#chatbot .bot").last.locator("a", has_text=cited[0])
    with page.context.expect_page() as new_page:
        link.click()
    doc = new_page.value
    doc.wait_for_load_state()
    expect(doc.locator("section.cited")).to_contain_text("6 months")
    assert f"/ragtune/doc/{cited[0]}" in doc.url
    shot(doc, tmp_path, "03-cited-document")
    # where search misses, the reader can say which section answers their question (a rating; no script needed)
    section = doc.locator("section.cited")
    section.locator("summary").click()
    section.locator("input[name=question]").fill("When am I no longer on trial at work?")
    section.get_by_role("button", name="This section answers it").click()
    expect(doc.locator(".thanks")).to_contain_text("Thanks: recorded")
    assert f"/ragtune/doc/{cited[0]}" in doc.url and "thanks=1" in doc.url  # back to the section
    row = json.loads((app_server.root / "ws" / "ratings.jsonl").read_text().splitlines()[-1])
    assert row["mode"] == "viewer" and row["question"] == "When am I no longer on trial at work?" and row["cited"]
    page.context.close()


def test_admin_uploads_a_restricted_document_asks_about_it_and_gets_it_cited(app_server, tmp_path) -> None:
    page = login(app_server, "alice")
    page.get_by_role("tab", name="Documents").click()
    expect(page.locator("#upload-btn")).to_be_visible()
    shot(page, tmp_path, "04-documents-admin")
    src = tmp_path / "Quillfeather plan.md"
    src.write_text(SECRET_TEXT)
    page.locator("#upload-files input[type=file]").set_input_files(str(src))
    expect(page.locator("#upload-files")).to_contain_text("Quillfeather", timeout=30_000)
    page.locator("#upload-groups textarea").fill("hr")
    page.locator("#upload-btn").click()
    expect(page.locator("#docs-status")).to_contain_text("re-index done", timeout=ANSWER_WAIT)
    expect(page.locator("#docs-status")).to_contain_text("uploads/Quillfeather-plan.md")
    assert "uploads/Quillfeather-plan.md" in search_docs(page, "Quillfeather")
    shot(page, tmp_path, "05-documents-after-upload")
    meta = app_server.service.docs.indexed_docs()["uploads/Quillfeather-plan.md"]
    assert meta["groups"] == ["hr"]
    final = ask(page, SECRET_Q)[-1]
    assert "14 March 2027" in final and "uploads/Quillfeather-plan.md" in final, final
    shot(page, tmp_path, "06-chat-cites-the-upload")
    page.context.close()


def test_a_user_outside_the_group_never_sees_the_document(app_server, tmp_path) -> None:
    indexed = app_server.service.docs.indexed_docs()
    assert indexed.get("uploads/Quillfeather-plan.md", {}).get("groups") == ["hr"], "the upload test must run first"
    page = login(app_server, "bob")
    final = ask(page, SECRET_Q)[-1]
    assert "14 March" not in final and "quillfeather-plan" not in final.lower()
    shot(page, tmp_path, "07-bob-asks-about-the-restricted-doc")
    page.get_by_role("tab", name="Documents").click()
    expect(page.locator("#doc-table")).to_contain_text("company/company-overview.md")
    assert "hr/employee-handbook.md" in search_docs(page, "handbook")  # the search works for him ...
    for hidden in ("Quillfeather", "investigations", "salary"):  # ... and finds no restricted document
        assert hidden.lower() not in search_docs(page, hidden).lower()
    assert not page.locator("#upload-btn").is_visible()  # no management for non-admins
    shot(page, tmp_path, "08-bob-documents")
    assert page.get_by_text("Only admins").count() == 0
    denied = page.request.get(app_server.url + "ragtune/doc/uploads/Quillfeather-plan.md")
    assert denied.status == 403  # his session cookie does not open it either
    allowed = page.request.get(app_server.url + "ragtune/doc/hr/employee-handbook.md")
    assert allowed.status == 200
    page.context.close()


def test_compare_tab_shows_three_answers_and_records_a_vote(app_server, tmp_path) -> None:
    page = login(app_server, "alice")
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-input textarea").fill(PUBLIC_Q)
    page.locator("#compare-go").click()
    for m in ("rag", "tuned", "hybrid"):
        expect(page.locator(f"#compare-{m}-time")).to_contain_text("total", timeout=ANSWER_WAIT)
    answers = {m: page.locator(f"#compare-{m}").inner_text().strip() for m in ("rag", "tuned", "hybrid")}
    assert all(len(a) > 5 and "⚠" not in a for a in answers.values()), answers
    assert "6 months" in answers["rag"] and "Sources" in answers["rag"]
    timings = page.locator("#compare-tuned-time").inner_text()
    assert "tuned (tiny)" in timings and app_server.service.model_label in timings  # the model that answered
    page.locator("#vote-rag").click()
    expect(page.locator("#vote-status")).to_contain_text("Recorded")
    expect(page.locator("#tally")).to_contain_text("100")
    shot(page, tmp_path, "09-compare")
    votes = (app_server.root / "ws" / "feedback.jsonl").read_text().splitlines()
    row = json.loads(votes[-1])
    assert row["user"] == "alice" and row["choice"] == "rag" and row["question"] == PUBLIC_Q
    assert set(row["answers"]) == {"rag", "tuned", "hybrid"} and row["adapter"] == "tiny"
    page.context.close()


def test_admin_tabs_tune_and_evaluate(app_server, tmp_path) -> None:
    from serve.jobs import Job
    from tune.ratings import record_rating

    record_rating(app_server.root / "ws", "bob", "q-canteen", "Where is the canteen on the second floor?", False,
                  mode="rag", adapter=None, answer="I could not find that.", cited=[], docs=[])

    # a finished run's state, as a tuning child process reports it (a real run takes minutes on this CPU)
    job = Job("tune", {"name": "demo"}, phase="done", fraction=1.0, finished=time.time(),
              losses=[{"step": i, "loss": 2.5 / i + 0.6, "kind": "train"} for i in range(1, 9)]
              + [{"step": i, "loss": 2.0 / i + 0.9, "kind": "val"} for i in (4, 8)],
              log=["synth: 74 train / 12 val examples", "adapter demo: val loss 1.40 -> 1.15"])
    app_server.service.jobs.last["tune"] = job
    page = login(app_server, "alice")
    page.get_by_role("tab", name="Tune").click()
    expect(page.locator("#adapter-table")).to_contain_text("tiny")
    # search that learns: the users' feedback so far (bob's ratings above, when run in order) and today's search
    expect(page.locator("#search-feedback")).to_contain_text("Users' feedback")
    expect(page.locator("#search-feedback")).to_contain_text("Search now: adaptive score fusion; reranker none")
    unhelpful = page.locator("#search-feedback table")  # the answers users marked not helpful, newest first
    expect(unhelpful).to_contain_text("Where is the canteen on the second floor?")
    expect(unhelpful).to_contain_text("I could not find that.")
    expect(page.locator("#search-dataset input")).to_have_value("new questions from every document")
    page.locator("#search-reset").click()  # a real job in a child process (nothing to undo here: it is quick)
    expect(page.locator("#search-status")).to_contain_text("search is back to the default", timeout=120_000)
    page.locator("#tune-watch").click()
    expect(page.locator("#tune-status")).to_contain_text("val loss 1.40 -> 1.15")
    expect(page.locator("#tune-loss img")).to_be_visible()
    page.locator("#adapter-for").get_by_label("hybrid", exact=True).check()
    page.locator("#adapter-use").click()
    expect(page.locator("#adapter-table")).to_contain_text("tuned + hybrid")  # the only adapter: auto for tuned
    settings = app_server.root / "ws" / "serve.json"
    deadline = time.monotonic() + 60  # the table said so before the click too: wait for the handler itself
    while not settings.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(settings.read_text()) == {"adapters": {"hybrid": "tiny"}}
    shot(page, tmp_path, "10-tune")
    page.get_by_role("tab", name="Evaluate").click()
    expect(page.locator("#eval-report")).to_contain_text("No evaluation report yet")
    for m in ("tuned", "hybrid"):
        page.locator("#eval-modes").get_by_label(m).uncheck()
        expect(page.locator("#eval-modes").get_by_label(m)).not_to_be_checked()
    fill_until_it_holds(page, page.locator("#eval-limit input"), "1")
    for m in ("tuned", "hybrid"):
        expect(page.locator("#eval-modes").get_by_label(m)).not_to_be_checked()
    page.locator("#eval-go").click()
    expect(page.locator("#eval-status")).to_contain_text("Done: 1 questions", timeout=ANSWER_WAIT)
    expect(page.locator("#eval-report")).to_contain_text("Retrieval: gold document")
    expect(page.locator("#eval-plots img").first).to_be_visible()
    report_link = page.locator("#eval-report a", has_text="report.md")
    href = report_link.get_attribute("href")
    assert re.match(r"ragtune/evals/[^/]+/report\.md$", href)
    assert page.request.get(app_server.url + href).status == 200
    shot(page, tmp_path, "11-evaluate")
    page.context.close()


def test_admin_handlers_refuse_non_admins_on_the_server(app_server) -> None:
    """The tabs are hidden from bob; the handlers behind them also refuse him if called anyway."""
    handlers = app_server.service.demo.ragtune_handlers
    bob, alice = gr.Request(username="bob"), gr.Request(username="alice")
    calls = {"reindex": (bob,), "upload": ([], "", "", bob), "set_groups": ("hr/employee-handbook.md", "", bob),
             "delete": ("hr/employee-handbook.md", bob), "use_adapter": ("tiny", "hybrid", bob), "stop_tune": (bob,)}
    for name, args in calls.items():
        with pytest.raises(gr.Error, match="Only admins"):
            handlers[name](*args)
    for name, args in {"start_tune": ("x", 5, 1, 1, 2048, bob), "run_evaluation": (1, ["rag"], bob),
                       "train_search": ("default", ["reranker"], 1, True, bob), "reset_search": (bob,)}.items():
        with pytest.raises(gr.Error, match="Only admins"):
            next(handlers[name](*args))  # generators: the check runs on the first step
    assert (app_server.root / "docs" / "hr" / "employee-handbook.md").is_file()  # nothing was deleted
    assert handlers["stop_tune"](alice) == "No tuning run is going on."
    with pytest.raises(gr.Error, match="Pick a dataset from the list \\(new questions from every document\\)"):
        next(handlers["train_search"]("default", ["reranker"], 1, True, alice))  # this workspace has no synth data
    with pytest.raises(gr.Error, match="not logged in"):
        handlers["reindex"](gr.Request(username="mallory"))
