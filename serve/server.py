"""`ragtune serve`: one FastAPI server with the OpenAI-compatible API, the document viewer and the Gradio app.
This file holds the service they share (`Ragtune`); serve/routes.py puts the routes over it and serve/web.py
builds and starts the server.

    /v1/models, /v1/chat/completions   OpenAI-compatible, bearer keys from the users file (serve/openai_api.py)
    /ragtune/doc/<path>                a cited document as escaped HTML (or ?raw=1 the file), after a group check
    /ragtune/evals/<report>/report.md  the evaluation report (admins)
    /                                  the Gradio app (serve/app.py), Gradio's login checking the users file

Users: with a users file, the browser logs in through Gradio and the API takes `Authorization: Bearer KEY`;
each user reads only documents of their groups, everywhere (search, citations, viewer, documents list). Without
a users file the server is single-user: it binds to loopback only, and every request (which can only come from
this machine) acts as the local admin who may read every group.

Concurrency: the local model decodes up to `max_batch` answers at once in one continuously batched loop
(generate/batching.py: a request joins the running batch, each row with its own adapter); `max_batch` 1 is the
lone loop, one answer at a time. In front of it a FIFO gate admits that many requests in arrival order and refuses
new ones (HTTP 429 with Retry-After / a message in the app) once `max_waiting` more are queued, so a burst is
bounded and nobody waits forever behind later arrivals. Generation runs in worker threads (API) or Gradio's worker
threads (app), never on the event loop, so pages and other requests stay responsive.
With `--backend-url` the gate lets `backend_parallel` answers stream at once: the server batches them itself.
Searches share one embedder whose encode calls are serialised (a Hugging Face fast tokenizer must not be used by
two threads at once) and cut into slices, so a background re-index delays a search by one slice at most.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from ingest.workspace import Workspace
from serve.accounts import Accounts, is_loopback  # noqa: F401 - is_loopback: web_cli and the tests ask it here
from serve.adapter_settings import AdapterSettings
from serve.answer import AnswerConfig, AnswerEngine, generator_label, open_generator, serving_generator
from serve.answering import Answering
from serve.concurrency import Gate, LazySearcher, _EmbedderSlot
from serve.jobs import Jobs
from serve.users import User, UserStore

# the viewer's "this section answers it" credits the section's chunk most like the question and any within this
# cosine of it: two chunks the question matches about equally are both credited
SECTION_MARGIN = 0.05


@dataclass
class ServeConfig:
    workspace: Path
    docs_dir: Path | None = None  # default: the folder the index was built from, else WS/docs
    users_file: Path | None = None  # None: single-user, loopback only
    host: str = "127.0.0.1"
    port: int = 7860
    max_new_tokens: int = 128
    k: int = 3
    ui_concurrency: int = 4  # Gradio workers per event (chat, compare, ...); they wait at the gate for the model
    max_waiting: int = 32  # generations queued at the gate (UI + API together) before new ones are refused
    queue_size: int = 64  # Gradio's own queue bound
    max_upload_mb: int = 20
    model: str | None = None  # --model: a local folder or hub id, or with backend_url the served model name
    dtype: str = "auto"  # --dtype: the local model's weights (generate.models.DTYPES)
    backend_url: str | None = None  # --backend-url: an OpenAI-compatible server (vLLM) answers, not the local model
    api_key: str | None = field(default=None, repr=False)  # --api-key for backend_url
    backend_parallel: int = 16  # answers streamed from backend_url at once
    max_batch: int = 16  # --max-batch: answers the local model decodes together (1: one at a time, the lone loop)


# ---- the service the API and the app share ------------------------------------------------------------------------

class Ragtune:
    """Everything `ragtune serve` does, as four parts the API routes and the Gradio handlers call:

        service.accounts   auth and users: who is asking, their groups (serve/accounts.py)
        service.settings   which adapter each mode uses, the mode a chat opens in (serve/adapter_settings.py)
        service.answers    chats and API completions at the gate in front of the model (serve/answering.py)
        service.docs       the documents: upload, groups, re-index, who may read what (serve/docs_admin.py)

    plus `jobs` (the admins' tune and eval jobs), `gate` and `generator`, shared by the parts."""

    def __init__(self, config: ServeConfig, generator=None, embedder=None, job_runners=None) -> None:
        from retrieve.store import indexed_docs_dir
        from serve.docs_admin import DocsAdmin

        self.config = config
        self.workspace = Path(config.workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        if generator is None:  # the one place ask, eval and serve turn --model / --backend-url into a generator
            generator = open_generator(self.workspace, config.model, config.backend_url, config.api_key,
                                       config.dtype)
        self.generator = generator = serving_generator(generator, config.max_batch)
        self.embedders = _EmbedderSlot(self.workspace, embedder, lock=getattr(generator, "compute_lock", None))
        docs_dir = config.docs_dir or indexed_docs_dir(self.workspace) or Workspace(self.workspace).docs
        self.docs = DocsAdmin(self.workspace, Path(docs_dir), embedder_for_job=lambda: self.embedders.get().for_job(),
                              max_upload_bytes=config.max_upload_mb * 2 ** 20)  # a copied workspace's own folder
        self.accounts = Accounts(UserStore(config.users_file) if config.users_file else None, self.docs.index_groups)
        self.settings = AdapterSettings(self.workspace)
        parallel = config.backend_parallel if config.backend_url else getattr(generator, "max_batch", 1)
        self.gate = Gate(max_active=max(1, parallel), max_waiting=config.max_waiting)
        self.searcher = LazySearcher(self.workspace, self.embedders)
        engine = AnswerEngine(self.workspace, generator, searcher=self.searcher,
                              config=AnswerConfig(k=config.k, max_new_tokens=config.max_new_tokens))
        self.answers = Answering(engine, self.gate, self.accounts, self.settings, self.docs)
        self.jobs = Jobs(self, job_runners)
        self.started = time.time()
        self.demo = None  # the Gradio Blocks, set by create_server
        self._form_secret = secrets.token_bytes(32)  # signs the viewer's forms; new each start

    @property
    def model_label(self) -> str:
        """Which model answers, in words (serve.answer.generator_label): shown in the app and at start-up."""
        return generator_label(self.generator)

    def form_token(self, user: User, rel: str) -> str:
        """The token the viewer's "this section answers it" form carries for this user and document: a page of
        another site cannot post one for a logged-in reader (cross-site request forgery)."""
        return hmac.new(self._form_secret, f"{user.name}\n{rel}".encode("utf-8"), hashlib.sha256).hexdigest()

    def section_chunks(self, rel: str, heading: str, question: str = "") -> list[str]:
        """Ids of the live index's chunks of one section of a document (Chunk.section is the viewer's heading). With
        `question`, a section of several chunks gives only the one most like it by the index's embedder (and any
        within SECTION_MARGIN cosine of it, for an answer that spans two): the rest of a long section does not hold
        the answer, and search training would learn it as if it did."""
        searcher = self.searcher.get()
        chunks = [c for c in searcher.generation.chunks if c.doc == rel and c.section == heading]
        if question and len(chunks) > 1:
            vectors = searcher.embedder.encode([question] + [c.embed_text for c in chunks])
            likeness = vectors[1:] @ vectors[0]
            best = float(likeness.max())
            ranked = sorted(zip(likeness.tolist(), range(len(chunks))), reverse=True)
            chunks = [chunks[i] for score, i in ranked if score >= best - SECTION_MARGIN]
        return [c.id for c in chunks]

    def may_open(self, user: User, rel: str) -> bool:
        """Whether this user may open the document (serve/docs_admin.DocsAdmin.may_read with their groups)."""
        return self.docs.may_read(rel, self.accounts.groups_of(user))


def check_host(host: str, users_file: Path | None) -> None:
    if users_file is None and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host} without --users: single-user mode has no login and serves "
                         "this machine only (127.0.0.1). Create users with `ragtune users add NAME --users FILE` "
                         "and pass --users FILE to serve other machines.")
