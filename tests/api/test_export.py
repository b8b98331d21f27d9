"""Exports (GET /v1/models/{model}/export and `openft models export`) of a tiny model trained for
real, and parity: the exported model, loaded fresh through transformers (merged) or PEFT (the
adapter on its base), answers every prompt greedily token for token as openft does through the
API, and ends a turn at the same end-of-turn token."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from openft.engine.generate import TokenTexts
from tests.conftest import (
    OTHER_ORGANIZATION_KEY,
    REPO_ROOT,
    TRAINING_ENV,
    LiveServer,
    require_component,
    start_server,
    wait_for_job,
)

MAX_TOKENS = 24
SYSTEM = {"role": "system", "content": "You answer arithmetic questions tersely."}
SUM_ANSWER = "The answer is easy."
TOPIC_ANSWER = "I know nothing about that, sorry."
# (messages, max_tokens). In the training data's style (the model learns to end these turns), far
# from it (it may ramble), and cut short by max_tokens: every way a generation ends is compared.
PROMPTS: list[tuple[list[dict[str, str]], int]] = [
    ([SYSTEM, {"role": "user", "content": "What is 3 plus 3?"}], MAX_TOKENS),
    ([SYSTEM, {"role": "user", "content": "What is 12 plus 12?"}], MAX_TOKENS),
    ([SYSTEM, {"role": "user", "content": "Tell me about whales."}], MAX_TOKENS),
    ([SYSTEM, {"role": "user", "content": "Tell me about the moon."}], MAX_TOKENS),
    ([{"role": "user", "content": "What is 5 plus 5?"}], MAX_TOKENS),  # the template's default system prompt
    ([{"role": "user", "content": "Write a haiku about the sea."}], MAX_TOKENS),
    ([{"role": "user", "content": "Bonjour ! Comment ça va ? 🙂"}], MAX_TOKENS),
    ([SYSTEM, {"role": "user", "content": "What is 40 plus 40?"}], 3),
    ([SYSTEM, {"role": "user", "content": "Tell me about Paris."}], 3),
]


@dataclass(frozen=True)
class Answer:
    tokens: list[bytes]  # the completion's tokens, without the end-of-turn token
    text: str
    stopped: bool  # ended at an end-of-turn token (finish_reason "stop"), not at max_tokens
    completion_tokens: int  # the end-of-turn token counted


@pytest.fixture(scope="module")
def tiny_eot_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, able to end a turn. Its pad token is `<|im_end|>`, whose embedding row
    PyTorch zeroes (padding_idx): with tied embeddings its logit is 0 whatever LoRA learns, so
    the model could never stop. A random row (seeded) lets it learn to."""
    out = tmp_path_factory.mktemp("models") / "tiny-eot"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    pad = model.config.pad_token_id
    with torch.no_grad():
        row = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
        model.get_input_embeddings().weight[pad] = row
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def export_server(tiny_eot_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        tmp_path_factory.mktemp("export"),
        OPENFT_BASE_MODELS=f"tiny={tiny_eot_dir}",
        OPENFT_MAX_SEQ_LEN="64",
        **TRAINING_ENV,
    )
    yield live
    live.stop()


