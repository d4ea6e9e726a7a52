"""The app's Chat and Compare tabs: their handlers (any logged-in user) and their layouts.

Every handler finds its user from the Gradio session (`AppSession.user_of`) and asks the service with that user's
groups. Generation never runs on the event loop: Gradio runs these (sync) generators in worker threads, and each
answer waits its turn at the service's gate for the one model. serve/app.py puts the tabs together.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import gradio as gr

from generate.base import BackendError
from generate.modes import ADAPTER_MODES, APP_MODES, DEFAULT_MODE
from serve.adapter_choice import format_adapters
from serve.answer import AnswerError
from serve.app_admin import refusal
from serve.app_views import (AUTO_ADAPTER, NO_ADAPTER, _md_escape, flatten_content, flatten_messages, format_answer,
                             format_timings)
from serve.feedback import COMPARE_MODES, record_vote, tally
from serve.openai_api import BusyError
from serve.server import Ragtune
from serve.users import User
from tune.ratings import record_rating

TALLY_HEADERS = ["mode", "votes", "share %"]


class AppSession:
    """What every tab's handlers share: who is asking, and the adapter pickers' choices."""

    def __init__(self, service: Ragtune) -> None:
        self.service = service

    def user_of(self, request: gr.Request | None) -> User:
        name = getattr(request, "username", None) if request is not None else None
        user = self.service.accounts.user_named(name)
        if user is None:
            raise refusal("You are not logged in (or your account was removed); reload the page.")
        return user

    def admin_of(self, request: gr.Request | None) -> User:
        user = self.user_of(request)
        if not user.admin:
            raise refusal("Only admins can do this.")
        return user

    def adapter_update(self, value: str | None = None, auto: bool = True):
        """Choices for an adapter dropdown. The chat's and compare's lists start with AUTO_ADAPTER (each mode uses
        the app's adapter for it, serve.adapter_choice); the Tune tab's list names adapters only."""
        names = self.service.settings.adapters()
        if not names:
            return gr.update(choices=[NO_ADAPTER], value=NO_ADAPTER)
        if auto:
            return gr.update(choices=[AUTO_ADAPTER, *names], value=value if value in names else AUTO_ADAPTER)
        return gr.update(choices=names, value=value if value in names else self.service.settings.default_adapter())


PASSAGE_OPTIONS = tuple(f"Passage [{n}] had the answer" for n in range(1, 6))  # the chat's feedback menu
_FEEDBACK = ("Like", "Dislike") + PASSAGE_OPTIONS


def rating_entry(result) -> dict:
    """What a rating of this answer records: its question, mode, text, the chunks shown as its sources (cited by
    the model's [n], or matched by the answer's words when it gave none) and every passage it read, by number."""
    return {"id": uuid.uuid4().hex, "question": result.question, "mode": result.mode, "adapter": result.adapter,
            "answer": result.answer, "cited": [c.chunk_id for c in result.citations],
            "docs": [c.doc for c in result.citations],
            "read": {s.n: (s.chunk_id, s.doc) for s in result.sources}}


def _adapter(value: str | None) -> str | None:
    return None if not value or value in (NO_ADAPTER, AUTO_ADAPTER) else value


class ChatHandlers:
    """chat, clear_chat, rate, compare and vote over one service."""

    def __init__(self, session: AppSession) -> None:
        self.session = session
        self.service = session.service

    def chat(self, message, display, history, mode, adapter, request: gr.Request, rated=None):
        """Answer in the chat. `rated` (server-side state) maps each finished answer's place in the chat to what a
        thumbs up / down on it records (`rate`)."""
        user = self.session.user_of(request)
        message = flatten_content(message).strip()
        display = flatten_messages(display)
        rated = dict(rated or {})
        if not message:
            yield display, "", history, "", rated
            return
        display = display + [{"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
        yield display, "", history, "thinking…", rated
        try:
            ticket, stream = self.service.answers.open_answer(user, message, mode, _adapter(adapter), history)
        except (AnswerError, BusyError, ValueError, BackendError) as e:  # BackendError: --backend-url is down
            display[-1]["content"] = f"⚠️ {e}"
            yield display, "", history, "", rated
            return
        text = ""
        try:
            if self.service.gate.waiting > 1:
                display[-1]["content"] = f"… waiting for the model ({self.service.gate.waiting - 1} ahead)"
                yield display, "", history, "queued", rated
            for piece in self.service.answers.run_answer(ticket, stream):
                text += piece
                display[-1]["content"] = text
                yield display, "", history, "answering…", rated
        except Exception as e:  # noqa: BLE001 - a failed generation is shown in the chat, not as a modal
            display[-1]["content"] = (text + "\n\n" if text else "") + f"⚠️ the answer failed: {e}"
            yield display, "", history, "", rated
            return
        finally:  # the page went away mid-answer (Gradio closes this generator): give the place in line back
            self.service.answers.abandon(ticket, stream)
        result = stream.result
        if result is None:
            return
        display[-1]["content"] = format_answer(result)
        rated[len(display) - 1] = rating_entry(result)
        history = list(history) + [{"role": "user", "content": message},
                                   {"role": "assistant", "content": result.answer}]
        yield display, "", history, format_timings(result), rated

    def rate(self, rated, like: gr.LikeData, request: gr.Request):
        """Feedback on one of this chat's answers, recorded (tune/ratings.py) with the chunks it names that the user
        may still read: a thumbs up names the answer's sources; "Passage [n] had the answer" names passage n, for an
        answer that missed what its passages held; a thumbs down names none; unselecting takes it back.
        `ragtune tune-retriever` learns from the chunks named."""
        user = self.session.user_of(request)
        index = like.index[0] if isinstance(like.index, (list, tuple)) else like.index
        entry = (rated or {}).get(index)
        if entry is None:
            return "Only answers given in this chat can be rated."
        liked, passage = like.liked, None
        if liked in PASSAGE_OPTIONS:
            passage = PASSAGE_OPTIONS.index(liked) + 1
            if passage not in entry["read"]:
                return f"This answer read no passage [{passage}]."
            cited, docs, liked = [entry["read"][passage][0]], [entry["read"][passage][1]], True
        elif liked in (True, False):
            cited, docs = (entry["cited"], entry["docs"]) if liked else ([], [])
        elif liked in ("", None):  # the reader unselected their feedback
            cited, docs, liked = [], [], None
        else:
            return "Unknown feedback: use the thumbs or the menu's passages."
        readable = [(c, d) for c, d in zip(cited, docs) if self.service.may_open(user, d)]
        record_rating(self.service.workspace, user.name, entry["id"], entry["question"], liked, mode=entry["mode"],
                      adapter=entry["adapter"], answer=entry["answer"], cited=[c for c, _ in readable],
                      docs=[d for _, d in readable], passage=passage)
        if liked is None:
            return "Feedback taken back."
        if passage:
            return f"Thanks: recorded that passage [{passage}] held the answer; search learns from it."
        if not liked:
            return ("Thanks: recorded that this answer did not help. If you know which section answers it, open "
                    "the document and use “Answers a question of yours?” there: search learns from it.")
        return "Thanks: recorded that this answer helped." + (" Search learns from its sources." if readable else "")

    def clear_chat(self):
        return [], [], "", {}

    def compare(self, question, adapter, request: gr.Request):
        """The question in every mode of COMPARE_MODES, one column after another; the last view's state is what a
        vote records."""
        user = self.session.user_of(request)
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
                ticket, stream = self.service.answers.open_answer(user, question, m, _adapter(adapter), [])
            except (AnswerError, BusyError, ValueError) as e:
                outs[m], times[m] = f"⚠️ {e}", "not run"
                answers[m] = f"(not run: {e})"
                yield view()
                continue
            text = ""
            try:
                for piece in self.service.answers.run_answer(ticket, stream):
                    text += piece
                    outs[m] = text
                    yield view()
            except Exception as e:  # noqa: BLE001 - shown in its column; the other modes still run
                outs[m], times[m] = f"⚠️ the answer failed: {e}", "failed"
                answers[m] = f"(failed: {e})"
                yield view()
                continue
            finally:
                self.service.answers.abandon(ticket, stream)
            res = stream.result
            if res is None:
                return
            outs[m], times[m] = format_answer(res, timings=False), format_timings(res)
            answers[m], used_adapter[m] = res.answer, res.adapter
            timings[m] = {k: res.timings.get(k) for k in ("retrieve_ms", "first_token_ms", "total_ms")}
            yield view()
        state = {"question": question, "answers": answers, "timings": timings,
                 "adapter": format_adapters({m: used_adapter.get(m) for m in ADAPTER_MODES}) or None}
        yield view()

    def vote(self, choice: str, state: dict, request: gr.Request):
        user = self.session.user_of(request)
        ws = self.service.workspace
        if not state or not state.get("question"):
            return "Ask a question and wait for the three answers first.", tally(ws)
        record_vote(ws, user.name, state["question"], state["answers"], choice, state.get("adapter"),
                    state.get("timings"))
        return f"Recorded: **{choice}** was best for “{_md_escape(state['question'])}”.", tally(ws)


def chat_tab(h: ChatHandlers, gen: dict, priv: dict) -> SimpleNamespace:
    """The Chat tab's layout and events; returns the components other tabs and page load update."""
    with gr.Tab("Chat", id="chat"):
        with gr.Row():
            mode = gr.Radio(list(APP_MODES), value=DEFAULT_MODE, label="Mode", elem_id="chat-mode",
                            info="rag: documents + base model · tuned: adapter, no documents · hybrid: both")
            adapter = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", elem_id="chat-adapter",
                                  info=f"used by tuned and hybrid; {AUTO_ADAPTER}: the app's choice per mode")
        chatbot = gr.Chatbot(elem_id="chatbot", label="Answers with their sources", height=480,
                             buttons=["copy"], feedback_options=_FEEDBACK,
                             placeholder="Ask about policies, how-tos, products… Sources are cited under "
                                         "each answer; click one to open the document.")
        with gr.Row():
            msg = gr.Textbox(placeholder="Your question", show_label=False, elem_id="chat-input", scale=8,
                             lines=1, max_lines=4, submit_btn=False)
            send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=1)
            clear = gr.Button("Clear", elem_id="chat-clear", scale=1)
        status = gr.Markdown(elem_id="status-line")
        history = gr.State([])
        rated = gr.State({})
    chat_io = dict(fn=h.chat, inputs=[msg, chatbot, history, mode, adapter, rated],
                   outputs=[chatbot, msg, history, status, rated], **gen)
    send.click(**chat_io)
    msg.submit(**chat_io)
    clear.click(h.clear_chat, outputs=[chatbot, history, status, rated], **priv)
    chatbot.like(h.rate, inputs=[rated], outputs=[status], **priv)
    return SimpleNamespace(mode=mode, adapter=adapter)


