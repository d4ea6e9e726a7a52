"""LoRA adapters in the workspace: WS/adapters/<name>/ holds the peft adapter (adapter_config.json,
adapter_model.safetensors), card.json and a README.md rendered from the card.

- `list_adapter_cards(ws)`: every adapter with its card (the names match `serve.answer.list_adapters`).
- `read_card` / `write_card` / `update_card(ws, name, scores)`: the evaluation adds its scores to a card.
- `publish_dir(tmp, target)`: the atomic swap used for adapters and merged exports; a killed writer leaves only
  its own temp folder (`.tmp-*`), never a half-written adapter under its real name.
- `export_merged(ws, name, out)`: base + adapter merged into plain weights (`merge_and_unload`), saved with the
  tokenizer as a standalone folder that `AutoModelForCausalLM.from_pretrained` loads without peft.

torch / transformers / peft are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ingest.files import fsync_tree, share_tree, write_text_atomic
from ingest.workspace import Workspace

CARD = "card.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AdapterMissingError(FileNotFoundError):
    """No adapter of that name in the workspace; the message lists the ones there are."""


class ExportError(ValueError):
    """The export cannot be written as asked (the output folder is not empty, ...)."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"adapter name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                         "not starting with '.' or '-'")
    return name


def adapter_path(workspace: Path, name: str) -> Path:
    return Workspace(workspace).adapter(check_name(name))


