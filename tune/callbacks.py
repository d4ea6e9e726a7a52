"""The Trainer callbacks of `ragtune tune` (tune/train.py adds them): the best adapter by validation loss, the
progress bar with the measured tokens/s, and the time budget that shortens the schedule to what fits
(`--time-budget`).

    best_cb, speed_cb = make_callbacks(run_dir, trainer_ref, progress=True, best_init=None)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tune.trainer import all_reduce_if_distributed, save_best


def make_callbacks(run_dir: Path, trainer_ref: list, progress: bool, best_init: dict | None):
    from transformers import TrainerCallback

    class BestAdapter(TrainerCallback):
        """Keeps the adapter with the lowest validation loss in run_dir/best (rank 0 writes)."""

        def __init__(self) -> None:
            self.best = best_init or None

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
            loss = (metrics or {}).get("eval_loss")
            if loss is None or state.global_step == 0:
                return
            if self.best is not None and not loss < self.best["val_loss"]:
                return
            self.best = {"val_loss": float(loss), "step": int(state.global_step), "epoch": float(state.epoch or 0)}
            if state.is_world_process_zero and model is not None:
                save_best(model, run_dir, self.best)

    class SpeedAndProgress(TrainerCallback):
        """Times each optimizer step (the first step of the process is warm-up and not counted) and shows a
        progress bar with the running loss and the last validation loss on stderr (rank 0)."""

        def __init__(self) -> None:
            self.bar = None
            self.t0 = 0.0
            self.tok0 = 0
            self.steps_here = 0
            self.timed_s = 0.0
            self.timed_tokens = 0
            self.spent_s = 0.0  # every step of this process, the first included
            self.postfix: dict = {}

        def on_train_begin(self, args, state, control, **kw):
            if progress and state.is_world_process_zero:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="tune", unit="step",
                                file=sys.stderr, dynamic_ncols=True)

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            self.tok0 = trainer_ref[0].tokens_seen

        def on_step_end(self, args, state, control, **kw):
            dt = time.perf_counter() - self.t0
            self.steps_here += 1
            self.spent_s += dt
            if self.steps_here > 1:
                self.timed_s += dt
                self.timed_tokens += trainer_ref[0].tokens_seen - self.tok0
            if self.bar is not None:
                if self.timed_s > 0:
                    self.postfix["tok/s"] = f"{self.timed_tokens * args.world_size / self.timed_s:.0f}"
                self.bar.set_postfix(self.postfix, refresh=False)
                self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                self.postfix["loss"] = f"{logs['loss']:.3f}"
            if "eval_loss" in logs:
                self.postfix["val"] = f"{logs['eval_loss']:.3f}"
            if self.bar is not None:
                self.bar.set_postfix(self.postfix)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return BestAdapter(), SpeedAndProgress()


def make_time_budget_callback(budget_s: float, trainer_ref: list, speed: Any):
    """Fits the run into `budget_s` seconds of training steps (validation and saving not counted): after each
    step past the first (warm-up), the steps still affordable at the mean step time so far cap the run, and
    when the cap drops the learning-rate schedule is rebuilt for the new step count, so a slow machine still
    ends with the decayed rate. It only ever shortens a run; every process takes the smallest cap. Step times
    come from `speed` (the SpeedAndProgress callback), which must come before this one in the callback list."""
    import torch
    from transformers import TrainerCallback, get_scheduler

    class TimeBudget(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if speed.steps_here < 2:  # the first step (compilation, allocator warm-up) is not a fair sample
                return
            step_s = speed.timed_s / (speed.steps_here - 1)
            cap = min(state.max_steps, state.global_step + max(0, int((budget_s - speed.spent_s) // step_s)))
            if args.world_size > 1:  # every process stops at the same step (one small tensor, only here)
                cap_t = torch.tensor([cap], dtype=torch.int64, device=args.device)
                all_reduce_if_distributed(cap_t, args.world_size, torch.distributed.ReduceOp.MIN)
                cap = int(cap_t.item())
            if cap >= state.max_steps:
                return
            trainer = trainer_ref[0]
            sched = get_scheduler(args.lr_scheduler_type, optimizer=trainer.optimizer,
                                  num_warmup_steps=args.get_warmup_steps(cap), num_training_steps=cap,
                                  scheduler_specific_kwargs=args.lr_scheduler_kwargs)
            for _ in range(state.global_step):
                sched.step()
            trainer.lr_scheduler = sched
            state.max_steps = cap
            if speed.bar is not None:
                speed.bar.total = cap
                speed.bar.refresh()
            if state.global_step >= cap:  # the Trainer's own end-of-run check ran before this callback
                control.should_training_stop = True
                control.should_evaluate = True
                control.should_save = True

    return TimeBudget()


# ---- Trainer settings and output
