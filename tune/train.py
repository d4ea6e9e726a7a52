"""`ragtune tune`: LoRA fine-tuning of the generator on a `ragtune synth` dataset, through transformers' Trainer.

    report = train_adapter(TuneConfig(workspace=Path("ws"), epochs=2))   # -> WS/adapters/default/

What it does (tune/README.md has the measurements behind each choice):
- Loss only on the assistant answer and its end-of-turn token (tune/data.py), computed on those positions alone:
  the model is asked for logits only where a label exists (`logits_to_keep` as a boolean mask; on transformers
  releases without that, the union of the rows' answer positions), so the 49k-wide
  vocabulary projection and its backward run on ~5% of the tokens of a RAFT example instead of all of them.
- Batches by a padded-token budget: length-grouped with dynamic right padding (no attention mask needed), or
  packed rows with restarting position_ids where the attention is varlen (flash-attention on CUDA).
- bf16 autocast with the frozen base weights stored in bf16 and the LoRA weights in fp32, on CUDA and on CPUs
  with native bf16 (AMX / AVX512-BF16); fp32 elsewhere. `precision="fp32"` forces fp32.
- Validation loss before training and at the end of every epoch (and at the last step); the adapter with the
  lowest validation loss is the one published. Checkpoints (adapter + optimizer + scheduler + RNG) go to
  WS/adapters/.runs/<name>/ every `save_steps`; `resume=True` continues from the last one. The adapter is
  written to a temp folder and swapped in with os.replace at the very end, so an interrupted run never leaves a
  broken WS/adapters/<name>.
- Under `accelerate launch` / `torchrun` the Trainer runs DDP; batches are sharded across processes, the
  validation loss is summed over all of them, and only rank 0 writes checkpoints' extras, the adapter and card.

Heavy libraries are imported inside functions; `import tune.train` stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ingest.workspace import Workspace
from tune.adapters import adapter_path, check_name, clean_stale
from tune.runs import RUN_FILE, check_init_from, last_checkpoint, load_init_weights, resume_point, run_fingerprint
from tune.callbacks import make_callbacks, make_time_budget_callback
from tune.trainer import (BEST_DIR, TuneError, all_reduce_if_distributed, check_qlora, dist, make_trainer_class,
                          packing_works, pick_device, pick_precision, publish, save_best, training_args, write_json)
from tune.tune_config import TuneConfig, TuneReport, adapter_card

log = logging.getLogger(__name__)

# ---- main entry ------------------------------------------------------------------------------------------------

def _load_base(cfg: TuneConfig, model_dir: Any, device: str, precision: str, local_rank: int):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if cfg.qlora:
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if precision == "bf16" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": local_rank}
        kwargs["dtype"] = compute
    else:
        # The frozen base in bf16 (LoRA weights stay fp32, autocast does the matmuls in bf16): half the memory
        # traffic and no per-step weight casts. fp16 GPUs keep an fp32 base (fp16 autocast + grad scaling).
        kwargs["dtype"] = torch.bfloat16 if precision == "bf16" else torch.float32
    if device == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None and precision in ("bf16", "fp16"):
            kwargs["attn_implementation"] = "flash_attention_2"
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except (OSError, ValueError) as exc:
        raise TuneError(f"could not load base model {model_dir!s}: {exc}") from exc
    model.config.use_cache = False  # a KV cache during training would also disable packed-sequence masking
    return model


def train_adapter(config: TuneConfig, progress: bool = True, callbacks: list | None = None) -> TuneReport:
    """Train a LoRA adapter as configured and publish it as WS/adapters/<name>/ (with card.json and README.md).
    `callbacks`: extra transformers TrainerCallbacks (tests use one to simulate an interruption)."""
    from tune.data import encode_examples

    t_start = time.perf_counter()
    cfg = config
    ws = Path(cfg.workspace)
    name = check_name(cfg.name)
    _check(cfg)
    files, train_recs, val_recs = _records(cfg)  # before any heavy import: a bad dataset is reported at once
    init_dir = check_init_from(cfg, ws) if cfg.init_from else None

    from transformers import AutoTokenizer, TrainingArguments

    from generate.models import ModelConfig, end_of_turn_ids, ensure_chat_template, resolve_model_dir

    _rank, local_rank, world = dist()
    device = pick_device(cfg)
    precision = pick_precision(cfg, device)
    if cfg.qlora:
        check_qlora(device)

    model_dir = resolve_model_dir(ModelConfig(model=cfg.model, cache_dir=Workspace(ws).models))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer, model_dir)
    model = _load_base(cfg, model_dir, device, precision, local_rank)
    end_ids = end_of_turn_ids(tokenizer, model.generation_config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_ids[0]
    train_ex, train_stats = encode_examples(tokenizer, train_recs, end_ids, cfg.max_seq_len)
    val_ex, val_stats = encode_examples(tokenizer, val_recs, end_ids, cfg.max_seq_len)
    if not train_ex or not val_ex:
        raise TuneError(f"no examples left after dropping those longer than max_seq_len={cfg.max_seq_len} "
                        f"({train_stats.too_long} train, {val_stats.too_long} val dropped)")
    plan = _plan(cfg, model, train_ex, val_ex, pad_id, device, precision, world)

    # run folder, resume
    run_dir = Workspace(ws).runs / name
    fingerprint = run_fingerprint(cfg, files.files_sha256, str(model_dir))
    run_info, resume_ckpt = resume_point(run_dir, name, fingerprint) if cfg.resume else ({}, None)

    model = _with_lora(model, cfg, init_dir if resume_ckpt is None else None)

    args = training_args(TrainingArguments, run_dir, cfg, plan.total_steps, plan.steps_per_epoch, plan.save_steps,
                         device, precision)
    run_info = _prepare_run_dir(args, ws, run_dir, cfg, name, run_info, resume_ckpt, fingerprint)
    trainer, best_cb, speed_cb = _trainer(model, args, plan, cfg, device, run_dir, resume_ckpt, progress, callbacks)
    val_before = _val_loss_before(trainer, args, model, run_dir, run_info, best_cb, init_dir)
    if progress and args.process_index == 0:
        sys.stderr.write(
            f"tune {name}: {len(train_ex)} train / {len(val_ex)} val examples, {plan.total_steps} steps "
            f"({plan.steps_per_epoch}/epoch, {plan.batch_tokens} tokens/batch, {plan.batching}, padding "
            f"{plan.pad_share:.1%}), {device} {precision}; val loss before {val_before:.4f}"
            + (f"; resuming from {resume_ckpt.name}" if resume_ckpt else "") + "\n")

    trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)

    best = best_cb.best or {}
    if init_dir is not None and best.get("step") == 0 and args.process_index == 0:
        log.warning("no step of %r beat the adapter it started from (%s, val loss %.4f): its weights are published "
                    "unchanged", name, cfg.init_from, val_before)
    target = adapter_path(ws, name)
    report = _report(trainer, args, best, speed_cb, world, name, target, val_before, t_start, device, precision,
                     plan, len(train_ex), len(val_ex), resume_ckpt, files)
    report.card = adapter_card(cfg, report, files, model_dir, train_stats, val_stats, plan.batch_tokens,
                               trainer.micro_tokens)
    if args.process_index == 0:
        publish(run_dir, target, model, report.card, cfg.keep_run)
    trainer.accelerator.wait_for_everyone()
    return report


def _check(cfg: TuneConfig) -> None:
    if cfg.epochs <= 0 and not cfg.max_steps:
        raise TuneError("epochs must be positive (or give max_steps)")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise TuneError("max_steps must be at least 1")
    if cfg.time_budget_s is not None and not cfg.time_budget_s > 0:
        raise TuneError("--time-budget (time_budget_s) must be a positive number of seconds")


def _records(cfg: TuneConfig):
    """(dataset files, train records, validation records): val.jsonl, else a split of train.jsonl; validation
    capped at max_val_examples (a seeded sample)."""
    from tune.data import read_jsonl, resolve_dataset, split_validation

    files = resolve_dataset(cfg.resolved_dataset())
    train_recs = read_jsonl(files.train)
    if files.val is not None:
        val_recs = read_jsonl(files.val)
    else:
        train_recs, val_recs = split_validation(train_recs, cfg.val_fraction, cfg.seed)
    if cfg.max_val_examples is not None and len(val_recs) > cfg.max_val_examples:
        val_recs = random.Random(cfg.seed).sample(val_recs, cfg.max_val_examples)
    if not train_recs or not val_recs:
        raise TuneError(f"dataset {files.root} needs training and validation examples "
                        f"(has {len(train_recs)} train, {len(val_recs)} val)")
    return files, train_recs, val_recs


def _plan(cfg: TuneConfig, model, train_ex, val_ex, pad_id: int, device: str, precision: str, world: int):
    """Batching (grouped or packed), the batch datasets and the step counts."""
    from types import SimpleNamespace

    from tune.data import BatchDataset, plan_batches

    batching = cfg.batching
    if batching not in ("auto", "grouped", "packed"):
        raise TuneError(f"batching must be auto, grouped or packed, not {batching!r}")
    varlen = getattr(model.config, "_attn_implementation", "") in ("flash_attention_2", "flash_attention_3")
    if batching == "auto":
        batching = "packed" if varlen else "grouped"
    # flash-attention takes restarting position_ids as varlen boundaries (and runs on CUDA only); for any other
    # attention, check on CPU (the model is not moved yet) that packed examples really stay apart
    if batching == "packed" and not varlen and not cfg.qlora and not packing_works(model, "cpu"):
        log.warning("this model's attention does not isolate packed sequences; using length-grouped batches")
        batching = "grouped"
    batch_tokens = cfg.batch_tokens or (16384 if device == "cuda" else 8192)
    train_plan = plan_batches([len(e) for e in train_ex], batch_tokens, batching, max_row_tokens=cfg.max_seq_len,
                              seed=cfg.seed)
    val_plan = plan_batches([len(e) for e in val_ex], batch_tokens, batching, max_row_tokens=cfg.max_seq_len,
                            seed=cfg.seed)
    align = 8 if device == "cuda" else (16 if precision == "bf16" else 1)
    train_ds = BatchDataset(train_ex, train_plan, pad_id, align)
    steps_per_epoch = max(1, math.ceil(len(train_plan) / world))
    return SimpleNamespace(
        batching=batching, batch_tokens=batch_tokens, align=align, train_ds=train_ds,
        val_ds=BatchDataset(val_ex, val_plan, pad_id, align), pad_share=train_ds.padding_share,
        steps_per_epoch=steps_per_epoch, total_steps=cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch)),
        save_steps=cfg.save_steps or min(steps_per_epoch, 25))


def _with_lora(model, cfg: TuneConfig, init_dir: Path | None):
    """The base model with fresh LoRA weights (seeded), or those of `init_dir` (--init-from; a resumed run passes
    None: it restores its own checkpoint instead)."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    set_seed(cfg.seed)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha if cfg.alpha is not None else 2 * cfg.rank,
                      lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules), bias="none",
                      task_type="CAUSAL_LM", layers_to_transform=_top_layers(model, cfg.top_layers))
    model = get_peft_model(model, lora)
    if init_dir is not None:
        load_init_weights(model, init_dir)
    return model


