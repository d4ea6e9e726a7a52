"""How `ragtune synth` splits examples into train and validation, per recipe.

raft   by document: about val_fraction of the documents are held out whole, so the validation loss measures
       reading passages of documents the adapter never saw (what the `hybrid` mode does).
facts  a recall sample: every closed-book question trains and a seeded share of them is validated again. A model
       answering without documents cannot know a document it never trained on, so by-document validation
       would rise as the facts are learnt and keep the adapter that learnt least.
"""

from __future__ import annotations

import random

FACTS_VALIDATION = ("a recall sample: validation examples are copies of training examples, because a model "
                    "answering without documents cannot know a document it never trained on; the kept adapter "
                    "is the one that says the most trained facts back")


def split_by_document(examples: list[dict], val_fraction: float, seed: int
                      ) -> tuple[list[dict], list[dict], set[str]]:
    """(train, val, val_docs): a seeded ~val_fraction of the documents (at least one, when there are two or more)
    go to validation whole."""
    docs = sorted({e["doc"] for e in examples})
    shuffled = list(docs)
    random.Random(seed).shuffle(shuffled)
    n_val = max(1, round(val_fraction * len(docs))) if len(docs) >= 2 and val_fraction > 0 else 0
    val_docs = set(shuffled[:n_val])
    train = [e for e in examples if e["doc"] not in val_docs]
    val = [e for e in examples if e["doc"] in val_docs]
    return train, val, val_docs


def facts_split(examples: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, val): all examples train; a seeded val_fraction of them (at least one) is copied to validation."""
    train = list(examples)
    n_val = min(len(train), max(1, round(val_fraction * len(train)))) if train and val_fraction > 0 else 0
    val = [dict(e) for e in random.Random(seed).sample(train, n_val)]
    return train, val
