"""Many LoRA adapters on one frozen base model, each row of a batch through its own.

PEFT's mixed-batch forward loops over the adapters present in every LoRA layer (indexing the
rows of each, in Python), which on a CPU cost more than the base model's own matrix products
once a batch mixes a few adapters. Here every adapted `Linear` gets one forward hook that adds
`((x @ A) * mask) @ B` to its output, where `A` and `B` hold every loaded adapter's matrices side
by side (`B` scaled by alpha / r) and `mask` keeps, for each row, only the columns of that row's
adapter: two small matrix products per layer, however many adapters the batch mixes.

Adapters are read from PEFT's saved format (`adapter_config.json`, `adapter_model.safetensors`):
plain LoRA on linear layers, which is what openft trains. Slot 0 is the base model alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.hooks import RemovableHandle

BASE_SLOT = 0
_PREFIX = "base_model.model."


@dataclass
class _Layer:
    """The adapters of one Linear: per slot (A [in, r], B [r, out] scaled), and their concatenation."""

    module: nn.Linear
    parts: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    a: torch.Tensor | None = None  # [in, R]
    b: torch.Tensor | None = None  # [R, out]
    layout: tuple[tuple[int, int], ...] = ()  # (slot, rank) of the columns of a, in order
    hook: RemovableHandle | None = None


class MultiLora:
    def __init__(self, model: nn.Module) -> None:
        self._modules = dict(model.named_modules())
        self._layers: dict[str, _Layer] = {}
        self._slots: set[int] = set()
        self._rows: torch.Tensor | None = None  # slot of each row in the next forward; None: all base
        self._single: int | None = None  # the one slot every row uses, when they all use one
        # Layers with the same layout (every layer, for adapters that target the same modules
        # with the same rank) share one row mask, computed once per `use`.
        self._columns: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}  # [slots, R], 1 in a slot's columns
        self._masks: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}  # [rows, 1, R]

    def load(self, path: Path) -> int:
        """Load the adapter saved in `path` into a free slot and return the slot."""
        weights = _read(path, self._modules)  # checked whole before anything changes here
        slot = next(i for i in range(1, len(self._slots) + 2) if i not in self._slots)
        for name, (a, b) in weights.items():
            module = self._modules[name]
            assert isinstance(module, nn.Linear)
            self._layers.setdefault(name, _Layer(module)).parts[slot] = (a, b)
        self._slots.add(slot)
        try:
            self._rebuild()
        except BaseException:  # out of memory, say: leave no trace of the adapter
            self.unload(slot)
            raise
        return slot

    def unload(self, slot: int) -> None:
        self._slots.discard(slot)
        for layer in self._layers.values():
            layer.parts.pop(slot, None)
        self._rebuild()

    def use(self, slots: list[int]) -> None:
        """The slot of each row of the next forward passes."""
        self._single = slots[0] if len(set(slots)) == 1 else None
        if all(slot == BASE_SLOT for slot in slots):
            self._rows = None
            return
        device = next(iter(self._layers.values())).module.weight.device
        self._rows = torch.tensor(slots, device=device)
        if self._single is None:
            self._masks = {layout: columns[self._rows].unsqueeze(1) for layout, columns in self._columns.items()}

    def _rebuild(self) -> None:
        """Concatenate each layer's adapters, and hook the layers that have any (only those)."""
        size = max(self._slots, default=0) + 1
        self._columns = {}
        for name, layer in list(self._layers.items()):
            if not layer.parts:
                if layer.hook is not None:
                    layer.hook.remove()
                del self._layers[name]
                continue
            items = sorted(layer.parts.items())
            layer.a = torch.cat([a for _, (a, _) in items], dim=1)
            layer.b = torch.cat([b for _, (_, b) in items], dim=0)
            layer.layout = tuple((slot, a.shape[1]) for slot, (a, _) in items)
            if layer.layout not in self._columns:
                self._columns[layer.layout] = _columns(layer.layout, size, layer.a)
            if layer.hook is None:
                layer.hook = layer.module.register_forward_hook(self._hook_for(layer))

    def _hook_for(self, layer: _Layer):  # type: ignore[no-untyped-def]
        def add_lora(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            rows = self._rows
            if rows is None:
                return output
            if self._single is not None:  # no mask needed: the common case of one adapter, or one request
                part = layer.parts.get(self._single)
                return output if part is None else output + (inputs[0] @ part[0]) @ part[1]
            assert layer.a is not None and layer.b is not None
            low_rank = (inputs[0] @ layer.a).mul_(self._masks[layer.layout])
            return output.add_(low_rank @ layer.b)  # in place: nothing else holds a Linear's fresh output

        return add_lora


def _columns(layout: tuple[tuple[int, int], ...], slots: int, like: torch.Tensor) -> torch.Tensor:
    """[slots, R]: row s is 1 in the columns that belong to slot s."""
    columns = torch.zeros(slots, sum(rank for _, rank in layout), dtype=like.dtype, device=like.device)
    start = 0
    for slot, rank in layout:
        columns[slot, start : start + rank] = 1
        start += rank
    return columns


def _read(path: Path, modules: dict[str, nn.Module]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (A [in, r], B [r, out] x scale)} of a PEFT LoRA adapter, in the model's dtype;
    ValueError unless every matrix fits a linear layer of the model."""
    config = json.loads((path / "adapter_config.json").read_text())
    unsupported = [
        key
        for key in ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform")
        if config.get(key)
    ]
    if config.get("peft_type", "LORA") != "LORA" or config.get("bias", "none") != "none" or unsupported:
        raise ValueError(f"{path}: only plain LoRA adapters can be served (not {unsupported or config.get('bias')})")
    r = int(config["r"])
    scale = config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)
    tensors = load_file(str(path / "adapter_model.safetensors"))
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                raise ValueError(f"{path}: unexpected tensor {key}")
            continue
        name = key.removesuffix(".lora_A.weight").removeprefix(_PREFIX)
        module = modules.get(name)
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if not isinstance(module, nn.Linear) or b is None:
            raise ValueError(f"{path}: {name} is not a linear layer of the base model, or has no lora_B")
        if a.shape != (r, module.in_features) or b.shape != (module.out_features, r):
            raise ValueError(f"{path}: the LoRA matrices of {name} don't fit the base model's layer")
        weight = module.weight
        a_t = a.t().to(weight.device, weight.dtype).contiguous()
        b_t = (b.t() * scale).to(weight.device, weight.dtype).contiguous()
        weights[name] = (a_t, b_t)
    if not weights:
        raise ValueError(f"{path}: the adapter has no LoRA matrices")
    return weights