def random_adapter(model, folder: Path, std: float, seed: int = 0) -> Path:
    """A LoRA adapter shaped as `ragtune tune` makes it (the default TuneConfig's LoRA) on `model`, its B matrices
    drawn at random (training starts them at zero, which changes nothing) from `seed`, saved to `folder`: for
    tests and benchmarks that need an adapter without training one."""
    import torch

    model = _with_lora(model, TuneConfig(seed=seed), None)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)
    model.save_pretrained(folder)
    return folder


def _top_layers(model, top: int | None) -> list[int] | None:
    """The indices of the last `top` transformer blocks (None: every block gets LoRA)."""
    if top is None:
        return None
    n = model.config.num_hidden_layers
    if not 1 <= top <= n:
        raise TuneError(f"top_layers must be between 1 and the model's {n} layers, not {top}")
    return list(range(n - top, n))


def _prepare_run_dir(args, ws: Path, run_dir: Path, cfg: TuneConfig, name: str, run_info: dict, resume_ckpt,
                     fingerprint: dict) -> dict:
    """Rank 0 prepares the run folder (a fresh run discards an earlier run's checkpoints) while the others wait;
    returns the run's info (fingerprint, start, val loss before)."""
    with args.main_process_first(desc="prepare run folder"):
        if args.process_index == 0:
            Workspace(ws).adapters.mkdir(parents=True, exist_ok=True)
            clean_stale(Workspace(ws).adapters, max_age_s=3600)
            if resume_ckpt is None and run_dir.exists() and not cfg.resume:
                if last_checkpoint(run_dir) is not None:
                    log.warning("discarding the checkpoints of an earlier run of %r (use --resume to continue it)", name)
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            if not cfg.resume or not run_info:
                run_info = {"fingerprint": fingerprint, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                write_json(run_dir / RUN_FILE, run_info)
    if cfg.resume and resume_ckpt is None:
        log.warning("no checkpoint of %r was saved before the interruption; starting from step 0", name)
    return run_info


def _trainer(model, args, plan, cfg: TuneConfig, device: str, run_dir: Path, resume_ckpt, progress: bool,
             callbacks: list | None):
    """(trainer, best-checkpoint callback, speed callback): ragtune's Trainer with its callbacks."""
    from transformers.trainer_callback import PrinterCallback

    from tune.data import unwrap_single

    best_init = None
    best_json = run_dir / BEST_DIR / "best.json"
    if resume_ckpt is not None and best_json.is_file():
        best_init = json.loads(best_json.read_text())
    trainer_ref: list = []
    best_cb, speed_cb = make_callbacks(run_dir, trainer_ref, progress, best_init)
    budget_cb = [make_time_budget_callback(cfg.time_budget_s, trainer_ref, speed_cb)] \
        if cfg.time_budget_s else []
    Trainer = make_trainer_class()
    trainer = Trainer(model=model, args=args, train_dataset=plan.train_ds, eval_dataset=plan.val_ds,
                      data_collator=unwrap_single, callbacks=[best_cb, speed_cb, *budget_cb, *(callbacks or [])])
    trainer_ref.append(trainer)
    trainer.micro_tokens = cfg.micro_batch_tokens or (plan.batch_tokens if device == "cuda" else 2048)
    trainer.align = plan.align
    trainer.model_accepts_loss_kwargs = False  # our compute_loss averages over the batch's answer tokens itself
    trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout (which --json keeps clean)
    return trainer, best_cb, speed_cb


def _val_loss_before(trainer, args, model, run_dir: Path, run_info: dict, best_cb, init_dir) -> float:
    """The validation loss before training (a resumed run's from its run file). With --init-from the starting
    adapter is the one to beat: a run that only gets worse keeps it."""
    if "val_loss_before" in run_info:
        return float(run_info["val_loss_before"])
    val_before = trainer.eval_loss()
    if args.process_index == 0:
        run_info["val_loss_before"] = val_before
        write_json(run_dir / RUN_FILE, run_info)
    if init_dir is not None:
        best_cb.best = {"val_loss": val_before, "step": 0, "epoch": 0.0}
        if args.process_index == 0:
            save_best(model, run_dir, best_cb.best)
    return val_before


def _report(trainer, args, best: dict, speed_cb, world: int, name: str, target: Path, val_before: float,
            t_start: float, device: str, precision: str, plan, n_train: int, n_val: int, resume_ckpt,
            files) -> TuneReport:
    """The run's numbers; tokens/s is summed over the processes of a distributed run."""
    import torch

    val_losses = [{"epoch": round(float(e.get("epoch") or 0), 4), "step": int(e["step"]),
                   "val_loss": float(e["eval_loss"])}
                  for e in trainer.state.log_history if "eval_loss" in e and e.get("step", 0) > 0]
    tokens = torch.tensor([float(speed_cb.timed_tokens), speed_cb.timed_s], dtype=torch.float64,
                          device=args.device)
    if all_reduce_if_distributed(tokens, world):
        tokens[1] /= world
    tok_s = float(tokens[0] / tokens[1]) if tokens[1] > 0 else 0.0
    return TuneReport(
        adapter=name, path=str(target), val_loss_before=val_before,
        val_loss_after=float(best.get("val_loss", val_losses[-1]["val_loss"] if val_losses else float("nan"))),
        val_losses=val_losses, best_step=int(best.get("step", trainer.state.global_step)),
        steps=int(trainer.state.global_step), epochs=float(trainer.state.epoch or 0.0),
        train_examples=n_train, val_examples=n_val, train_tokens_per_s=round(tok_s, 1),
        padding_share=round(plan.pad_share, 4), wall_s=round(time.perf_counter() - t_start, 1),
        device=device if world == 1 else f"{device} x{world}", precision=precision, batching=plan.batching,
        resumed_from_step=int(resume_ckpt.name.split("-")[-1]) if resume_ckpt else None,
        dataset=str(files.root if files.train.name == "train.jsonl" else files.train), data_hash=files.data_hash)
