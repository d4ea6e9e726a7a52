"""The KV cache of a continuously batched decode loop (generate/batching.py): every row's keys and values in one
buffer per layer, right-aligned (left padding) with a [rows, length] mask that marks each row's real tokens, so
rows join and leave between steps. transformers / torch are imported lazily."""

from __future__ import annotations

from typing import Any


def _room(length: int) -> int:
    """Buffer capacity for `length` tokens: room for the next 128 steps, so most steps allocate nothing."""
    return (length // 128 + 1) * 128


def _right_aligned(a: Any, b: Any, length: int, dim: int, size: int) -> Any:
    """`a`'s rows then `b`'s in a new zero tensor `size` long along `dim`, both ending at index `length` there."""
    shape = list(a.shape)
    shape[0], shape[dim] = a.shape[0] + b.shape[0], size
    out = a.new_zeros(shape)
    for rows, part in ((slice(0, a.shape[0]), a), (slice(a.shape[0], None), b)):
        where = [rows] + [slice(None)] * (a.dim() - 1)
        where[dim] = slice(length - part.shape[dim], length)
        out[tuple(where)] = part
    return out


def rows_layer_class() -> type:
    """The cache layer of a batch, defined on first use so that importing this module stays instant."""
    from transformers.cache_utils import DynamicLayer

    class RowsLayer(DynamicLayer):
        """One layer's keys and values for every row: a [rows, heads, capacity, dim] buffer written in place."""

        def __init__(self) -> None:
            super().__init__()
            self.length = 0
            self._k: Any = None
            self._v: Any = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            end = self.length + key_states.shape[-2]
            if self._k is None or end > self._k.shape[-2]:
                self._k, self._v = self._grown(self._k, key_states, end), self._grown(self._v, value_states, end)
                self.is_initialized, self.device = True, key_states.device
            self._k[:, :, self.length:end] = key_states
            self._v[:, :, self.length:end] = value_states
            self._set(end)
            return self.keys, self.values

        def _grown(self, buffer: Any, like: Any, end: int) -> Any:
            """A buffer with room beyond `end`, holding what `buffer` held."""
            out = like.new_zeros((like.shape[0], like.shape[1], _room(end), like.shape[3]))
            if buffer is not None:
                out[:, :, :self.length] = buffer[:, :, :self.length]
            return out

        def _set(self, length: int) -> None:
            self.length = length
            self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]

        def get_seq_length(self) -> int:
            return self.length

        def join(self, other: RowsLayer, length: int) -> None:
            """Append `other`'s rows, both right-aligned at `length` (the padding is zeros, masked by the batch)."""
            self._k = _right_aligned(self.keys, other.keys, length, 2, _room(length))
            self._v = _right_aligned(self.values, other.values, length, 2, _room(length))
            self._set(length)

        def keep(self, rows: Any, start: int) -> None:
            """Keep the rows at index tensor `rows`, without the first `start` columns (padding in all of them)."""
            self._k, self._v = self._k[rows, :, start:], self._v[rows, :, start:]
            self._set(self.length - start)

    return RowsLayer


class Batch:
    """The running rows, their cache (None when empty) and its [rows, length] mask (True: a real token)."""

    def __init__(self, layer_class: type) -> None:
        self._layer_class = layer_class
        self.rows: list[Any] = []
        self.cache: Any = None
        self.mask: Any = None
        self.padded = False

    def new_cache(self) -> Any:
        from transformers.cache_utils import Cache

        return Cache(layer_class_to_replicate=self._layer_class)

    def add(self, row: Any, cache: Any) -> None:
        """Join a prefilled row (`cache`: its one-row cache)."""
        import torch

        n = cache.get_seq_length()
        mine = torch.ones((1, n), dtype=torch.bool, device=cache.layers[0].keys.device)
        if self.cache is None:
            self.rows, self.cache, self.mask = [row], cache, mine
        else:
            length = max(self.cache.get_seq_length(), n)
            for layer, other in zip(self.cache.layers, cache.layers):
                layer.join(other, length)
            self.mask = _right_aligned(self.mask, mine, length, 1, length)
            self.rows.append(row)
        self.padded = not bool(self.mask.all())

    def keep(self, alive: list[bool]) -> None:
        """Drop the rows whose flag is False, and the columns that only they needed."""
        import torch

        if all(alive):
            return
        if not any(alive):
            self.rows, self.cache, self.mask, self.padded = [], None, None, False
            return
        idx = torch.tensor([i for i, a in enumerate(alive) if a], device=self.mask.device)
        mask = self.mask[idx]
        start = int(mask.int().argmax(dim=1).min())  # the first column any kept row uses
        for layer in self.cache.layers:
            layer.keep(idx, start)
        self.mask = mask[:, start:]
        self.rows = [r for r, a in zip(self.rows, alive) if a]
        self.padded = not bool(self.mask.all())

    def step_inputs(self, device: Any) -> tuple[Any, Any, Any]:
        """(ids [rows, 1], position ids [rows, 1], the attention mask or None) for one decode step; the mask
        grows by the column this step writes."""
        import torch

        ids = torch.tensor([[r.token] for r in self.rows], dtype=torch.long, device=device)
        positions = torch.tensor([[r.pos] for r in self.rows], dtype=torch.long, device=device)
        column = torch.ones((len(self.rows), 1), dtype=torch.bool, device=self.mask.device)
        self.mask = torch.cat([self.mask, column], dim=1)
        return ids, positions, self.mask if self.padded else None
