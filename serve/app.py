"""The intranet app (Gradio 6 Blocks): Chat, Compare, Documents, Tune and Evaluate.

Every handler finds its user from the Gradio session (`gr.Request.username`; in single-user mode the local admin)
and asks the service (serve/server.py) with that user's groups, so retrieval, citations and the documents list are
filtered the same way everywhere. Admin-only handlers check `user.admin` on the server again: hiding the tabs is
only the visible half of the rule.

Generation never runs on the event loop: Gradio runs these (sync) handlers in worker threads, and each answer
waits its turn at the service's gate for the one model.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from serve.app_admin import AdminHandlers
from serve.app_chat import AppSession, ChatHandlers, chat_tab, compare_tab
from serve.app_tabs import docs_tab, eval_tab, tune_tab
from serve.app_users import users_tab
from serve.app_views import job_view, loss_plot, report_view
from serve.feedback import tally
from serve.server import Ragtune

# ---- the app ------------------------------------------------------------------------------------------------------

def build_app(service: Ragtune) -> gr.Blocks:
    """The Blocks app: one builder per tab (serve/app_chat.py, serve/app_tabs.py, serve/app_users.py), each wiring
    its own events, and a page load that fills every tab for the user who opened it."""
    session = AppSession(service)
    chat_handlers = ChatHandlers(session)
    handlers = AdminHandlers(service, session.user_of, session.admin_of, session.adapter_update)
    gen = {"concurrency_id": "generate", "concurrency_limit": service.config.ui_concurrency,
           "api_visibility": "private"}
    priv = {"api_visibility": "private"}
    # uploads that no handler used (a browser that went away) leave Gradio's cache within two hours
    with gr.Blocks(title="ragtune", delete_cache=(3600, 3600)) as demo:
        with gr.Row():
            gr.Markdown("## ragtune · company documents chat")
            who = gr.Markdown(elem_id="who")
        notice = gr.Markdown(visible=False, elem_id="notice")
        with gr.Tabs():
            chat = chat_tab(chat_handlers, gen, priv)
            compare = compare_tab(chat_handlers, gen, priv)
            docs = docs_tab(handlers, service.config.max_upload_mb, priv)
            tune = tune_tab(handlers, [chat.adapter, compare.adapter], priv)
            evaluate = eval_tab(handlers, priv)
            users_tab(demo, service, session.user_of, session.admin_of)  # admins, multi-user mode: users, API keys
        page = SimpleNamespace(who=who, notice=notice, chat=chat, compare=compare, docs=docs, tune=tune,
                               evaluate=evaluate)
        on_load = _page_load(service, session, handlers, page)
        demo.load(on_load, outputs=_load_outputs(page), **priv)
    demo.ragtune_handlers = {"stop_tune": handlers.stop_tune, "reindex": handlers.reindex, "upload": handlers.upload,
                             "set_groups": handlers.set_groups, "delete": handlers.delete_doc,
                             "start_tune": handlers.start_tune,
                             "train_search": handlers.train_search, "reset_search": handlers.reset_search,
                             "run_evaluation": handlers.run_evaluation,
                             "use_adapter": handlers.use_adapter, "chat": chat_handlers.chat,
                             "compare": chat_handlers.compare, "vote": chat_handlers.vote, "rate": chat_handlers.rate,
                             "on_load": on_load}
    return demo


def _load_outputs(page: SimpleNamespace) -> list:
    return [page.who, page.notice, page.chat.adapter, page.chat.mode, page.compare.adapter, page.compare.tally,
            page.docs.admin_group, page.docs.table, page.docs.failures, page.docs.pick, page.tune.tab,
            page.tune.table, page.tune.pick, page.tune.status, page.tune.plot, page.tune.search.panel,
            page.tune.search.dataset, page.tune.search.status, page.evaluate.tab,
            page.evaluate.report, page.evaluate.plots]


def _page_load(service: Ragtune, session: AppSession, handlers: AdminHandlers, page: SimpleNamespace):
    """The page-load handler: {component: value} for every tab, as the user who opened the page may see it."""

    def on_load(request: gr.Request) -> dict:
        user = session.user_of(request)
        if service.accounts.single_user:
            who = "Single-user mode (no users file): you are the local admin; the server listens on this machine only."
        else:
            who = (f"Signed in as **{user.name}**" + (" (admin)" if user.admin else "") + " · groups: "
                   + (", ".join(sorted(user.groups)) or "none (unrestricted documents only)"))
        who += f" · answers from `{service.model_label}`"
        notice = ""
        if not service.docs.has_index():
            notice = ("### No documents are indexed yet\n" + (
                "Upload documents in the **Documents** tab; they are indexed automatically." if user.admin else
                "Ask an admin to upload documents."))
        admin = user.admin
        md, images = report_view(handlers.latest_report()) if admin else ("", [])
        tune_job = service.jobs.last.get("tune")
        search_md, datasets = handlers.search_view(user) if admin else ("", gr.update(choices=[]))
        search_job = service.jobs.last.get("retriever") if admin else None
        return {page.who: who, page.notice: gr.update(value=notice, visible=bool(notice)),
                page.chat.adapter: session.adapter_update(), page.chat.mode: gr.update(value=service.settings.default_mode()),
                page.compare.adapter: session.adapter_update(), page.compare.tally: tally(service.workspace),
                page.docs.admin_group: gr.update(visible=admin), page.docs.table: handlers.doc_rows(user),
                page.docs.failures: service.docs.failures() if admin else [],
                page.docs.pick: gr.update(choices=handlers.doc_choices() if admin else []),
                page.tune.tab: gr.update(visible=admin), page.tune.table: handlers.adapter_rows() if admin else [],
                page.tune.pick: session.adapter_update(auto=False),
                page.tune.status: job_view(tune_job) if admin else "",
                page.tune.plot: loss_plot(tune_job) if admin else None,
                page.tune.search.panel: search_md, page.tune.search.dataset: datasets,
                page.tune.search.status: job_view(search_job) if search_job else "",
                page.evaluate.tab: gr.update(visible=admin), page.evaluate.report: md, page.evaluate.plots: images}

    return on_load
