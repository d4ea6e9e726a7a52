"""Tests of `ragtune tune`'s runs with a tiny random Llama (the SmolLM2 tokenizer): an interrupted run and its
resume, `--init-from`, the CLI's JSON contract with `adapters` and `export`, adapter cards, the padding share, and
torchrun with two processes. The real model's tests are in tests/test_tune.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tune.adapters import list_adapter_cards, read_card, update_card
from tune.data import BatchDataset, encode_examples, plan_batches, resolve_dataset
from tune.train import TuneConfig, TuneError, train_adapter

from tests.tune_data import chat, plumbing_dataset

REPO = Path(__file__).resolve().parents[1]


# ---- plumbing with the tiny model: resume, CLI, cards --------------------------------------------------------

class _Interrupt(Exception):
    pass


def _stop_after_save(step: int):
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == step:
                raise _Interrupt(f"simulated kill after the checkpoint of step {step}")

    return StopAfterSave()


def _adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_interrupted_run_keeps_the_old_adapter_and_resume_continues_from_its_checkpoint(tiny_dir: Path,
                                                                                       tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    plumbing_dataset(ws)
    cfg = dict(workspace=ws, model=str(tiny_dir), name="r", max_steps=6, save_steps=2, batch_tokens=192,
               precision="fp32", lr=1e-3)
    straight = train_adapter(TuneConfig(**cfg), progress=False)  # the uninterrupted reference
    folder = Path(straight.path)
    reference = _adapter_tensors(folder)
    reference_card = (folder / "card.json").read_text()

    with pytest.raises(_Interrupt):
        train_adapter(TuneConfig(**cfg), progress=False, callbacks=[_stop_after_save(4)])
    run_dir = ws / "adapters" / ".runs" / "r"
    assert (run_dir / "checkpoint-4").is_dir() and not (run_dir / "checkpoint-6").exists()
    assert (folder / "card.json").read_text() == reference_card  # the published adapter is untouched
    assert not [p for p in (ws / "adapters").iterdir() if p.name.startswith(".tmp-")]

    with pytest.raises(TuneError, match="different settings"):
        train_adapter(TuneConfig(**{**cfg, "lr": 5e-4}, resume=True), progress=False)
    resumed = train_adapter(TuneConfig(**cfg, resume=True), progress=False)
    assert resumed.resumed_from_step == 4 and resumed.steps == 6
    assert resumed.val_loss_before == straight.val_loss_before  # kept from the interrupted run
    assert [e["step"] for e in resumed.val_losses] == [e["step"] for e in straight.val_losses]
    got = _adapter_tensors(folder)
    assert got.keys() == reference.keys()
    for k in reference:  # continuing from the checkpoint reproduces the uninterrupted run
        torch.testing.assert_close(got[k], reference[k], atol=1e-5, rtol=1e-4)
    assert not run_dir.exists()
    with pytest.raises(TuneError, match="nothing to resume"):
        train_adapter(TuneConfig(**cfg, resume=True), progress=False)


def test_init_from_continues_an_existing_adapter_and_refuses_one_that_does_not_fit(tiny_dir: Path,
                                                                                  tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    plumbing_dataset(ws)
    cfg = dict(workspace=ws, model=str(tiny_dir), batch_tokens=192, precision="fp32", lr=1e-3)
    first = train_adapter(TuneConfig(**cfg, name="first", max_steps=6), progress=False)
    fresh = train_adapter(TuneConfig(**cfg, name="fresh", max_steps=1), progress=False)
    more = train_adapter(TuneConfig(**cfg, name="more", max_steps=1, init_from="first"), progress=False)
    # it starts where "first" ended (same validation set), not from a fresh LoRA
    assert more.val_loss_before == pytest.approx(first.val_loss_after, rel=1e-4)
    assert fresh.val_loss_before > first.val_loss_after
    card = json.loads((Path(more.path) / "card.json").read_text())
    assert card["init_from"] == "first"
    assert json.loads((Path(first.path) / "card.json").read_text())["init_from"] is None
    # a run that only makes it worse publishes the starting adapter's weights unchanged (step 0 is the best)
    worse = train_adapter(TuneConfig(**{**cfg, "lr": 5.0}, name="worse", max_steps=2, init_from="first"),
                          progress=False)
    assert worse.best_step == 0 and worse.val_loss_after == pytest.approx(worse.val_loss_before)
    start, published = _adapter_tensors(Path(first.path)), _adapter_tensors(Path(worse.path))
    assert start.keys() == published.keys()
    assert all(torch.equal(start[k], published[k]) for k in start)
    with pytest.raises(TuneError, match="rank 16, this run 8"):
        train_adapter(TuneConfig(**cfg, name="x", max_steps=1, init_from="first", rank=8), progress=False)
    with pytest.raises(TuneError, match="no adapter"):
        train_adapter(TuneConfig(**cfg, name="x", max_steps=1, init_from="nope"), progress=False)
    assert not (ws / "adapters" / "x").exists()


def test_top_layers_trains_lora_only_in_the_last_blocks(tiny_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    plumbing_dataset(ws)
    cfg = dict(workspace=ws, model=str(tiny_dir), batch_tokens=192, precision="fp32", lr=1e-3, max_steps=2)
    top = train_adapter(TuneConfig(**cfg, name="top", top_layers=1, dropout=0.0), progress=False)
    blocks = {int(k.split(".layers.")[1].split(".")[0]) for k in _adapter_tensors(Path(top.path))}
    assert blocks == {1}  # the tiny model has blocks 0 and 1: only the last one got LoRA
    conf = json.loads((Path(top.path) / "adapter_config.json").read_text())
    assert conf["layers_to_transform"] == [1] and conf["lora_dropout"] == 0.0
    card = json.loads((Path(top.path) / "card.json").read_text())
    assert card["hyperparameters"]["top_layers"] == 1 and top.val_loss_after < top.val_loss_before
    res = _cli("tune", "--model", str(tiny_dir), "--max-steps", "1", "--batch-tokens", "256", "--name", "cli-top",
               "--top-layers", "1", "--dropout", "0.1", "--precision", "fp32", "--json",
               env={"RAGTUNE_WORKSPACE": str(ws)})
    assert res.returncode == 0, res.stderr[-2000:]
    conf = json.loads((ws / "adapters" / "cli-top" / "adapter_config.json").read_text())
    assert conf["layers_to_transform"] == [1] and conf["lora_dropout"] == 0.1
    with pytest.raises(TuneError, match="top_layers must be between 1 and the model's 2 layers, not 3"):
        train_adapter(TuneConfig(**cfg, name="x", top_layers=3), progress=False)
    with pytest.raises(TuneError, match=r"LoRA in the last 1 blocks, this run all \(top_layers\)"):
        train_adapter(TuneConfig(**cfg, name="x", init_from="top"), progress=False)
    res = _cli("tune", "--model", str(tiny_dir), "--max-steps", "1", "--name", "x", "--init-from", "cli-top",
               "--top-layers", "2", env={"RAGTUNE_WORKSPACE": str(ws)})  # refused before the model loads
    assert res.returncode != 0 and "LoRA in the last 1 blocks, this run the last 2" in res.stderr
    assert "Traceback" not in res.stderr and not (ws / "adapters" / "x").exists()


def _slow_steps(seconds: float):
    import time

    from transformers import TrainerCallback

    class SlowSteps(TrainerCallback):  # runs after the budget's clock starts, so it counts as step time
        def on_step_begin(self, args, state, control, **kw):
            time.sleep(seconds)

    return SlowSteps()


def _learning_rates(into: list):
    from transformers import TrainerCallback

    class LearningRates(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "learning_rate" in logs:
                into.append(float(logs["learning_rate"]))

    return LearningRates()


def test_time_budget_shortens_the_run_and_still_ends_on_the_decayed_rate(tiny_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    plumbing_dataset(ws)
    cfg = dict(workspace=ws, model=str(tiny_dir), batch_tokens=192, precision="fp32", lr=1e-3, max_steps=40)
    lrs: list[float] = []
    r = train_adapter(TuneConfig(**cfg, name="timed", time_budget_s=3.2), progress=False,
                      callbacks=[_slow_steps(0.4), _learning_rates(lrs)])
    assert 3 <= r.steps <= 10  # ~8 steps of 0.4 s fit in 3.2 s (fewer on a busy machine), not the 40 asked for
    # the cosine schedule was rebuilt for the shortened run: its last step runs at <= half the peak (0.05 of it
    # after 8 steps, 0.5 after 3), where the 40-step schedule would still be above 0.85 of it at step 10
    assert len(lrs) == r.steps and lrs[-1] <= 0.5 * 1e-3 and max(lrs) <= 1e-3
    assert r.val_losses[-1]["step"] == r.steps  # the shortened run is still evaluated at its last step
    assert r.val_loss_after < r.val_loss_before
    card = json.loads((Path(r.path) / "card.json").read_text())
    assert card["hyperparameters"]["time_budget_s"] == 3.2 and card["steps"] == r.steps
    with pytest.raises(TuneError, match="time_budget_s"):
        train_adapter(TuneConfig(**cfg, name="bad", time_budget_s=0), progress=False)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragtune_cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_cli_tune_adapters_export_json_contract(tiny_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    plumbing_dataset(ws)
    res = _cli("tune", "--model", str(tiny_dir), "--max-steps", "2", "--batch-tokens", "256", "--name", "cli",
               "--precision", "fp32", "--json", env={"RAGTUNE_WORKSPACE": str(ws)})  # workspace from the env var
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    out = json.loads(lines[0])
    assert out["adapter"] == "cli" and Path(out["path"]) == ws / "adapters" / "cli"
    assert isinstance(out["val_loss_before"], float) and isinstance(out["val_loss_after"], float)
    assert out["steps"] == 2 and "tune" in res.stderr  # progress went to stderr

    listed = _cli("adapters", "--workspace", str(ws), "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["adapters"]
    assert [a["name"] for a in items] == ["cli"] and items[0]["card"]["val_loss_after"] == out["val_loss_after"]
    table = _cli("adapters", "--workspace", str(ws))
    assert table.returncode == 0 and "cli" in table.stdout

    exported = _cli("export", "cli", "--merge", str(tmp_path / "merged"), "--workspace", str(ws), "--json")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads(exported.stdout)["path"] == str(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    again = _cli("export", "cli", "--merge", str(tmp_path / "merged"), "--workspace", str(ws))
    assert again.returncode == 2 and "not empty" in again.stderr

    same = _cli("tune", "--model", str(tiny_dir), "--max-steps", "1", "--batch-tokens", "256", "--name", "again",
                "--init-from", "cli", "--lr", "0", "--precision", "fp32", env={"RAGTUNE_WORKSPACE": str(ws)})
    assert same.returncode == 0, same.stderr[-2000:]  # lr 0: the loss cannot fall, and the user is told so
    assert "validation loss did not fall below adapter 'cli'" in same.stdout

    missing = _cli("tune", "--workspace", str(tmp_path / "empty"), "--json")
    assert missing.returncode == 2 and missing.stdout == "" and "ragtune synth" in missing.stderr
    qlora = _cli("tune", "--workspace", str(ws), "--model", str(tiny_dir), "--qlora")
    assert qlora.returncode == 2 and "CUDA" in qlora.stderr


def test_cards_list_and_update_with_eval_scores(tiny_dir: Path, tmp_path: Path) -> None:
    from serve.answer import list_adapters

    ws = tmp_path / "ws"
    ds = plumbing_dataset(ws)
    report = train_adapter(TuneConfig(workspace=ws, dataset=ds / "train.jsonl", model=str(tiny_dir), name="c",
                                      max_steps=1, batch_tokens=256, precision="fp32"), progress=False)
    assert report.dataset == str(ds) and resolve_dataset(ds / "train.jsonl").val == ds / "val.jsonl"
    assert list_adapters(ws) == ["c"] and [a["name"] for a in list_adapter_cards(ws)] == ["c"]
    card = update_card(ws, "c", {"hybrid_accuracy": 0.61, "rag_accuracy": 0.55})
    assert card["eval"]["hybrid_accuracy"] == 0.61
    card = update_card(ws, "c", {"tuned_accuracy": 0.3})
    assert set(card["eval"]) == {"hybrid_accuracy", "rag_accuracy", "tuned_accuracy"}
    assert read_card(ws, "c")["eval"] == card["eval"]
    assert "hybrid_accuracy | 0.61" in (ws / "adapters" / "c" / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="available: c"):
        update_card(ws, "nope", {"x": 1})
    # `ragtune eval` writes its scores for the adapter into the card, keyed by question set and size
    from types import SimpleNamespace

    from evals.run import EvalConfig, _score_adapter_card

    plan = SimpleNamespace(adapters={"tuned": "c"}, set_name="fictional-knowledge", questions=[1, 2, 3])
    _score_adapter_card(EvalConfig(workspace=ws, adapter="c"), plan,
                        {"base": {"contains": 0.01, "f1": 0.02}, "tuned": {"contains": 0.09, "f1": 0.15}}, tmp_path, False)
    card = read_card(ws, "c")["eval"]
    assert card["fictional-knowledge@3 tuned contains"] == 0.09 and card["fictional-knowledge@3 base f1"] == 0.02
    assert card["tuned_accuracy"] == 0.3 and card["fictional-knowledge@3 report"] == str(tmp_path)
    assert read_card(ws, "c")["recipe"] is None  # synth's card names it; this hand-made dataset has none
    with pytest.raises(ValueError, match="adapter name"):
        train_adapter(TuneConfig(workspace=ws, name="../escape", model=str(tiny_dir)), progress=False)


def test_batch_dataset_reports_padding_share(tokenizer, im_end: int) -> None:
    recs = [chat("q" * (i % 9 + 1) + "?", "a" * (i % 5 + 1)) for i in range(40)]
    exs, _ = encode_examples(tokenizer, recs, (im_end,))
    plan = plan_batches([len(e) for e in exs], 512, "grouped")
    ds = BatchDataset(exs, plan, pad_id=2)
    assert ds.real_tokens == sum(len(e) for e in exs)
    total = sum(ds[i]["input_ids"].numel() for i in range(len(ds)))
    assert ds.padding_share == pytest.approx(1 - ds.real_tokens / total)


def test_torchrun_two_processes_train_one_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    """The multi-GPU path on CPU: torchrun starts two DDP processes (gloo); batches are sharded, only rank 0
    reports and writes the adapter."""
    ws = tmp_path / "ws"
    plumbing_dataset(ws)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "ragtune_cli", "tune", "--workspace", str(ws), "--model", str(tiny_dir),
                          "--max-steps", "2", "--batch-tokens", "256", "--name", "ddp", "--precision", "fp32",
                          "--json"], capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout  # rank 1 stays silent
    out = json.loads(lines[0])
    assert out["device"] == "cpu x2" and out["steps"] == 2
    assert (ws / "adapters" / "ddp" / "adapter_model.safetensors").is_file()
    assert read_card(ws, "ddp")["val_loss_after"] == out["val_loss_after"]
