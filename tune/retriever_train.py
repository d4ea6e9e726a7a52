"""Training the two retriever parts with sentence-transformers' own trainers (which run on transformers' Trainer):

- `train_reranker`: a CrossEncoder initialised from the packaged MiniLM weights (its first N layers), scoring a
  pair from the mean of its token states through a fresh linear head, trained listwise (cross-encoder
  MultipleNegativesRankingLoss): per question, the source chunk must score above its hard negatives and a passage
  of another question in the batch. Pairs are cut to the tokens the Searcher gives the reranker. Not the usual
  [CLS] classification head: MiniLM was trained with mean pooling, and its [CLS] state is the same for every input
  through layer 5, so such a head starts flat and learned nothing in a CPU budget (docs/RESULTS.md).
- `train_embedder`: a copy of the embedder trained with MultipleNegativesRankingLoss on (question, source chunk,
  hard negative) triplets: every other passage in the batch is an in-batch negative as well; the NO_DUPLICATES
  sampler keeps two questions about one chunk out of the same batch (they would be each other's false negatives).

Both stop at `max_steps` or when `time_budget_s` of training has passed, whichever comes first; bf16 autocast on
CPUs with native bf16. torch, datasets and sentence-transformers are imported inside the functions.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from retrieve.embed import cpu_has_fast_bf16

RERANK_LAYERS = 2  # the reranker keeps the packaged MiniLM's first 2 transformer layers (docs/RESULTS.md)


@dataclass
class TrainStats:
    steps: int
    examples: int
    epochs: float
    wall_s: float
    device: str
    precision: str
    stopped_by_budget: bool


def _device_and_precision() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "cpu", "bf16" if cpu_has_fast_bf16() else "fp32"


def _budget_callback(seconds: float | None, flag: dict):
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Ends training once `seconds` of it have passed (the step in flight finishes)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if seconds is not None and time.perf_counter() - self.start > seconds:
                control.should_training_stop = True
                flag["stopped"] = True

    return TimeBudget()


def _arguments(cls, out_dir: str, batch_size: int, lr: float, steps: int, seed: int, progress: bool, **extra):
    device, precision = _device_and_precision()
    return cls(output_dir=out_dir, per_device_train_batch_size=batch_size, learning_rate=lr, max_steps=steps,
               warmup_steps=max(1, steps // 10), lr_scheduler_type="linear", logging_steps=max(1, steps // 10),
               save_strategy="no", report_to="none", seed=seed, use_cpu=device == "cpu",
               bf16=precision == "bf16", fp16=precision == "fp16", disable_tqdm=not progress,
               dataloader_num_workers=0, **extra)


def _fit(model, columns: dict, loss, trainer_cls, args_cls, out: Path, *, batch_size: int, lr: float,
         max_steps: int | None, time_budget_s: float | None, seed: int, progress: bool) -> TrainStats:
    """Train `model` on `columns` (one dataset column per input) with `loss`, within the step and time limits,
    and save it at `out`."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    examples = len(next(iter(columns.values())))
    steps = min(max_steps or 10**9, max(1, examples // batch_size))
    device, precision = _device_and_precision()
    flag: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_cls(model=model, train_dataset=Dataset.from_dict(columns), loss=loss,
                              args=_arguments(args_cls, tmp, batch_size, lr, steps, seed, progress,
                                              batch_sampler=BatchSamplers.NO_DUPLICATES),
                              callbacks=[_budget_callback(time_budget_s, flag)])
        started = time.perf_counter()
        trainer.train()
        done = int(trainer.state.global_step)
    model.save_pretrained(str(out))
    return TrainStats(done, examples, round(done * batch_size / max(examples, 1), 3),
                      round(time.perf_counter() - started, 1), device, precision, bool(flag.get("stopped")))


def check_layers(base_model: str, layers: int | None) -> None:
    """A clear error when `layers` is more than `base_model` has (transformers would add random ones); reads only
    the model's config, so `tune-retriever` calls it before mining negatives."""
    from transformers import AutoConfig

    has = getattr(AutoConfig.from_pretrained(base_model), "num_hidden_layers", None)
    if layers and has and layers > has:
        raise ValueError(f"--rerank-layers {layers}: {base_model} has {has} layers")


def mean_pooling_cross_encoder(base_model: str, max_tokens: int, layers: int | None = None):
    """A CrossEncoder over `base_model`'s first `layers` transformer layers (all if None): a pair's score is a
    fresh linear head over the mean of its token states. More layers than the model has is an error (transformers
    would add random ones)."""
    import torch
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.sentence_transformer.modules import Pooling

    check_layers(base_model, layers)
    encoder = Transformer(base_model, max_seq_length=max_tokens,
                          config_kwargs={"num_hidden_layers": layers} if layers else None)
    width = encoder.auto_model.config.hidden_size
    return CrossEncoder(modules=[encoder, Pooling(width, "mean"),
                                 Dense(width, 1, activation_function=torch.nn.Identity(), module_output_name="scores")])


def train_reranker(base_model: str, groups: list[tuple[str, str, list[str]]], out: Path, *, max_tokens: int,
                   layers: int | None = None, seed: int = 0, **limits) -> TrainStats:
    """Train and save a CrossEncoder (`mean_pooling_cross_encoder`) at `out` from (question, source passage,
    [hard negative passages]) groups (every group with the same number of negatives): the source must outscore its
    negatives and one passage of another question in the batch (listwise MultipleNegativesRankingLoss).
    `batch_size` counts questions; `limits`: batch_size, lr, max_steps, time_budget_s, progress."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    rows = list(groups)
    random.Random(seed).shuffle(rows)
    model = mean_pooling_cross_encoder(base_model, max_tokens, layers)
    columns = {"query": [r[0] for r in rows], "positive": [r[1] for r in rows]}
    columns.update({f"negative_{j + 1}": [r[2][j] for r in rows] for j in range(len(rows[0][2]))})
    return _fit(model, columns, MultipleNegativesRankingLoss(model, num_negatives=1), CrossEncoderTrainer,
                CrossEncoderTrainingArguments, out, seed=seed, **limits)


def train_embedder(base_model: str, triplets: list[tuple[str, str, str]], out: Path, *, seed: int = 0,
                   **limits) -> TrainStats:
    """Train and save a SentenceTransformer at `out` from (question, positive, hard negative) triplets;
    `limits`: batch_size, lr, max_steps, time_budget_s, progress."""
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    rows = list(triplets)
    random.Random(seed).shuffle(rows)
    model = SentenceTransformer(base_model, device=_device_and_precision()[0])
    columns = {"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows], "negative": [r[2] for r in rows]}
    return _fit(model, columns, MultipleNegativesRankingLoss(model), SentenceTransformerTrainer,
                SentenceTransformerTrainingArguments, out, seed=seed, **limits)