def publish_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder `tmp` to `target`, replacing what was there. os.replace cannot replace a
    non-empty folder, so an old target is first renamed aside (for a moment the name is absent, never broken)."""
    tmp, target = Path(tmp), Path(target)
    fsync_tree(tmp)
    share_tree(tmp)
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}-{time.time_ns()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_stale(root: Path, max_age_s: float = 0.0) -> None:
    """Remove temp folders a killed writer left in `root` (`.tmp-*`, `.old-*`) older than max_age_s."""
    if not root.is_dir():
        return
    now = time.time()
    for p in root.iterdir():
        if p.name.startswith((".tmp-", ".old-")) and now - p.stat().st_mtime >= max_age_s:
            shutil.rmtree(p, ignore_errors=True)


# ---- cards -----------------------------------------------------------------------------------------------------

def read_card(workspace: Path, name: str) -> dict:
    folder = adapter_path(workspace, name)
    if not (folder / "adapter_config.json").is_file():
        have = [a["name"] for a in list_adapter_cards(workspace)]
        raise AdapterMissingError(f"no adapter named {name!r} in {Workspace(workspace).adapters}"
                                  + (f" (available: {', '.join(have)})" if have else " (none yet: run `ragtune tune`)"))
    try:
        return json.loads((folder / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"name": name}


def render_card_markdown(card: dict) -> str:
    """The README.md of an adapter folder, rendered from card.json (the card is the source of truth)."""
    hp = card.get("hyperparameters", {})
    counts = card.get("counts", {})
    lines = [f"# LoRA adapter `{card.get('name', '?')}`", "",
             f"Base model: `{card.get('base_model', '?')}`. Made by `ragtune tune` on {card.get('created', '?')}.",
             "Load it with `ragtune ask --mode tuned --adapter NAME`, or merge it with `ragtune export NAME --merge OUT`.",
             "", "| field | value |", "|---|---|"]

    def row(k: str, v: Any) -> None:
        if v is not None and v != "":
            lines.append(f"| {k} | {v} |")

    row("dataset", f"`{card.get('dataset', '?')}`")
    row("data hash", f"`{card.get('data_hash', '?')}`")
    row("examples (train / val)", f"{counts.get('train', '?')} / {counts.get('val', '?')}")
    row("dropped as too long", counts.get("too_long_train", 0) + counts.get("too_long_val", 0))
    row("train tokens per epoch (answer tokens)", f"{counts.get('train_tokens', '?')} ({counts.get('train_label_tokens', '?')})")
    row("val loss before", _fmt(card.get("val_loss_before")))
    row("val loss after (kept checkpoint)", f"{_fmt(card.get('val_loss_after'))} (step {card.get('best_step', '?')})")
    row("steps / epochs", f"{card.get('steps', '?')} / {_fmt(card.get('epochs'), 2)}")
    row("train tokens/s (non-padding)", _fmt(card.get("train_tokens_per_s"), 1))
    row("padding share", _fmt(card.get("padding_share"), 3))
    row("wall time", f"{_fmt(card.get('wall_s'), 1)} s")
    row("device / precision", f"{card.get('device', '?')} / {card.get('precision', '?')}")
    row("hyperparameters", ", ".join(f"{k}={v}" for k, v in hp.items()))
    losses = card.get("val_losses") or []
    if losses:
        lines += ["", "Validation loss:", "", "| epoch | step | val loss |", "|---|---|---|"]
        lines += [f"| {_fmt(e.get('epoch'), 2)} | {e.get('step')} | {_fmt(e.get('val_loss'))} |" for e in losses]
    scores = card.get("eval") or {}
    if scores:
        lines += ["", "Evaluation scores:", "", "| metric | value |", "|---|---|"]
        for k, v in scores.items():
            lines.append(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ("?" if v is None else str(v))


def write_card(folder: Path, card: dict) -> None:
    folder = Path(folder)
    write_text_atomic(folder / CARD, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(folder / "README.md", render_card_markdown(card))


def update_card(workspace: Path, name: str, scores: dict) -> dict:
    """Merge evaluation `scores` (metric -> value, any JSON) into the adapter's card under "eval" and re-render
    its README.md. Returns the new card. Atomic per file."""
    if not isinstance(scores, dict):
        raise ValueError("scores must be a dict of metric -> value")
    card = read_card(workspace, name)
    merged = dict(card.get("eval") or {})
    merged.update(json.loads(json.dumps(scores)))  # must be JSON; copies
    card["eval"] = merged
    card["eval_updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_card(adapter_path(workspace, name), card)
    return card


def list_adapter_cards(workspace: Path) -> list[dict]:
    """[{name, path, card}] for each folder in WS/adapters with an adapter_config.json, sorted by name."""
    root = Workspace(workspace).adapters
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not (p / "adapter_config.json").is_file():
            continue
        try:
            card = json.loads((p / CARD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            card = {}
        out.append({"name": p.name, "path": str(p), "card": card})
    return out


# ---- export ----------------------------------------------------------------------------------------------------

def _base_model_of(workspace: Path, name: str, card: dict, override: str | None) -> tuple[str, Path | str]:
    """(the base model as configured, a folder/hub id from_pretrained can load)."""
    from generate.models import ModelConfig, resolve_model_dir

    folder = adapter_path(workspace, name)
    base = override or card.get("base_model")
    if not base:
        cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        base = cfg.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"adapter {name!r} does not say which base model it was trained on; pass --model")
    return base, resolve_model_dir(ModelConfig(model=str(base), cache_dir=Workspace(workspace).models))


def export_merged(workspace: Path, name: str, out: Path, *, model: str | None = None, dtype: str = "float32",
                  force: bool = False) -> Path:
    """Write base + adapter `name` merged into one plain transformers model folder at `out` (weights, config,
    generation config that stops at the end-of-turn token, tokenizer with its chat template). Atomic: written to
    a temp folder beside `out`, then moved into place. Refuses to overwrite a non-empty `out` unless force."""
    card = read_card(workspace, name)
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty; choose another folder or pass --force")

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generate.models import ensure_chat_template, end_of_turn_ids

    base, base_dir = _base_model_of(workspace, name, card, model)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    ensure_chat_template(tokenizer, base_dir)
    base_model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(base_model, str(adapter_path(workspace, name))).merge_and_unload()
    stop_ids = end_of_turn_ids(tokenizer, merged.generation_config)
    merged.generation_config.eos_token_id = list(stop_ids)
    if merged.generation_config.pad_token_id is None and stop_ids:
        merged.generation_config.pad_token_id = stop_ids[0]
    merged.config.name_or_path = f"{base}+{name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "ragtune-export.json").write_text(json.dumps(
            {"base_model": base, "adapter": name, "adapter_card": card, "dtype": dtype,
             "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2, ensure_ascii=False) + "\n")
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
