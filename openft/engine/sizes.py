"""How many parameters a model has, read from its weight files' headers (no weights loaded, no
torch): the safetensors of a Hugging Face directory, or the tensor table of a GGUF file."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import BinaryIO

_GGUF_MAGIC = b"GGUF"
# GGUF metadata value types: fixed sizes in bytes; 8 is a string, 9 an array.
_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def parameter_count(path: Path) -> int | None:
    """The parameters of the model at `path` (a Hugging Face directory with safetensors, or a GGUF
    file); None when its weights are in another format or its headers can't be read."""
    try:
        if path.is_file() and path.suffix == ".gguf":
            return _gguf_parameters(path)
        shards = sorted(path.glob("*.safetensors")) if path.is_dir() else []
        if not shards:
            return None
        return sum(_safetensors_parameters(shard) for shard in shards)
    except (OSError, ValueError, KeyError, struct.error):
        return None


def _safetensors_parameters(path: Path) -> int:
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return sum(math.prod(tensor["shape"]) for name, tensor in header.items() if name != "__metadata__")


def _gguf_parameters(path: Path) -> int:
    with path.open("rb") as file:
        if file.read(4) != _GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        version, tensor_count, kv_count = struct.unpack("<IQQ", file.read(20))
        if version < 2:
            raise ValueError(f"GGUF version {version} is not read")
        for _ in range(kv_count):
            _skip_string(file)
            (value_type,) = struct.unpack("<I", file.read(4))
            _skip_value(file, value_type)
        total = 0
        for _ in range(tensor_count):
            _skip_string(file)
            (n_dims,) = struct.unpack("<I", file.read(4))
            total += math.prod(struct.unpack(f"<{n_dims}Q", file.read(8 * n_dims)))
            file.read(12)  # type (u32), offset (u64)
        return total


def _skip_string(file: BinaryIO) -> None:
    (length,) = struct.unpack("<Q", file.read(8))
    file.seek(length, 1)


def _skip_value(file: BinaryIO, value_type: int) -> None:
    if value_type in _GGUF_FIXED:
        file.seek(_GGUF_FIXED[value_type], 1)
    elif value_type == _GGUF_STRING:
        _skip_string(file)
    elif value_type == _GGUF_ARRAY:
        item_type, count = struct.unpack("<IQ", file.read(12))
        if item_type in _GGUF_FIXED:
            file.seek(_GGUF_FIXED[item_type] * count, 1)
        else:
            for _ in range(count):
                _skip_value(file, item_type)
    else:
        raise ValueError(f"unknown GGUF value type {value_type}")
