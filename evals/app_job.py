"""The app's Evaluate tab as an admin job: `ragtune eval` over a few questions with the server's own model and
search, queued fairly with users' chats. Evaluation is a layer above serve, so the server gets this runner from
whoever starts it (ragtune_cli/main.py, the tests), never by importing evals itself.

    service, app = serve.web.build(config, job_runners=JOB_RUNNERS)
"""

from __future__ import annotations

from evals.run import EvalConfig, run_eval
from generate.modes import ADAPTER_MODES, APP_MODES, DEFAULT_MODE
from retrieve import Searcher
from serve.adapter_choice import format_adapters
from serve.answer import AnswerConfig, AnswerEngine
from serve.jobs import GatedGenerator, Job


def run_eval_job(service, job: Job) -> None:
    """Run the evaluation (evals/run.py) with the server's model, sharing its queue with chats. `service` is the
    server's Ragtune (serve/server.py); `job` is updated in place."""

    p = job.params
    job.phase, job.fraction = "evaluating", 0.1
    modes = p.get("modes") or ",".join(APP_MODES)
    if not service.settings.adapters():
        modes = ",".join(m for m in modes.split(",") if m not in ADAPTER_MODES) or DEFAULT_MODE
    config = EvalConfig(workspace=service.workspace, modes=modes, limit=p.get("limit") or 5,
                        adapter=format_adapters(service.settings.default_adapters()) or None,
                        max_new_tokens=p.get("max_new_tokens") or 48,
                        command=f"ragtune serve: Evaluate tab (limit {p.get('limit') or 5}, modes {modes})")
    searcher = Searcher(service.workspace, embedder=service.embedders.get().for_job())
    engine = AnswerEngine(service.workspace, GatedGenerator(service), searcher=searcher,
                          config=AnswerConfig(k=config.k, max_new_tokens=config.max_new_tokens))
    out = run_eval(config, engine=engine, progress=False)
    job.result = {"report": out["report"], "n": out["n"], "results": out["results"], "skipped": out["skipped"]}


JOB_RUNNERS = {"eval": run_eval_job}
