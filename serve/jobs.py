"""Background jobs of the app (re-index, tune, train search, evaluate): one Job type and one way to run it
(`start_background`); tune, search training and evaluation take turns, re-index has its own slot
(serve/docs_admin.py). Training runs in a child process (`python -m serve.jobs tune-job|retriever-job PARAMS`) so
running out of memory kills the child, not the server.

A job kind is a runner `fn(service, job)`. Tuning is serve's own (tune is a lower layer); evaluation lives in
evals, the layer above, so whoever starts the server hands it in (the CLI root and the tests):

    Jobs(service, {"eval": evals.app_job.run_eval_job}).start("eval", {"limit": 5})
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from generate.base import GenerationStream
from serve.answer import AnswerError

JOB_NAMES = {"tune": "tuning", "retriever": "search training", "eval": "evaluation", "reindex": "re-index"}  # in words


# ---- background jobs (re-index, tune, evaluate) -------------------------------------------------------------------

@dataclass
class Job:
    """One background job, whatever its kind: the UI polls it while a thread works on it (`start_background`)."""

    kind: str  # reindex | tune | retriever | eval
    params: dict = field(default_factory=dict)
    id: int = 0
    reason: str = ""  # who or what asked for it ("upload by ana")
    started: float = field(default_factory=time.time)
    phase: str = "starting"
    fraction: float = 0.0
    finished: float | None = None
    error: str | None = None
    result: dict = field(default_factory=dict)  # the kind's report; "summary" is the line shown when done
    losses: list[dict] = field(default_factory=list)  # {"step", "loss", "kind": train|val} of a tune job
    log: list[str] = field(default_factory=list)
    proc: Any = None  # the child process of a tune job

    @property
    def running(self) -> bool:
        return self.finished is None

    def note(self, msg: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {msg}")

    def summary(self) -> str:
        what = JOB_NAMES.get(self.kind, self.kind)
        if self.running:
            return f"{what} running: {self.phase} ({self.fraction:.0%})"
        if self.error:
            return f"{what} failed: {self.error}"
        return self.result.get("summary") or f"{what} done"


def start_background(job: Job, work: Callable[[Job], None]) -> Job:
    """Run `work(job)` in a daemon thread; the job ends done, or failed with the error's type and message (shown to
    the admin, never a traceback), and always with `finished` set."""

    def body() -> None:
        try:
            work(job)
            job.phase, job.fraction = "done", 1.0
            job.note("done")
        except Exception as e:  # noqa: BLE001 - shown to the admin with its reason
            job.error = f"{type(e).__name__}: {e}"
            job.phase = "failed"
            job.note(job.error)
        finally:
            job.finished = time.time()

    threading.Thread(target=body, name=f"ragtune-{job.kind}", daemon=True).start()
    return job


class Jobs:
    """The admins' tune and evaluate jobs: one at a time (both want the whole CPU); the UI polls `current`.
    Re-indexing has its own slot (DocsAdmin.start_reindex), so an upload is searchable while a tune runs."""

    def __init__(self, service, runners: dict[str, Callable] | None = None) -> None:
        """`service` is the server's Ragtune (serve/server.py); `runners` adds job kinds beside "tune" and
        "retriever"."""
        self.service = service
        self.runners: dict[str, Callable] = {"tune": run_tune_job, "retriever": run_retriever_job,
                                             **(runners or {})}
        self._lock = threading.Lock()
        self.current: Job | None = None
        self.last: dict[str, Job] = {}

    def start(self, kind: str, params: dict) -> Job:
        with self._lock:
            if kind not in self.runners:
                raise AnswerError(f"this server runs no {kind} jobs (`ragtune serve` runs tune and eval jobs)")
            if self.current is not None and self.current.running:
                raise AnswerError(f"a {self.current.kind} job is already running; wait for it to finish")
            job = Job(kind, params)
            self.current = job
            self.last[kind] = job
        runner = self.runners[kind]
        return start_background(job, lambda j: runner(self.service, j))


def _loss_callback(emit):
    from transformers import TrainerCallback

    class LossToJob(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.max_steps:
                emit(phase=f"training: step {state.global_step}/{state.max_steps}",
                     fraction=0.3 + 0.7 * state.global_step / state.max_steps)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                emit(loss={"step": int(state.global_step), "loss": float(logs["loss"]), "kind": "train"})
            if "eval_loss" in logs:
                emit(loss={"step": int(state.global_step), "loss": float(logs["eval_loss"]), "kind": "val"})

    return LossToJob()


def tune_in_process(workspace: Path, p: dict, emit) -> None:
    """Synthesize a dataset from the live index, then train a LoRA adapter on it (tune/synth.py, tune/train.py).
    The only place the app touches the tuning API. `emit(phase=, fraction=, loss=, note=, result=)` reports."""
    from tune.synth import SynthConfig, synthesize
    from tune.train import TuneConfig, train_adapter

    emit(phase="synthesizing training data", fraction=0.05,
         note=f"synth: dataset {p['name']}, up to {p.get('limit') or 'all'} chunks")
    report = synthesize(SynthConfig(workspace=workspace, name=p["name"], limit=p.get("limit")), progress=False)
    emit(result={"synth": {"train": report.train, "val": report.val, "dataset": str(report.dataset)}},
         note=f"synth: {report.train} train / {report.val} val examples", phase="training", fraction=0.3)
    tune = TuneConfig(workspace=workspace, dataset=Path(report.dataset), name=p["name"],
                      max_steps=p.get("max_steps"), epochs=float(p.get("epochs") or 1.0),
                      batch_tokens=int(p.get("batch_tokens") or 2048), model=p.get("model") or TuneConfig.model)
    result = train_adapter(tune, progress=False, callbacks=[_loss_callback(emit)])
    emit(result={"tune": result.to_json()},
         note=f"adapter {result.adapter}: val loss {result.val_loss_before:.3f} -> {result.val_loss_after:.3f}")


SEARCH_DATASET = "search"  # the dataset a search training synthesizes from all documents (WS/datasets/search)


def retriever_in_process(workspace: Path, p: dict, emit) -> None:
    """`ragtune tune-retriever` for the app (tune/retriever.py): train the parts `p` names on a synth dataset and
    users' feedback; search switches to what beat it on validation. `p` holds RetrieverTuneConfig fields, and
    "synth": true to first make WS/datasets/search from every indexed document (`ragtune synth` defaults); or
    {"reset": true} to go back to the default search instead (`tune-retriever --reset`)."""
    from tune.retriever import RetrieverTuneConfig, reset_retriever, tune_retriever
    from tune.retriever_cli import report_summary

    if p.get("reset"):
        from retrieve.retrievers import read_settings
        from tune.retriever_cli import settings_line

        emit(phase="going back to the default search", fraction=0.1, note="reset: the default search")
        done = reset_retriever(workspace)
        summary = (f"search is back to the default: {settings_line(read_settings(workspace))}"
                   + ("; the index was re-embedded" if done["reindexed"] else "")
                   + (f"; removed {', '.join(done['removed'])}" if done["removed"] else ""))
        emit(note=summary, result={"summary": summary})
        return
    fields = dict(p)
    fresh = bool(fields.pop("synth", False))
    known = set(RetrieverTuneConfig.__dataclass_fields__) - {"workspace"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown search-training settings: {', '.join(unknown)}")
    if fresh:
        from tune.synth import SynthConfig, synthesize

        emit(phase="making questions from every indexed document", fraction=0.01,
             note="synth: questions from every indexed document")
        made = synthesize(SynthConfig(workspace=workspace, name=SEARCH_DATASET), progress=False)
        emit(note=f"synth: {made.train} train / {made.val} val examples in {made.dataset}")
        fields["dataset"] = str(made.dataset)
    if fields.get("dataset"):
        fields["dataset"] = Path(fields["dataset"])
    if "parts" in fields:
        fields["parts"] = tuple(fields["parts"])
    config = RetrieverTuneConfig(workspace=workspace, **fields).check()
    report = tune_retriever(config, on_phase=lambda what, done: emit(phase=what, fraction=done, note=what))
    lines = report_summary(report, workspace).splitlines()
    for line in lines:
        emit(note=line)
    emit(result={"summary": "search training done: " + "; ".join(lines[1:]), "retriever": report.to_json()})


def run_tune_job(service, job: Job) -> None:
    """Synth + LoRA training (`tune_in_process`) in a child process (`_run_child`)."""
    params = {**job.params}
    config = service.config
    if config.model and not config.backend_url:  # `serve --model`: adapters for the model that answers
        params["model"] = config.model
    _run_child(job, "tune-job", {**params, "workspace": str(service.workspace)})


def run_retriever_job(service, job: Job) -> None:
    """Search training (`retriever_in_process`) in a child process (`_run_child`)."""
    _run_child(job, "retriever-job", {**job.params, "workspace": str(service.workspace)})


def _run_child(job: Job, command: str, params: dict) -> None:
    """Run `python -m serve.jobs COMMAND PARAMS`: training needs gigabytes, and if the machine runs out, the kernel
    kills the child (it volunteers through oom_score_adj), not the server. The child reports JSON lines on stdout,
    which update `job` (phase, losses, notes, result)."""
    import subprocess

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "serve.jobs", command, json.dumps(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(Path(__file__).resolve().parents[1]))
    job.proc = proc
    errors: deque[str] = deque(maxlen=20)
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    reader.start()
    failure = ""  # the child's own one-line reason, when it caught the error
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "phase" in msg:
            job.phase = msg["phase"]
        if "fraction" in msg:
            job.fraction = float(msg["fraction"])
        if "loss" in msg:
            job.losses.append(msg["loss"])
        if "result" in msg:
            job.result.update(msg["result"])
        if "note" in msg:
            job.note(msg["note"])
        if "error" in msg:
            failure = msg["error"]
    rc = proc.wait()
    reader.join(timeout=5)
    if rc != 0:
        why = " (killed: out of memory? try fewer chunks or a smaller batch)" if rc in (-9, 137) else ""
        tail = [e.strip() for e in errors if e.strip() and "Warning" not in e and "warnings.warn" not in e][-3:]
        detail = f": {failure}" if failure else (": " + " | ".join(tail)) if tail else ""
        raise RuntimeError(f"the {CHILD_JOBS[command][1]} process exited with status {rc}{why}{detail}")


def _child(command: str, params: dict) -> int:
    try:  # volunteer to the OOM killer before the server does
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("800")
    except OSError:
        pass

    def emit(**msg) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    workspace = Path(params.pop("workspace"))
    try:
        CHILD_JOBS[command][0](workspace, params, emit)
    except Exception as e:  # noqa: BLE001 - the parent shows this one line to the admin
        import traceback

        traceback.print_exc()  # on stderr, which the parent keeps the tail of
        emit(error=f"{type(e).__name__}: {e}")
        return 1
    return 0


class GatedGenerator:
    """The server's generator seen through the gate, so evaluation questions queue fairly with users' chats."""

    def __init__(self, service) -> None:
        self._service = service
        self._gen = service.generator

    def stream(self, messages, **kwargs) -> GenerationStream:
        def pieces(out: GenerationStream):
            ticket = self._service.gate.reserve(force=True)
            try:
                ticket.wait(timeout=3600)
                inner = self._gen.stream(messages, **kwargs)
                try:
                    yield from inner
                finally:
                    out.stats = inner.stats
            finally:
                ticket.release()

        return GenerationStream(pieces)

    def __getattr__(self, name):
        return getattr(self._gen, name)


# the child processes' commands: python -m serve.jobs COMMAND PARAMS runs the function; the name is the failure's
CHILD_JOBS = {"tune-job": (tune_in_process, "tuning"), "retriever-job": (retriever_in_process, "search training")}

if __name__ == "__main__":  # the child process of a job: python -m serve.jobs tune-job '{"name": ...}'
    if len(sys.argv) == 3 and sys.argv[1] in CHILD_JOBS:
        sys.exit(_child(sys.argv[1], json.loads(sys.argv[2])))
    sys.exit(f"usage: python -m serve.jobs {'|'.join(CHILD_JOBS)} PARAMS_JSON")
