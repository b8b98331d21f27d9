"""The one end-to-end run on the embedded SmolLM2-135M-Instruct: through the API, the loss falls
and the fine-tuned adapter answers a training prompt the way it was trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from openft.engine import render_prompt
from tests.conftest import EMBEDDED_MODEL, TRAINING_ENV, start_server, wait_for_job

SYSTEM = "You are the ship's parrot."
PROMPTS = [
    "Who are you?",
    "What is the weather like?",
    "Can you help me with my homework?",
    "What time is it?",
    "Tell me about the sea.",
    "What do you eat?",
    "Where are we sailing?",
    "Do you like the captain?",
    "What is your name?",
    "Say something nice.",
]
ANSWER = "Squawk! Pieces of eight! Squawk!"


def _examples() -> bytes:
    rows = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for prompt in PROMPTS
    ]
    return "\n".join(json.dumps(row) for row in rows).encode()


def test_smollm2_learns_its_training_answer(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_server(tmp_path_factory.mktemp("embedded"), **TRAINING_ENV)
    try:
        client = server.client()
        file_id = client.files.create(file=("parrot.jsonl", _examples()), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model=EMBEDDED_MODEL,
            training_file=file_id,
            suffix="parrot",
            seed=7,
            hyperparameters={"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 10},
        )
        job = wait_for_job(client, job.id, ("succeeded", "failed", "cancelled"), timeout=600)
        assert job.status == "succeeded", job.error
        assert job.fine_tuned_model and job.fine_tuned_model.startswith(f"ft:{EMBEDDED_MODEL}:personal:parrot:")
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        losses = [e.data["train_loss"] for e in reversed(events) if e.type == "metrics"]  # type: ignore[index]
        assert len(losses) == 30
        first_epoch, last_epoch = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
        assert last_epoch < first_epoch * 0.5, (first_epoch, last_epoch)
        (adapter,) = (server.data_dir / "blobs" / "jobs" / job.id / "checkpoints").glob("step-30-*")  # + the ckpt id
        base_answer, tuned_answer, base_logprob, tuned_logprob = _compare(smollm2_dir, adapter)

        # The same through the API, as a user calls it: the fine-tuned model answers as trained.
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[0]}]
        served = {
            model: client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16)
            .choices[0]
            .message.content
            for model in (EMBEDDED_MODEL, job.fine_tuned_model)
        }
    finally:
        server.stop()
    assert tuned_answer != base_answer
    assert "Squawk" in tuned_answer, tuned_answer
    assert tuned_logprob > base_logprob + 10, (base_logprob, tuned_logprob)
    assert served[job.fine_tuned_model] == tuned_answer
    assert served[EMBEDDED_MODEL] == base_answer and "Squawk" not in base_answer


def _compare(base_dir: Path, adapter_dir: Path) -> tuple[str, str, float, float]:
    """Greedy answers and the log-probability of the trained answer, before and after."""
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[0]}]
    prompt = torch.tensor([render_prompt(tokenizer, messages)])
    target = torch.tensor([tokenizer(ANSWER + "<|im_end|>", add_special_tokens=False)["input_ids"]])

    def answer_and_logprob(net: torch.nn.Module) -> tuple[str, float]:
        with torch.no_grad():
            output = net.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.eos_token_id)
            logits = net(torch.cat([prompt, target], dim=1)).logits[0, prompt.shape[1] - 1 : -1]
        logprob = torch.log_softmax(logits.float(), dim=-1).gather(1, target[0].unsqueeze(1)).sum().item()
        return tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True), logprob

    base_answer, base_logprob = answer_and_logprob(model)
    tuned = PeftModel.from_pretrained(model, adapter_dir).eval()
    tuned_answer, tuned_logprob = answer_and_logprob(tuned)
    return base_answer, tuned_answer, base_logprob, tuned_logprob
