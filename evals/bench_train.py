"""Training throughput: ragtune's trainer path vs a plain transformers + peft loop, same data, same LoRA, one run.

    python -m evals.bench_train                       # CPU, the real default model
    python -m evals.bench_train --device cuda --random-weights --steps 20 --assets DIR   # a GPU box: no weights

Tokens/s counts NON-padding tokens (prompt + answer) per second of training step (forward, backward, optimizer),
the first step of each path excluded as warm-up. By default the plain loop's steps run interleaved with ragtune's
(one plain step after each Trainer step, outside its timing), so on a shared machine both see the same load;
--sequential runs the plain loop first.

- plain loop: fp32, fixed batches of 8 examples in data order padded to the longest (attention mask), full
  logits with the answer-only labels through `model(labels=...)`, torch AdamW, the same LoRA config (r16, all
  linear projections). What a first LoRA script looks like.
- ragtune: `tune.train.train_adapter` (transformers Trainer): length-grouped token-budget batches, logits only at
  answer positions, bf16 autocast with a bf16 frozen base where the hardware has native bf16, packing with
  varlen flash-attention on CUDA when flash-attn is installed.

Data: RAFT-like chat examples of ~400-700 tokens with short answers, built from the sample corpus (an oracle chunk
plus distractor chunks, a cloze question about one sentence of the oracle, the answer with its citation), or a
synth dataset with --dataset. --random-weights builds the default model's architecture (SmolLM2-135M, Llama)
from its config with random weights: throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from evals.bench_train_data import corpus_examples, model_folder
from ingest.workspace import Workspace

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---- the plain loop ----------------------------------------------------------------------------------------------

class PlainLoop:
    """A straightforward transformers + peft LoRA loop (see the module doc), run one step at a time so the
    benchmark can interleave it with ragtune's steps: both then see the same machine load."""

    def __init__(self, folder: Path, records: list[dict], device: str, batch: int = 8, lr: float = 2e-4,
                 dropout: float | None = None) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from generate.models import end_of_turn_ids
        from tune.data import encode_examples

        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
        self.exs, _ = encode_examples(tok, records, end_of_turn_ids(tok, model.generation_config), max_len=None)
        from tune.train import TuneConfig

        d = TuneConfig()  # the same LoRA as ragtune's defaults
        torch.manual_seed(0)
        self.model = get_peft_model(model, LoraConfig(r=d.rank, lora_alpha=d.alpha or 2 * d.rank,
                                                      lora_dropout=d.dropout if dropout is None else dropout,
                                                      target_modules=list(d.target_modules), task_type="CAUSAL_LM"))
        self.model.train()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 2
        self.device, self.batch = device, batch
        self.steps = 0
        self.timed_s = 0.0
        self.timed_tokens = 0
        self.padded = 0

    def step(self) -> None:
        import torch

        from tune.data import IGNORE_INDEX

        chunk = [self.exs[(self.steps * self.batch + j) % len(self.exs)] for j in range(self.batch)]
        width = max(len(e) for e in chunk)
        ids = torch.full((self.batch, width), self.pad, dtype=torch.long)
        labels = torch.full((self.batch, width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((self.batch, width), dtype=torch.long)
        for r, e in enumerate(chunk):
            ids[r, :len(e)] = torch.tensor(e.input_ids)
            labels[r, :len(e)] = torch.tensor(e.labels)
            mask[r, :len(e)] = 1
        ids, labels, mask = ids.to(self.device), labels.to(self.device), mask.to(self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        dt = time.perf_counter() - t0
        if self.steps > 0:  # the first step is warm-up
            self.timed_s += dt
            self.timed_tokens += int(mask.sum())
            self.padded += self.batch * width
        print(f"  plain step {self.steps}: {int(mask.sum())} tokens in {dt:.2f}s, loss {float(loss):.3f}",
              file=sys.stderr)
        self.steps += 1

    def result(self) -> dict:
        return {"tokens_per_s": self.timed_tokens / self.timed_s if self.timed_s else 0.0,
                "padding_share": 1 - self.timed_tokens / self.padded if self.padded else 0.0,
                "precision": "fp32", "timed_steps": max(0, self.steps - 1)}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _interleave(plain: PlainLoop):
    """A Trainer callback that runs one plain step after each ragtune step (outside ragtune's step timing)."""
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            plain.step()  # the plain loop's warm-up step

        def on_step_end(self, args, state, control, **kw):
            plain.step()

    return Interleave()


def _profiler(steps: int, device: str, row_limit: int = 15):
    """A Trainer callback that runs torch.profiler over `steps` optimizer steps after the warm-up step and prints
    where the time went: the top operators, and wall time against time the GPU spent in kernels (a GPU busy for
    a small share of the wall time means the host, not the GPU, sets the pace)."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])

    class Profile(TrainerCallback):
        prof = None
        t0 = 0.0
        done = 0

        def on_step_begin(self, args, state, control, **kw):
            if self.prof is None and self.done == 0 and state.global_step >= 1:
                _sync(device)
                self.prof = profile(activities=acts)
                self.prof.__enter__()
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self.prof is None:
                return
            self.done += 1
            if self.done < steps:
                return
            _sync(device)
            wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)
            events = self.prof.key_averages()
            key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
            print(events.table(sort_by=key, row_limit=row_limit), file=sys.stderr)
            line = f"profile: {steps} steps in {wall:.3f}s wall"
            if device == "cuda":
                busy = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e6
                launches = sum(e.count for e in events if "LaunchKernel" in e.key)
                line += f", GPU kernels busy {busy:.3f}s ({busy / wall:.0%}), {launches / steps:.0f} launches per step"
            print(line, file=sys.stderr)
            self.prof = None

    return Profile()


# ---- ragtune's path ----------------------------------------------------------------------------------------------

def ragtune_path(folder: Path, records: list[dict], val: list[dict], device: str, steps: int, work: Path,
                 batch_tokens: int | None, precision: str, callbacks: list | None = None) -> dict:
    from tune.train import TuneConfig, train_adapter

    ws = work / "ws"
    ds = Workspace(ws).dataset("bench")
    ds.mkdir(parents=True, exist_ok=True)
    (ds / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (ds / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    report = train_adapter(TuneConfig(workspace=ws, dataset=ds, model=str(folder), name="bench", max_steps=steps + 1,
                                      device=device, batch_tokens=batch_tokens, precision=precision, lr=2e-4),
                           progress=True, callbacks=callbacks)
    hp = report.card["hyperparameters"]
    return {"tokens_per_s": report.train_tokens_per_s, "padding_share": report.padding_share,
            "precision": report.precision, "batching": report.batching, "timed_steps": steps,
            "batch_tokens": hp["batch_tokens"], "micro_batch_tokens": hp["micro_batch_tokens"]}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--random-weights", action="store_true", help="the default architecture with random weights")
    p.add_argument("--steps", type=int, default=None, help="timed steps per path (default 3 on CPU, 20 on CUDA)")
    p.add_argument("--examples", type=int, default=None, help="training examples to generate (default: enough)")
    p.add_argument("--dataset", type=Path, default=None, help="use a synth dataset folder instead of generating")
    p.add_argument("--batch-tokens", type=int, default=None, help="ragtune's token budget (default: its own)")
    p.add_argument("--precision", default="auto", help="ragtune's precision (default auto)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the default model is cached")
    p.add_argument("--assets", type=Path, default=None, help="config + tokenizer folder for --random-weights "
                   "(the one evals.bench_generate --assets writes): a GPU box then needs no weights and no GGUF")
    p.add_argument("--skip-plain", action="store_true", help="only ragtune's path")
    p.add_argument("--sequential", action="store_true", help="run the plain loop first instead of interleaving "
                   "its steps with ragtune's (interleaving makes both see the same load on a shared machine)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="ragtune's path alone, with torch.profiler "
                   "over N steps after the warm-up: top operators, wall time vs GPU kernel time, launches per step")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    return p


def _examples(a, tok, steps: int) -> tuple[list[dict], list[dict]]:
    """(train, validation) records: a synth dataset's (--dataset) or RAFT-like ones built from the corpus."""
    if a.dataset:
        from tune.data import read_jsonl, resolve_dataset

        files = resolve_dataset(a.dataset)
        records = read_jsonl(files.train)
        val = read_jsonl(files.val)[:16] if files.val else records[-16:]
    else:
        budget = a.batch_tokens or (16384 if a.device == "cuda" else 8192)
        n = a.examples or max(8 * (steps + 1), int((steps + 2) * budget / 450))
        t0 = time.perf_counter()
        records = corpus_examples(tok, n + 12)
        records, val = records[:n], records[n:]
        print(f"built {len(records)} + {len(val)} RAFT-like examples in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
    return records, val


def _report(a, torch, records, lens, steps: int, results: dict, load: tuple[float, float]) -> dict:
    """Print the Markdown table and return the JSON record."""
    load0, load1 = load
    dev = torch.cuda.get_device_name(0) if a.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\ntraining throughput, {'random' if a.random_weights else 'real'} SmolLM2-135M weights, {dev}, "
          f"{len(records)} examples of {min(lens)}-{max(lens)} tokens (mean {sum(lens) / len(lens):.0f}), "
          f"{'ragtune only' if a.skip_plain else 'sequential' if a.sequential else 'steps interleaved'}, load average {load0:.1f} -> {load1:.1f}")
    print("| path | precision | batches | timed steps | non-padding tokens/s | padding share | speed-up |")
    print("|---|---|---|---|---|---|---|")
    base = results.get("plain", {}).get("tokens_per_s")
    if "plain" in results:
        r = results["plain"]
        print(f"| plain transformers + peft loop | fp32 | 8 examples padded to the longest | {r['timed_steps']} | "
              f"{r['tokens_per_s']:.0f} | {r['padding_share']:.1%} | 1.00x |")
    r = results["ragtune"]
    speed = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
    print(f"| ragtune tune (Trainer) | {r['precision']} | {r['batching']}, {r['batch_tokens']} tokens/step "
          f"(micro-batches of {r['micro_batch_tokens']}) | {r['timed_steps']} | {r['tokens_per_s']:.0f} | "
          f"{r['padding_share']:.1%} | {speed} |")
    out = {"device": dev, "random_weights": a.random_weights, "steps": steps, "examples": len(records),
           "load": [load0, load1], **results}
    if base:
        out["speedup"] = r["tokens_per_s"] / base
    return out


def main(argv: list[str] | None = None) -> dict:
    a = _parser().parse_args(argv)
    if a.profile:
        a.skip_plain = True
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    steps = a.steps or (a.profile + 1 if a.profile else 20 if a.device == "cuda" else 3)
    import torch
    from transformers import AutoTokenizer

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU")
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-train-"))
    try:
        folder = model_folder(a.random_weights, work, a.cache_dir, a.assets)
        tok = AutoTokenizer.from_pretrained(folder)
        records, val = _examples(a, tok, steps)
        lens = [len(tok.apply_chat_template(r["messages"], tokenize=True)["input_ids"]) for r in records]
        load0 = os.getloadavg()[0]
        results = {}
        plain = None if a.skip_plain else PlainLoop(folder, records, a.device)
        if plain is not None and a.sequential:
            print("plain transformers + peft loop ...", file=sys.stderr)
            for _ in range(steps + 1):
                plain.step()
        print("ragtune trainer path" + (" (interleaved with the plain loop)" if plain and not a.sequential else "")
              + " ...", file=sys.stderr)
        cbs = [_interleave(plain)] if plain is not None and not a.sequential else None
        if a.profile:
            cbs = [_profiler(a.profile, a.device)]
            steps = max(steps, a.profile + 1)  # the warm-up step, then the profiled ones
        results["ragtune"] = ragtune_path(folder, records, val, a.device, steps, work, a.batch_tokens, a.precision,
                                          cbs)
        if plain is not None:
            results["plain"] = plain.result()
        load1 = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = _report(a, torch, records, lens, steps, results, (load0, load1))
    if a.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
