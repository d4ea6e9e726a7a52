"""Load benchmark of `ragtune serve`: N simulated users chatting at once through the OpenAI-compatible API.

    python -m evals.bench_load --workspace WS                       # starts a single-user server here (loopback)
    python -m evals.bench_load --url http://host:7860 --key KEY     # against a running server
    options: --users 1,4,16  --turns 2  --max-tokens 32  --model ragtune-rag

Each simulated user starts at the same moment (a barrier) and asks `--turns` questions one after another (answerable
questions of data/eval/questions.jsonl that need no group), streaming each answer. Per concurrency level it prints
p50/p99 latency to the first token and to the full answer, answers per minute, and errors. Every request is
accounted for: an answer counts as complete only when its stream ended with a finish_reason; anything else (an
HTTP error, a 429 from the queue limit, a stream that broke off) is an error. Goal: zero errors, none lost.
Latency to first token includes the wait in the server's queue: the model answers one request at a time, so with N
users the last one waits for the N-1 before it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    user: int
    question: str
    ttft_s: float | None = None
    total_s: float | None = None
    chars: int = 0
    error: str | None = None
    citations: int = 0


@dataclass
class Level:
    users: int
    results: list[Result] = field(default_factory=list)
    wall_s: float = 0.0


def load_questions(path: Path, n: int) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if q.get("answers") and not q.get("groups"):
                out.append(q["question"])
    return out[:n] if n else out


def one_user(client_factory, uid: int, questions: list[str], turns: int, model: str, max_tokens: int,
             barrier: threading.Barrier, out: list[Result]) -> None:
    client = client_factory()
    barrier.wait()
    for t in range(turns):
        q = questions[(uid * turns + t) % len(questions)]
        r = Result(uid, q)
        t0 = time.perf_counter()
        try:
            finished = False
            stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}],
                                                    stream=True, max_tokens=max_tokens)
            for chunk in stream:
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content or ""
                if piece and r.ttft_s is None:
                    r.ttft_s = time.perf_counter() - t0
                r.chars += len(piece)
                if chunk.choices[0].finish_reason:
                    finished = True
                    r.citations = len((chunk.model_extra or {}).get("citations") or [])
            r.total_s = time.perf_counter() - t0
            if not finished:
                r.error = "stream ended without a finish_reason (lost)"
            elif r.ttft_s is None:
                r.ttft_s = r.total_s  # an empty answer: first token = end
        except Exception as e:  # noqa: BLE001 - every failure is counted, none is lost
            r.error = f"{type(e).__name__}: {str(e)[:160]}"
        out.append(r)


def run_level(client_factory, n_users: int, questions: list[str], turns: int, model: str,
              max_tokens: int) -> Level:
    level = Level(n_users)
    barrier = threading.Barrier(n_users)
    threads = [threading.Thread(target=one_user, args=(client_factory, u, questions, turns, model, max_tokens,
                                                       barrier, level.results), daemon=True)
               for u in range(n_users)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    level.wall_s = time.perf_counter() - t0
    return level


def pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def report(levels: list[Level], turns: int) -> str:
    head = (f"{'users':>5} {'requests':>8} {'ok':>4} {'errors':>6} {'lost':>4} {'TTFT p50':>9} {'TTFT p99':>9} "
            f"{'full p50':>9} {'full p99':>9} {'answers/min':>11} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for lv in levels:
        ok = [r for r in lv.results if r.error is None]
        lost = lv.users * turns - len(lv.results) + sum(1 for r in lv.results if r.error and "lost" in r.error)
        ttft = [r.ttft_s for r in ok]
        full = [r.total_s for r in ok]
        def sec(values: list[float], q: float) -> str:
            return f"{pct(values, q):>8.2f}s" if values else f"{'-':>9}"

        lines.append(f"{lv.users:>5} {lv.users * turns:>8} {len(ok):>4} {len(lv.results) - len(ok):>6} {lost:>4} "
                     f"{sec(ttft, 50)} {sec(ttft, 99)} {sec(full, 50)} {sec(full, 99)} "
                     f"{60 * len(ok) / lv.wall_s if lv.wall_s else 0:>11.1f} {lv.wall_s:>7.1f}")
    errors = [r for lv in levels for r in lv.results if r.error]
    for r in errors[:10]:
        lines.append(f"error (user {r.user}): {r.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="A running ragtune server (e.g. http://127.0.0.1:7860); default: start one here")
    ap.add_argument("--key", default=os.environ.get("RAGTUNE_API_KEY"), help="API key (multi-user servers)")
    ap.add_argument("--workspace", type=Path, default=Path(os.environ.get("RAGTUNE_WORKSPACE", "workspace")),
                    help="Workspace for the server started here (needs an index)")
    ap.add_argument("--users", default="1,4,16", help="Comma-separated numbers of simultaneous users")
    ap.add_argument("--turns", type=int, default=2, help="Questions each user asks, one after another")
    ap.add_argument("--max-tokens", type=int, default=32, help="Longest answer in tokens")
    ap.add_argument("--model", default="ragtune-rag", help="ragtune-rag, ragtune-base, ragtune-hybrid:ADAPTER, ...")
    ap.add_argument("--questions", type=Path, default=REPO / "data" / "eval" / "questions.jsonl")
    ap.add_argument("--max-waiting", type=int, default=64, help="Queue bound of the server started here")
    args = ap.parse_args(argv)
    levels_wanted = [int(x) for x in args.users.split(",") if x.strip()]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    stop = None
    service = None
    url = args.url
    if url is None:
        from serve.openai_api import serve_in_thread
        from serve.server import ServeConfig
        from serve.web import build

        sys.stderr.write(f"starting a single-user server on workspace {args.workspace} ...\n")
        service, app = build(ServeConfig(workspace=args.workspace, max_new_tokens=args.max_tokens,
                                         max_waiting=args.max_waiting))
        if not service.docs.has_index():
            sys.exit(f"no index in {args.workspace}: run `ragtune index data/corpus --workspace {args.workspace}`")
        url, stop = serve_in_thread(app)
        service.generator.warmup()
    from openai import OpenAI

    def client_factory():
        return OpenAI(base_url=url.rstrip("/") + "/v1", api_key=args.key or "not-needed", max_retries=0,
                      timeout=900)

    questions = load_questions(args.questions, 0)
    print(f"ragtune load benchmark: {url}, model {args.model}, {args.turns} questions per user, "
          f"max {args.max_tokens} new tokens, users {levels_wanted}")
    levels = []
    try:
        for n in levels_wanted:
            lv = run_level(client_factory, n, questions, args.turns, args.model, args.max_tokens)
            levels.append(lv)
            sys.stderr.write(f"  {n} users: {len(lv.results)} answers in {lv.wall_s:.1f} s\n")
    finally:
        if stop is not None:
            stop()
    print(report(levels, args.turns))
    if service is not None:
        g = service.gate
        print(f"server queue: {g.served} served, {g.refused} refused (limit {g.max_waiting} waiting)")
    bad = sum(1 for lv in levels for r in lv.results if r.error) + sum(
        lv.users * args.turns - len(lv.results) for lv in levels)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
