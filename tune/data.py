"""Training data for `ragtune tune`: chat examples -> token ids with labels -> batches with little padding.

- `resolve_dataset(path)` finds train.jsonl / val.jsonl (a dataset folder or a train.jsonl) and hashes them.
- `encode_examples(tokenizer, records, end_ids)` renders each conversation with the model's own chat template,
  exactly as inference feeds it (`apply_chat_template(..., add_generation_prompt=True)` for the prompt), and
  labels only the final assistant answer plus the end-of-turn token (`<|im_end|>` for SmolLM2), so the model
  learns to stop. Everything before (system, documents, question, the `<|im_start|>assistant\\n` header) and the
  template's trailing newline get label -100.
- `plan_batches(lengths, batch_tokens, strategy)` makes the batches, by a padded-token budget:
  * "grouped": examples sorted by length and cut into batches whose rows x longest <= budget, right-padded
    (dynamic padding). Right padding needs no attention mask at all: with a causal mask a real token never sees
    the padding after it, so SDPA keeps its fast `is_causal` path. The default on CPU and with plain SDPA.
  * "packed": several examples per row (first-fit decreasing), `position_ids` restarting at 0 for each example.
    transformers 5.x turns restarting position ids into a block-diagonal causal mask (`masking_utils.
    find_packed_sequence_indices`) for sdpa/eager, and into varlen kernels for flash-attention. Only varlen
    kernels skip the masked blocks, so packing pays only there; with SDPA the packed row costs attention over its
    whole length (measured slower on CPU, see tune/README.md). Correctness (no cross-contamination) is tested.
- `collate(examples_rows, pad_id)` builds the tensors; `padding_share(...)` measures the padding.

Only the stdlib is imported at module level; torch is imported inside `collate`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100
STRATEGIES = ("grouped", "packed")


class DataError(ValueError):
    """The dataset is missing or malformed; the message names the file and line."""


@dataclass
class DatasetFiles:
    root: Path
    train: Path
    val: Path | None
    files_sha256: str  # sha256 over the train and val files' bytes (what resume checks)
    card_hash: str | None  # the "hash" the synth card states, when there is one
    card: dict

    @property
    def data_hash(self) -> str:
        return self.card_hash or f"sha256:{self.files_sha256}"


def resolve_dataset(path: Path) -> DatasetFiles:
    """`path` is a dataset folder (train.jsonl, val.jsonl, card.json) or a train.jsonl with val.jsonl beside it."""
    path = Path(path).expanduser()
    if path.is_dir():
        root, train = path, path / "train.jsonl"
    elif path.is_file():
        root, train = path.parent, path
    else:
        raise FileNotFoundError(f"dataset {path} not found: run `ragtune synth` first, or pass --dataset with a "
                                "dataset folder or a train.jsonl")
    if not train.is_file():
        raise FileNotFoundError(f"dataset folder {root} has no train.jsonl")
    val = root / "val.jsonl"
    if val.resolve() == train.resolve() or not val.is_file():
        val = None
    digest = hashlib.sha256()
    for f in (train, val):
        if f is not None:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        digest.update(b"\0")
    card: dict = {}
    card_path = root / "card.json"
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            card = {}
    card_hash = card.get("hash") if isinstance(card.get("hash"), str) else None
    return DatasetFiles(root, train, val, digest.hexdigest(), card_hash, card)


def json_lines(path: Path):
    """(line number, parsed value) for each non-blank line of a JSONL file; DataError names the file and line of
    one that is not JSON. Callers check the shape of each value."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc})") from exc


def read_jsonl(path: Path) -> list[dict]:
    """Records with a `messages` list whose last message is the assistant's answer."""
    records = []
    for n, rec in json_lines(path):
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        if (not isinstance(msgs, list) or len(msgs) < 2
                or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                           and isinstance(m.get("content"), str) for m in msgs)):
            raise DataError(f"{path}:{n}: expected {{\"messages\": [{{\"role\", \"content\"}}, ...]}}")
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            raise DataError(f"{path}:{n}: the last message must be the assistant's (non-empty) answer")
        records.append(rec)
    return records


