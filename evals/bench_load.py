"""Load benchmark of `ragtune serve`: N simulated users chatting at once through the OpenAI-compatible API.

    python -m evals.bench_load --workspace WS                       # starts single-user servers here (loopback)
    python -m evals.bench_load --url http://host:7860 --key KEY     # against a running server
    options: --users 1,4,16  --turns 2  --max-tokens 32  --model ragtune-rag  --adapters none,demo
             --gates serial,batched,batched-bf16  --max-batch 16  --max-waiting 64  --local-model PATH  --dtype auto

Each simulated user starts at the same moment (a barrier) and asks `--turns` questions one after another (answerable
questions of data/eval/questions.jsonl that need no group), streaming each answer. `--adapters none,demo` mixes the
users: user i asks with entry i mod 2, `none` meaning `--model` and a name meaning `ragtune-hybrid:NAME`, so rag and
hybrid users share the batch.

`--gates serial,batched` (servers started here only) runs every level against two servers over the same model,
side by side: `serial` answers one request at a time (`--max-batch 1`, the lone decode loop behind the FIFO gate),
`batched` decodes up to `--max-batch` answers at once (continuous batching, generate/batching.py), and
`batched-bf16` does the same with the model's weights in bfloat16 (`ragtune serve --dtype bfloat16`; a model of
its own, so it costs a second copy in memory).

Per gate and level it prints p50/p99 latency to the first token and to the full answer, generated tokens and the
aggregate tokens/s (all users' completion tokens over the level's wall time), answers per minute, and then the
batched/serial ratios, and where the time went: tries per answer, search time and prompt size from the server's own
timings, and for a batched server started here its prefill and decode seconds against the wall time. Every request
is accounted for: an answer counts as complete only when its stream ended with a finish_reason; a 429 that carries
Retry-After (the queue bound, --max-waiting beyond the batch) is counted as refused; anything else (a 5xx, a 429
without Retry-After, a stream that broke off) is an error.
Latency to first token includes the wait in the server's queue. Before the levels, each server answers one
question with each model, unmeasured, so that no level pays for loading an adapter or a first search.
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
# each kind of server: (max_batch (None: --max-batch), the local model's dtype (None: --dtype))
GATES = {"serial": (1, None), "batched": (None, None), "batched-bf16": (None, "bfloat16")}


@dataclass
class Result:
    user: int
    question: str
    model: str = ""
    ttft_s: float | None = None
    total_s: float | None = None
    chars: int = 0
    tokens: int = 0
    error: str | None = None
    refused: bool = False  # a 429 with Retry-After
    status: int | None = None
    citations: int = 0
    timings: dict = field(default_factory=dict)  # the server's own: retrieve_ms, attempts, prompt_tokens, ...


@dataclass
class Level:
    users: int
    gate: str = ""
    results: list[Result] = field(default_factory=list)
    wall_s: float = 0.0
    model: dict | None = None  # the batch scheduler's counters over this level (None: no scheduler, the lone loop)


def load_questions(path: Path, n: int) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if q.get("answers") and not q.get("groups"):
                out.append(q["question"])
    return out[:n] if n else out


def user_models(model: str, adapters: str) -> list[str]:
    """The model each user asks with, in turn: `none` (or `-`) is `model`, a name is `ragtune-hybrid:NAME`."""
    names = [a.strip() for a in (adapters or "").split(",") if a.strip()]
    return [model if a in ("none", "-") else f"ragtune-hybrid:{a}" for a in names] or [model]


def ask(client, r: Result, max_tokens: int) -> None:
    """Stream one answer into `r` (first token, length, tokens, citations, or what went wrong)."""
    import openai

    t0 = time.perf_counter()
    try:
        finished = False
        stream = client.chat.completions.create(model=r.model, messages=[{"role": "user", "content": r.question}],
                                                stream=True, max_tokens=max_tokens,
                                                stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                r.tokens = chunk.usage.completion_tokens
            if not chunk.choices:
                continue
            piece = chunk.choices[0].delta.content or ""
            if piece and r.ttft_s is None:
                r.ttft_s = time.perf_counter() - t0
            r.chars += len(piece)
            if chunk.choices[0].finish_reason:
                finished = True
                extra = chunk.model_extra or {}
                r.citations = len(extra.get("citations") or [])
                r.timings = (extra.get("ragtune") or {}).get("timings") or {}
        r.total_s = time.perf_counter() - t0
        if not finished:
            r.error = "stream ended without a finish_reason (lost)"
        elif r.ttft_s is None:
            r.ttft_s = r.total_s  # an empty answer: first token = end
    except openai.APIStatusError as e:
        r.status = e.status_code
        r.refused = e.status_code == 429 and bool(e.response.headers.get("retry-after"))
        if not r.refused:
            r.error = f"HTTP {e.status_code}: {str(e)[:160]}"
    except Exception as e:  # noqa: BLE001 - every failure is counted, none is lost
        r.error = f"{type(e).__name__}: {str(e)[:160]}"


def one_user(client_factory, uid: int, questions: list[str], turns: int, models: list[str], max_tokens: int,
             barrier: threading.Barrier, out: list[Result]) -> None:
    client = client_factory()
    barrier.wait()
    for t in range(turns):
        r = Result(uid, questions[(uid * turns + t) % len(questions)], models[uid % len(models)])
        ask(client, r, max_tokens)
        out.append(r)


def run_level(client_factory, n_users: int, questions: list[str], turns: int, models: list[str],
              max_tokens: int, gate: str = "") -> Level:
    level = Level(n_users, gate)
    barrier = threading.Barrier(n_users)
    threads = [threading.Thread(target=one_user, args=(client_factory, u, questions, turns, models, max_tokens,
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


def tokens_per_s(lv: Level) -> float:
    return sum(r.tokens for r in lv.results if r.error is None) / lv.wall_s if lv.wall_s else 0.0


def report(levels: list[Level], turns: int) -> str:
    head = (f"{'gate':>12} {'users':>5} {'requests':>8} {'ok':>4} {'429s':>4} {'errors':>6} {'lost':>4} "
            f"{'TTFT p50':>9} {'TTFT p99':>9} {'full p50':>9} {'full p99':>9} {'tokens':>6} {'tok/s':>6} "
            f"{'answers/min':>11} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for lv in levels:
        ok = [r for r in lv.results if r.error is None and not r.refused]
        refused = sum(r.refused for r in lv.results)
        errors = sum(r.error is not None for r in lv.results)
        lost = lv.users * turns - len(lv.results) + sum(1 for r in lv.results if r.error and "lost" in r.error)
        ttft = [r.ttft_s for r in ok]
        full = [r.total_s for r in ok]

        def sec(values: list[float], q: float) -> str:
            return f"{pct(values, q):>8.2f}s" if values else f"{'-':>9}"

        lines.append(f"{lv.gate or '-':>12} {lv.users:>5} {lv.users * turns:>8} {len(ok):>4} {refused:>4} {errors:>6} "
                     f"{lost:>4} {sec(ttft, 50)} {sec(ttft, 99)} {sec(full, 50)} {sec(full, 99)} "
                     f"{sum(r.tokens for r in ok):>6} {tokens_per_s(lv):>6.1f} "
                     f"{60 * len(ok) / lv.wall_s if lv.wall_s else 0:>11.1f} {lv.wall_s:>7.1f}")
    lines += ratios(levels)
    errors = [r for lv in levels for r in lv.results if r.error]
    for r in errors[:10]:
        lines.append(f"error (user {r.user}, {r.model}): {r.error}")
    return "\n".join(lines)


SCHEDULER_COUNTERS = ("steps", "row_steps", "prefills", "prefill_tokens", "prefill_s", "decode_s")


def scheduler_counters(scheduler) -> dict:
    """The batch scheduler's running totals (generate/batching.BatchScheduler), {} without one."""
    return {k: getattr(scheduler, k) for k in SCHEDULER_COUNTERS} if scheduler is not None else {}


