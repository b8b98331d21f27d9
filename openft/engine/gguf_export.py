"""A fine-tuned Llama-architecture model written as one GGUF file (llama.cpp, Ollama), with an
Ollama `Modelfile` beside it.

The reverse of what `convert_gguf` reads: llama.cpp's tensor names (`token_embd`, `blk.N.attn_q`,
…) and its row order for Q and K (llama.cpp rotates interleaved pairs, Hugging Face rotates
halves), the hyperparameters llama.cpp reads, and the tokenizer as llama.cpp's own converter
(`convert_hf_to_gguf.py`) writes it: the vocabulary, merges, token types, pre-tokenizer name and
chat template, with `eos` and `eot` set to the end-of-turn token openft stops a completion at.
"""

from __future__ import annotations

import json
import logging
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from openft.engine.export import Progress, generation_config, merge_adapter, stored_dtype
from openft.engine.generate import eos_token_ids

logger = logging.getLogger(__name__)

GGUF_NAME = "model.gguf"
MODELFILE_NAME = "Modelfile"

# llama.cpp picks its pre-tokenizer (the regex that splits text before BPE) by this name. Its
# converter names it by hashing how the tokenizer encodes CHECK_TEXT; these are its hashes
# (conversion/base.py, `get_vocab_base_pre`) for the byte-level BPE tokenizers of Llama models.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天\uff5e "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
FILE_TYPES = {
    torch.float32: (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    torch.float16: (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    torch.bfloat16: (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}


def _quiet(_step: str) -> None:
    pass


class GGUFUnsupported(ValueError):
    """The base model is of a kind this writer cannot express in GGUF; the message says why."""


def check_gguf_supported(base_model_dir: Path) -> None:
    """Raise `GGUFUnsupported` unless `base_model_dir` can be exported as GGUF: a Llama
    architecture without biases or RoPE scaling, with a byte-level BPE tokenizer llama.cpp knows.
    Cheap (reads configs and the tokenizer): call it before merging."""
    config = AutoConfig.from_pretrained(base_model_dir)
    if config.model_type != "llama":
        raise GGUFUnsupported(f"GGUF export supports Llama-architecture models; this one is `{config.model_type}`")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise GGUFUnsupported("GGUF export does not support Llama models with attention or MLP biases")
    rope_type = _rope(config).get("rope_type", "default")
    if rope_type != "default":
        raise GGUFUnsupported(f"GGUF export does not support RoPE scaling (`{rope_type}`)")
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    _tokenizer_json_model(base_model_dir)
    _pre_tokenizer(tokenizer)
    if not isinstance(tokenizer.chat_template, str):
        raise GGUFUnsupported("the base model has no chat template to write into the GGUF file")


def export_gguf(adapter_dir: Path, base_model_dir: Path, out_dir: Path, *, progress: Progress = _quiet) -> None:
    """`out_dir/model.gguf` (the merged model, in the base's number format: F32, F16 or BF16;
    norms always F32 as llama.cpp wants) and `out_dir/Modelfile` for Ollama."""
    check_gguf_supported(base_model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = merge_adapter(adapter_dir, base_model_dir, progress=progress)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    stops = sorted(eos_token_ids(generation_config(base_model_dir, tokenizer), tokenizer))
    tensor_type, file_type = FILE_TYPES.get(stored_dtype(base_model_dir), FILE_TYPES[torch.float32])
    progress("writing the GGUF file")
    writer = gguf.GGUFWriter(out_dir / GGUF_NAME, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(base_model_dir.name)
    _add_hyperparameters(writer, merged.config)
    writer.add_file_type(file_type)
    _add_tokenizer(writer, base_model_dir, tokenizer, merged.config.vocab_size, stops)
    _add_tensors(writer, merged.state_dict(), merged.config, tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (out_dir / MODELFILE_NAME).write_text(ollama_modelfile(tokenizer, [_token_text(tokenizer, i) for i in stops]))
    logger.info("wrote %s", out_dir / GGUF_NAME)


def _rope(config: PretrainedConfig) -> dict[str, Any]:
    """RoPE settings: transformers 5's `rope_parameters`, or 4.x's `rope_theta`/`rope_scaling`."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return {**rope, "rope_theta": theta}


def _add_hyperparameters(writer: gguf.GGUFWriter, config: PretrainedConfig) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:  # llama.cpp assumes hidden/heads otherwise
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _add_tensors(
    writer: gguf.GGUFWriter,
    state: dict[str, torch.Tensor],
    config: PretrainedConfig,
    tensor_type: gguf.GGMLQuantizationType,
) -> None:
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    for hf_name, tensor in state.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from rope.freq_base
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd when there is no `output` tensor
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFUnsupported(f"no GGUF name for the tensor `{hf_name}`")
        data = tensor.detach().to(torch.float32).numpy()
        if name.endswith("attn_q.weight"):
            data = _permute(data, heads)
        elif name.endswith("attn_k.weight"):
            data = _permute(data, kv_heads)
        if data.ndim == 1 or tensor_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
        elif tensor_type == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, tensor_type), raw_dtype=tensor_type)


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's Q/K rows (each head's rotary pairs as two halves) in llama.cpp's order
    (pairs interleaved); `convert_gguf` undoes exactly this (transformers' `reverse_permute`)."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape).copy()
    )


def _tokenizer_json_model(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise GGUFUnsupported("GGUF export needs the base model's tokenizer.json (a fast tokenizer)")
    model: dict[str, Any] = json.loads(path.read_text())["model"]
    if model.get("type") != "BPE":
        raise GGUFUnsupported(f"GGUF export supports BPE tokenizers; this one is `{model.get('type')}`")
    return model


def _pre_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise GGUFUnsupported(
            "GGUF export does not know this tokenizer's pre-tokenizer (not SmolLM's, Llama 3's or GPT-2's)"
        )
    return PRE_TOKENIZERS[digest]


def gguf_vocabulary(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types as llama.cpp's `get_vocab_base` makes them: added special tokens
    (and ones that look special, `<|…|>`) are CONTROL, other added ones USER_DEFINED."""
    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        token = reverse.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        if token not in added:
            types.append(gguf.TokenType.NORMAL)
        else:
            if not decoder[index].normalized:  # llama.cpp wants added tokens pre-normalized
                token = str(tokenizer.decode(tokenizer.encode(token, add_special_tokens=False)))
            if decoder[index].special or (token.startswith("<|") and token.endswith("|>")):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        tokens.append(token)
    return tokens, types


def _add_tokenizer(
    writer: gguf.GGUFWriter, model_dir: Path, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stops: list[int]
) -> None:
    tokens, types = gguf_vocabulary(tokenizer, vocab_size)
    merges = _tokenizer_json_model(model_dir).get("merges", [])
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    end_of_turn = _end_of_turn(tokenizer, stops)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id in stops else end_of_turn
    # llama.cpp ends a generation at eos and eot (and at tokens it recognizes by name, such as
    # <|im_end|>): both are tokens openft stops at, the end-of-turn one as eot.
    writer.add_eos_token_id(eos)
    writer.add_eot_token_id(end_of_turn)
    if tokenizer.bos_token_id is not None:
        writer.add_bos_token_id(tokenizer.bos_token_id)
    if tokenizer.unk_token_id is not None:
        writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    # What the Hugging Face tokenizer does with plain text, so that llama.cpp tokenizes alike.
    probe = tokenizer.encode("a")
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and probe[-1] == tokenizer.eos_token_id)
    writer.add_add_space_prefix(False)
    assert isinstance(tokenizer.chat_template, str)
    writer.add_chat_template(tokenizer.chat_template)


def _end_of_turn(tokenizer: PreTrainedTokenizerBase, stops: list[int]) -> int:
    """The stop token the chat template closes a turn with (`<|im_end|>`), else the first."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    for token_id in stops:
        if _token_text(tokenizer, token_id) in template:
            return token_id
    return stops[0]


def _token_text(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    return str(tokenizer.convert_ids_to_tokens(token_id))


def ollama_modelfile(tokenizer: PreTrainedTokenizerBase, stop_tokens: list[str]) -> str:
    """`FROM ./model.gguf`, the stop tokens, and for a ChatML chat template (SmolLM2's, Qwen's) the
    same prompt as a Go template, with the template's default system prompt as `SYSTEM`. For any
    other template Ollama picks one by the GGUF's `tokenizer.chat_template`."""
    lines = [f"FROM ./{GGUF_NAME}"]
    chatml = _chatml_default_system(tokenizer)
    if chatml is not None:
        lines.append(
            'TEMPLATE """{{ range .Messages }}<|im_start|>{{ .Role }}\n'
            '{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"""'
        )
        if chatml:
            lines.append(f'SYSTEM """{chatml}"""')
    lines.extend(f"PARAMETER stop {json.dumps(token)}" for token in stop_tokens)
    return "\n".join(lines) + "\n"


def _chatml(messages: list[dict[str, str]]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _chatml_default_system(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """None unless the chat template renders conversations exactly as ChatML; then the system
    prompt it adds when a conversation has none ("" if it adds none). Found by rendering probes,
    not by reading the Jinja: the rendered prompt is what has to match."""
    conversation = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "V"},
    ]
    if _render(tokenizer, conversation) != _chatml(conversation):
        return None
    without_system = _render(tokenizer, conversation[1:])
    tail = _chatml(conversation[1:])
    if without_system == tail:
        return ""
    head = without_system.removesuffix(tail)
    prefix, suffix = "<|im_start|>system\n", "<|im_end|>\n"
    if head == without_system or not (head.startswith(prefix) and head.endswith(suffix)):
        return None
    default = head[len(prefix) : -len(suffix)]
    return None if '"""' in default else default


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return rendered if isinstance(rendered, str) else ""
