"""The KV cache of a running batch whose rows have different lengths.

Rows are left-padded to one length: each layer holds keys and values of shape
`[rows, heads, length, head_dim]`, and `mask` (`[rows, length]`, 1 for a real token) hides the
padding from attention. A row joins with the cache of its own prefill (one row, maybe repeated for
`n` choices) and leaves when it finishes; columns that no row needs any more are cut off the left,
so a long finished row doesn't leave its length behind as padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


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
            self.cache = DynamicCache([(_repeat(keys, copies), _repeat(values, copies)) for _, keys, values in layers])
            device = layers[0][1].device
            self.mask = torch.ones(copies, length, dtype=torch.long, device=device)
            self.lengths = [length] * copies
            return
        width = max(self.mask.shape[1], length)
        for (layer, keys, values), (_, new_keys, new_values) in zip(_layers(self.cache), layers, strict=True):
            layer.keys = torch.cat([_pad_left(keys, width), _pad_left(new_keys, width, copies)])
            layer.values = torch.cat([_pad_left(values, width), _pad_left(new_values, width, copies)])
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
        for layer, keys, values in _layers(self.cache):
            layer.keys = keys.index_select(0, index)[:, :, start:].contiguous()
            layer.values = values.index_select(0, index)[:, :, start:].contiguous()
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