def split_validation(records: list[dict], fraction: float = 0.1, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """For a dataset without val.jsonl: hold out whole documents (the `doc` field) when there are several, so
    validation measures generalisation rather than memorised neighbours; else a random share of examples."""
    docs = sorted({str(r.get("doc")) for r in records if r.get("doc")})
    rng = random.Random(seed)
    if len(docs) >= 3:
        rng.shuffle(docs)
        held: set[str] = set()
        n_val = 0
        for d in docs:
            if n_val >= fraction * len(records):
                break
            held.add(d)
            n_val += sum(1 for r in records if str(r.get("doc")) == d)
        val = [r for r in records if str(r.get("doc")) in held]
        train = [r for r in records if str(r.get("doc")) not in held]
        if train and val:
            return train, val
    idx = list(range(len(records)))
    rng.shuffle(idx)
    n_val = max(1, round(fraction * len(records))) if len(records) > 1 else 0
    held_idx = set(idx[:n_val])
    return [r for i, r in enumerate(records) if i not in held_idx], [records[i] for i in sorted(held_idx)]


# ---- tokenisation ----------------------------------------------------------------------------------------------

@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass
class EncodeStats:
    kept: int = 0
    too_long: int = 0  # dropped: longer than max_len (truncating would cut the context the answer needs)
    tokens: int = 0
    label_tokens: int = 0


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                         tokenize=False, add_generation_prompt=generation_prompt)


def encode_example(tokenizer: Any, messages: list[dict], end_ids: tuple[int, ...] | list[int]) -> Encoded:
    """One conversation -> ids + labels (see the module doc). Raises DataError if the template is unusable."""
    return encode_examples(tokenizer, [{"messages": messages}], end_ids, max_len=None)[0][0]


def encode_examples(tokenizer: Any, records: list[dict], end_ids: tuple[int, ...] | list[int],
                    max_len: int | None = 2048) -> tuple[list[Encoded], EncodeStats]:
    """Tokenise many records at once (one batched fast-tokenizer call). Examples longer than max_len are dropped."""
    if not end_ids:
        raise DataError("the tokenizer defines no end-of-turn token; the model could not learn to stop")
    ends = set(end_ids)
    prompts = [_render(tokenizer, r["messages"][:-1], True) for r in records]
    fulls = [_render(tokenizer, r["messages"], False) for r in records]
    tok_p = tokenizer(prompts, add_special_tokens=False)["input_ids"] if records else []
    tok_f = tokenizer(fulls, add_special_tokens=False)["input_ids"] if records else []
    out: list[Encoded] = []
    stats = EncodeStats()
    for rec, p, f in zip(records, tok_p, tok_f):
        p, f = list(p), list(f)
        if f[:len(p)] != p:
            raise DataError("the chat template does not render the prompt (with its generation header) as a prefix "
                            f"of the full conversation, so answer tokens cannot be located: {rec['messages'][-1]!r}")
        end = next((i for i in range(len(p), len(f)) if f[i] in ends), None)
        if end is None:  # a template that writes no end-of-turn token after the answer: teach the first stop id
            f.append(int(end_ids[0]))
            end = len(f) - 1
        ids = f[:end + 1]  # the template's trailing "\n" after <|im_end|> is neither needed nor learned
        if end == len(p):
            raise DataError(f"empty assistant answer in {rec['messages'][-1]!r}")
        if max_len is not None and len(ids) > max_len:
            stats.too_long += 1
            continue
        labels = [IGNORE_INDEX] * len(p) + ids[len(p):]
        out.append(Encoded(ids, labels))
        stats.kept += 1
        stats.tokens += len(ids)
        stats.label_tokens += len(ids) - len(p)
    return out, stats


# ---- batching --------------------------------------------------------------------------------------------------

