"""The KV cache of a running batch whose rows have different lengths.

Rows are left-padded to one length: each layer holds keys and values of shape
`[rows, heads, length, head_dim]`, and `mask` (`[rows, length]`, 1 for a real token) hides the
padding from attention. A row joins with the cache of its own prefill (one row, maybe repeated for
`n` choices) and leaves when it finishes; columns that no row needs any more are cut off the left,
so a long finished row doesn't leave its length behind as padding.

Each layer keeps its keys and values at the front of a buffer with room for `SPARE_COLUMNS` more
tokens, so a decode step writes its one new column in place; transformers' `DynamicLayer`
concatenates, copying the whole cache of every layer at every step, which under a batch of long
rows is memory traffic of the order of the weights themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SPARE_COLUMNS = 64  # room to grow before a layer's buffer is reallocated


class _BatchLayer(DynamicLayer):
    """A full-attention cache layer whose `keys` and `values` are views of the front of buffers
    with spare columns; `update` writes into the spare ones."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.is_initialized = True
        self.device = keys.device
        self.set(keys, values)

    def set(self, keys: torch.Tensor, values: torch.Tensor, spare: int = SPARE_COLUMNS) -> None:
        """Hold (a copy of) these keys and values, with `spare` free columns after them."""
        length = keys.shape[2]
        self._keys = _with_room(keys, spare)
        self._values = _with_room(values, spare)
        self._length = length
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[2]
        if self._length + new > self._keys.shape[2]:
            assert self.keys is not None and self.values is not None
            self.set(self.keys, self.values, spare=max(SPARE_COLUMNS, new))
        end = self._length + new
        self._keys[:, :, self._length : end] = key_states
        self._values[:, :, self._length : end] = value_states
        self._length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values


def _with_room(tensor: torch.Tensor, spare: int) -> torch.Tensor:
    rows, heads, length, dim = tensor.shape
    buffer = tensor.new_empty(rows, heads, length + spare, dim)
    buffer[:, :, :length] = tensor
    return buffer


class BatchCache:
    def __init__(self) -> None:
        self.cache: DynamicCache | None = None  # what the model reads and extends; None while empty
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.lengths: list[int] = []  # real tokens of each row: the position of its next token

    def clear(self) -> None:
        self.cache, self.mask, self.lengths = None, torch.zeros(0, 0, dtype=torch.long), []

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def add(self, row_cache: DynamicCache, length: int, copies: int) -> None:
        """Append `copies` rows continuing a one-row cache of `length` tokens (its prefill's)."""
        layers = _layers(row_cache)
        device = self.mask.device
        if self.cache is None:  # copies the tensors: the row's cache may serve more rows later
            self.cache = DynamicCache()
            self.cache.layers = [
                _BatchLayer(_repeat(keys, copies), _repeat(values, copies)) for _, keys, values in layers
            ]
            device = layers[0][1].device
            self.mask = torch.ones(copies, length, dtype=torch.long, device=device)
            self.lengths = [length] * copies
            return
        width = max(self.mask.shape[1], length)
        for (layer, keys, values), (_, new_keys, new_values) in zip(_batch_layers(self.cache), layers, strict=True):
            layer.set(
                torch.cat([_pad_left(keys, width), _pad_left(new_keys, width, copies)]),
                torch.cat([_pad_left(values, width), _pad_left(new_values, width, copies)]),
            )
        new_mask = torch.ones(copies, length, dtype=torch.long, device=device)
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(new_mask, width)])
        self.lengths += [length] * copies

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows (in this order); the others' memory is freed."""
        if not rows:
            self.clear()
            return
        assert self.cache is not None
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        start = int(mask.any(0).long().argmax())  # the first column some row still uses
        for layer, keys, values in _batch_layers(self.cache):
            layer.set(keys.index_select(0, index)[:, :, start:], values.index_select(0, index)[:, :, start:])
        self.mask = mask[:, start:].contiguous()
        self.lengths = [self.lengths[i] for i in rows]

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention mask, position ids) for feeding one more token to every row; call `stepped`
        after the forward pass that used them."""
        ones = torch.ones(self.rows, 1, dtype=torch.long, device=self.mask.device)
        positions = torch.tensor(self.lengths, device=self.mask.device).unsqueeze(1)
        return torch.cat([self.mask, ones], dim=1), positions

    def stepped(self, mask: torch.Tensor) -> None:
        self.mask = mask
        self.lengths = [length + 1 for length in self.lengths]


def _layers(cache: DynamicCache) -> list[tuple[DynamicLayer, torch.Tensor, torch.Tensor]]:
    """(layer, keys, values) of each layer."""
    layers = []
    for layer in cache.layers:
        # A sliding-window layer keeps only its last tokens, which breaks left padding.
        if type(layer) is not DynamicLayer:
            raise ValueError(f"batched generation needs full-attention cache layers, not {type(layer).__name__}")
        assert layer.keys is not None and layer.values is not None
        layers.append((layer, layer.keys, layer.values))
    return layers


def _batch_layers(cache: DynamicCache) -> list[tuple[_BatchLayer, torch.Tensor, torch.Tensor]]:
    layers = []
    for layer in cache.layers:
        assert isinstance(layer, _BatchLayer) and layer.keys is not None and layer.values is not None
        layers.append((layer, layer.keys, layer.values))
    return layers


def _repeat(tensor: torch.Tensor, copies: int) -> torch.Tensor:
    return tensor.expand(copies, *tensor.shape[1:])


def _pad_left(tensor: torch.Tensor, width: int, copies: int = 0) -> torch.Tensor:
    """Zero-pad dimension 2 (or 1 of a mask) on the left to `width`; repeat row 0 `copies` times."""
    if copies:
        tensor = _repeat(tensor, copies)
    axis = 2 if tensor.dim() == 4 else 1
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
