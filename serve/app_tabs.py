"""The app's admin tabs (Documents, Tune with its search training, Evaluate): each builder lays its tab out,
binds its events to the AdminHandlers (serve/app_admin.py) and returns the components page load and other tabs
update, by name.

    docs = docs_tab(handlers, service.config.max_upload_mb, priv)   # inside build_app's gr.Tabs()
    docs.table, docs.admin_group, ...
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from generate.modes import APP_MODES, MODES
from ingest.readers import SUPPORTED_SUFFIXES
from serve.app_admin import AdminHandlers
from serve.app_views import NO_ADAPTER, USE_FOR

DOC_HEADERS = ["document", "title", "groups", "chunks", "status"]
FAIL_HEADERS = ["document", "reason", "previous version still indexed"]
ADAPTER_HEADERS = ["adapter", "base model", "val loss before", "val loss after", "steps", "created", "used for"]


def docs_tab(h: AdminHandlers, max_upload_mb: int, priv: dict) -> SimpleNamespace:
    """Everyone: the documents they may read. Admins: upload, groups, delete, re-index, the last run's failures."""
    with gr.Tab("Documents", id="docs"):
        gr.Markdown("Documents you may read (click to open). Restricted documents show their groups.")
        table = gr.Dataframe(headers=DOC_HEADERS, datatype=["markdown", "str", "str", "number", "str"],
                             interactive=False, elem_id="doc-table", wrap=True, show_search="search",
                             column_widths=["30%", "28%", "12%", "8%", "22%"])
        refresh = gr.Button("Refresh", size="sm", elem_id="docs-refresh")
        with gr.Group(visible=False) as admin_group:
            gr.Markdown(f"### Manage documents (admins)\nUpload {' '.join(SUPPORTED_SUFFIXES)} (up to "
                        f"{max_upload_mb} MB each). Changes are re-indexed in the background; "
                        "chats keep answering from the current index meanwhile.")
            with gr.Row():
                files = gr.File(file_count="multiple", label="Files", elem_id="upload-files",
                                file_types=list(SUPPORTED_SUFFIXES))
                with gr.Column():
                    groups = gr.Textbox(label="Groups (comma-separated; empty = everyone)", elem_id="upload-groups")
                    folder = gr.Textbox(label="Folder inside the documents folder", value="uploads",
                                        elem_id="upload-folder")
                    upload = gr.Button("Upload and index", variant="primary", elem_id="upload-btn")
            with gr.Row():
                pick = gr.Dropdown([], label="Document", elem_id="doc-pick", scale=3)
                pick_groups = gr.Textbox(label="Groups", elem_id="doc-groups", scale=2)
                set_groups = gr.Button("Set groups", elem_id="doc-set-groups", scale=1)
                delete = gr.Button("Delete", variant="stop", elem_id="doc-delete", scale=1)
            reindex = gr.Button("Re-index now", elem_id="reindex")
            status = gr.Markdown(elem_id="docs-status")
            failures = gr.Dataframe(headers=FAIL_HEADERS, label="Files that failed in the last index run",
                                    interactive=False, elem_id="fail-table", wrap=True)
    changed = [status, table, failures, pick]  # what every change re-renders
    admin = {"concurrency_id": "admin", **priv}
    refresh.click(h.refresh_docs, outputs=[table, failures, pick], **priv)
    reindex.click(h.reindex, outputs=changed, **admin)
    upload.click(h.upload, inputs=[files, groups, folder], outputs=changed + [files], **admin)
    set_groups.click(h.set_groups, inputs=[pick, pick_groups], outputs=changed, **admin)
    delete.click(h.delete_doc, inputs=[pick], outputs=changed, **admin)
    pick.change(h.doc_groups_of, inputs=[pick], outputs=[pick_groups], **priv)
    return SimpleNamespace(table=table, admin_group=admin_group, failures=failures, pick=pick)


