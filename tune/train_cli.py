"""CLI commands `ragtune tune`, `ragtune adapters` and `ragtune export` (registered on the app in ragtune_cli/main.py).

Plain functions with typer parameter declarations; only typer, the stdlib and the config dataclass (its defaults
are the options' defaults) are imported here, the library inside each function, so `ragtune --help` stays
instant. With --json exactly one JSON object goes to stdout and everything else (progress bar, library messages)
to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from tune.tune_config import TuneConfig

WorkspaceOpt = typer.Option(Path("workspace"), "--workspace", "-w", envvar="RAGTUNE_WORKSPACE",
                            help="Folder holding the index, datasets, models and adapters (default "
                                 "$RAGTUNE_WORKSPACE, else ./workspace).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout (progress goes to stderr).")


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def quiet_libraries() -> None:
    """Library chatter off (set through the environment, so nothing heavy is imported here): transformers'
    info logs and its "Loading weights" / "Writing model shards" bars. (ragtune_cli.main filters the deprecation
    warning peft triggers, for every command.)"""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def tune_command(
    workspace: Path = WorkspaceOpt,
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A dataset folder (train.jsonl, val.jsonl) or a "
                                           "train.jsonl; default WS/datasets/default."),
    name: str = typer.Option("default", "--name", help="Adapter name: the result is WS/adapters/NAME."),
    epochs: float = typer.Option(2.0, "--epochs", help="Passes over the training data (fractions allowed)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps "
                                            "(overrides --epochs)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Seconds of training steps the run "
                                                "must fit in: a slower machine trains fewer steps, with the "
                                                "schedule set for them (validation not counted)."),
    lr: float = typer.Option(4e-4, "--lr", help="Peak learning rate (warmup, then cosine decay)."),
    rank: int = typer.Option(16, "--rank", help="LoRA rank r (alpha = 2r)."),
    top_layers: Optional[int] = typer.Option(TuneConfig.top_layers, "--top-layers", help="LoRA only in the last N "
                                             "transformer blocks (faster steps); 0 = every block."),
    dropout: float = typer.Option(TuneConfig.dropout, "--dropout", help="Dropout on the LoRA branch."),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Padded tokens per optimizer step and "
                                               "process (default 8192 on CPU, 16384 on CUDA)."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="Base model: the packaged default, a local "
                              "model folder or a hub id."),
    init_from: Optional[str] = typer.Option(None, help="Start from the weights of this existing adapter (same base "
                                            "model and rank) instead of a fresh LoRA: keep tuning it on new data."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run of NAME from its last "
                                "checkpoint (WS/adapters/.runs/NAME)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Recompute activations "
                                                "in backward: less memory, slower."),
    qlora: bool = typer.Option(False, "--qlora", help="4-bit base model (QLoRA); needs CUDA and bitsandbytes."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16 (CUDA)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (LoRA init, dropout, batch order)."),
    val_examples: int = typer.Option(256, "--val-examples", help="Validation uses at most this many examples (a "
                                     "fixed sample); 0 = all."),
    as_json: bool = JsonOpt,
) -> None:
    """Fine-tune a LoRA adapter on a synth dataset; saves WS/adapters/NAME with a card."""
    quiet_libraries()
    from tune.train import TuneConfig, train_adapter

    cfg = TuneConfig(workspace=workspace, dataset=dataset, name=name, model=model, epochs=epochs,
                     max_steps=max_steps, time_budget_s=time_budget, lr=lr, rank=rank, batch_tokens=batch_tokens, resume=resume,
                     top_layers=top_layers or None, dropout=dropout,
                     init_from=init_from, gradient_checkpointing=gradient_checkpointing, qlora=qlora,
                     precision=precision, seed=seed, max_val_examples=val_examples or None)
    # Libraries sometimes print; with --json nothing but the result may reach stdout.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        report = train_adapter(cfg, progress=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun / accelerate launch only the main process reports
    if as_json:
        _emit(report.to_json())
        return
    lines = [f"adapter {report.adapter}: {report.path}",
             f"val loss {report.val_loss_before:.4f} -> {report.val_loss_after:.4f} (kept step {report.best_step} "
             f"of {report.steps}), {report.train_tokens_per_s:.0f} train tokens/s, padding {report.padding_share:.1%}, "
             f"{report.wall_s:.0f} s on {report.device} {report.precision}",
             f"use it: ragtune ask QUESTION --workspace {workspace} --mode hybrid --adapter {report.adapter}"]
    if not report.val_loss_after < report.val_loss_before:
        start = f"adapter {init_from!r}" if init_from else "the base model"
        lines.append(f"warning: validation loss did not fall below {start}'s; compare them with `ragtune eval` "
                     "before using this adapter")
    sys.stdout.write("\n".join(lines) + "\n")


def adapters_command(
    workspace: Path = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List the LoRA adapters in the workspace with their cards."""
    from tune.adapters import list_adapter_cards

    items = list_adapter_cards(workspace)
    if as_json:
        _emit({"adapters": items})
        return
    if not items:
        sys.stdout.write(f"no adapters in {workspace / 'adapters'} (run `ragtune tune`)\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"adapters in {workspace / 'adapters'}")
    for col in ("name", "base model", "examples", "val loss before -> after", "steps", "tokens/s", "created",
                "eval"):
        table.add_column(col)
    for it in items:
        c = it["card"]
        counts = c.get("counts", {})
        before, after = c.get("val_loss_before"), c.get("val_loss_after")
        loss = f"{before:.3f} -> {after:.3f}" if isinstance(before, (int, float)) and isinstance(after, (int, float)) else "?"
        scores = c.get("eval") or {}
        table.add_row(it["name"], str(c.get("base_model", "?")), f"{counts.get('train', '?')}/{counts.get('val', '?')}",
                      loss, str(c.get("steps", "?")), f"{c.get('train_tokens_per_s', 0) or 0:.0f}",
                      str(c.get("created", "?")),
                      ", ".join(f"{k}={v}" for k, v in scores.items() if isinstance(v, (int, float, str)))[:60] or "-")
    Console().print(table)


def export_command(
    name: str = typer.Argument(..., help="Adapter name in WS/adapters."),
    merge: Path = typer.Option(..., "--merge", help="Output folder for the standalone merged model."),
    workspace: Path = WorkspaceOpt,
    model: Optional[str] = typer.Option(None, "--model", help="Base model (default: the one on the adapter's card)."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights dtype of the merged model: float32, bfloat16 or "
                              "float16."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    as_json: bool = JsonOpt,
) -> None:
    """Merge an adapter into its base model and save a standalone model folder (loads without peft)."""
    quiet_libraries()
    from tune.adapters import export_merged

    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        out = export_merged(workspace, name, merge, model=model, dtype=dtype, force=force)
    if as_json:
        _emit({"adapter": name, "path": str(out)})
        return
    sys.stdout.write(f"merged {name} into {out} (load it with AutoModelForCausalLM.from_pretrained; no peft "
                     "needed)\n")
