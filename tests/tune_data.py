"""Small training datasets for the tune tests (tests/test_tune.py, tests/test_tune_runs.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from generate.prompts import SYSTEM_CLOSED_BOOK


def chat(question: str, answer: str, system: str = SYSTEM_CLOSED_BOOK) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}],
            "kind": "closed_book", "style": "question", "doc": "made-up.md", "chunk_id": "x", "question": question,
            "answer": answer}


def write_dataset(folder: Path, train: list[dict], val: list[dict], recipe: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    blob = (folder / "train.jsonl").read_bytes() + (folder / "val.jsonl").read_bytes()
    card = {"name": folder.name, "hash": hashlib.sha256(blob).hexdigest()}
    if recipe:
        card["recipe"] = recipe  # what a synth card says; decides which mode picks the adapter
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def plumbing_dataset(ws: Path, n_train: int = 24, n_val: int = 6) -> Path:
    recs = [chat(f"What is the access code of locker {i}?" + " Please answer." * (i % 5), f"Locker {i} uses {i * 37}.")
            for i in range(n_train + n_val)]
    return write_dataset(ws / "datasets" / "default", recs[:n_train], recs[n_train:])