def tune_tab(h: AdminHandlers, pickers: list, priv: dict) -> SimpleNamespace:
    """Admins: synth + LoRA training in the background, the adapters and which one the app uses per mode, and
    search training from users' feedback (search_section).
    `pickers` are the other tabs' adapter dropdowns, refreshed when an adapter is made or chosen."""
    with gr.Tab("Tune", id="tune", visible=False) as tab:
        gr.Markdown("Make training data from the indexed documents (unrestricted ones only) and train a LoRA "
                    "adapter in the background. On a CPU keep it small: a few dozen chunks and steps.")
        with gr.Row():
            name = gr.Textbox(label="Adapter name", placeholder="app-YYYYMMDD-HHMMSS", elem_id="tune-name")
            limit = gr.Number(label="Chunks to use", value=40, precision=0, elem_id="tune-limit")
            steps = gr.Number(label="Max steps", value=20, precision=0, elem_id="tune-steps")
            epochs = gr.Number(label="Epochs (if no max steps)", value=1, elem_id="tune-epochs")
            batch = gr.Number(label="Tokens per step (memory)", value=2048, precision=0, elem_id="tune-batch")
        with gr.Row():
            start = gr.Button("Start tuning", variant="primary", elem_id="tune-start")
            watch = gr.Button("Show progress", elem_id="tune-watch")
            stop = gr.Button("Stop", variant="stop", elem_id="tune-stop")
        status = gr.Markdown(elem_id="tune-status")
        plot = gr.Plot(label="Loss (train, validation)", elem_id="tune-loss", format="png")
        gr.Markdown("### Adapters")
        table = gr.Dataframe(headers=ADAPTER_HEADERS, interactive=False, elem_id="adapter-table")
        with gr.Row():
            pick = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", elem_id="adapter-pick")
            use_for = gr.Radio(list(USE_FOR), value=next(iter(USE_FOR)), label="for", elem_id="adapter-for",
                               info="a RAFT adapter reads documents best (hybrid); a facts one answers "
                                    "without them (tuned)")
            use = gr.Button("Use this adapter in the app", elem_id="adapter-use")
        use_status = gr.Markdown()
        card = gr.Markdown(elem_id="adapter-card")
        search = search_section(h)
    job = {"concurrency_id": "jobs", "show_progress": "hidden", **priv}
    progress = [status, plot, table, pick, *pickers]
    start.click(h.start_tune, inputs=[name, limit, steps, epochs, batch], outputs=progress, **job)
    watch.click(h.watch_tune, outputs=progress, **job)
    stop.click(h.stop_tune, outputs=[use_status], **priv)
    pick.change(h.show_card, inputs=[pick], outputs=[card], **priv)
    use.click(h.use_adapter, inputs=[pick, use_for], outputs=[use_status, table, *pickers], **priv)
    search.train.click(h.train_search, inputs=[search.dataset, search.parts, search.minutes, search.feedback],
                       outputs=[search.status, search.panel, search.dataset], **job)
    search.stop.click(h.stop_tune, outputs=[search.status], **priv)
    search.reset.click(h.reset_search, outputs=[search.status, search.panel, search.dataset], **job)
    return SimpleNamespace(tab=tab, status=status, plot=plot, table=table, pick=pick, search=search)


def search_section(h: AdminHandlers) -> SimpleNamespace:
    """Inside the Tune tab: users' feedback so far, the search that runs, and `ragtune tune-retriever` as a job."""
    from tune.retriever import PARTS, RetrieverTuneConfig

    gr.Markdown("### Search that learns from your users\nTrain a reranker and a tuned embedder on synth questions "
                "of the indexed documents and on the questions users marked as answered (with the passage or "
                "section that answered them). Search uses each part only if it finds the answer's passage more "
                "often on held-out questions; a new embedder re-embeds the index in the background.")
    panel = gr.Markdown(elem_id="search-feedback")
    with gr.Row():
        dataset = gr.Dropdown([], label="Synth questions (dataset)", elem_id="search-dataset")
        parts = gr.CheckboxGroup(list(PARTS), value=list(PARTS), label="Train", elem_id="search-parts")
        minutes = gr.Number(label="Minutes per part at most", value=RetrieverTuneConfig.time_budget_s / 60,
                            elem_id="search-minutes")
        feedback = gr.Checkbox(value=True, label="Learn from users' feedback", elem_id="search-use-feedback")
    with gr.Row():
        train = gr.Button("Train search", variant="primary", elem_id="search-train")
        stop = gr.Button("Stop", variant="stop", elem_id="search-stop")
        reset = gr.Button("Back to the default search", elem_id="search-reset")
    status = gr.Markdown(elem_id="search-status")
    return SimpleNamespace(panel=panel, dataset=dataset, parts=parts, minutes=minutes, feedback=feedback,
                           train=train, stop=stop, reset=reset, status=status)


def eval_tab(h: AdminHandlers, priv: dict) -> SimpleNamespace:
    """Admins: a small evaluation with the server's model, and the latest report."""
    with gr.Tab("Evaluate", id="evaluate", visible=False) as tab:
        gr.Markdown("Ask a seeded sample of `data/eval/questions.jsonl` in each mode and score the answers "
                    "(contains, F1, refusals, citations) and retrieval. Shares the model with users' chats.")
        with gr.Row():
            limit = gr.Number(label="Questions", value=5, precision=0, elem_id="eval-limit")
            modes = gr.CheckboxGroup(list(MODES), value=list(APP_MODES), label="Modes", elem_id="eval-modes")
            go = gr.Button("Run evaluation", variant="primary", elem_id="eval-go")
        status = gr.Markdown(elem_id="eval-status")
        plots = gr.Gallery(label="Plots", columns=3, height=360, object_fit="contain", elem_id="eval-plots")
        report = gr.Markdown(elem_id="eval-report")
    go.click(h.run_evaluation, inputs=[limit, modes], outputs=[status, report, plots], concurrency_id="jobs", **priv)
    return SimpleNamespace(tab=tab, report=report, plots=plots)
