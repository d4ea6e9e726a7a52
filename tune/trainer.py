"""The parts of `ragtune tune` that talk to torch and transformers' Trainer (tune/train.py is the entry point):
device and precision checks, the Trainer subclass (token-budget batches, answer-only logits, micro-batches),
the Trainer settings (its callbacks are in tune/callbacks.py), and the atomic publish of the adapter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ingest.files import write_text_atomic
from tune.adapters import publish_dir, write_card
from tune.tune_config import TuneConfig


log = logging.getLogger("tune.train")

BEST_DIR = "best"

class TuneError(ValueError):
    """A tuning request that cannot run as asked (no data, QLoRA without CUDA, a resume that does not match)."""

# ---- environment ---------------------------------------------------------------------------------------------

def dist() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the launcher's environment (torchrun / accelerate launch)."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")))


def all_reduce_if_distributed(t: Any, world_size: int, op: Any = None) -> bool:
    """All-reduce `t` in place across the processes of a torchrun/accelerate launch (sum by default); a no-op in a
    single process. Returns whether it reduced."""
    import torch

    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=op or torch.distributed.ReduceOp.SUM)
        return True
    return False


def pick_device(cfg: TuneConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device not in ("cpu", "cuda"):
        raise TuneError(f"device must be auto, cpu or cuda, not {cfg.device!r}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TuneError("device cuda was asked for, but torch sees no CUDA GPU")
    return cfg.device


def pick_precision(cfg: TuneConfig, device: str) -> str:
    import torch

    p = cfg.precision.lower()
    if p not in ("auto", "fp32", "bf16", "fp16"):
        raise TuneError(f"precision must be auto, fp32, bf16 or fp16, not {cfg.precision!r}")
    if device == "cuda":
        if p == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return p
    if p == "fp16":
        raise TuneError("fp16 training needs CUDA; on CPU use bf16 or fp32")
    if p == "auto":
        from retrieve.embed import cpu_has_fast_bf16

        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return p


def check_qlora(device: str) -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available() or device != "cuda":
        raise TuneError("--qlora (a 4-bit base model) needs a CUDA GPU; this machine has none. Train without "
                        "--qlora (the default LoRA keeps the base in bf16/fp32).")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TuneError("--qlora needs the bitsandbytes package: pip install bitsandbytes")


def packing_works(model: Any, device: Any) -> bool:
    """Check on two short sequences that a packed row (position_ids restarting, no mask) gives the same logits
    as the sequences run alone, i.e. the attention implementation isolates packed examples."""
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    a = torch.randint(3, vocab, (1, 7), generator=g).to(device)
    b = torch.randint(3, vocab, (1, 5), generator=g).to(device)
    pos = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0).to(device)
    with torch.no_grad():
        la = model(input_ids=a, use_cache=False).logits.float()
        lb = model(input_ids=b, use_cache=False).logits.float()
        lp = model(input_ids=torch.cat([a, b], 1), position_ids=pos, use_cache=False).logits.float()
    ref = torch.cat([la, lb], 1)
    scale = ref.abs().max().clamp_min(1.0)
    return bool(((lp - ref).abs().max() / scale) < 2e-2)


# ---- the Trainer subclass and callbacks ------------------------------------------------------------------------

def _mask_logits_supported() -> bool:
    """Whether this transformers takes a 2-D boolean `logits_to_keep` (answer positions that differ per row);
    releases before `slice_logits_to_keep` (5.17 for one) index with it as `hidden[:, keep, :]` and fail."""
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


def make_trainer_class():
    """transformers' Trainer with an answer-only loss computed on the labelled positions only, micro-batched
    training steps and a token-weighted validation loss (its methods are the functions below)."""
    from transformers import Trainer

    from tune.data import collate

    class RagtuneTrainer(Trainer):
        """Trainer with an answer-only loss computed on the labelled positions only, and a token-weighted
        validation loss (sum of token losses / answer tokens, over all processes)."""

        tokens_seen = 0  # real (non-padding) training tokens of this process
        micro_tokens = 0  # most padded tokens per forward/backward (0 = the whole batch at once)
        align = 1
        _loss_sum = _answer_loss_sum
        training_step = _training_step
        eval_loss = _eval_loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss_sum, n = self._loss_sum(model, inputs)
            loss = loss_sum / max(n, 1)
            return (loss, None) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = {f"{metric_key_prefix}_loss": self.eval_loss()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    RagtuneTrainer.collate = staticmethod(collate)
    return RagtuneTrainer


def _answer_loss_sum(self, model, inputs) -> tuple[Any, int]:
    """RagtuneTrainer._loss_sum: (summed cross-entropy over the answer tokens, their number)."""
    import torch
    import torch.nn.functional as F

    from tune.data import IGNORE_INDEX

    labels = inputs["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t predicts token t+1
    targets = labels[:, 1:][keep[:, :-1]]
    kwargs = {"input_ids": inputs["input_ids"], "use_cache": False}
    if "position_ids" in inputs:
        kwargs["position_ids"] = inputs["position_ids"]
    if _mask_logits_supported():
        # (n_targets, vocab): the boolean mask flattens, row by row
        logits = model(**kwargs, logits_to_keep=keep).logits
    else:
        # older transformers keep one set of positions for every row: the union of the rows' answer
        # positions, then the same row-by-row flattening
        cols = keep.any(0).nonzero().squeeze(1)
        logits = model(**kwargs, logits_to_keep=cols).logits[keep[:, cols]]
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    return loss_sum, int(targets.numel())


def _training_step(self, model, inputs, num_items_in_batch=None):
    """RagtuneTrainer.training_step: one optimizer step's batch, run as micro-batches (memory) whose gradients add
    up to the gradient of the batch's mean answer-token loss; DDP synchronises on the last one only."""
    import contextlib

    import torch

    from tune.data import split_micro_batches

    model.train()
    if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
        self.optimizer.train()
    inputs = self._prepare_inputs(inputs)
    self.tokens_seen += int(inputs["num_tokens"])  # host-side ints from `collate`: no GPU sync
    n_total = max(1, int(inputs["target_tokens"]))
    parts = split_micro_batches(inputs, self.micro_tokens, self.align)
    total = torch.zeros((), dtype=torch.float32, device=inputs["input_ids"].device)
    for j, part in enumerate(parts):
        last = j == len(parts) - 1
        sync = contextlib.nullcontext() if last or self.accelerator.num_processes == 1 \
            else self.accelerator.no_sync(model)
        with sync:
            with self.compute_loss_context_manager():
                loss_sum, _ = self._loss_sum(model, part)
                loss = loss_sum / n_total
            self.accelerator.backward(loss)
        total += loss.detach().float()
    return total


