"""The intranet app (Gradio 6 Blocks): Chat, Compare, Documents, Tune and Evaluate.

Every handler finds its user from the Gradio session (`gr.Request.username`; in single-user mode the local admin)
and asks the service (serve/server.py) with that user's groups, so retrieval, citations and the documents list are
filtered the same way everywhere. Admin-only handlers check `user.admin` on the server again: hiding the tabs is
only the visible half of the rule.

Generation never runs on the event loop: Gradio runs these (sync) handlers in worker threads, and each answer
waits its turn at the service's gate for the one model.
"""

from __future__ import annotations

import gradio as gr

from generate.modes import ADAPTER_MODES, APP_MODES, DEFAULT_MODE, MODES
from ingest.readers import SUPPORTED_SUFFIXES
from serve.adapter_choice import format_adapters
from serve.answer import AnswerError
from serve.app_admin import AdminHandlers, refusal
from serve.app_users import users_tab
from serve.app_views import (AUTO_ADAPTER, NO_ADAPTER, USE_FOR, _md_escape, flatten_content, flatten_messages,
                             format_answer, format_timings, job_view, loss_plot, report_view)
from serve.feedback import COMPARE_MODES, record_vote, tally
from serve.openai_api import BusyError
from serve.server import Ragtune
from serve.users import User

DOC_HEADERS = ["document", "title", "groups", "chunks", "status"]
TALLY_HEADERS = ["mode", "votes", "share %"]
FAIL_HEADERS = ["document", "reason", "previous version still indexed"]
ADAPTER_HEADERS = ["adapter", "base model", "val loss before", "val loss after", "steps", "created", "used for"]


# ---- the app ------------------------------------------------------------------------------------------------------

