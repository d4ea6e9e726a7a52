"""Run folders of `ragtune tune`: what must match to resume a run, its last checkpoint, and starting from an
existing adapter (`--init-from`), checked before any heavy import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tune.adapters import AdapterMissingError, adapter_path, read_card
from tune.trainer import TuneError
from tune.tune_config import TuneConfig


RUN_FILE = "run.json"  # WS/adapters/.runs/NAME/run.json: the fingerprint and the loss before training


def run_fingerprint(cfg: TuneConfig, files_sha256: str, model_dir: str) -> dict:
    """What must match for --resume to continue a run."""
    keys = ("model", "epochs", "max_steps", "lr", "rank", "alpha", "dropout", "target_modules", "top_layers", "batch_tokens",
            "max_seq_len", "warmup", "scheduler", "weight_decay", "max_grad_norm", "seed", "precision", "batching",
            "qlora", "val_fraction", "max_val_examples", "init_from")
    d = {k: getattr(cfg, k) for k in keys}
    d["target_modules"] = list(d["target_modules"])
    d["data_sha256"] = files_sha256
    d["model_dir"] = model_dir
    return d


def last_checkpoint(run_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not run_dir.is_dir():
        return None
    last = get_last_checkpoint(str(run_dir))
    return Path(last) if last else None


def resume_point(run_dir: Path, name: str, fingerprint: dict) -> tuple[dict, Path | None]:
    """For --resume: the interrupted run's run.json and its last checkpoint (None = start from step 0 with the
    run's recorded loss before training); refused when the run is missing or its settings or data differ."""
    try:
        run_info = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        raise TuneError(f"nothing to resume: no interrupted run named {name!r} in {run_dir.parent}") from None
    if run_info.get("fingerprint") != fingerprint:
        diff = sorted(k for k in fingerprint if run_info.get("fingerprint", {}).get(k) != fingerprint[k])
        raise TuneError(f"cannot resume {name!r}: the run was started with different settings or data "
                        f"({', '.join(diff)}); run without --resume to start over")
    return run_info, last_checkpoint(run_dir)


def check_init_from(cfg: TuneConfig, ws: Path) -> Path:
    """WS/adapters/<init_from>, checked to fit this run (clear errors before any heavy import)."""
    try:
        base = read_card(ws, cfg.init_from).get("base_model")
    except AdapterMissingError as exc:
        raise TuneError(f"--init-from: {exc}") from None
    src = adapter_path(ws, cfg.init_from)
    try:
        conf = json.loads((src / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise TuneError(f"--init-from {cfg.init_from!r}: unreadable {src / 'adapter_config.json'}: {exc}") from None
    problems = []
    if base is not None and base != cfg.model:
        problems.append(f"base model {base!r}, this run {cfg.model!r}")
    if conf.get("r") != cfg.rank:
        problems.append(f"rank {conf.get('r')}, this run {cfg.rank}")
    if sorted(conf.get("target_modules") or []) != sorted(cfg.target_modules):
        problems.append(f"target layers {sorted(conf.get('target_modules') or [])}")
    blocks = conf.get("layers_to_transform")  # `ragtune tune` only ever sets the last N blocks of the same base
    if (len(blocks) if blocks else None) != cfg.top_layers:
        problems.append(f"LoRA in {f'the last {len(blocks)}' if blocks else 'all'} blocks, this run "
                        f"{f'the last {cfg.top_layers}' if cfg.top_layers else 'all'} (top_layers)")
    if problems:
        raise TuneError(f"--init-from {cfg.init_from!r} does not fit this run: " + "; ".join(problems))
    return src


def load_init_weights(model: Any, src: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = src / "adapter_model.safetensors"
    if not weights.is_file():
        raise TuneError(f"--init-from: {weights} is missing")
    result = set_peft_model_state_dict(model, load_file(str(weights)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise TuneError(f"--init-from: {src} has weights this model lacks: {unexpected[:3]}")
