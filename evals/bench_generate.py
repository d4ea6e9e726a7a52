"""Generation benchmark: time to first token and decode speed of plain `model.generate` against ragtune's
`LocalGenerator`, on the same RAG-style chat prompts (a question plus ~200-400 tokens of context).

    python -m evals.bench_generate [--device cpu|cuda] [--random-weights] [--prompts N] [--max-new-tokens M]
                                   [--adapter] [--concurrent N] [--backend-url URL --backend-model NAME]

Both run greedy, stop on the same end-of-turn token and are interleaved prompt by prompt, so drifting machine
load hits both alike. --random-weights builds the default model's architecture with random weights (speed does
not depend on weights) from its config + tokenizer only (~3.5 MB, kept in --assets), for a GPU machine that
cannot carry the weights: run once here to create the assets, carry that folder, pass --assets there.
--adapter loads a LoRA adapter shaped as `ragtune tune` makes it (random weights) and answers with it, as tuned and hybrid
do; on CUDA it adds the decode step compiled with the adapter merged (`LocalGenerator(compile_adapters=True)`).
--concurrent N then answers N prompts at once through the continuous batch (`BatchingGenerator`, as `ragtune
serve` does) against the same N one after another: aggregate tokens/s side by side.
--backend-url adds a row for an OpenAI-compatible server answering the same prompts through ragtune's remote
generator (as `--backend-url` in ask/serve), e.g. llama.cpp's server over the packaged GGUF on this CPU, or vLLM.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from ingest.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Workspace(REPO / "workspace").models

_FACTS = [
    "Employees may work remotely up to three days per week, provided that their manager approves a written plan.",
    "Laptops and monitors are provided by the IT department; requests go through the service portal.",
    "Travel expenses are reimbursed within thirty days when itemised receipts are submitted.",
    "Annual leave is twenty-five working days, plus public holidays of the office's country.",
    "Security incidents must be reported to the security team within one hour of discovery.",
    "New hires complete the onboarding course in their first two weeks, including data-protection training.",
    "The office in Lyon is open from 8:00 to 19:00; badges are needed after 18:00.",
    "Purchases above 5,000 euros need a second approval from the finance department.",
    "Parental leave is sixteen weeks at full pay for the primary carer and six weeks for the second parent.",
    "Customer data may only be stored in the approved EU data centres and never on personal devices.",
]
_QUESTIONS = [
    "How many days per week can employees work remotely?",
    "How do I get a new monitor?",
    "When are travel expenses paid back?",
    "How much annual leave do I get?",
    "What should I do after discovering a security incident?",
    "Which purchases need finance approval?",
]


def make_prompts(n: int) -> list[list[dict]]:
    """Deterministic RAG-style prompts: numbered context passages (rotated per prompt) + one question."""
    prompts = []
    for i in range(n):
        facts = [_FACTS[(i + j) % len(_FACTS)] for j in range(len(_FACTS))]
        context = "\n".join(f"[{j + 1}] {f} {facts[(j + 3) % len(facts)]}" for j, f in enumerate(facts[:7]))
        question = _QUESTIONS[i % len(_QUESTIONS)]
        prompts.append([
            {"role": "system", "content": "Answer using only the numbered context passages and cite them like [1]."},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
        ])
    return prompts


def _random_weights_model(assets: Path, cache_dir: Path, device: str):
    """The default model's architecture and tokenizer with random weights (config + tokenizer only on disk)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from generate.models import LoadedModel, ModelConfig, pick_device_dtype, end_of_turn_ids, resolve_model_dir

    if not (assets / "config.json").is_file():
        src = resolve_model_dir(ModelConfig(cache_dir=cache_dir))
        assets.mkdir(parents=True, exist_ok=True)
        AutoConfig.from_pretrained(src).save_pretrained(assets)
        AutoTokenizer.from_pretrained(src).save_pretrained(assets)
    dev, dtype = pick_device_dtype(ModelConfig(device=device))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(assets), dtype=dtype).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(assets)
    stop = end_of_turn_ids(tok, model.generation_config)
    model.generation_config.eos_token_id = list(stop)
    model.generation_config.pad_token_id = stop[0]
    return LoadedModel(model, tok, dev, dtype, "random-weights", assets, stop)