def build_app(service: Ragtune) -> gr.Blocks:
    ws = service.workspace

    def user_of(request: gr.Request | None) -> User:
        name = getattr(request, "username", None) if request is not None else None
        user = service.user_named(name)
        if user is None:
            raise refusal("You are not logged in (or your account was removed); reload the page.")
        return user

    def admin_of(request: gr.Request | None) -> User:
        user = user_of(request)
        if not user.admin:
            raise refusal("Only admins can do this.")
        return user

    def adapter_update(value: str | None = None, auto: bool = True):
        """Choices for an adapter dropdown. The chat's and compare's lists start with AUTO_ADAPTER (each mode uses
        the app's adapter for it, serve.adapter_choice); the Tune tab's list names adapters only."""
        names = service.adapters()
        if not names:
            return gr.update(choices=[NO_ADAPTER], value=NO_ADAPTER)
        if auto:
            return gr.update(choices=[AUTO_ADAPTER, *names], value=value if value in names else AUTO_ADAPTER)
        return gr.update(choices=names, value=value if value in names else service.default_adapter())

    def _adapter(value: str | None) -> str | None:
        return None if not value or value in (NO_ADAPTER, AUTO_ADAPTER) else value

    # ---- chat ---------------------------------------------------------------------------------------------------
    def chat(message, display, history, mode, adapter, request: gr.Request):
        user = user_of(request)
        message = flatten_content(message).strip()
        display = flatten_messages(display)
        if not message:
            yield display, "", history, ""
            return
        display = display + [{"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
        yield display, "", history, "thinking…"
        try:
            ticket, stream = service.open_answer(user, message, mode, _adapter(adapter), history)
        except (AnswerError, BusyError, ValueError) as e:
            display[-1]["content"] = f"⚠️ {e}"
            yield display, "", history, ""
            return
        text = ""
        try:
            if service.gate.waiting > 1:
                display[-1]["content"] = f"… waiting for the model ({service.gate.waiting - 1} ahead)"
                yield display, "", history, "queued"
            for piece in service.run_answer(ticket, stream):
                text += piece
                display[-1]["content"] = text
                yield display, "", history, "answering…"
        except Exception as e:  # noqa: BLE001 - a failed generation is shown in the chat, not as a modal
            display[-1]["content"] = (text + "\n\n" if text else "") + f"⚠️ the answer failed: {e}"
            yield display, "", history, ""
            return
        finally:  # the page went away mid-answer (Gradio closes this generator): give the place in line back
            service.abandon(ticket, stream)
        result = stream.result
        if result is None:
            return
        display[-1]["content"] = format_answer(result)
        history = list(history) + [{"role": "user", "content": message},
                                   {"role": "assistant", "content": result.answer}]
        yield display, "", history, format_timings(result)

    def clear_chat():
        return [], [], ""

    # ---- compare ------------------------------------------------------------------------------------------------
    def compare(question, adapter, request: gr.Request):
        user = user_of(request)
        question = (question or "").strip()
        outs = {m: "" for m in COMPARE_MODES}
        times = {m: "" for m in COMPARE_MODES}
        state: dict = {}

        def view():
            return [outs[m] for m in COMPARE_MODES] + [times[m] for m in COMPARE_MODES] + [state]

        if not question:
            yield view()
            return
        for m in COMPARE_MODES:
            outs[m], times[m] = "*waiting…*", ""
        yield view()
        answers, timings, used_adapter = {}, {}, {}
        for m in COMPARE_MODES:
            try:
                ticket, stream = service.open_answer(user, question, m, _adapter(adapter), [])
            except (AnswerError, BusyError, ValueError) as e:
                outs[m], times[m] = f"⚠️ {e}", "not run"
                answers[m] = f"(not run: {e})"
                yield view()
                continue
            text = ""
            try:
                for piece in service.run_answer(ticket, stream):
                    text += piece
                    outs[m] = text
                    yield view()
            except Exception as e:  # noqa: BLE001 - shown in its column; the other modes still run
                outs[m], times[m] = f"⚠️ the answer failed: {e}", "failed"
                answers[m] = f"(failed: {e})"
                yield view()
                continue
            finally:
                service.abandon(ticket, stream)
            res = stream.result
            if res is None:
                return
            outs[m] = format_answer(res, timings=False)
            times[m] = format_timings(res)
            answers[m] = res.answer
            used_adapter[m] = res.adapter
            timings[m] = {k: res.timings.get(k) for k in ("retrieve_ms", "first_token_ms", "total_ms")}
            yield view()
        state = {"question": question, "answers": answers, "timings": timings,
                 "adapter": format_adapters({m: used_adapter.get(m) for m in ADAPTER_MODES}) or None}
        yield view()

    def vote(choice: str, state: dict, request: gr.Request):
        user = user_of(request)
        if not state or not state.get("question"):
            return "Ask a question and wait for the three answers first.", tally(ws)
        record_vote(ws, user.name, state["question"], state["answers"], choice, state.get("adapter"),
                    state.get("timings"))
        return f"Recorded: **{choice}** was best for “{_md_escape(state['question'])}”.", tally(ws)

    handlers = AdminHandlers(service, user_of, admin_of, adapter_update)  # Documents, Tune, Evaluate

    # ---- page load ------------------------------------------------------------------------------------------------
    def on_load(request: gr.Request):
        user = user_of(request)
        if service.single_user:
            who = "Single-user mode (no users file): you are the local admin; the server listens on this machine only."
        else:
            who = (f"Signed in as **{user.name}**" + (" (admin)" if user.admin else "") + " · groups: "
                   + (", ".join(sorted(user.groups)) or "none (unrestricted documents only)"))
        notice = ""
        if not service.has_index():
            notice = ("### No documents are indexed yet\n" + (
                "Upload documents in the **Documents** tab; they are indexed automatically." if user.admin else
                "Ask an admin to upload documents."))
        admin = user.admin
        md, images = report_view(handlers.latest_report()) if admin else ("", [])
        return (who, gr.update(value=notice, visible=bool(notice)), adapter_update(), adapter_update(),
                gr.update(visible=admin), gr.update(visible=admin), gr.update(visible=admin),
                handlers.doc_rows(user), service.docs.failures() if admin else [],
                gr.update(choices=handlers.doc_choices() if admin else []), tally(ws),
                handlers.adapter_rows() if admin else [], adapter_update(auto=False), md, images,
                job_view(service.jobs.last.get("tune")) if admin else "",
                loss_plot(service.jobs.last.get("tune")) if admin else None, gr.update(value=service.default_mode()))

    # ---- layout ----------------------------------------------------------------------------------------------------
    # uploads that no handler used (a browser that went away) leave Gradio's cache within two hours
    with gr.Blocks(title="ragtune", delete_cache=(3600, 3600)) as demo:
        with gr.Row():
            gr.Markdown("## ragtune · company documents chat")
            who = gr.Markdown(elem_id="who")
        notice = gr.Markdown(visible=False, elem_id="notice")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row():
                    mode = gr.Radio(list(APP_MODES), value=DEFAULT_MODE, label="Mode", elem_id="chat-mode",
                                    info="rag: documents + base model · tuned: adapter, no documents · hybrid: both")
                    adapter = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", elem_id="chat-adapter",
                                          info=f"used by tuned and hybrid; {AUTO_ADAPTER}: the app's choice per mode")
                chatbot = gr.Chatbot(elem_id="chatbot", label="Answers with their sources", height=480,
                                     buttons=["copy"], feedback_options=None,
                                     placeholder="Ask about policies, how-tos, products… Sources are cited under "
                                                 "each answer; click one to open the document.")
                with gr.Row():
                    msg = gr.Textbox(placeholder="Your question", show_label=False, elem_id="chat-input", scale=8,
                                     lines=1, max_lines=4, submit_btn=False)
                    send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=1)
                    clear = gr.Button("Clear", elem_id="chat-clear", scale=1)
                chat_status = gr.Markdown(elem_id="status-line")
                history = gr.State([])

            with gr.Tab("Compare", id="compare"):
                gr.Markdown("One question, answered by **rag**, **tuned** and **hybrid** side by side (they share one "
                            "model, so the columns fill one after another). Pick the best answer to record a vote.")
                with gr.Row():
                    cq = gr.Textbox(label="Question", elem_id="compare-input", scale=6)
                    c_adapter = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", scale=2,
                                            elem_id="compare-adapter")
                    cgo = gr.Button("Compare", variant="primary", elem_id="compare-go", scale=1)
                answer_boxes, time_boxes, vote_buttons = [], [], []
                with gr.Row(equal_height=True):
                    for m in COMPARE_MODES:
                        with gr.Column(elem_id=f"col-{m}"):
                            gr.Markdown(f"### {m}")
                            answer_boxes.append(gr.Markdown(elem_id=f"compare-{m}", min_height=160))
                            time_boxes.append(gr.Markdown(elem_id=f"compare-{m}-time"))
                            vote_buttons.append(gr.Button(f"{m} is best", elem_id=f"vote-{m}", size="sm"))
                vote_status = gr.Markdown(elem_id="vote-status")
                tally_table = gr.Dataframe(headers=TALLY_HEADERS, label="Votes so far", interactive=False,
                                           elem_id="tally")
                cstate = gr.State({})

            with gr.Tab("Documents", id="docs"):
                gr.Markdown("Documents you may read (click to open). Restricted documents show their groups.")
                docs_table = gr.Dataframe(headers=DOC_HEADERS, datatype=["markdown", "str", "str", "number", "str"],
                                          interactive=False, elem_id="doc-table", wrap=True, show_search="search",
                                          column_widths=["30%", "28%", "12%", "8%", "22%"])
                refresh = gr.Button("Refresh", size="sm", elem_id="docs-refresh")
                with gr.Group(visible=False) as admin_docs:
                    gr.Markdown(f"### Manage documents (admins)\nUpload {' '.join(SUPPORTED_SUFFIXES)} (up to "
                                f"{service.config.max_upload_mb} MB each). Changes are re-indexed in the background; "
                                "chats keep answering from the current index meanwhile.")
                    with gr.Row():
                        up_files = gr.File(file_count="multiple", label="Files", elem_id="upload-files",
                                           file_types=list(SUPPORTED_SUFFIXES))
                        with gr.Column():
                            up_groups = gr.Textbox(label="Groups (comma-separated; empty = everyone)",
                                                   elem_id="upload-groups")
                            up_folder = gr.Textbox(label="Folder inside the documents folder", value="uploads",
                                                   elem_id="upload-folder")
                            up_btn = gr.Button("Upload and index", variant="primary", elem_id="upload-btn")
                    with gr.Row():
                        pick = gr.Dropdown([], label="Document", elem_id="doc-pick", scale=3)
                        pick_groups = gr.Textbox(label="Groups", elem_id="doc-groups", scale=2)
                        set_btn = gr.Button("Set groups", elem_id="doc-set-groups", scale=1)
                        del_btn = gr.Button("Delete", variant="stop", elem_id="doc-delete", scale=1)
                    reindex_btn = gr.Button("Re-index now", elem_id="reindex")
                    docs_status = gr.Markdown(elem_id="docs-status")
                    fail_table = gr.Dataframe(headers=FAIL_HEADERS, label="Files that failed in the last index run",
                                              interactive=False, elem_id="fail-table", wrap=True)

            with gr.Tab("Tune", id="tune", visible=False) as tune_tab:
                gr.Markdown("Make training data from the indexed documents (unrestricted ones only) and train a LoRA "
                            "adapter in the background. On a CPU keep it small: a few dozen chunks and steps.")
                with gr.Row():
                    t_name = gr.Textbox(label="Adapter name", placeholder="app-YYYYMMDD-HHMMSS", elem_id="tune-name")
                    t_limit = gr.Number(label="Chunks to use", value=40, precision=0, elem_id="tune-limit")
                    t_steps = gr.Number(label="Max steps", value=20, precision=0, elem_id="tune-steps")
                    t_epochs = gr.Number(label="Epochs (if no max steps)", value=1, elem_id="tune-epochs")
                    t_batch = gr.Number(label="Tokens per step (memory)", value=2048, precision=0,
                                        elem_id="tune-batch")
                with gr.Row():
                    t_start = gr.Button("Start tuning", variant="primary", elem_id="tune-start")
                    t_watch = gr.Button("Show progress", elem_id="tune-watch")
                    t_stop = gr.Button("Stop", variant="stop", elem_id="tune-stop")
                t_status = gr.Markdown(elem_id="tune-status")
                t_plot = gr.Plot(label="Loss (train, validation)", elem_id="tune-loss", format="png")
                gr.Markdown("### Adapters")
                a_table = gr.Dataframe(headers=ADAPTER_HEADERS, interactive=False, elem_id="adapter-table")
                with gr.Row():
                    a_pick = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", elem_id="adapter-pick")
                    a_for = gr.Radio(list(USE_FOR), value="tuned and hybrid", label="for", elem_id="adapter-for",
                                     info="a RAFT adapter reads documents best (hybrid); a facts one answers "
                                          "without them (tuned)")
                    a_use = gr.Button("Use this adapter in the app", elem_id="adapter-use")
                a_status = gr.Markdown()
                a_card = gr.Markdown(elem_id="adapter-card")

            with gr.Tab("Evaluate", id="evaluate", visible=False) as eval_tab:
                gr.Markdown("Ask a seeded sample of `data/eval/questions.jsonl` in each mode and score the answers "
                            "(contains, F1, refusals, citations) and retrieval. Shares the model with users' chats.")
                with gr.Row():
                    e_limit = gr.Number(label="Questions", value=5, precision=0, elem_id="eval-limit")
                    e_modes = gr.CheckboxGroup(list(MODES), value=list(APP_MODES), label="Modes",
                                               elem_id="eval-modes")
                    e_go = gr.Button("Run evaluation", variant="primary", elem_id="eval-go")
                e_status = gr.Markdown(elem_id="eval-status")
                e_plots = gr.Gallery(label="Plots", columns=3, height=360, object_fit="contain", elem_id="eval-plots")
                e_report = gr.Markdown(elem_id="eval-report")

            users_tab(demo, service, user_of, admin_of)  # admins, multi-user mode: users and their API keys

        # ---- events ----------------------------------------------------------------------------------------------
        gen = {"concurrency_id": "generate", "concurrency_limit": service.config.ui_concurrency,
               "api_visibility": "private"}
        priv = {"api_visibility": "private"}
        chat_io = dict(fn=chat, inputs=[msg, chatbot, history, mode, adapter],
                       outputs=[chatbot, msg, history, chat_status], **gen)
        send.click(**chat_io)
        msg.submit(**chat_io)
        clear.click(clear_chat, outputs=[chatbot, history, chat_status], **priv)
        cgo.click(compare, inputs=[cq, c_adapter], outputs=answer_boxes + time_boxes + [cstate], **gen)
        cq.submit(compare, inputs=[cq, c_adapter], outputs=answer_boxes + time_boxes + [cstate], **gen)
        for m, b in zip(COMPARE_MODES, vote_buttons):
            b.click(_voter(vote, m), inputs=[cstate], outputs=[vote_status, tally_table], **priv)
        refresh.click(handlers.refresh_docs, outputs=[docs_table, fail_table, pick], **priv)
        reindex_btn.click(handlers.reindex, outputs=[docs_status, docs_table, fail_table, pick], concurrency_id="admin",
                          **priv)
        up_btn.click(handlers.upload, inputs=[up_files, up_groups, up_folder],
                     outputs=[docs_status, docs_table, fail_table, pick, up_files], concurrency_id="admin", **priv)
        set_btn.click(handlers.set_groups, inputs=[pick, pick_groups],
                      outputs=[docs_status, docs_table, fail_table, pick], concurrency_id="admin", **priv)
        del_btn.click(handlers.delete_doc, inputs=[pick], outputs=[docs_status, docs_table, fail_table, pick],
                      concurrency_id="admin", **priv)
        pick.change(handlers.doc_groups_of, inputs=[pick], outputs=[pick_groups], **priv)
        tune_out = [t_status, t_plot, a_table, a_pick, adapter, c_adapter]
        t_start.click(handlers.start_tune, inputs=[t_name, t_limit, t_steps, t_epochs, t_batch], outputs=tune_out,
                      concurrency_id="jobs", show_progress="hidden", **priv)
        t_watch.click(handlers.watch_tune, outputs=tune_out, concurrency_id="jobs", show_progress="hidden", **priv)
        t_stop.click(handlers.stop_tune, outputs=[a_status], **priv)
        a_pick.change(handlers.show_card, inputs=[a_pick], outputs=[a_card], **priv)
        a_use.click(handlers.use_adapter, inputs=[a_pick, a_for], outputs=[a_status, a_table, adapter, c_adapter], **priv)
        e_go.click(handlers.run_evaluation, inputs=[e_limit, e_modes], outputs=[e_status, e_report, e_plots],
                   concurrency_id="jobs", **priv)
        demo.load(on_load, outputs=[who, notice, adapter, c_adapter, admin_docs, tune_tab, eval_tab, docs_table,
                                    fail_table, pick, tally_table, a_table, a_pick, e_report, e_plots, t_status,
                                    t_plot, mode], **priv)
    demo.ragtune_handlers = {"stop_tune": handlers.stop_tune, "reindex": handlers.reindex, "upload": handlers.upload,
                             "set_groups": handlers.set_groups, "delete": handlers.delete_doc,
                             "start_tune": handlers.start_tune, "run_evaluation": handlers.run_evaluation,
                             "use_adapter": handlers.use_adapter,
                             "chat": chat, "compare": compare, "vote": vote, "on_load": on_load}
    return demo


def _voter(vote, mode: str):
    def handler(state, request: gr.Request):
        return vote(mode, state, request)

    return handler
