"""Writing a synth dataset to disk: the folder, swapped in atomically, and its human-readable card (card.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

from ingest.workspace import Workspace
from tune.adapters import clean_stale, publish_dir


def _dump(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def write_dataset(ws: Path, name: str, train: list[dict], val: list[dict], card: dict) -> tuple[Path, str]:
    """Write WS/datasets/<name>/ (train.jsonl, val.jsonl, card.json, card.md) in a staging folder and rename it into
    place, replacing an older dataset of that name only once the new one is complete. Returns (folder, content
    hash of train + val), the hash also stored in the card."""
    root = Workspace(ws).datasets
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)  # staging folders of killed runs
    train_b, val_b = _dump(train), _dump(val)
    content_hash = hashlib.sha256(train_b + b"\0" + val_b).hexdigest()
    card["content_hash"] = content_hash
    final = root / name
    card["path"] = str(final)
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / "train.jsonl").write_bytes(train_b)
        (tmp / "val.jsonl").write_bytes(val_b)
        (tmp / "card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
        (tmp / "card.md").write_text(render_card(card, train or val))
        publish_dir(tmp, final)  # fsync, then swap in: an older dataset of this name is replaced only now
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final, content_hash


def render_card(card: dict, rows: list[dict]) -> str:
    c = card["counts"]
    fs = card["filter_stats"]
    lines = [f"# Dataset `{card['name']}`", "",
             f"Synthetic question/answer training data made by `ragtune synth` from index generation "
             f"`{card['source_index']['generation']}` ({card['source_index']['n_chunks']} chunks); teacher "
             f"`{card['teacher']}`; content hash `{card['content_hash'][:16]}`.", "",
             "## Counts", "",
             "| split | examples | raft | raft_no_oracle | closed_book | recite |", "|---|---|---|---|---|---|"]
    for split in ("train", "val"):
        k = c["by_split_kind"][split]
        lines.append(f"| {split} | {c[split]} | {k.get('raft', 0)} | {k.get('raft_no_oracle', 0)} | "
                     f"{k.get('closed_book', 0)} | {k.get('recite', 0)} |")
    facts = card.get("recipe") == "facts"
    styles = ", ".join(card.get("config", {}).get("facts_styles") or ["question"])
    held_out = (f"closed-book styles: {styles}; validation: {card['validation']}" if facts else
                f"validation documents (never in train): {', '.join(c['val_documents']) or 'none'}")
    lines += ["", f"Recipe `{card.get('recipe', 'raft')}`. {c['chunks_used']} source chunks, {c['items_kept']} of "
              f"{c['items_candidates']} generated items kept; {c['documents']} documents; {held_out}.", "",
              "## Filters (each item is counted under the first filter it fails)", "",
              "| style / rule | candidates | kept | pass rate | " + " | ".join(card["filters"]["order"]) + " |",
              "|---" * (4 + len(card["filters"]["order"])) + "|"]
    rows_stats = [("all", fs["total"])] + [(f"style {k}", v) for k, v in fs["by_style"].items()] + \
        [(f"rule {k}", v) for k, v in fs["by_rule"].items()]
    for label, s in rows_stats:
        rate = f"{s['pass_rate']:.0%}" if s["pass_rate"] is not None else "-"
        lines.append(f"| {label} | {s['candidates']} | {s['kept']} | {rate} | "
                     + " | ".join(str(s["removed"][f]) for f in card["filters"]["order"]) + " |")
    nt = card["no_oracle_target"]
    lines += ["", "## How the examples are built", "",
              f"- `raft`: the question with its source chunk and {card['config']['distractors']} hard-negative "
              "distractors (top retrieval hits that are not the source and do not contain the answer), shuffled and "
              "numbered as the answer engine numbers them; target `answer [n]`.",
              f"- `raft_no_oracle` ({card['config']['drop_oracle']:.0%} of items): the distractors only; target "
              + ("the refusal (`refuse`: the model learns to say the documents do not hold the answer)."
                 if nt == "refuse" else "the bare answer (`answer`: RAFT's variant, which makes the model "
                 "memorise the facts and answer even when retrieval missed)."),
              "- `closed_book`: the question alone; target the bare answer (facts for `tuned` mode).",
              *(["- `recite` (train only): a passage asked for by document title, section and part; target the "
                 "passage itself, so every token is a label (facts for `tuned` mode, ~20x denser than "
                 "question/answer pairs)."] if card["config"].get("recite") else []),
              ("- Recipe `facts`: only the question-style `closed_book` examples, every one trained; validation "
               "repeats a sample of them (a recall check)." if facts else
               "- Split by document, so validation loss measures documents the model never saw."),
              f"- Restricted documents: {card['restricted']['note']}. Included groups: "
              f"{', '.join(card['restricted']['included_groups']) or 'none'} "
              f"({card['restricted']['restricted_chunks_excluded']} restricted chunks left out).", ""]
    if card["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in card["warnings"]] + [""]
    lines += ["## Examples", ""]
    shown, seen = 0, set()
    for r in rows:
        key = (r["kind"], r["style"])
        if key in seen and len(seen) < 4:
            continue
        seen.add(key)
        lines.append(f"- ({r['kind']}, {r['style']}, `{r['doc']}`) **Q:** {r['question']}  \n"
                     f"  **target:** {r['messages'][-1]['content']}")
        shown += 1
        if shown == 5:
            break
    return "\n".join(lines) + "\n"