def time_generate(loaded, messages: list[dict], max_new: int) -> tuple[float, float, str]:
    """Plain transformers generate (greedy, KV cache); a streamer timestamps each new token."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value) -> None:
            if self.prompt_seen:
                self.times.append(time.perf_counter())
            self.prompt_seen = True  # the first put() is the prompt itself

        def end(self) -> None:
            pass

    clock = Clock()
    t0 = time.perf_counter()
    enc = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(loaded.device)
    with torch.inference_mode():
        out = loaded.model.generate(**enc, max_new_tokens=max_new, do_sample=False, streamer=clock)
    _sync(loaded.device)
    new_ids = out[0, enc["input_ids"].shape[1]:].tolist()
    text = loaded.tokenizer.decode(new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    n, times = len(clock.times), clock.times
    rate = (n - 1) / (times[-1] - times[0]) if n > 1 else 0.0
    return (times[0] - t0) * 1000.0, rate, text


def time_local(gen, messages: list[dict], max_new: int, **options) -> tuple[float, float, str]:
    stream = gen.stream(messages, max_new_tokens=max_new, **options)
    text = "".join(stream)
    s = stream.stats
    return s.first_token_ms, s.tokens_per_s, text


def time_concurrent(gen, prompts: list[list[dict]], max_new: int, options: dict) -> tuple[float, float, int]:
    """All prompts at once, one thread each: (aggregate new tokens/s, median time to first token ms, errors)."""
    import threading

    stats, errors = [], []

    def ask(messages: list[dict]) -> None:
        try:
            stream = gen.stream(messages, max_new_tokens=max_new, **options)
            "".join(stream)
            stats.append(stream.stats)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the benchmark goes on
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = statistics.median(s.first_token_ms for s in stats) if stats else 0.0
    return sum(s.new_tokens for s in stats) / wall, ttft, len(errors)


def print_concurrent(main_gen, n: int, max_new: int, options: dict) -> None:
    """N prompts one after another through the lone path, then all at once through the continuous batch."""
    from generate.batching import BatchingGenerator

    prompts = make_prompts(n)
    serial = []
    t0 = time.perf_counter()
    for p in prompts:
        stream = main_gen.stream(p, max_new_tokens=max_new, **options)
        "".join(stream)
        serial.append(stream.stats)
    serial_wall = time.perf_counter() - t0
    batched = BatchingGenerator(main_gen, max_batch=n)
    time_concurrent(batched, prompts[:2], 4, options)  # warm-up
    rate, ttft, errors = time_concurrent(batched, prompts, max_new, options)
    base_rate = sum(st.new_tokens for st in serial) / serial_wall
    print(f"\n{n} prompts at once ({'adapter ' + options['adapter'] if options.get('adapter') else 'base model'}), "
          f"max {max_new} new tokens:")
    print(f"{'path':<34}{'tokens/s (all rows)':>21}{'speed-up':>10}{'TTFT p50 ms':>13}{'errors':>8}")
    serial_ttft = statistics.median(st.first_token_ms for st in serial)
    print(f"{'one after another (lone path)':<34}{base_rate:>21.1f}{'1.00x':>10}{serial_ttft:>13.1f}{0:>8}")
    print(f"{'continuous batch (ragtune serve)':<34}{rate:>21.1f}{rate / base_rate:>9.2f}x{ttft:>13.1f}{errors:>8}")


def _sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--random-weights", action="store_true", help="random weights, default model's architecture")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the default model is cached")
    ap.add_argument("--assets", type=Path, default=DEFAULT_CACHE / "bench-assets-smollm2-135m",
                    help="config + tokenizer for --random-weights")
    ap.add_argument("--variants", action="store_true", help="also time LocalGenerator with the other cache kind")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--adapter", action="store_true", help="answer with a LoRA adapter loaded (tuned / hybrid)")
    ap.add_argument("--concurrent", type=int, default=0, help="then N prompts at once, batched vs one by one")
    ap.add_argument("--backend-url", help="also time this OpenAI-compatible server on the same prompts")
    ap.add_argument("--backend-model", default="default", help="the model name that server serves")
    ap.add_argument("--api-key", help="its key, if it wants one")
    args = ap.parse_args(argv)
    if args.backend_url and args.adapter:
        ap.error("--backend-url times the server's own model: leave out --adapter")
    server = None
    if args.backend_url:  # a server that cannot be reached, refuses the key or lacks the model stops here
        from serve.answer import open_generator

        try:
            server = open_generator(REPO / "workspace", args.backend_model, args.backend_url, args.api_key)
        except ValueError as exc:
            ap.error(str(exc))
        served = server.served_models()
        if served is not None and args.backend_model not in served:
            ap.error(f"--backend-model {args.backend_model!r}: {args.backend_url} serves {', '.join(served)}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from generate.local import LocalGenerator
    from generate.models import ModelConfig, load_model

    if args.random_weights:
        loaded = _random_weights_model(args.assets, args.cache_dir, args.device)
    else:
        loaded = load_model(ModelConfig(cache_dir=args.cache_dir, device=args.device))
    main_gen = LocalGenerator(loaded)
    backends, options = _backends(args, loaded, main_gen, server)

    prompts = make_prompts(args.prompts)
    lengths = [main_gen.count_prompt_tokens(p) for p in prompts]
    for fn in backends.values():  # warm-up: first calls pay allocator / kernel-selection / compile costs
        fn(prompts[0], 8)
    results: dict[str, list[tuple[float, float, str]]] = {k: [] for k in backends}
    for p in prompts:
        for name, fn in backends.items():
            results[name].append(fn(p, args.max_new_tokens))

    cpu = f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    dev = torch.cuda.get_device_name() if loaded.device.type == "cuda" else cpu
    print(f"model: {loaded.name} ({loaded.dtype}, {loaded.device.type}: {dev})")
    print(f"{len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens, greedy, "
          f"max {args.max_new_tokens} new tokens")
    reference = results[next(iter(results))]  # model.generate's row
    base_ttft = statistics.median(r[0] for r in reference)
    base_rate = statistics.median(r[1] for r in reference)
    ref_texts = [r[2] for r in reference]
    print(f"{'backend':<34}{'TTFT ms':>10}{'(best)':>9}{'decode tok/s':>14}{'(best)':>8}{'speed-up TTFT/decode':>23}"
          f"{'same text':>11}")
    for name, rows in results.items():
        ttft = statistics.median(r[0] for r in rows)
        rate = statistics.median(r[1] for r in rows)
        same = sum(r[2] == ref for r, ref in zip(rows, ref_texts, strict=True))
        speed = f"{base_ttft / ttft:.2f}x / {rate / base_rate:.2f}x"
        print(f"{name:<34}{ttft:>10.1f}{min(r[0] for r in rows):>9.1f}{rate:>14.1f}{max(r[1] for r in rows):>8.1f}"
              f"{speed:>23}{f'{same}/{len(rows)}':>11}")
    print("TTFT and decode columns are medians over prompts (best in brackets); speed-up compares medians.")
    if args.concurrent:
        print_concurrent(main_gen, args.concurrent, args.max_new_tokens, options)


def _backends(args, loaded, main_gen, server=None) -> tuple[dict, dict]:
    """The rows of the table ({label: fn(messages, max_new)}) and the options every ragtune call passes. With
    --adapter every row answers with it: model.generate sees the adapter merged, as LocalGenerator leaves it.
    `server`: the --backend-url generator, a row of its own."""
    import tempfile

    options: dict = {}
    if args.adapter:
        from transformers import AutoModelForCausalLM

        from tune.train import random_adapter

        folder = Path(tempfile.mkdtemp(prefix="bench-lora-"))  # on a model of its own: the shared one stays bare
        random_adapter(AutoModelForCausalLM.from_config(loaded.model.config), folder, std=0.01)
        main_gen.load_adapter("bench", str(folder))
        main_gen.use_adapter("bench")
        options = {"adapter": "bench"}
    label = " (adapter merged)" if args.adapter else ""
    backends = {f"model.generate{label}": lambda m, n: time_generate(loaded, m, n),
                "ragtune LocalGenerator": lambda m, n: time_local(main_gen, m, n, **options)}
    if args.adapter and loaded.device.type == "cuda":
        def graphed(m, n):
            main_gen.compile_adapters = True  # the same generator, its decode step compiled with the adapter
            try:
                return time_local(main_gen, m, n, **options)
            finally:
                main_gen.compile_adapters = False
        backends["  same, CUDA graphs + adapter"] = graphed
    if server is not None:
        backends[f"server {args.backend_model} (OpenAI API)"] = lambda m, n: time_local(server, m, n)
    if args.variants and not args.adapter:  # a second generator would wrap the shared model in peft again
        from generate.local import LocalGenerator

        other = LocalGenerator(loaded, static_cache=not main_gen._static)
        label = "static" if other._static else "dynamic"
        backends[f"  same, {label} KV cache"] = lambda m, n: time_local(other, m, n)
    return backends, options

if __name__ == "__main__":
    main()
