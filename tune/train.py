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
from tune.trainer import (BEST_DIR, TuneError, all_reduce_if_distributed, check_qlora, dist, make_callbacks,
                          make_time_budget_callback, make_trainer_class, packing_works, pick_device, pick_precision,
                          publish, save_best, training_args, write_json)
from tune.tune_config import TuneConfig, TuneReport

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
    from tune.data import (BatchDataset, encode_examples, plan_batches, read_jsonl, resolve_dataset, split_validation,
                           unwrap_single)

    t_start = time.perf_counter()
    cfg = config
    ws = Path(cfg.workspace)
    name = check_name(cfg.name)
    if cfg.epochs <= 0 and not cfg.max_steps:
        raise TuneError("epochs must be positive (or give max_steps)")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise TuneError("max_steps must be at least 1")
    if cfg.time_budget_s is not None and not cfg.time_budget_s > 0:
        raise TuneError("--time-budget (time_budget_s) must be a positive number of seconds")
    # the data first: a missing or malformed dataset is reported before any heavy import
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

    init_dir = check_init_from(cfg, ws) if cfg.init_from else None

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, TrainingArguments, set_seed

    from generate.models import ModelConfig, ensure_chat_template, end_of_turn_ids, resolve_model_dir

    rank, local_rank, world = dist()
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
    val_ds = BatchDataset(val_ex, val_plan, pad_id, align)
    pad_share = train_ds.padding_share
    steps_per_epoch = max(1, math.ceil(len(train_plan) / world))
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    save_steps = cfg.save_steps or min(steps_per_epoch, 25)

    # run folder, resume
    run_dir = Workspace(ws).runs / name
    fingerprint = run_fingerprint(cfg, files.files_sha256, str(model_dir))
    run_info, resume_ckpt = resume_point(run_dir, name, fingerprint) if cfg.resume else ({}, None)

    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    set_seed(cfg.seed)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha if cfg.alpha is not None else 2 * cfg.rank,
                      lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules), bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    if init_dir is not None and resume_ckpt is None:  # a resumed run restores its own checkpoint instead
        load_init_weights(model, init_dir)

    args = training_args(TrainingArguments, run_dir, cfg, total_steps, steps_per_epoch, save_steps, device,
                          precision)

    # rank 0 prepares the run folder while the others wait
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

    best_init = None
    best_json = run_dir / BEST_DIR / "best.json"
    if resume_ckpt is not None and best_json.is_file():
        best_init = json.loads(best_json.read_text())
    trainer_ref: list = []
    best_cb, speed_cb = make_callbacks(run_dir, trainer_ref, progress, best_init)
    budget_cb = [make_time_budget_callback(cfg.time_budget_s, trainer_ref, speed_cb)] \
        if cfg.time_budget_s else []
    Trainer = make_trainer_class()
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=unwrap_single, callbacks=[best_cb, speed_cb, *budget_cb, *(callbacks or [])])
    trainer_ref.append(trainer)
    trainer.micro_tokens = cfg.micro_batch_tokens or (batch_tokens if device == "cuda" else 2048)
    trainer.align = align
    trainer.model_accepts_loss_kwargs = False  # our compute_loss averages over the batch's answer tokens itself
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout (which --json keeps clean)

    if "val_loss_before" in run_info:
        val_before = float(run_info["val_loss_before"])
    else:
        val_before = trainer.eval_loss()
        if args.process_index == 0:
            run_info["val_loss_before"] = val_before
            write_json(run_dir / RUN_FILE, run_info)
        if init_dir is not None:  # the starting adapter is the one to beat: a run that only gets worse keeps it
            best_cb.best = {"val_loss": val_before, "step": 0, "epoch": 0.0}
            if args.process_index == 0:
                save_best(model, run_dir, best_cb.best)
    if progress and args.process_index == 0:
        sys.stderr.write(
            f"tune {name}: {len(train_ex)} train / {len(val_ex)} val examples, {total_steps} steps "
            f"({steps_per_epoch}/epoch, {batch_tokens} tokens/batch, {batching}, padding {pad_share:.1%}), "
            f"{device} {precision}; val loss before {val_before:.4f}"
            + (f"; resuming from {resume_ckpt.name}" if resume_ckpt else "") + "\n")

    trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)

    # results
    val_losses = [{"epoch": round(float(e.get("epoch") or 0), 4), "step": int(e["step"]),
                   "val_loss": float(e["eval_loss"])}
                  for e in trainer.state.log_history if "eval_loss" in e and e.get("step", 0) > 0]
    best = best_cb.best or {}
    if init_dir is not None and best.get("step") == 0 and args.process_index == 0:
        log.warning("no step of %r beat the adapter it started from (%s, val loss %.4f): its weights are published "
                    "unchanged", name, cfg.init_from, val_before)
    tokens = torch.tensor([float(speed_cb.timed_tokens), speed_cb.timed_s], dtype=torch.float64,
                          device=args.device)
    if all_reduce_if_distributed(tokens, world):
        tokens[1] /= world
    tok_s = float(tokens[0] / tokens[1]) if tokens[1] > 0 else 0.0
    target = adapter_path(ws, name)
    report = TuneReport(
        adapter=name, path=str(target), val_loss_before=val_before,
        val_loss_after=float(best.get("val_loss", val_losses[-1]["val_loss"] if val_losses else float("nan"))),
        val_losses=val_losses, best_step=int(best.get("step", trainer.state.global_step)),
        steps=int(trainer.state.global_step), epochs=float(trainer.state.epoch or 0.0),
        train_examples=len(train_ex), val_examples=len(val_ex), train_tokens_per_s=round(tok_s, 1),
        padding_share=round(pad_share, 4), wall_s=round(time.perf_counter() - t_start, 1),
        device=device if world == 1 else f"{device} x{world}", precision=precision, batching=batching,
        resumed_from_step=int(resume_ckpt.name.split("-")[-1]) if resume_ckpt else None,
        dataset=str(files.root if files.train.name == "train.jsonl" else files.train), data_hash=files.data_hash)
    report.card = _card(cfg, report, files, model_dir, train_stats, val_stats, batch_tokens, trainer.micro_tokens)

    if args.process_index == 0:
        publish(run_dir, target, model, report.card, cfg.keep_run)
    trainer.accelerator.wait_for_everyone()
    return report


