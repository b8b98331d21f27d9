"""Greedy decoding speed of openft's engine, base model and through a LoRA adapter (batch 1,
128 new tokens), against Hugging Face `generate` on the same model and prompt, and requests
alternating between two adapters (which share the batch machinery: there is no switch to pay).

    .venv/bin/python bench/generate_speed.py [--model-dir DIR] [--tokens 128] [--repeats 3]

Without --model-dir it uses the embedded SmolLM2-135M-Instruct (converted once under .cache/).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from openft.engine import convert_gguf, embedded_gguf_path
from openft.engine.generate import GenerationParams
from openft.engine.serving import ModelServer

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero weights: enough to measure speed, no training needed."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    peft = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 1e-3)
    peft.save_pretrained(out)
    return out


def timed(action: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    arguments = parser.parse_args()
    model_dir = arguments.model_dir or convert_gguf(
        embedded_gguf_path(), REPO / ".cache" / "test-models" / "smollm2-135m-instruct"
    )
    n = arguments.tokens
    # ignore eos so every run decodes exactly n tokens
    params = GenerationParams(max_new_tokens=n, temperature=0.0)

    server = ModelServer(model_dir, device=arguments.device)
    prompt = server.chat_prompt(MESSAGES)
    with tempfile.TemporaryDirectory() as scratch:
        adapters = [(f"a{i}", make_adapter(model_dir, Path(scratch) / f"a{i}", i)) for i in range(2)]

        def run(adapter: tuple[str, Path] | None) -> int:
            return server.generate(prompt, params, adapter).completion_tokens

        produced = run(None)
        base_s = timed(lambda: run(None), arguments.repeats)
        run(adapters[0])
        adapter_s = timed(lambda: run(adapters[0]), arguments.repeats)
        short = GenerationParams(max_new_tokens=1, temperature=0.0)
        same = timed(lambda: server.generate(prompt, short, adapters[0]), arguments.repeats * 3)
        switched = (
            timed(
                lambda: (server.generate(prompt, short, adapters[1]), server.generate(prompt, short, adapters[0])),
                arguments.repeats * 3,
            )
            / 2
        )

        hf = AutoModelForCausalLM.from_pretrained(model_dir).to(server.device).eval()
        ids = torch.tensor([prompt], device=server.device)

        def hf_generate() -> None:
            with torch.no_grad():
                hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

        hf_generate()
        hf_s = timed(hf_generate, arguments.repeats)

    print(f"model {model_dir}, device {server.device}, prompt {len(prompt)} tokens, {n} new tokens, batch 1, greedy")
    print(f"(openft stopped at eos after {produced} tokens on the first run)" if produced < n else "")
    print(f"openft engine, base model:       {produced / base_s:8.1f} tokens/s")
    print(f"openft engine, through adapter:  {produced / adapter_s:8.1f} tokens/s")
    print(f"HF transformers generate (base): {n / hf_s:8.1f} tokens/s   <- baseline")
    print(f"1-token request: {1000 * same:.1f} ms with one adapter, {1000 * switched:.1f} ms alternating two adapters")


if __name__ == "__main__":
    main()