def time_split(levels: list[Level]) -> list[str]:
    """Where each level's time went, from the server's own figures: tries per answer (a draft judged unfit is
    asked again), search and prompt size per request, and for a batched server its forward passes by kind (the
    model's busy time, waits for the model lock included) against the level's wall time."""
    lines = ["where the time went (the server's figures, answered requests):"]
    for lv in levels:
        t = [r.timings for r in lv.results if r.timings]
        if not t:
            continue
        tries = sum(float(x.get("attempts") or 1) for x in t) / len(t)
        search = pct([float(x.get("retrieve_ms") or 0) for x in t], 50)
        prompt = sum(int(x.get("prompt_tokens") or 0) for x in t) / len(t)
        line = (f"  {lv.gate or 'server'}, {lv.users} users: {tries:.2f} tries per answer, search p50 {search:.0f} ms, "
                f"prompt {prompt:.0f} tokens (mean)")
        m = lv.model
        if m and m["steps"]:
            busy = m["prefill_s"] + m["decode_s"]
            line += (f"; model busy {busy:.1f} s of {lv.wall_s:.1f} s wall: {m['prefills']} prefills "
                     f"({m['prefill_tokens']} tokens) {m['prefill_s']:.1f} s, {m['steps']} decode steps "
                     f"({m['row_steps'] / m['steps']:.1f} rows each) {m['decode_s']:.1f} s")
        lines.append(line)
    return lines if len(lines) > 1 else []


