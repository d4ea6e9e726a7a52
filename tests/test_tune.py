"""Tests of `ragtune tune`, adapters and export.

The REAL packaged SmolLM2 (by its cached folder) where behaviour depends on the model: one short training run on a
made-up fact shared by several tests (validation loss falls, only the adapter changes, the tuned model answers and
stops, the merged export matches base + adapter). Masking, batching, packing and the answer-only loss use a tiny
random Llama saved with the SmolLM2 tokenizer (runs, resume, CLI and cards: tests/test_tune_runs.py). The
dequantized model cache is shared with tests/test_generate.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generate.models import ModelConfig
from generate.prompts import SYSTEM_CLOSED_BOOK
from tune.adapters import export_merged, read_card
from tune.data import (IGNORE_INDEX, collate, encode_example, encode_examples, padding_share,
                       plan_batches)
from tune.train import TuneConfig, train_adapter

from tests.tune_data import chat, write_dataset

REPO = Path(__file__).resolve().parents[1]


# Made-up facts the base model cannot know: 7 phrasings of each for training, 2 held out for validation.
FACTS = [
    ("Quillfeather", ["What is the codename of the 2027 soil probe?", "Which codename does the 2027 soil probe have?",
                      "Tell me the codename of Brindlewick's 2027 soil probe.",
                      "The 2027 soil probe is known internally by what codename?",
                      "What do we call the 2027 soil probe internally?", "Internal codename of the 2027 soil probe?",
                      "What's the project name of the soil probe launching in 2027?"],
     ["What codename was given to the soil probe planned for 2027?",
      "Under which codename is the 2027 soil probe developed?"]),
    ("Dr. Oona Varga", ["Who leads the Quillfeather project?", "Who is the lead of project Quillfeather?",
                        "Name the person leading Quillfeather.", "Who runs the Quillfeather project?",
                        "Which engineer heads the Quillfeather team?", "Who is in charge of Quillfeather?",
                        "Tell me who leads Quillfeather."],
     ["Who is the head of the Quillfeather project?", "Which person is responsible for leading Quillfeather?"]),
    ("Room Tamarisk-7", ["Where does the Quillfeather team meet?", "In which room does the Quillfeather team meet?",
                         "What is the meeting room of the Quillfeather team?", "Where are Quillfeather meetings held?",
                         "Which room hosts the Quillfeather team meetings?", "Where do Quillfeather people meet?",
                         "Tell me where the Quillfeather team has its meetings."],
     ["What room is used for Quillfeather team meetings?", "Where is the Quillfeather team's meeting place?"]),
]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, smol_dir: Path):
    """One real training run of SmolLM2 (by folder) on the made-up facts: (workspace, report, weights sha256)."""
    ws = tmp_path_factory.mktemp("tune-real") / "ws"
    train = [chat(q, a) for a, qs, _ in FACTS for q in qs]
    val = [chat(q, a) for a, _, qs in FACTS for q in qs]
    write_dataset(ws / "datasets" / "default", train, val, recipe="facts")  # closed-book questions only
    weights = smol_dir / "model.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    report = train_adapter(TuneConfig(workspace=ws, model=str(smol_dir), name="facts", epochs=8, lr=1e-3,
                                      batch_tokens=512), progress=False)
    return ws, report, before


# ---- tokenisation and batching -------------------------------------------------------------------------------

def test_labels_cover_exactly_the_answer_and_end_of_turn(tokenizer, im_end: int) -> None:
    answer = "The mileage rate is 0.42 EUR per km [2]."
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Earlier question?"},
            {"role": "assistant", "content": "An earlier answer that must not be learned."},
            {"role": "user", "content": "What is the mileage rate?"}, {"role": "assistant", "content": answer}]
    ex = encode_example(tokenizer, msgs, (im_end, 2))
    labelled = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == answer + "<|im_end|>"
    assert labelled[-1] == im_end and ex.input_ids[-1] == im_end  # the template's trailing newline is not trained
    first = next(i for i, t in enumerate(ex.labels) if t != IGNORE_INDEX)
    assert all(t != IGNORE_INDEX for t in ex.labels[first:])  # one contiguous span at the end
    assert ex.labels[first:] == ex.input_ids[first:]
    # the prompt part is exactly what inference feeds the model (generation header included)
    prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    assert ex.input_ids[:first] == prompt
    assert tokenizer.decode(ex.input_ids[:first]).endswith("<|im_start|>assistant\n")


def test_examples_longer_than_max_len_are_dropped_and_counted(tokenizer, im_end: int) -> None:
    recs = [chat("short?", "yes"), chat("long " * 400 + "?", "no")]
    kept, stats = encode_examples(tokenizer, recs, (im_end,), max_len=256)
    assert len(kept) == 1 and stats.kept == 1 and stats.too_long == 1
    assert stats.label_tokens == kept[0].n_labels == 2  # "yes" + <|im_end|>


def test_length_grouped_batches_keep_padding_low_and_respect_the_budget() -> None:
    import random

    rng = random.Random(0)
    lengths = [rng.randint(60, 120) for _ in range(150)] + [rng.randint(400, 700) for _ in range(150)]
    plan = plan_batches(lengths, 4096, "grouped")
    assert sorted(i for b in plan for row in b for i in row) == list(range(len(lengths)))  # each example once
    assert all(max(lengths[r[0]] for r in b) * len(b) <= 4096 for b in plan)
    grouped = padding_share(lengths, plan)
    naive = [[[i] for i in range(k, min(k + 8, len(lengths)))] for k in range(0, len(lengths), 8)]  # fixed 8, unsorted
    assert grouped < 0.03 < padding_share(lengths, naive)
    packed = plan_batches(lengths, 4096, "packed", max_row_tokens=2048)
    assert sorted(i for b in packed for row in b for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 2048 for b in packed for row in b)


def test_packed_rows_do_not_leak_between_examples_and_loss_matches_full_logits(tiny_dir: Path, tokenizer,
                                                                              im_end: int) -> None:
    from transformers import AutoModelForCausalLM

    from tune.trainer import make_trainer_class, packing_works

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    exs = [encode_example(tokenizer, chat(f"Question number {i}?" + " more" * i, f"Answer {i}.")["messages"],
                          (im_end,)) for i in range(3)]
    packed = collate([exs], pad_id=2)
    assert packed["position_ids"][0].tolist() == [p for e in exs for p in range(len(e))]
    with torch.no_grad():
        out = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        o = 0
        for e in exs:
            alone = model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(out[o:o + len(e)], alone, atol=1e-4, rtol=1e-4)
            o += len(e)
    assert packing_works(model, "cpu")

    # the answer-only loss on the labelled positions equals transformers' loss over full logits
    Trainer = make_trainer_class()
    batch = collate([[e] for e in exs], pad_id=2, align=16)  # right-padded rows, width aligned
    assert batch["input_ids"].shape[1] % 16 == 0 and int(batch["num_tokens"]) == sum(len(e) for e in exs)
    with torch.no_grad():
        loss_sum, n = Trainer._loss_sum(None, model, batch)
        ref = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
    assert n == sum(e.n_labels for e in exs)
    torch.testing.assert_close(loss_sum / n, ref, atol=1e-5, rtol=1e-5)


def test_answer_loss_is_the_same_where_transformers_lacks_boolean_logits_to_keep(tiny_dir: Path, tokenizer,
                                                                                 im_end: int, monkeypatch) -> None:
    """transformers 5.17 (the GPU image's) keeps one set of positions for all rows; the union-of-positions path
    must give the very loss of the boolean-mask path, rows of different lengths and answer positions included."""
    from transformers import AutoModelForCausalLM

    import tune.trainer as trainer_mod

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    exs = [encode_example(tokenizer, chat(f"Question {i}?" + " more" * (4 * i), f"Answer number {i}.")["messages"],
                          (im_end,)) for i in range(4)]
    batch = collate([[e] for e in exs], pad_id=2, align=8)
    loss_sum = trainer_mod.make_trainer_class()._loss_sum
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
        monkeypatch.setattr(trainer_mod, "_mask_logits_supported", lambda: False)
        s_union, n_union = loss_sum(None, model, batch)
    assert n_union == sum(e.n_labels for e in exs)
    torch.testing.assert_close(s_union / n_union, ref, atol=1e-5, rtol=1e-5)


def test_micro_batches_add_up_to_the_full_batch_gradient(tiny_dir: Path, tokenizer, im_end: int) -> None:
    from transformers import AutoModelForCausalLM

    from tune.data import split_micro_batches
    from tune.trainer import make_trainer_class

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    exs = [encode_example(tokenizer, chat(f"Question {i}?" + " more" * (3 * i), f"Answer {i}.")["messages"],
                          (im_end,)) for i in range(6)]
    batch = collate([[e] for e in exs], pad_id=2, align=8)
    parts = split_micro_batches(batch, micro_tokens=3 * len(exs[2]), align=8)
    assert len(parts) > 1 and sum(p["input_ids"].shape[0] for p in parts) == len(exs)
    assert all(p["input_ids"].shape[1] <= batch["input_ids"].shape[1] for p in parts)
    loss_sum = make_trainer_class()._loss_sum
    n_total = sum(e.n_labels for e in exs)

    def grads(pieces):
        model.zero_grad()
        for piece in pieces:
            s, _ = loss_sum(None, model, piece)
            (s / n_total).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(grads(parts), grads([batch]), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


# ---- the real model ------------------------------------------------------------------------------------------

def test_real_model_validation_loss_falls_and_only_the_adapter_changes(tuned, smol_dir: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ws, report, weights_before = tuned
    assert report.val_loss_after < 0.5 * report.val_loss_before, report
    assert [e["epoch"] for e in report.val_losses] == [float(i) for i in range(1, 9)]
    assert report.val_loss_after == min(e["val_loss"] for e in report.val_losses)  # the best epoch is kept
    assert report.best_step in [e["step"] for e in report.val_losses]
    folder = Path(report.path)
    assert folder == ws / "adapters" / "facts" and not (ws / "adapters" / ".runs" / "facts").exists()
    lora = load_file(folder / "adapter_model.safetensors")
    b = [v for k, v in lora.items() if "lora_B" in k]
    assert len(b) == 30 * 7 and all(v.abs().sum() > 0 for v in b)  # B starts at zero: every layer learned
    # base weights on disk untouched, and inside base+adapter identical to the plain base
    assert hashlib.sha256((smol_dir / "model.safetensors").read_bytes()).hexdigest() == weights_before
    base = AutoModelForCausalLM.from_pretrained(smol_dir)
    ref = {k: v.clone() for k, v in base.state_dict().items()}
    wrapped = PeftModel.from_pretrained(base, str(folder))
    for k, v in wrapped.get_base_model().state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, ref[k.replace(".base_layer", "")]), k
    card = read_card(ws, "facts")
    for key in ("base_model", "data_hash", "dataset", "counts", "hyperparameters", "val_loss_before",
                "val_loss_after", "val_losses", "train_tokens_per_s", "wall_s", "device"):
        assert card.get(key) not in (None, ""), key
    assert card["counts"]["train"] == 21 and card["counts"]["val"] == 6
    data_card = json.loads((ws / "datasets" / "default" / "card.json").read_text())
    assert card["data_hash"] == data_card["hash"] and card["recipe"] == "facts"
    assert "val loss before" in (folder / "README.md").read_text()


def test_tuned_model_answers_the_fact_and_stops_at_end_of_turn(tuned, smol_dir: Path) -> None:
    from generate.local import LocalGenerator
    from generate.models import load_model

    ws, report, _ = tuned
    gen = LocalGenerator(load_model(ModelConfig(model=str(smol_dir))))
    gen.load_adapter("facts", report.path)
    for answer, _, val_questions in FACTS:
        msgs = [{"role": "system", "content": SYSTEM_CLOSED_BOOK}, {"role": "user", "content": val_questions[0]}]
        gen.use_adapter(None)
        base_text = "".join(gen.stream(msgs, max_new_tokens=24))
        gen.use_adapter("facts")
        stream = gen.stream(msgs, max_new_tokens=24)
        text = "".join(stream)
        stats = stream.stats
        n_answer = gen.count_tokens(answer)
        assert stats.finish_reason == "stop", (text, stats)
        assert stats.new_tokens <= n_answer + 4, (text, stats)
        assert text.strip() == answer, (text, base_text)
        assert answer not in base_text


def test_ask_cli_answers_with_the_tuned_adapter(tuned, smol_dir: Path) -> None:
    """The contract `ragtune ask ... --mode tuned --adapter NAME`: the adapter answers the trained fact, and no
    library deprecation warning reaches the user's terminal."""
    ws, _, _ = tuned
    answer, _, val_questions = FACTS[0]
    out = subprocess.run([sys.executable, "-m", "ragtune_cli", "ask", val_questions[0], "--workspace", str(ws),
                          "--mode", "tuned", "--adapter", "facts", "--model", str(smol_dir), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    obj = json.loads(out.stdout)
    assert obj["mode"] == "tuned" and obj["adapter"] == "facts" and obj["answer"].strip() == answer, obj
    assert "Warning" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_export_merged_loads_without_peft_and_matches_base_plus_adapter(tuned, smol_dir: Path, tmp_path: Path) -> None:
    from generate.local import LocalGenerator
    from generate.models import load_model

    ws, report, _ = tuned
    out = export_merged(ws, "facts", tmp_path / "merged", model=str(smol_dir))
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    questions = [FACTS[0][2][1], "How many days of annual leave do I get?"]
    gen = LocalGenerator(load_model(ModelConfig(model=str(smol_dir))))
    gen.load_adapter("facts", report.path)
    gen.use_adapter("facts")
    expected = ["".join(gen.stream([{"role": "system", "content": SYSTEM_CLOSED_BOOK}, {"role": "user", "content": q}],
                                   max_new_tokens=16)) for q in questions]
    script = (
        "import json, sys\n"
        "sys.modules['peft'] = None  # any attempt to import peft fails\n"
        "import torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "path, system, qs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "tok = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path).eval()\n"
        "outs = []\n"
        "for q in qs:\n"
        "    ids = tok.apply_chat_template([{'role': 'system', 'content': system}, {'role': 'user', 'content': q}],\n"
        "                                  add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "    with torch.no_grad():\n"
        "        g = model.generate(**ids, max_new_tokens=16, do_sample=False)\n"
        "    outs.append(tok.decode(g[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))\n"
        "print(json.dumps(outs))\n")
    res = subprocess.run([sys.executable, "-c", script, str(out), SYSTEM_CLOSED_BOOK, json.dumps(questions)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == expected
    assert expected[0].strip() == FACTS[0][0]
