"""GGUF export's parts that need no training: the tokenizer metadata built from a Hugging Face
tokenizer equals what llama.cpp's converter wrote into the embedded SmolLM2 GGUF, the Ollama
Modelfile follows the chat template, and bases it cannot express are refused before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from openft.engine.embedded import embedded_gguf_path
from openft.engine.gguf_export import (
    GGUFUnsupported,
    _pre_tokenizer,
    _tokenizer_json_model,
    check_gguf_supported,
    gguf_vocabulary,
    ollama_modelfile,
)

SMOLLM2_MODELFILE = '''FROM ./model.gguf
TEMPLATE """{{ range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""
PARAMETER stop "<|im_end|>"
'''


def test_tokenizer_metadata_equals_the_original_gguf(smollm2_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    fields = gguf.GGUFReader(embedded_gguf_path()).fields
    tokens, types = gguf_vocabulary(tokenizer, len(tokenizer))
    assert tokens == fields["tokenizer.ggml.tokens"].contents()
    assert types == fields["tokenizer.ggml.token_type"].contents()
    assert sum(t == gguf.TokenType.CONTROL for t in types) > 10  # the special tokens are told apart
    merges = _tokenizer_json_model(smollm2_dir)["merges"]
    assert [m if isinstance(m, str) else " ".join(m) for m in merges] == fields["tokenizer.ggml.merges"].contents()
    assert _pre_tokenizer(tokenizer) == fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert tokenizer.chat_template == fields["tokenizer.chat_template"].contents()
    check_gguf_supported(smollm2_dir)


def test_modelfile_follows_the_chat_template(smollm2_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    assert ollama_modelfile(tokenizer, ["<|im_end|>"]) == SMOLLM2_MODELFILE
    # A template that is not ChatML gets no TEMPLATE: Ollama picks one by the GGUF's own.
    other = AutoTokenizer.from_pretrained(smollm2_dir)
    other.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    assert ollama_modelfile(other, ["<|im_end|>"]) == 'FROM ./model.gguf\nPARAMETER stop "<|im_end|>"\n'


def _edited_copy(tiny_dir: Path, out: Path, file: str, **changes: object) -> Path:
    shutil.copytree(tiny_dir, out)
    path = out / file
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "Llama-architecture"),
        ({"attention_bias": True}, "biases"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, "RoPE scaling"),
    ],
)
def test_bases_it_cannot_express_are_refused(
    tiny_dir: Path, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    base = _edited_copy(tiny_dir, tmp_path / "base", "config.json", **changes)
    with pytest.raises(GGUFUnsupported, match=message):
        check_gguf_supported(base)


def test_an_unknown_pre_tokenizer_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_dir, base)
    tokenizer_json = json.loads((base / "tokenizer.json").read_text())
    tokenizer_json["pre_tokenizer"] = {"type": "Whitespace"}
    (base / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(GGUFUnsupported, match="pre-tokenizer"):
        check_gguf_supported(base)