def ratios(levels: list[Level]) -> list[str]:
    """'16 users: batched/serial aggregate tokens/s 4.2x, TTFT p50 44.0 s -> 9.1 s' for each level and each gate
    run beside the serial one."""
    out = []
    by_users: dict[int, dict[str, Level]] = {}
    for lv in levels:
        by_users.setdefault(lv.users, {})[lv.gate] = lv
    for users, gates in by_users.items():
        serial = gates.get("serial")
        if serial is None or not tokens_per_s(serial):
            continue
        for name, other in gates.items():
            if name == "serial":
                continue
            p50 = [pct([r.ttft_s for r in lv.results if r.error is None and not r.refused], 50)
                   for lv in (serial, other)]
            out.append(f"{users} users: {name}/serial aggregate tokens/s "
                       f"{tokens_per_s(other) / tokens_per_s(serial):.2f}x, TTFT p50 {p50[0]:.2f} s -> {p50[1]:.2f} s")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="A running ragtune server (e.g. http://127.0.0.1:7860); default: start one here")
    ap.add_argument("--key", default=os.environ.get("RAGTUNE_API_KEY"), help="API key (multi-user servers)")
    ap.add_argument("--workspace", type=Path, default=Path(os.environ.get("RAGTUNE_WORKSPACE", "workspace")),
                    help="Workspace for the servers started here (needs an index)")
    ap.add_argument("--users", default="1,4,16", help="Comma-separated numbers of simultaneous users")
    ap.add_argument("--turns", type=int, default=2, help="Questions each user asks, one after another")
    ap.add_argument("--max-tokens", type=int, default=32, help="Longest answer in tokens")
    ap.add_argument("--model", default="ragtune-rag", help="ragtune-rag, ragtune-base, ragtune-hybrid:ADAPTER, ...")
    ap.add_argument("--adapters", default="", help="Mix users over these, in turn: 'none' is --model, NAME is "
                                                   "ragtune-hybrid:NAME (e.g. none,demo: half rag, half hybrid)")
    ap.add_argument("--gates", default="batched", help="Servers started here, each level run against each: serial "
                                                       "(--max-batch 1), batched (--max-batch N), batched-bf16 (the "
                                                       "same with bfloat16 weights); e.g. serial,batched")
    ap.add_argument("--dtype", default="auto", help="The local model's weights in servers started here "
                                                    "(`ragtune serve --dtype`): auto (float32 on a CPU), bfloat16, ...")
    ap.add_argument("--max-batch", type=int, default=16, help="Rows the batched server decodes at once")
    ap.add_argument("--local-model", help="Servers started here answer with this model folder or hub id "
                                          "(`ragtune serve --model`); default: the packaged SmolLM2")
    ap.add_argument("--questions", type=Path, default=REPO / "data" / "eval" / "questions.jsonl")
    ap.add_argument("--max-waiting", type=int, default=64, help="Queue bound (beyond the batch) of servers started "
                                                                "here; the server's own default is 32")
    args = ap.parse_args(argv)
    args.gates = [g.strip() for g in args.gates.split(",") if g.strip()]
    if not args.gates or set(args.gates) - set(GATES):
        ap.error(f"--gates takes {', '.join(GATES)}, not {args.gates}")
    if args.url and len(args.gates) > 1:
        ap.error("--gates compares servers started here; with --url the running server is measured as it is")
    return args


