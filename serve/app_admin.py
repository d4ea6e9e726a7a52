"""The app's admin handlers (Documents, Tune, Evaluate tabs), kept apart from their layout in serve/app_tabs.py.

Each handler checks the user again on the server (`admin_of`): hiding a tab is only the visible half of the rule.
Admin-only handlers are also marked `admin_only`, so serve/http_guard.py refuses other users' calls of them
before Gradio reads their inputs (an upload's files among them). The tab builders bind these methods to the
Gradio events; the signatures (gr.Request, gr.Progress) are what Gradio inspects, so they stay as they are.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import gradio as gr

from generate.modes import DEFAULT_MODE, MODES
from ingest.workspace import Workspace
from serve import app_views as views
from serve.answer import AnswerError
from serve.app_views import NO_ADAPTER, USE_FOR, _md_escape, _num, job_view, loss_plot, report_view
from serve.docs_admin import DocsError, doc_link
from serve.http_guard import admin_only, in_upload_folder
from serve.server import Ragtune
from serve.users import User


NEW_QUESTIONS = "new questions from every document"  # the search training's first dataset choice: synth first
UNHELPFUL_SHOWN = 10  # the newest answers marked not helpful that the search panel lists


def refusal(message: str) -> gr.Error:
    """The error a handler raises to tell the user no: shown in the app, with no traceback in the server log."""
    return gr.Error(message, print_exception=False)


class AdminHandlers:
    """Handlers over one service; `user_of` / `admin_of` resolve (and check) the session's user."""

    def __init__(self, service: Ragtune, user_of: Callable[..., User], admin_of: Callable[..., User],
                 adapter_update: Callable) -> None:
        self.service = service
        self.ws = service.workspace
        self.user_of = user_of
        self.admin_of = admin_of
        self.adapter_update = adapter_update

    # ---- documents ------------------------------------------------------------------------------------------------
    def doc_rows(self, user: User) -> list[list]:
        rows = self.service.docs.status_rows(self.service.accounts.groups_of(user), user.admin)
        for r in rows:
            indexed = r[4] == "indexed" or r[4].startswith(("changed", "FAILED")) and r[3]
            if indexed and self.service.may_open(user, r[0]):  # an admin's list links only what they may read
                r[0] = f"[{_md_escape(r[0])}]({doc_link(r[0])})"
            else:
                r[0] = _md_escape(r[0])
        return rows

    def doc_choices(self) -> list[str]:
        from ingest import find_documents

        try:
            return [s.path for s in find_documents(self.service.docs.docs_dir)]
        except FileNotFoundError:
            return []

    def refresh_docs(self, request: gr.Request):
        user = self.user_of(request)
        fails = self.service.docs.failures() if user.admin else []
        return self.doc_rows(user), fails, gr.update(choices=self.doc_choices()) if user.admin else gr.update()

    def _wait_reindex(self, job, progress) -> str:
        while job.running:
            progress(job.fraction, desc=job.phase)
            time.sleep(0.3)
        progress(1.0, desc=job.phase)
        return job.summary()

    @admin_only
    def reindex(self, request: gr.Request, progress=gr.Progress()):
        user = self.admin_of(request)
        job = self.service.docs.start_reindex(reason=f"requested by {user.name}")
        summary = self._wait_reindex(job, progress)
        return summary, self.doc_rows(user), self.service.docs.failures(), gr.update(choices=self.doc_choices())

    @admin_only
    def upload(self, files, groups, folder, request: gr.Request, progress=gr.Progress()):
        user = self.admin_of(request)
        files = files or []
        if not isinstance(files, list):
            files = [files]
        if not files:
            raise refusal("Choose one or more files to upload first.")
        saved, problems = [], []
        for f in files:
            path = getattr(f, "name", None) or str(f)
            if not in_upload_folder(path):  # only what a browser uploaded, never a server file named in a call
                problems.append(f"- {_md_escape(Path(path).name)}: not an uploaded file")
                continue
            try:
                saved.append(self.service.docs.save_upload(path, Path(path).name, groups, folder))
            except (DocsError, OSError) as e:
                problems.append(f"- {_md_escape(str(e))}")
            finally:  # Gradio's copy in its cache must not outlive the upload (it may be restricted)
                _remove_cached(Path(path))
        msg = ""
        if saved:
            job = self.service.docs.start_reindex(reason=f"upload by {user.name}")
            msg = f"Uploaded {', '.join(saved)}. " + self._wait_reindex(job, progress)
        if problems:
            msg += "\n\nRefused:\n" + "\n".join(problems)
        return msg, self.doc_rows(user), self.service.docs.failures(), gr.update(choices=self.doc_choices()), None

    @admin_only
    def set_groups(self, rel, groups, request: gr.Request, progress=gr.Progress()):
        user = self.admin_of(request)
        if not rel:
            raise refusal("Pick a document first.")
        try:
            applied = self.service.docs.set_groups(rel, groups)
        except DocsError as e:
            raise refusal(str(e)) from None
        job = self.service.docs.start_reindex(reason=f"groups changed by {user.name}")
        summary = self._wait_reindex(job, progress)
        return (f"{rel}: groups set to {', '.join(applied) or 'everyone'}. {summary}", self.doc_rows(user),
                self.service.docs.failures(), gr.update(choices=self.doc_choices()))

    @admin_only
    def delete_doc(self, rel, request: gr.Request, progress=gr.Progress()):
        user = self.admin_of(request)
        if not rel:
            raise refusal("Pick a document first.")
        try:
            self.service.docs.delete(rel)
        except DocsError as e:
            raise refusal(str(e)) from None
        job = self.service.docs.start_reindex(reason=f"delete by {user.name}")
        summary = self._wait_reindex(job, progress)
        return (f"Deleted {rel}. {summary}", self.doc_rows(user), self.service.docs.failures(),
                gr.update(choices=self.doc_choices(), value=None))

    def doc_groups_of(self, rel, request: gr.Request):
        if not rel or not self.user_of(request).admin:  # also fires when page load fills the list: no error popup
            return ""
        meta = self.service.docs.indexed_docs().get(rel) or {}
        return ", ".join(meta.get("groups") or [])

    # ---- tune ----------------------------------------------------------------------------------------------------
    def adapter_rows(self) -> list[list]:
        from tune.adapters import list_adapter_cards

        current = self.service.settings.default_adapters()
        rows = []
        for a in list_adapter_cards(self.ws):
            c = a["card"]
            rows.append([a["name"], c.get("base_model", ""), _num(c.get("val_loss_before")),
                         _num(c.get("val_loss_after")), c.get("steps", ""), c.get("created", ""),
                         " + ".join(m for m, name in current.items() if name == a["name"])])
        return rows

    def card_markdown(self, name) -> str:
        return views.card_markdown(self.ws, name)


    @admin_only
    def start_tune(self, name, limit, max_steps, epochs, batch_tokens, request: gr.Request):
        self.admin_of(request)
        from tune.adapters import check_name

        name = (name or "").strip() or time.strftime("app-%Y%m%d-%H%M%S")
        try:
            check_name(name)
        except ValueError as e:
            raise refusal(str(e)) from None
        loaded = self.service.generator.adapters if self.service.generator.supports_adapters else []
        if name in self.service.settings.adapters() or name in loaded:
            raise refusal(f"An adapter named {name!r} exists already; choose a new name.")
        if not self.service.docs.has_index():
            raise refusal("There is no index to make training data from: upload documents first.")
        try:
            job = self.service.jobs.start("tune", {"name": name, "limit": int(limit) if limit else None,
                                              "max_steps": int(max_steps) if max_steps else None,
                                              "epochs": float(epochs or 1),
                                              "batch_tokens": int(batch_tokens) if batch_tokens else 2048})
        except AnswerError as e:
            raise refusal(str(e)) from None
        yield from self._poll(job)

    def _poll(self, job):
        """Stream the job's state every second (no progress overlay: it would hide the live loss plot)."""
        drawn = -1
        while True:
            running = job.running
            plot = gr.update()
            if len(job.losses) != drawn:
                drawn = len(job.losses)
                plot = loss_plot(job)
            if running:
                yield job_view(job), plot, gr.update(), gr.update(), gr.update(), gr.update()
                time.sleep(1.0)
                continue
            yield job_view(job), loss_plot(job), self.adapter_rows(), self.adapter_update(auto=False), \
                self.adapter_update(), self.adapter_update()
            return

    @admin_only
    def watch_tune(self, request: gr.Request):
        self.admin_of(request)
        job = self.service.jobs.last.get("tune")
        if job is None:
            update = self.adapter_update
            yield job_view(None), None, self.adapter_rows(), update(auto=False), update(), update()
            return
        yield from self._poll(job)

    @admin_only
    def stop_tune(self, request: gr.Request):
        self.admin_of(request)
        job = self.service.jobs.current  # a tuning run or a search training (they take turns)
        if job is None or job.kind not in ("tune", "retriever") or not job.running or job.proc is None:
            return "No tuning run is going on."
        job.proc.terminate()
        return "Stopping the tuning run …" if job.kind == "tune" else "Stopping the search training …"

    def show_card(self, name, request: gr.Request):
        if not self.user_of(request).admin:  # fires when page load fills the list: answer quietly, show nothing
            return ""
        return self.card_markdown(name)

    @admin_only
    def use_adapter(self, name, for_modes, request: gr.Request):
        self.admin_of(request)
        if not name or name == NO_ADAPTER:
            raise refusal("Pick an adapter first.")
        modes = USE_FOR.get(for_modes or "tuned and hybrid")
        if modes is None:
            raise refusal(f"'for' must be one of {', '.join(USE_FOR)}")
        try:
            self.service.settings.set_default_adapter(name, modes)
        except AnswerError as e:
            raise refusal(str(e)) from None
        return f"The app now uses adapter **{name}** for {' and '.join(modes)} answers.", self.adapter_rows(), \
            self.adapter_update(), self.adapter_update()

    # ---- search that learns (tune-retriever as a job) --------------------------------------------------------------

    def search_view(self, viewer: User) -> tuple[str, dict]:
        """The panel's text for `viewer` and the dataset picker (new questions first, then the workspace's synth
        datasets), as page load and a finished job show them."""
        choices = [NEW_QUESTIONS] + views.dataset_choices(self.ws)
        return (views.search_markdown(self.ws, self.unhelpful_for(viewer)),
                gr.update(choices=choices, value=choices[0]))

    def unhelpful_for(self, viewer: User) -> list[dict]:
        """The questions users marked not helpful (gaps in the documents or in search show here first) that `viewer`
        may see, newest first, each once with `times` (how often it was marked, the same words in any case and
        punctuation) and its newest answer. A question can tell what its asker may read, so a rating counts only
        where every group of the asker is also the viewer's, and every document its answer read is one the viewer
        may open; a rater no longer in the users file is left out (SECURITY.md)."""
        from tune.ratings import read_ratings

        accounts, docs = self.service.accounts, self.service.docs
        groups = accounts.groups_of(viewer)
        shown: dict[str, dict] = {}
        for row in sorted(read_ratings(self.ws), key=lambda r: str(r.get("ts", "")), reverse=True):
            asker = accounts.user_named(row["user"]) if row["liked"] is False else None
            if asker is None or not accounts.groups_of(asker) <= groups:
                continue
            read = row.get("docs") if isinstance(row.get("docs"), list) else [None]
            if not all(isinstance(d, str) and docs.may_read(d, groups) for d in read):
                continue
            key = " ".join(re.findall(r"\w+", row["question"].lower()))
            if key in shown:
                shown[key]["times"] += 1
            elif len(shown) < UNHELPFUL_SHOWN:
                shown[key] = {**row, "times": 1}
        return list(shown.values())

    @admin_only
    def train_search(self, dataset, parts, minutes, feedback, request: gr.Request):
        """Start `ragtune tune-retriever` as a background job (serve/jobs.py) and stream its state each second."""
        admin = self.admin_of(request)
        from tune.retriever import PARTS

        choices = views.dataset_choices(self.ws)
        if dataset != NEW_QUESTIONS and dataset not in choices:
            raise refusal(f"Pick a dataset from the list ({', '.join([NEW_QUESTIONS] + choices[:5])}).")
        parts = [p for p in PARTS if p in (parts or [])]
        if not parts:
            raise refusal("Pick what to train: the reranker, the embedder or both.")
        try:
            minutes = float(minutes)
        except (TypeError, ValueError):
            minutes = -1.0
        if not 0.5 <= minutes <= 60:
            raise refusal("Minutes per part must be a number from 0.5 to 60.")
        if not self.service.docs.has_index():
            raise refusal("There is no index to train search on: upload documents first.")
        source = {"synth": True} if dataset == NEW_QUESTIONS else {"dataset": str(Workspace(self.ws).dataset(dataset))}
        params = {**source, "parts": parts, "time_budget_s": minutes * 60, "ratings": bool(feedback)}
        yield from self._search_job(params, admin)

    @admin_only
    def reset_search(self, request: gr.Request):
        """Back to the default search (adaptive fusion, no reranker, the untuned embedder) as a background job: a
        tuned embedder's index is re-embedded."""
        admin = self.admin_of(request)
        if not self.service.docs.has_index():
            raise refusal("There is no index yet: upload documents first.")
        yield from self._search_job({"reset": True}, admin)

    def _search_job(self, params: dict, viewer: User):
        try:
            job = self.service.jobs.start("retriever", params)
        except AnswerError as e:
            raise refusal(str(e)) from None
        while job.running:
            yield job_view(job), gr.update(), gr.update()
            time.sleep(1.0)
        yield (job_view(job), *self.search_view(viewer))

    # ---- evaluate -------------------------------------------------------------------------------------------------

    def latest_report(self) -> Path | None:
        return views.latest_report(self.ws)

    @admin_only
    def run_evaluation(self, limit, modes, request: gr.Request, progress=gr.Progress()):
        self.admin_of(request)
        modes = [m for m in (modes or []) if m in MODES] or [DEFAULT_MODE]
        try:
            job = self.service.jobs.start("eval", {"limit": max(1, int(limit or 5)), "modes": ",".join(modes)})
        except AnswerError as e:
            raise refusal(str(e)) from None
        while job.running:
            progress(None, desc=f"evaluating {job.params['limit']} questions ({time.time() - job.started:.0f} s)")
            yield f"Running: {job.phase} ({time.time() - job.started:.0f} s)", gr.update(), gr.update()
            time.sleep(1.0)
        if job.error:
            yield f"❌ {_md_escape(job.error)}", gr.update(), gr.update()
            return
        md, images = report_view(Path(job.result["report"]))
        skipped = "; ".join(f"{m}: {r}" for m, r in (job.result.get("skipped") or {}).items())
        yield (f"Done: {job.result['n']} questions." + (f" Skipped {skipped}" if skipped else "")), md, images


def _remove_cached(path: Path) -> None:
    """Remove Gradio's cached copy of an upload and its per-file folder (named by the file's hash) if now empty."""
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty (another upload of the same bytes is in flight), or gone already
        pass