def _eval_loss(self) -> float:
    """RagtuneTrainer.eval_loss: token-weighted loss over the validation batches; each process takes every
    world_size-th batch."""
    import torch

    ds = self.eval_dataset
    model = self.model
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=self.args.device)
    try:
        with torch.no_grad():
            for i in range(self.args.process_index, len(ds), self.args.world_size):
                inputs = self._prepare_inputs(ds[i])
                with self.accelerator.autocast():
                    s, n = self._loss_sum(model, inputs)
                total[0] += float(s)
                total[1] += n
    finally:
        model.train(was_training)
    all_reduce_if_distributed(total, self.args.world_size)
    return float(total[0] / total[1].clamp_min(1))


def save_best(model: Any, run_dir: Path, best: dict) -> None:
    """Write the model's adapter and `best` (val_loss, step, epoch) as run_dir/best, swapped in whole."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-best-", dir=run_dir))
    try:
        model.save_pretrained(tmp)
        (tmp / "best.json").write_text(json.dumps(best))
        publish_dir(tmp, run_dir / BEST_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def training_args(TrainingArguments, run_dir, cfg, total_steps, steps_per_epoch, save_steps, device, precision):
    """Trainer settings: one ready-made batch per step, evaluation every epoch (and at the last step), checkpoints
    every save_steps (the last two kept), our own progress bar, nothing reported anywhere, as few device-to-host
    reads per step as the Trainer allows."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    ckpt = {prefix: cfg.gradient_checkpointing}  # transformers 5.x renamed gradient_ -> activation_checkpointing
    if cfg.gradient_checkpointing:
        ckpt[f"{prefix}_kwargs"] = {"use_reentrant": False}
    return TrainingArguments(
        output_dir=str(run_dir), per_device_train_batch_size=1, per_device_eval_batch_size=1,
        gradient_accumulation_steps=1, num_train_epochs=float(cfg.epochs), max_steps=total_steps,
        learning_rate=cfg.lr, lr_scheduler_type=cfg.scheduler, warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        optim="adamw_torch_fused" if device == "cuda" else "adamw_torch",
        eval_strategy="steps", eval_steps=steps_per_epoch, save_strategy="steps", save_steps=save_steps,
        # each logging step reads the loss back from the device (a GPU sync), and so does the NaN filter on every
        # step: a 20 s CPU step logs every step, a sub-second GPU step every 10th, with no NaN filter
        save_total_limit=2, logging_strategy="steps", logging_steps=1 if device == "cpu" else 10,
        logging_nan_inf_filter=False, report_to="none", disable_tqdm=True,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=device == "cuda",
        ddp_find_unused_parameters=False, seed=cfg.seed, data_seed=cfg.seed, **ckpt)


def write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def publish(run_dir: Path, target: Path, model: Any, card: dict, keep_run: bool) -> None:
    """Write the kept (best) adapter + card to a temp folder and swap it in as WS/adapters/<name>."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        best = run_dir / BEST_DIR
        if (best / "adapter_config.json").is_file():
            for f in best.iterdir():
                if f.is_file() and f.name != "best.json" and f.name != "README.md":
                    shutil.copy2(f, tmp / f.name)
        else:  # no evaluation happened (cannot occur with the Trainer's end-of-training eval, but be safe)
            model.save_pretrained(tmp)
        write_card(tmp, card)
        publish_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not keep_run:
        shutil.rmtree(run_dir, ignore_errors=True)
        try:
            run_dir.parent.rmdir()  # WS/adapters/.runs, when no other run is in it
        except OSError:
            pass