def start_servers(args) -> tuple[dict[str, str], list, list]:
    """({gate: url}, stop functions, services) for each gate, all on one loaded model and embedder."""
    from serve.openai_api import serve_in_thread
    from serve.server import ServeConfig
    from serve.web import build

    urls, stops, services = {}, [], []
    generators: dict[str, object] = {}  # servers of one dtype share the loaded model
    embedder = None
    for gate in args.gates:
        sys.stderr.write(f"starting a single-user {gate} server on workspace {args.workspace} ...\n")
        max_batch, dtype = GATES[gate]
        dtype = dtype or args.dtype
        config = ServeConfig(workspace=args.workspace, max_new_tokens=args.max_tokens, max_waiting=args.max_waiting,
                             max_batch=max_batch or args.max_batch, model=args.local_model, dtype=dtype)
        service, app = build(config, generator=generators.get(dtype), embedder=embedder)
        if not service.docs.has_index():
            sys.exit(f"no index in {args.workspace}: run `ragtune index data/corpus --workspace {args.workspace}`")
        generators[dtype] = getattr(service.generator, "local", service.generator)
        embedder = service.embedders.get().base
        urls[gate], stop = serve_in_thread(app)
        stops.append(stop)
        services.append(service)
        service.generator.warmup()
    return urls, stops, services


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels_wanted = [int(x) for x in args.users.split(",") if x.strip()]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stops, services = [], []
    urls = {"": args.url} if args.url else None
    if urls is None:
        urls, stops, services = start_servers(args)
    from openai import OpenAI

    def client_factory(url: str):
        return lambda: OpenAI(base_url=url.rstrip("/") + "/v1", api_key=args.key or "not-needed", max_retries=0,
                              timeout=900)

    questions = load_questions(args.questions, 0)
    models = user_models(args.model, args.adapters)
    servers = ", ".join(f"{gate or 'server'} {url}" for gate, url in urls.items())
    print(f"ragtune load benchmark: {servers}, models {models}, {args.turns} questions per user, "
          f"max {args.max_tokens} new tokens, users {levels_wanted}")
    levels = []
    try:
        for gate, url in urls.items():  # first use (adapter loads, the embedder's first search) is not measured
            for model in models:
                ask(client_factory(url)(), Result(-1, questions[0], model), args.max_tokens)
        schedulers = {gate: getattr(service.generator, "scheduler", None) for gate, service in zip(urls, services)}
        for n in levels_wanted:
            for gate, url in urls.items():
                before = scheduler_counters(schedulers.get(gate))
                lv = run_level(client_factory(url), n, questions, args.turns, models, args.max_tokens, gate)
                after = scheduler_counters(schedulers.get(gate))
                lv.model = {k: after[k] - before[k] for k in after} if after else None
                levels.append(lv)
                sys.stderr.write(f"  {gate or 'server'}, {n} users: {len(lv.results)} answers in {lv.wall_s:.1f} s\n")
    finally:
        for stop in stops:
            stop()
    print(report(levels, args.turns))
    print("\n".join(time_split(levels)))
    for gate, service in zip(urls, services):
        g = service.gate
        print(f"{gate} server queue: {g.served} served, {g.refused} refused (limit {g.max_waiting} waiting)")
    bad = sum(1 for lv in levels for r in lv.results if r.error) + sum(
        lv.users * args.turns - len(lv.results) for lv in levels)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