def _card(cfg: TuneConfig, r: TuneReport, files, model_dir, train_stats, val_stats, batch_tokens: int,
          micro_tokens: int) -> dict:
    return {
        "name": r.adapter, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": cfg.model, "base_model_dir": str(model_dir),
        "dataset": r.dataset, "recipe": files.card.get("recipe"), "data_hash": r.data_hash,
        "data_sha256": files.files_sha256,
        "counts": {"train": train_stats.kept, "val": val_stats.kept, "too_long_train": train_stats.too_long,
                   "too_long_val": val_stats.too_long, "train_tokens": train_stats.tokens,
                   "train_label_tokens": train_stats.label_tokens},
        "hyperparameters": {"lr": cfg.lr, "rank": cfg.rank, "alpha": cfg.alpha if cfg.alpha is not None else 2 * cfg.rank,
                            "dropout": cfg.dropout, "target_modules": list(cfg.target_modules),
                            "batch_tokens": batch_tokens, "micro_batch_tokens": micro_tokens, "epochs": cfg.epochs, "max_steps": cfg.max_steps,
                            "time_budget_s": cfg.time_budget_s,
                            "scheduler": cfg.scheduler, "warmup": cfg.warmup, "weight_decay": cfg.weight_decay,
                            "max_seq_len": cfg.max_seq_len, "seed": cfg.seed, "batching": r.batching,
                            "gradient_checkpointing": cfg.gradient_checkpointing, "qlora": cfg.qlora},
        "val_loss_before": r.val_loss_before, "val_loss_after": r.val_loss_after, "val_losses": r.val_losses,
        "best_step": r.best_step, "steps": r.steps, "epochs": r.epochs,
        "train_tokens_per_s": r.train_tokens_per_s, "padding_share": r.padding_share, "wall_s": r.wall_s,
        "device": r.device, "precision": r.precision, "resumed_from_step": r.resumed_from_step,
        "init_from": cfg.init_from, "eval": {},
    }
