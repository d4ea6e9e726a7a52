"""What `ragtune tune` takes and gives back (tune/train.py trains): `TuneConfig`, every setting with its default and
the reason for it, and `TuneReport`, the numbers written to the adapter's card. A module of its own so the parts
train.py calls (tune/trainer.py, tune/runs.py) read the config without importing train.py back.

    TuneConfig(workspace=Path("ws"), epochs=2).resolved_dataset()   # -> ws/datasets/default
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingest.workspace import Workspace

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TuneConfig:
    """Everything `train_adapter` needs. Defaults were chosen by measurement on the dev CPU (tune/README.md)."""

    workspace: Path = Path("workspace")
    """The ragtune workspace: data from WS/datasets, base model cache in WS/models, output in WS/adapters."""
    dataset: Path | None = None
    """A dataset folder (train.jsonl, val.jsonl, card.json) or a train.jsonl; None = WS/datasets/default."""
    name: str = "default"
    """Adapter name: the result is WS/adapters/<name>/ (replaced atomically if it exists)."""
    model: str = "smollm2-135m-instruct"
    """Base model: the packaged default (cached under WS/models), a local model folder, or a hub id."""
    epochs: float = 2.0
    """Passes over the training set (fractions allowed). Ignored when max_steps is set."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs)."""
    time_budget_s: float | None = None
    """Seconds of training steps (validation not counted) the run must fit in: from the second step on, the steps
    that still fit at the mean step time so far cap the run, and the schedule is rebuilt for that count, so a
    slower machine trains fewer steps and still ends with the decayed rate. None = no limit."""
    lr: float = 4e-4
    """Peak learning rate (linear warmup, then cosine decay to 0)."""
    rank: int = 16
    """LoRA rank r."""
    alpha: float | None = None
    """LoRA alpha; None = 2 x rank."""
    dropout: float = 0.0
    """Dropout on the LoRA branch. Off: on the 2-core CPU a step with 0.05 took 1.3x as long (a mask over every
    LoRA input), and a 24-step run on data/eval reached the same validation loss (1.601 both) and the same
    answers within one question (docs/RESULTS.md)."""
    target_modules: tuple[str, ...] = ALL_LINEAR
    """Layers that get LoRA: all linear projections of attention and MLP by default."""
    top_layers: int | None = None
    """LoRA only in the last N transformer blocks; None = all. The backward pass then stops below them, so a step
    costs less (on the 2-core CPU the top 15 of SmolLM2's 30 blocks train 1.5x faster)."""
    batch_tokens: int | None = None
    """Padded-token budget of one optimizer step per process; None = 8192 on CPU, 16384 on CUDA."""
    micro_batch_tokens: int | None = None
    """Most padded tokens per forward/backward pass: a step's batch is cut into micro-batches of this size and
    their gradients summed, so memory follows this and not batch_tokens. None = 2048 on CPU (~4 GB peak for
    the 135M model), the whole batch on CUDA."""
    max_seq_len: int = 2048
    """Examples longer than this (prompt + answer) are dropped and counted, not truncated."""
    warmup: float = 0.06
    """Warmup as a share of all steps (< 1) or a step count (>= 1)."""
    scheduler: str = "cosine"
    """Any transformers scheduler name: cosine, linear, constant_with_warmup, ..."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "auto"
    """auto (bf16 on CUDA and native-bf16 CPUs, else fp32), fp32, bf16 or fp16 (CUDA)."""
    batching: str = "auto"
    """grouped (length-grouped, dynamic padding), packed (several examples per row, position_ids restart) or
    auto = packed with varlen flash-attention on CUDA, grouped otherwise."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% slower. For long contexts / big models."""
    qlora: bool = False
    """Load the base model in 4-bit NF4 (bitsandbytes, CUDA only) and train LoRA on top (QLoRA)."""
    init_from: str | None = None
    """Start from the weights of the existing adapter WS/adapters/<init_from> (same base model, rank and target
    layers) instead of a fresh LoRA: continue tuning after new documents or new data, without starting over."""
    resume: bool = False
    """Continue the interrupted run of this name from its last checkpoint in WS/adapters/.runs/<name>/."""
    save_steps: int | None = None
    """Checkpoint every N steps; None = every epoch or every 25 steps, whichever comes first."""
    device: str = "auto"
    """auto (cuda if available, else cpu), cpu or cuda."""
    val_fraction: float = 0.1
    """Share held out for validation when the dataset has no val.jsonl (whole documents when possible)."""
    max_val_examples: int | None = 256
    """Validation uses at most this many examples (a fixed random sample): each evaluation then costs seconds, not
    minutes, on a CPU. None = all of them."""
    keep_run: bool = False
    """Keep WS/adapters/.runs/<name>/ (checkpoints) after success; by default it is removed."""

    def resolved_dataset(self) -> Path:
        return Path(self.dataset) if self.dataset is not None else Workspace(self.workspace).dataset("default")


@dataclass
class TuneReport:
    adapter: str
    path: str
    val_loss_before: float
    val_loss_after: float
    val_losses: list[dict]
    best_step: int
    steps: int
    epochs: float
    train_examples: int
    val_examples: int
    train_tokens_per_s: float  # non-padding tokens per second over the timed steps (first step of a process excluded)
    padding_share: float  # padding / all tokens over the training batches
    wall_s: float
    device: str
    precision: str
    batching: str
    resumed_from_step: int | None = None
    dataset: str = ""
    data_hash: str = ""
    card: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("card", None)
        return d


def adapter_card(cfg: TuneConfig, r: TuneReport, files, model_dir, train_stats, val_stats, batch_tokens: int,
                 micro_tokens: int) -> dict:
    """The adapter's card.json: what it was trained from and how (tune/adapters.py writes and renders it)."""
    return {
        "name": r.adapter, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": cfg.model, "base_model_dir": str(model_dir),
        "dataset": r.dataset, "recipe": files.card.get("recipe"), "data_hash": r.data_hash,
        "data_sha256": files.files_sha256,
        "counts": {"train": train_stats.kept, "val": val_stats.kept, "too_long_train": train_stats.too_long,
                   "too_long_val": val_stats.too_long, "train_tokens": train_stats.tokens,
                   "train_label_tokens": train_stats.label_tokens},
        "hyperparameters": {"lr": cfg.lr, "rank": cfg.rank, "alpha": cfg.alpha if cfg.alpha is not None else 2 * cfg.rank,
                            "dropout": cfg.dropout, "target_modules": list(cfg.target_modules), "top_layers": cfg.top_layers,
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