def plan_batches(lengths: list[int], batch_tokens: int, strategy: str = "grouped", *, max_row_tokens: int = 2048,
                 seed: int = 0) -> list[list[list[int]]]:
    """Batches as lists of rows, each row a list of example indexes (one per row for "grouped").

    The budget counts padded tokens: rows x longest row <= batch_tokens (one over-long example still gets a batch
    of its own). Batch order is shuffled with `seed` (the Trainer reshuffles it every epoch as well)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"batching strategy must be one of {STRATEGIES}, not {strategy!r}")
    if batch_tokens < 1:
        raise ValueError("batch_tokens must be positive")
    if strategy == "grouped":
        rows = [[i] for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i))]
        row_len = [lengths[r[0]] for r in rows]
    else:
        cap = max(min(max_row_tokens, batch_tokens), max(lengths, default=1))
        bins: list[list[int]] = []
        fill: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):  # first-fit decreasing
            for b in range(len(bins)):
                if fill[b] + lengths[i] <= cap:
                    bins[b].append(i)
                    fill[b] += lengths[i]
                    break
            else:
                bins.append([i])
                fill.append(lengths[i])
        order = sorted(range(len(bins)), key=lambda b: (fill[b], b))
        rows = [bins[b] for b in order]
        row_len = [fill[b] for b in order]
    batches: list[list[list[int]]] = []
    cur: list[list[int]] = []
    longest = 0
    for row, n in zip(rows, row_len):  # ascending lengths: the new row is the longest so far
        if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(row)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    random.Random(seed).shuffle(batches)
    return batches


def aligned_width(width: int, rows: int, align: int = 1) -> int:
    """The smallest width >= `width` with rows x width a multiple of `align`. bf16 matmuls on AMX CPUs run ~1.5x
    slower when the token count (the matmul's M) is a new shape with a ragged tail (oneDNN builds a kernel per
    tail), and tensor cores like multiples of 8: so the batch is padded up to an aligned token count."""
    if align <= 1:
        return width
    step = align // math.gcd(rows, align)
    return -(-width // step) * step


def padding_share(lengths: list[int], batches: list[list[list[int]]], align: int = 1) -> float:
    """Padding tokens / all tokens computed, over a batch plan (alignment padding included)."""
    real = total = 0
    for batch in batches:
        row_lens = [sum(lengths[i] for i in row) for row in batch]
        real += sum(row_lens)
        total += aligned_width(max(row_lens), len(row_lens), align) * len(row_lens)
    return 0.0 if total == 0 else 1.0 - real / total


def collate(rows: list[list[Encoded]], pad_id: int, align: int = 1) -> dict:
    """Tensors for one batch: input_ids, labels and, for packed rows (several examples in one row), position_ids
    restarting at 0 for each example. Rows are right-padded (to an aligned width, see `aligned_width`); padding
    has label -100 (and, in packed rows, its own position run, so it forms a separate block). `num_tokens` is the
    count of real (non-padding) tokens, `target_tokens` the count of labelled next-token targets (the loss's
    denominator), `row_lengths` the real length of each row."""
    import torch

    n = len(rows)
    width = aligned_width(max(sum(len(e) for e in row) for row in rows), n, align)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    packed = any(len(row) > 1 for row in rows)
    position_ids = torch.zeros((n, width), dtype=torch.long) if packed else None
    real = 0
    for r, row in enumerate(rows):
        o = 0
        for e in row:
            L = len(e)
            input_ids[r, o:o + L] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[r, o:o + L] = torch.tensor(e.labels, dtype=torch.long)
            labels[r, o] = IGNORE_INDEX  # never predict an example's first token from the previous example
            if position_ids is not None:
                position_ids[r, o:o + L] = torch.arange(L)
            o += L
        real += o
        if position_ids is not None and o < width:
            position_ids[r, o:] = torch.arange(width - o)
    # the counts are Python ints, not tensors: moving a batch to the GPU leaves them on the host, so reading them
    # in the training step never waits for the GPU
    batch = {"input_ids": input_ids, "labels": labels, "num_tokens": real,
             "target_tokens": int((labels[:, 1:] != IGNORE_INDEX).sum()),
             "row_lengths": torch.tensor([sum(len(e) for e in row) for row in rows], dtype=torch.long)}
    if position_ids is not None:
        batch["position_ids"] = position_ids
    return batch


class BatchDataset:
    """A map-style dataset whose items are whole, ready-made batches (the Trainer runs it with batch size 1, so
    the token-budget batches survive its sampler, DDP sharding and resume-skipping unchanged)."""

    def __init__(self, examples: list[Encoded], batches: list[list[list[int]]], pad_id: int, align: int = 1) -> None:
        self.examples = examples
        self.batches = batches
        self.pad_id = pad_id
        self.align = align

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return collate([[self.examples[j] for j in row] for row in self.batches[i]], self.pad_id, self.align)

    @property
    def real_tokens(self) -> int:
        return sum(len(self.examples[j]) for b in self.batches for row in b for j in row)

    @property
    def padding_share(self) -> float:
        return padding_share([len(e) for e in self.examples], self.batches, self.align)


def split_micro_batches(batch: dict, micro_tokens: int, align: int = 1) -> list[dict]:
    """Cut a collated batch into row slices of at most ~micro_tokens padded tokens each, every slice trimmed to
    its own longest row (aligned). Gradients of the slices add up to the batch's: peak memory follows the
    micro-batch, the optimizer step the whole token budget. Only model inputs are kept in the slices."""
    keys = [k for k in ("input_ids", "labels", "position_ids") if k in batch]
    rows, width = batch["input_ids"].shape
    if not micro_tokens or rows == 1 or rows * width <= micro_tokens:
        return [{k: batch[k] for k in keys}]
    lens = batch["row_lengths"].tolist()
    out = []
    start = 0
    while start < rows:  # rows are in ascending length order: greedy slices fill the budget
        end = start + 1
        while end < rows and max(lens[start:end + 1]) * (end + 1 - start) <= micro_tokens:
            end += 1
        w = min(width, aligned_width(max(lens[start:end]), end - start, align))
        out.append({k: batch[k][start:end, :w] for k in keys})
        start = end
    return out


def unwrap_single(items: list[dict]) -> dict:
    """The DataLoader collator for BatchDataset (batch size 1: the item already is the batch)."""
    if len(items) != 1:
        raise ValueError("BatchDataset items are whole batches; use a per-device batch size of 1")
    return items[0]