def training_file() -> bytes:
    """Two kinds of question, each answered with its own short sentence, which the tiny model
    learns to say and to end."""
    topics = ["cats", "rain", "music", "bread", "trains", "chess"]
    sums = [(f"What is {i} plus {i}?", SUM_ANSWER) for i in range(6)]
    talks = [(f"Tell me about {topic}.", TOPIC_ANSWER) for topic in topics]
    lines = [
        json.dumps({"messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in sums + talks
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def client(export_server: LiveServer) -> openai.OpenAI:
    return export_server.client()


@pytest.fixture(scope="module")
def job(client: openai.OpenAI) -> Any:
    file_id = client.files.create(file=("t.jsonl", training_file()), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        suffix="export",
        seed=5,
        hyperparameters={"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 100},
    )
    job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    return job


@pytest.fixture(scope="module")
def step_checkpoint(client: openai.OpenAI, job: Any) -> str:
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data  # newest first: the final step's, then…
    name: str = checkpoints[1].fine_tuned_model_checkpoint  # … the one before (trained enough to end turns)
    assert name != job.fine_tuned_model and ":ckpt-step-" in name
    return name


def openft_answers(client: openai.OpenAI, model: str) -> list[Answer]:
    answers = []
    for messages, max_tokens in PROMPTS:
        completion = client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=max_tokens,
            logprobs=True,  # type: ignore[arg-type]
        )
        choice = completion.choices[0]
        assert choice.logprobs is not None and choice.logprobs.content is not None and completion.usage is not None
        answers.append(
            Answer(
                tokens=[bytes(entry.bytes or []) for entry in choice.logprobs.content],
                text=choice.message.content or "",
                stopped=choice.finish_reason == "stop",
                completion_tokens=completion.usage.completion_tokens,
            )
        )
    return answers


@torch.inference_mode()
def transformers_answers(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[Answer]:
    """Greedy answers as a user of the export gets them: the chat template, `generate` with the
    export's generation config (its eos tokens) and nothing else."""
    texts = TokenTexts(tokenizer)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    answers = []
    for messages, max_tokens in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        output = model.generate(**inputs, do_sample=False, max_new_tokens=max_tokens)
        new = output[0, inputs["input_ids"].shape[1] :].tolist()
        stopped = new[-1] in eos_ids
        kept = new[:-1] if stopped else new
        answers.append(
            Answer(
                tokens=[bytes(texts(token)[1]) for token in kept],
                text=tokenizer.decode(kept, skip_special_tokens=True),
                stopped=stopped,
                completion_tokens=len(new),
            )
        )
    return answers


def assert_parity(expected: list[Answer], exported: list[Answer], label: str) -> None:
    matches = sum(a == b for a, b in zip(expected, exported, strict=True))
    print(f"{label}: {matches}/{len(PROMPTS)} prompts answered identically")  # the issue asks for the count
    for (messages, _), answer in zip(PROMPTS, expected, strict=True):
        print(f"  {messages[-1]['content']!r} -> {answer.text!r} ({'stop' if answer.stopped else 'length'})")
    assert exported == expected
    # Not trivial: several tokens each, and both ways of ending among them.
    assert all(answer.completion_tokens >= 3 for answer in expected)
    assert {answer.stopped for answer in expected} == {True, False}, [a.stopped for a in expected]


def download(server: LiveServer, model: str, format: str, into: Path, api_key: str = "sk-test") -> Path:
    with server.http(api_key) as http, http.stream("GET", f"/models/{model}/export", params={"format": format}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/gzip"
        size = int(r.headers["content-length"])
        body = r.read()
    assert len(body) == size
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        (folder,) = {Path(name).parts[0] for name in tar.getnames()}
        assert r.headers["content-disposition"] == f"attachment; filename*=UTF-8''{folder}.tar.gz"
        tar.extractall(into, filter="data")
    return into / folder


def load_merged(directory: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(directory)


def test_merged_export_answers_as_openft(
    export_server: LiveServer, client: openai.OpenAI, job: Any, tmp_path: Path
) -> None:
    model_name = job.fine_tuned_model
    merged = download(export_server, model_name, "merged", tmp_path)
    assert merged.name.startswith("ft-tiny-personal-export-") and merged.name.endswith("-merged")
    files = {path.name for path in merged.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.startswith("adapter") for name in files)
    tokenizer_config = json.loads((merged / "tokenizer_config.json").read_text())
    template = (merged / "chat_template.jinja").read_text()
    assert "<|im_end|>" in template and tokenizer_config["chat_template"] == template
    im_end = AutoTokenizer.from_pretrained(merged).convert_tokens_to_ids("<|im_end|>")
    assert json.loads((merged / "generation_config.json").read_text())["eos_token_id"] == im_end
    assert json.loads((merged / "openft_export.json").read_text())["model"] == model_name

    model, tokenizer = load_merged(merged)
    assert_parity(openft_answers(client, model_name), transformers_answers(model, tokenizer), "merged")
    base_answers = openft_answers(client, "tiny")
    assert base_answers != openft_answers(client, model_name)  # the adapter is in the merged weights


def test_peft_export_of_a_checkpoint_answers_as_openft(
    export_server: LiveServer, client: openai.OpenAI, step_checkpoint: str, tiny_eot_dir: Path, tmp_path: Path
) -> None:
    from peft import AutoPeftModelForCausalLM

    adapter = download(export_server, step_checkpoint, "peft", tmp_path)
    assert adapter.name.endswith("-peft") and "ckpt-step-" in adapter.name
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_eot_dir.resolve()) and config["peft_type"] == "LORA"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "chat_template.jinja").is_file()
    assert not (adapter / "model.safetensors").exists()

    # As a user loads it: the adapter names its base, PEFT fetches it.
    model = AutoPeftModelForCausalLM.from_pretrained(adapter, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    assert_parity(openft_answers(client, step_checkpoint), transformers_answers(model, tokenizer), "peft")


def test_cli_export_equals_the_api_export(
    export_server: LiveServer, client: openai.OpenAI, job: Any, tmp_path: Path
) -> None:
    env = {"OPENAI_BASE_URL": export_server.base_url, "OPENAI_API_KEY": "sk-test"}
    out = tmp_path / "cli-merged"
    result = run_openft("models", "export", job.fine_tuned_model, "--format", "merged", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "preparing the merged export" in result.stderr and "downloading" in result.stderr
    from_api = download(export_server, job.fine_tuned_model, "merged", tmp_path / "api")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in from_api.iterdir())
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert _digest(out / name) == _digest(from_api / name), name  # merging is deterministic
    model, tokenizer = load_merged(out)
    assert_parity(openft_answers(client, job.fine_tuned_model), transformers_answers(model, tokenizer), "cli merged")

    # Without --out: the archive's folder name, in the current directory; and a refusal is reported.
    here = tmp_path / "here"
    here.mkdir()
    default = run_openft("models", "export", job.fine_tuned_model, "--format", "peft", env=env, cwd=here)
    assert default.returncode == 0, default.stderr
    assert (here / default.stdout.strip() / "adapter_config.json").is_file()
    missing = run_openft("models", "export", "ft:tiny:personal:nope:x", "--out", str(tmp_path / "x"), env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "x").exists()


def test_export_is_authorized_like_the_model(
    export_server: LiveServer, client: openai.OpenAI, job: Any, step_checkpoint: str, tmp_path: Path
) -> None:
    model = job.fine_tuned_model

    def status(api_key: str, name: str, **params: str) -> tuple[int, dict[str, Any]]:
        with export_server.http(api_key) as http:
            response = http.get(f"/models/{name}/export", params=params)
        return response.status_code, response.json() if response.status_code != 200 else {}

    code, body = status(OTHER_ORGANIZATION_KEY, model, format="peft")
    assert code == 404 and body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    permission = client.fine_tuning.checkpoints.permissions.create(model, project_ids=["rival"]).data[0]
    try:
        shared = download(export_server, model, "peft", tmp_path, api_key=OTHER_ORGANIZATION_KEY)
        assert (shared / "adapter_model.safetensors").is_file()
        # Sharing the model shares none of its step checkpoints.
        assert status(OTHER_ORGANIZATION_KEY, step_checkpoint, format="peft")[0] == 404
    finally:
        client.fine_tuning.checkpoints.permissions.delete(permission.id, fine_tuned_model_checkpoint=model)
    assert status(OTHER_ORGANIZATION_KEY, model, format="peft")[0] == 404

    code, body = status("sk-test", "tiny")
    assert code == 400 and body["error"]["code"] == "base_model_not_exportable"
    code, body = status("sk-test", model, format="gguf-q2")
    assert code == 400 and body["error"]["code"] == "invalid_value" and body["error"]["param"] == "format"
    with httpx.Client(base_url=export_server.base_url) as anonymous:
        assert anonymous.get(f"/models/{model}/export").status_code == 401
    # Nothing is left under the data dir once an export has been downloaded (or refused).
    assert list((export_server.data_dir / "exports").iterdir()) == []


def run_openft(*arguments: str, env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openft", *arguments],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gguf_export(export_server: LiveServer, job: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = download(export_server, job.fine_tuned_model, "gguf", tmp_path_factory.mktemp("gguf"))
    assert folder.name.endswith("-gguf")
    assert sorted(path.name for path in folder.iterdir()) == ["Modelfile", "model.gguf", "openft_export.json"]
    return folder


def test_gguf_export_carries_the_tokenizer_and_stops_at_the_end_of_turn(gguf_export: Path, tiny_eot_dir: Path) -> None:
    import gguf

    tokenizer = AutoTokenizer.from_pretrained(tiny_eot_dir)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    fields = gguf.GGUFReader(gguf_export / "model.gguf").fields
    value = {key: fields[key].contents() for key in fields if not key.startswith("GGUF.")}
    assert value["general.architecture"] == "llama" and value["llama.block_count"] == 2
    assert value["llama.attention.head_count"] == 4 and value["llama.attention.head_count_kv"] == 2
    assert value["tokenizer.ggml.model"] == "gpt2" and value["tokenizer.ggml.pre"] == "smollm"
    assert value["tokenizer.ggml.eos_token_id"] == value["tokenizer.ggml.eot_token_id"] == im_end
    assert value["tokenizer.chat_template"] == tokenizer.chat_template
    assert len(value["tokenizer.ggml.tokens"]) == len(tokenizer) and value["tokenizer.ggml.add_bos_token"] is False
    modelfile = (gguf_export / "Modelfile").read_text()
    assert modelfile.startswith('FROM ./model.gguf\nTEMPLATE """{{ range .Messages }}<|im_start|>{{ .Role }}\n')
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert modelfile.endswith('PARAMETER stop "<|im_end|>"\n')


def test_gguf_export_answers_as_openft_through_llama_cpp(
    client: openai.OpenAI, job: Any, gguf_export: Path, tiny_eot_dir: Path
) -> None:
    require_component(
        importlib.util.find_spec("llama_cpp") is not None,
        "llama.cpp's Python binding is not installed: .venv/bin/pip install -e '.[gguf]'",
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_eot_dir)
    exported = llama_cpp_answers(gguf_export / "model.gguf", tokenizer)
    assert_parity(openft_answers(client, job.fine_tuned_model), exported, "gguf via llama.cpp")


def test_gguf_export_reads_back_as_the_merged_model(
    client: openai.OpenAI, job: Any, gguf_export: Path, tmp_path: Path
) -> None:
    """openft's own GGUF reader (transformers', which undoes llama.cpp's Q/K row order) gets the
    merged model back: the names, the permutation and the hyperparameters are each other's inverse."""
    from openft.engine import convert_gguf

    back = convert_gguf(gguf_export / "model.gguf", tmp_path / "back")
    model, tokenizer = load_merged(back)
    assert_parity(
        openft_answers(client, job.fine_tuned_model), transformers_answers(model, tokenizer), "gguf read back"
    )


def llama_cpp_answers(gguf_path: Path, tokenizer: PreTrainedTokenizerBase) -> list[Answer]:
    """Greedy answers through llama.cpp, ended where llama.cpp's vocabulary says a generation
    ends (its end-of-generation tokens, from the GGUF's eos/eot). The prompt is the chat template
    rendered as openft renders it; llama.cpp's own tokenization of it must give the same ids."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, n_threads=2, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    texts = TokenTexts(tokenizer)
    answers = []
    for messages, max_tokens in PROMPTS:
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(rendered.encode(), add_bos=False, special=True) == prompt, messages
        new: list[int] = []
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            new.append(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token) or len(new) == max_tokens:
                break
        stopped = bool(llama_cpp.llama_vocab_is_eog(vocab, new[-1]))
        kept = new[:-1] if stopped else new
        token_bytes = [bytes(texts(token)[1]) for token in kept]
        assert llm.detokenize(kept) == b"".join(token_bytes)  # llama.cpp's own bytes for them
        if stopped:
            assert new[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        answers.append(
            Answer(
                tokens=token_bytes,
                text=tokenizer.decode(kept, skip_special_tokens=True),
                stopped=stopped,
                completion_tokens=len(new),
            )
        )
    return answers