def compare_tab(h: ChatHandlers, gen: dict, priv: dict) -> SimpleNamespace:
    """The Compare tab's layout and events; returns the components other tabs and page load update."""
    with gr.Tab("Compare", id="compare"):
        names = [f"**{m}**" for m in COMPARE_MODES]
        gr.Markdown(f"One question, answered by {', '.join(names[:-1])} and {names[-1]} side by side (they share one "
                    "model, so the columns fill one after another). Pick the best answer to record a vote.")
        with gr.Row():
            question = gr.Textbox(label="Question", elem_id="compare-input", scale=6)
            adapter = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", scale=2, elem_id="compare-adapter")
            go = gr.Button("Compare", variant="primary", elem_id="compare-go", scale=1)
        answer_boxes, time_boxes, vote_buttons = [], [], []
        with gr.Row(equal_height=True):
            for m in COMPARE_MODES:
                with gr.Column(elem_id=f"col-{m}"):
                    gr.Markdown(f"### {m}")
                    answer_boxes.append(gr.Markdown(elem_id=f"compare-{m}", min_height=160))
                    time_boxes.append(gr.Markdown(elem_id=f"compare-{m}-time"))
                    vote_buttons.append(gr.Button(f"{m} is best", elem_id=f"vote-{m}", size="sm"))
        vote_status = gr.Markdown(elem_id="vote-status")
        tally_table = gr.Dataframe(headers=TALLY_HEADERS, label="Votes so far", interactive=False, elem_id="tally")
        state = gr.State({})
    go.click(h.compare, inputs=[question, adapter], outputs=answer_boxes + time_boxes + [state], **gen)
    question.submit(h.compare, inputs=[question, adapter], outputs=answer_boxes + time_boxes + [state], **gen)
    for m, b in zip(COMPARE_MODES, vote_buttons):
        b.click(_voter(h.vote, m), inputs=[state], outputs=[vote_status, tally_table], **priv)
    return SimpleNamespace(adapter=adapter, tally=tally_table)


def _voter(vote, mode: str):
    def handler(state, request: gr.Request):
        return vote(mode, state, request)

    return handler
